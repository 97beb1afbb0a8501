//! Encrypting and decrypting through the running agent, with SoftHSM keys, checked against
//! OpenSSL both ways.

mod common;

use std::path::Path;
use std::process::Command;

use common::peers::{Gpgsm, Nss};
use common::*;
use smime_agent_proto::client::ClientError;
use smime_agent_proto::{EncryptParams, ErrorCode};

const MSG: &str =
    "Content-Type: text/plain; charset=utf-8\r\n\r\nFor Bob, and for Alice's sent folder.\r\n";

/// The serial number of the PKI's certificate `name`, hex as OpenSSL prints it.
fn serial_of(name: &str) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(pki_file(&format!("{name}.pem")))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .trim_start_matches("serial=")
        .trim_start_matches('0')
        .to_owned()
}

/// Alice's agent: her keys on a SoftHSM token, Bob's certificates in her contacts.
fn alice_agent(dir: &Path, extra: &str) -> (SoftHsm, Agent) {
    agent_with_contacts(
        dir,
        &["alice-sign-rsa", "alice-enc-rsa", "alice-enc-ec"],
        &["bob-dual-rsa", "bob-enc-ec"],
        &format!("[[identity]]\naddress = \"alice@example.org\"\n\n{extra}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_and_alice_both_read_what_alice_encrypts_to_bob() {
    for extra in [
        "",
        "[policy]\nencryption_algorithms = [\"aes128-gcm\"]\nrsa_oaep = true\n",
    ] {
        let dir = tempdir();
        let (_hsm, agent) = alice_agent(dir.path(), extra);
        let client = agent.client().await;
        let r = client
            .encrypt(EncryptParams {
                recipients: vec!["Bob@example.org".into()],
                certificates: vec![],
                sender: None,
                content: MSG.as_bytes().to_vec().into(),
                ..Default::default()
            })
            .await
            .expect("encrypt");
        let sources: Vec<(&str, &str)> = r
            .recipients
            .iter()
            .map(|x| (x.address.as_str(), x.source.as_str()))
            .collect();
        assert!(
            sources.contains(&("Bob@example.org", "contacts")),
            "{sources:?}"
        );
        assert!(
            sources.contains(&("alice@example.org", "own")),
            "{sources:?}"
        );
        let mime = r.mime.0;
        // Bob reads it with OpenSSL (bob-enc-ec is his single-usage encryption key).
        let bob = openssl_decrypt(dir.path(), &mime, "bob-enc-ec")
            .unwrap_or_else(|e| panic!("{extra}: OpenSSL as Bob: {e}"));
        assert_eq!(bob, MSG.as_bytes());
        // Alice reads her copy through her agent, with the key on her token.
        let c = agent.client().await;
        let mine = decrypt_answering(&c, mime.clone(), PIN)
            .await
            .expect("Alice decrypts");
        assert_eq!(mine.mime.0, MSG.as_bytes());
        assert_eq!(mine.authenticated, extra.contains("gcm"));
        assert!(
            mine.certificate
                .emails
                .contains(&"alice@example.org".to_string())
        );
        // And OpenSSL with Alice's key too: the one of her certificates the agent chose.
        let own = r.recipients.iter().find(|x| x.source == "own").unwrap();
        assert!(own.subject.contains("alice@example.org"));
        let key = ["alice-enc-rsa", "alice-enc-ec"]
            .into_iter()
            .find(|name| serial_of(name).eq_ignore_ascii_case(&own.serial))
            .unwrap_or_else(|| panic!("Alice's copy went to serial {}", own.serial));
        let alice = openssl_decrypt(dir.path(), &mime, key)
            .unwrap_or_else(|e| panic!("{extra}: OpenSSL as Alice ({key}): {e}"));
        assert_eq!(alice, MSG.as_bytes());
        let expected = if extra.contains("gcm") {
            "aes128-gcm"
        } else {
            "aes256-cbc"
        };
        assert_eq!(r.algorithm, expected, "{extra}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_without_a_certificate_are_listed() {
    let dir = tempdir();
    let (_hsm, agent) = alice_agent(dir.path(), "");
    let client = agent.client().await;
    let err = client
        .encrypt(EncryptParams {
            recipients: vec![
                "bob@example.org".into(),
                "carol@example.org".into(),
                "nobody@example.org".into(),
            ],
            certificates: vec![],
            sender: None,
            content: MSG.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let ClientError::Agent(body) = err else {
        panic!("{err}")
    };
    assert_eq!(body.code, ErrorCode::RecipientWithoutCertificate);
    assert_eq!(
        body.recipients,
        Some(vec![
            "carol@example.org".to_string(),
            "nobody@example.org".to_string()
        ])
    );

    // A certificate passed with the request counts; a TLS certificate does not.
    let carol = std::fs::read(pki_file("carol-san-rsa.der")).unwrap();
    let frank = std::fs::read(pki_file("frank-server-rsa.der")).unwrap();
    let r = client
        .encrypt(EncryptParams {
            recipients: vec!["carol@example.org".into()],
            certificates: vec![carol.into()],
            sender: None,
            content: MSG.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("carol's certificate from the request");
    assert_eq!(r.recipients[0].source, "request");
    let err = client
        .encrypt(EncryptParams {
            recipients: vec!["frank@example.org".into()],
            certificates: vec![frank.into()],
            sender: None,
            content: MSG.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RecipientWithoutCertificate));
    assert!(err.to_string().contains("emailProtection"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_decrypts_what_openssl_encrypts_to_alice() {
    let dir = tempdir();
    let (_hsm, agent) = alice_agent(dir.path(), "");
    let input = write_file(dir.path(), "msg.txt", MSG.as_bytes());
    // (recipients, options); the key options apply to the recipient before them.
    let cases: &[(&[&str], &[&str])] = &[
        (&["alice-enc-rsa"], &["-aes-256-cbc"]),
        (
            &["alice-enc-rsa"],
            &["-aes-128-cbc", "-keyopt", "rsa_padding_mode:oaep"],
        ),
        (
            &["alice-enc-rsa"],
            &[
                "-aes-256-cbc",
                "-keyopt",
                "rsa_padding_mode:oaep",
                "-keyopt",
                "rsa_oaep_md:sha256",
            ],
        ),
        (&["alice-enc-rsa"], &["-aes-256-gcm"]),
        (&["alice-enc-ec"], &["-aes-256-cbc"]),
        (&["alice-enc-ec"], &["-aes-128-gcm"]),
        // Several recipients, Alice's key among them and not first.
        (
            &["bob-enc-ec", "carol-san-rsa", "alice-enc-ec"],
            &["-aes-256-cbc"],
        ),
        (&["bob-dual-rsa", "alice-enc-rsa"], &["-aes-128-gcm"]),
        // Legacy mail: Triple DES (read, never written) and AES-192.
        (&["alice-enc-rsa"], &["-des3"]),
        (&["alice-enc-rsa"], &["-aes-192-cbc"]),
    ];
    for (names, opts) in cases {
        let mut cmd = Command::new("openssl");
        cmd.args(["cms", "-encrypt", "-in"]).arg(&input);
        for name in *names {
            cmd.arg("-recip").arg(pki_file(&format!("{name}.pem")));
        }
        let out = cmd.args(*opts).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let c = agent.client().await;
        let r = decrypt_answering(&c, out.stdout, PIN)
            .await
            .unwrap_or_else(|e| panic!("{names:?} {opts:?}: {e}"));
        assert_eq!(r.mime.0, MSG.as_bytes(), "{names:?} {opts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_cipher_the_agent_does_not_read_is_named_once() {
    let dir = tempdir();
    let (_hsm, agent) = alice_agent(dir.path(), "");
    let input = write_file(dir.path(), "msg.txt", MSG.as_bytes());
    let out = Command::new("openssl")
        .args(["cms", "-encrypt", "-camellia-256-cbc", "-in"])
        .arg(&input)
        .arg(pki_file("alice-enc-rsa.pem"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let c = agent.client().await;
    let err = decrypt_answering(&c, out.stdout, PIN).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unsupported), "{err}");
    let text = err.to_string();
    assert!(text.contains("1.2.392.200011.61.1.1.1.4"), "{text}");
    assert!(!text.contains("unsupported: unsupported"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triple_des_is_never_chosen_to_encrypt() {
    let dir = tempdir();
    let (_hsm, agent) = alice_agent(dir.path(), "");
    let cert = std::fs::read(pki_file("bob-dual-rsa.der")).unwrap();
    for name in ["des-ede3-cbc", "des3", "aes192-cbc"] {
        let err = agent
            .client()
            .await
            .encrypt(EncryptParams {
                recipients: vec!["bob@example.org".into()],
                certificates: vec![cert.clone().into()],
                content: MSG.as_bytes().to_vec().into(),
                algorithm: Some(name.into()),
                ..Default::default()
            })
            .await
            .expect_err(name);
        assert_eq!(err.code(), Some(ErrorCode::PolicyDenied), "{name}: {err}");
        assert!(err.to_string().contains(name), "{err}");
    }
    // Nor can the configuration name it.
    let cfg = write_file(
        dir.path(),
        "des.toml",
        b"[policy]\nencryption_algorithms = [\"des-ede3-cbc\"]\n",
    );
    let out = agent
        .cli()
        .args(["config", "--config", path_str(&cfg)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("des-ede3-cbc"));
}

/// Encrypts `MSG` through `agent` to Carol (RSA) and Bob (EC), their certificates in the
/// request.
async fn encrypt_to_carol_and_bob(agent: &Agent) -> smime_agent_proto::EncryptResult {
    let cert = |n: &str| std::fs::read(pki_file(&format!("{n}.der"))).unwrap().into();
    agent
        .client()
        .await
        .encrypt(EncryptParams {
            recipients: vec!["carol@example.org".into(), "bob@example.org".into()],
            certificates: vec![cert("carol-san-rsa"), cert("bob-enc-ec")],
            sender: None,
            content: MSG.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("encrypt")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_decrypts_every_kind_of_envelope_the_agent_makes() {
    let dir = tempdir();
    for alg in ["aes128-cbc", "aes256-cbc", "aes128-gcm", "aes256-gcm"] {
        for oaep in [false, true] {
            let case = format!("{alg}-{oaep}");
            let (_hsm, agent) = alice_agent(
                &dir.path().join(&case),
                &format!("[policy]\nencryption_algorithms = [\"{alg}\"]\nrsa_oaep = {oaep}\n"),
            );
            let r = encrypt_to_carol_and_bob(&agent).await;
            assert_eq!(r.algorithm, alg);
            let transport: Vec<&str> = r
                .recipients
                .iter()
                .map(|x| x.key_transport.as_str())
                .collect();
            let rsa = if oaep { "rsa-oaep" } else { "rsa-pkcs1" };
            assert_eq!(transport[..2], [rsa, "ecdh"], "carol, bob");
            let text = String::from_utf8_lossy(&r.mime.0).to_string();
            let smime_type = if alg.ends_with("gcm") {
                "authEnveloped-data"
            } else {
                "enveloped-data"
            };
            assert!(text.contains(smime_type), "{case}: {text}");
            // Every recipient reads it with OpenSSL: RSA (v1.5 or OAEP) and ECDH.
            for who in ["carol-san-rsa", "bob-enc-ec"] {
                let got = openssl_decrypt(dir.path(), &r.mime.0, who)
                    .unwrap_or_else(|e| panic!("{case}: OpenSSL as {who}: {e}"));
                assert_eq!(got, MSG.as_bytes(), "{case} {who}");
            }
            // And Alice, the sender, through her agent.
            let mine = decrypt_answering(&agent.client().await, r.mime.0.clone(), PIN)
                .await
                .unwrap_or_else(|e| panic!("{case}: Alice: {e}"));
            assert_eq!(mine.mime.0, MSG.as_bytes());
            // OpenSSL names the algorithms the agent reports.
            let der_path = write_file(dir.path(), &format!("{case}.eml"), &r.mime.0);
            let printed = Command::new("openssl")
                .args(["cms", "-cmsout", "-print", "-in"])
                .arg(&der_path)
                .output()
                .unwrap();
            let printed = String::from_utf8_lossy(&printed.stdout).to_lowercase();
            let ossl_name = match alg {
                "aes128-cbc" => "aes-128-cbc",
                "aes256-cbc" => "aes-256-cbc",
                "aes128-gcm" => "aes-128-gcm",
                _ => "aes-256-gcm",
            };
            assert!(printed.contains(ossl_name), "{case}: {printed}");
            assert_eq!(printed.contains("rsaesoaep"), oaep, "{case}: {printed}");
        }
    }
}

/// `openssl cms -sign` as `name`, clear-signed (multipart/signed).
fn openssl_sign(dir: &Path, input: &[u8], name: &str) -> Vec<u8> {
    let path = write_file(dir, &format!("to-sign-{}", rand_suffix()), input);
    let out = Command::new("openssl")
        .args(["cms", "-sign", "-in"])
        .arg(&path)
        .arg("-signer")
        .arg(pki_file(&format!("{name}.pem")))
        .arg("-inkey")
        .arg(pki_file(&format!("{name}.key.pem")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reads_openssl_triple_wrapped_mail_layer_by_layer() {
    use smime_agent_proto::{MessageLayer, VerifyStatus};
    let dir = tempdir();
    let (_hsm, agent) = alice_agent(dir.path(), "");
    // Bob signs, encrypts to Alice, signs again: three OpenSSL runs.
    let inner = openssl_sign(dir.path(), MSG.as_bytes(), "bob-dual-rsa");
    let inner_path = write_file(dir.path(), "inner.eml", &inner);
    let out = Command::new("openssl")
        .args(["cms", "-encrypt", "-aes-256-cbc", "-in"])
        .arg(&inner_path)
        .arg(pki_file("alice-enc-ec.pem"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let outer = openssl_sign(dir.path(), &out.stdout, "bob-dual-rsa");
    let c = agent.client().await;
    let r = decrypt_answering(&c, outer.clone(), PIN)
        .await
        .expect("decrypt");
    let kinds = layer_kinds(&r.layers);
    assert_eq!(kinds, ["signed", "encrypted", "signed"]);
    assert_eq!(r.signatures, Some(VerifyStatus::Valid), "{:#?}", r.layers);
    for l in &r.layers {
        if let MessageLayer::Signed(s) = l {
            let signer = s.signers[0].signer.as_ref().unwrap();
            assert!(signer.emails.contains(&"bob@example.org".to_owned()));
        }
    }
    assert_eq!(r.mime.0, MSG.as_bytes());

    // The inner signature broken (the signed text changed after signing, before
    // encrypting): the message still decrypts, and says its signatures are not all valid.
    let text = String::from_utf8(inner).unwrap();
    let forged = text.replacen("For Bob", "For Eve", 1);
    assert_ne!(forged, text);
    let forged_path = write_file(dir.path(), "forged.eml", forged.as_bytes());
    let out = Command::new("openssl")
        .args(["cms", "-encrypt", "-aes-256-cbc", "-in"])
        .arg(&forged_path)
        .arg(pki_file("alice-enc-ec.pem"))
        .output()
        .unwrap();
    let forged_outer = openssl_sign(dir.path(), &out.stdout, "bob-dual-rsa");
    let c = agent.client().await;
    let r = decrypt_answering(&c, forged_outer.clone(), PIN)
        .await
        .expect("decrypt");
    assert_eq!(r.signatures, Some(VerifyStatus::Invalid), "{:#?}", r.layers);
    assert!(String::from_utf8_lossy(&r.mime.0).contains("For Eve"));

    // The CLI says the same, and its exit status follows the signatures.
    let pin = write_file(dir.path(), "pin", format!("{PIN}\n").as_bytes());
    let cli_decrypt = |message: &[u8]| {
        let input = write_file(dir.path(), &format!("in-{}", rand_suffix()), message);
        Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" decrypt --in \"$1\" --pin-fd 3 3<\"$2\"")
            .arg(agent_bin())
            .arg(&input)
            .arg(&pin)
            .env("SMIME_AGENT_SOCK", &agent.socket)
            .output()
            .unwrap()
    };
    let good = cli_decrypt(&outer);
    let said = String::from_utf8_lossy(&good.stderr);
    assert_eq!(good.status.code(), Some(0), "{said}");
    assert!(said.contains("layer 2, signer 1: good signature"), "{said}");
    assert!(said.contains("verified: every signature"), "{said}");
    assert_eq!(good.stdout, MSG.as_bytes());
    let bad = cli_decrypt(&forged_outer);
    let said = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{said}");
    assert!(said.contains("BAD SIGNATURE"), "{said}");
    assert!(said.contains("NOT verified"), "{said}");
    assert!(String::from_utf8_lossy(&bad.stdout).contains("For Eve"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_follows_the_capabilities_a_recipient_signed() {
    let dir = tempdir();
    let policy = "[policy]\nencryption_algorithms = [\"aes256-gcm\", \"aes128-cbc\"]\n";
    let (_hsm, agent) = alice_agent(dir.path(), policy);
    let to_bob = || async {
        agent
            .client()
            .await
            .encrypt(EncryptParams {
                recipients: vec!["bob@example.org".into()],
                certificates: vec![],
                sender: None,
                content: MSG.as_bytes().to_vec().into(),
                ..Default::default()
            })
            .await
    };
    // Nothing known of Bob's capabilities: the policy's first algorithm.
    assert_eq!(to_bob().await.unwrap().algorithm, "aes256-gcm");
    // Bob's mail (OpenSSL: AES-CBC, 3DES, RC2, DES, no GCM), signed with his signing
    // certificate; he is encrypted to with his other (EC) certificate.
    let signed = openssl_sign(dir.path(), MSG.as_bytes(), "bob-dual-rsa");
    let v = agent
        .client()
        .await
        .verify(smime_agent_proto::VerifyParams {
            content: signed.into(),
            validation: Default::default(),
            ..Default::default()
        })
        .await
        .expect("verify");
    assert_eq!(v.status, smime_agent_proto::VerifyStatus::Valid);
    let r = to_bob().await.unwrap();
    assert_eq!(r.algorithm, "aes128-cbc");
    let bob = openssl_decrypt(dir.path(), &r.mime.0, "bob-enc-ec").unwrap();
    assert_eq!(bob, MSG.as_bytes());

    // A policy of GCM only cannot reach Bob: he counts as a recipient without a usable
    // certificate, named with what he takes, and compose may still send unencrypted.
    drop(agent);
    let dir2 = dir.path().join("gcm-only");
    let (_hsm2, agent) = alice_agent(
        &dir2,
        "[policy]\nencryption_algorithms = [\"aes256-gcm\"]\n",
    );
    for e in std::fs::read_dir(dir.path().join("contacts")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir2.join("contacts").join(e.file_name())).unwrap();
    }
    let err = agent
        .client()
        .await
        .encrypt(EncryptParams {
            recipients: vec!["bob@example.org".into()],
            certificates: vec![],
            sender: None,
            content: MSG.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::RecipientWithoutCertificate),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("bob@example.org") && msg.contains("decrypts only aes256-cbc, aes128-cbc"),
        "{msg}"
    );
    let mail =
        b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: x\r\n\r\nhi\r\n";
    let r = agent
        .client()
        .await
        .compose(smime_agent_proto::ComposeParams {
            content: mail.to_vec().into(),
            encrypt: true,
            allow_unencrypted: true,
            certificates: vec![],
            sign: false,
        })
        .await
        .expect("compose --allow-unencrypted");
    assert!(!r.encrypted, "sent unencrypted, as asked");
    assert!(
        r.warnings.iter().any(|w| w.contains("bob@example.org")),
        "{:?}",
        r.warnings
    );
}

/// The CMS (DER) inside an `application/pkcs7-mime` entity.
fn cms_of(mime: &[u8]) -> Vec<u8> {
    match smime_agent::smime::mime::read(mime).unwrap() {
        smime_agent::smime::mime::Smime::Enveloped(der)
        | smime_agent::smime::mime::Smime::Pkcs7(der) => der,
        other => panic!("not an envelope: {other:?}"),
    }
}

/// The agent encrypts `MSG` to Carol (RSA, PKCS#1 v1.5) with `alg`; with `bob_ec`, to Bob
/// (EC) too, and Alice's own copy may use her EC key; without, every recipient is RSA.
async fn agent_envelope_for_carol(dir: &Path, alg: &str, bob_ec: bool) -> Vec<u8> {
    let dir = dir.join(format!("to-carol-{alg}-{bob_ec}-{}", rand_suffix()));
    let policy = format!("[policy]\nencryption_algorithms = [\"{alg}\"]\n");
    let r = if bob_ec {
        let (_hsm, agent) = alice_agent(&dir, &policy);
        encrypt_to_carol_and_bob(&agent).await
    } else {
        let (_hsm, agent) = softhsm_agent(
            &dir,
            "alice",
            &["alice-sign-rsa", "alice-enc-rsa"],
            AgentSpec {
                extra_config: policy,
                ..Default::default()
            },
        );
        let carol = std::fs::read(pki_file("carol-san-rsa.der")).unwrap();
        agent
            .client()
            .await
            .encrypt(EncryptParams {
                recipients: vec!["carol@example.org".into()],
                certificates: vec![carol.into()],
                sender: Some("alice@example.org".into()),
                content: MSG.as_bytes().to_vec().into(),
                ..Default::default()
            })
            .await
            .expect("encrypt")
    };
    assert_eq!(r.algorithm, alg);
    cms_of(&r.mime.0)
}

// gpgsm 2.2 and NSS 3.87 take RSA PKCS#1 v1.5 with AES-CBC only (common/peers.rs): these
// are the envelopes tested with them, both ways.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpgsm_and_the_agent_read_each_others_rsa_envelopes() {
    let dir = tempdir();
    let g = Gpgsm::new(dir.path(), &["carol-san-rsa"], &["alice-enc-rsa"]);
    let (_hsm, agent) = alice_agent(dir.path(), "");
    // gpgsm encrypts to Alice (AES-128, its default, and AES-256); her agent decrypts.
    for extra in [&[][..], &["--cipher-algo", "AES256"][..]] {
        let cms = g.encrypt("alice@example.org", MSG.as_bytes(), extra);
        let r = decrypt_answering(&agent.client().await, cms, PIN)
            .await
            .unwrap_or_else(|e| panic!("gpgsm {extra:?}: {e}"));
        assert_eq!(r.mime.0, MSG.as_bytes());
        assert!(r.certificate.emails.contains(&"alice@example.org".into()));
    }
    // The agent encrypts to Carol; gpgsm decrypts with her key.
    // With an EC recipient beside her RSA one too: gpgsm skips what it cannot use.
    for (alg, bob_ec) in [
        ("aes128-cbc", false),
        ("aes256-cbc", false),
        ("aes256-cbc", true),
    ] {
        let cms = agent_envelope_for_carol(dir.path(), alg, bob_ec).await;
        let (got, said) = g.decrypt(&cms);
        assert_eq!(
            got,
            MSG.as_bytes(),
            "gpgsm, {alg}, Bob too: {bob_ec}: {said}"
        );
    }
    // A changed envelope does not decrypt for gpgsm either: the check above proves something.
    let mut cms = agent_envelope_for_carol(dir.path(), "aes256-cbc", false).await;
    let n = cms.len();
    cms[n - 20] ^= 0x40;
    assert_ne!(g.decrypt(&cms).0, MSG.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nss_and_the_agent_read_each_others_rsa_envelopes() {
    let dir = tempdir();
    let nss = Nss::new(dir.path(), &["carol-san-rsa"], &["alice-enc-rsa"]);
    let (_hsm, agent) = alice_agent(dir.path(), "");
    // NSS encrypts to Alice; her agent decrypts.
    let cms = nss.encrypt(dir.path(), "alice-enc-rsa", MSG.as_bytes());
    let r = decrypt_answering(&agent.client().await, cms, PIN)
        .await
        .expect("the agent decrypts NSS's envelope");
    assert_eq!(r.mime.0, MSG.as_bytes());
    // The agent encrypts to Carol; NSS decrypts with her key.
    for alg in ["aes128-cbc", "aes256-cbc"] {
        let cms = agent_envelope_for_carol(dir.path(), alg, false).await;
        let got = nss
            .decrypt(dir.path(), &cms)
            .unwrap_or_else(|e| panic!("NSS, {alg}: {e}"));
        assert_eq!(got, MSG.as_bytes(), "{alg}");
    }
    let mut cms = agent_envelope_for_carol(dir.path(), "aes256-cbc", false).await;
    let n = cms.len();
    cms[n - 20] ^= 0x40;
    assert_ne!(
        nss.decrypt(dir.path(), &cms).ok().as_deref(),
        Some(MSG.as_bytes())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_garbage_and_foreign_messages_get_clear_errors() {
    let dir = tempdir();
    let (_hsm, agent) = alice_agent(dir.path(), "");
    // For Bob only: Alice's agent cannot open it.
    let bob_only = {
        let input = write_file(dir.path(), "m.txt", MSG.as_bytes());
        let out = Command::new("openssl")
            .args(["cms", "-encrypt", "-aes-256-cbc", "-in"])
            .arg(&input)
            .arg(pki_file("bob-dual-rsa.pem"))
            .output()
            .unwrap();
        out.stdout
    };
    let c = agent.client().await;
    let err = decrypt_answering(&c, bob_only, PIN).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotARecipient), "{err}");

    // An authenticated envelope (AES-GCM) with one byte of its end changed: the content or
    // the tag, either way it must not decrypt.
    drop(agent);
    let (_hsm2, agent) = alice_agent(
        &dir.path().join("gcm"),
        "[policy]\nencryption_algorithms = [\"aes256-gcm\"]\n",
    );
    let client = agent.client().await;
    let r = client
        .encrypt(EncryptParams {
            recipients: vec!["bob@example.org".into()],
            certificates: vec![],
            sender: None,
            content: MSG.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let text = String::from_utf8(r.mime.0.clone()).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut der = b64.decode(body.replace("\r\n", "")).unwrap();
    let at = der.len() - 30;
    der[at] ^= 0x01;
    let tampered = format!("{head}\r\n\r\n{}\r\n", b64.encode(&der)).into_bytes();
    let c = agent.client().await;
    let err = decrypt_answering(&c, tampered, PIN).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::DecryptFailed), "{err}");

    let garbage: &[&[u8]] = &[
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\nMIIBIjANBgkqhkiG9w0BAQEFAA==\r\n",
        b"\x30\x82\xff\xff\x06\x09",
        b"Content-Type: text/plain\r\n\r\nnot encrypted\r\n",
    ];
    for g in garbage {
        let c = agent.client().await;
        let err = decrypt_answering(&c, g.to_vec(), PIN).await.unwrap_err();
        assert!(
            matches!(
                err.code(),
                Some(ErrorCode::BadMessage | ErrorCode::BadRequest)
            ),
            "{:?}: {err}",
            String::from_utf8_lossy(g)
        );
    }
    // The agent is fine afterwards.
    let c = agent.client().await;
    let ok = decrypt_answering(&c, r.mime.0, PIN)
        .await
        .expect("still decrypts");
    assert_eq!(ok.mime.0, MSG.as_bytes());
}

#[test]
fn cli_encrypt_and_decrypt_round_trip() {
    let dir = tempdir();
    let (_hsm, agent) = alice_agent(dir.path(), "");
    let input = write_file(dir.path(), "msg.txt", MSG.as_bytes());
    let enc = dir.path().join("enc.eml");
    let out = agent
        .cli()
        .args([
            "encrypt",
            "--to",
            "bob@example.org",
            "--from",
            "alice@example.org",
            "--cert",
        ])
        .arg(pki_file("bob-enc-ec.pem"))
        .arg("--in")
        .arg(&input)
        .arg("--out")
        .arg(&enc)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        openssl_decrypt(dir.path(), &std::fs::read(&enc).unwrap(), "bob-enc-ec").unwrap(),
        MSG.as_bytes()
    );
    let pin = write_file(dir.path(), "pin", format!("{PIN}\n").as_bytes());
    let dec = dir.path().join("dec.txt");
    let out = Command::new("sh")
        .arg("-c")
        .arg("exec \"$0\" decrypt --in \"$1\" --out \"$2\" --pin-fd 3 3<\"$3\"")
        .arg(agent_bin())
        .arg(&enc)
        .arg(&dec)
        .arg(&pin)
        .env("SMIME_AGENT_SOCK", &agent.socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&dec).unwrap(), MSG.as_bytes());
    let out = agent
        .cli()
        .args(["encrypt", "--to", "nobody@example.org", "--in"])
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("recipient_without_certificate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_limit_requests_and_messages_are_limit_exceeded_and_the_agent_goes_on() {
    let dir = tempdir();
    let (_hsm, agent) = alice_agent(dir.path(), "");
    // More than 1000 recipients.
    let many: Vec<String> = (0..1001).map(|i| format!("r{i}@example.org")).collect();
    let err = agent
        .client()
        .await
        .encrypt(EncryptParams {
            recipients: many,
            certificates: vec![],
            sender: None,
            content: MSG.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::LimitExceeded), "{err}");

    // Nine envelopes one inside the other, and an envelope inside nine signatures: more
    // layers than the agent reads (8).
    let openssl = |args: &[&str], input: &[u8]| {
        common::openssl(dir.path(), args, input).unwrap_or_else(|e| panic!("{e}"))
    };
    let alice = pki_file("alice-enc-rsa.pem");
    let alice = alice.to_str().unwrap();
    let mut nested = MSG.as_bytes().to_vec();
    for _ in 0..9 {
        nested = openssl(
            &["cms", "-encrypt", "-aes-128-cbc", "-recip", alice],
            &nested,
        );
    }
    let err = decrypt_answering(&agent.client().await, nested, PIN)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::LimitExceeded), "{err}");
    assert!(err.to_string().contains("more than 8"), "{err}");

    let (cert, key) = (
        pki_file("bob-dual-rsa.pem"),
        pki_file("bob-dual-rsa.key.pem"),
    );
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let mut signed = openssl(
        &["cms", "-encrypt", "-aes-128-cbc", "-recip", alice],
        MSG.as_bytes(),
    );
    for _ in 0..9 {
        signed = openssl(
            &["cms", "-sign", "-nodetach", "-signer", cert, "-inkey", key],
            &signed,
        );
    }
    let err = decrypt_answering(&agent.client().await, signed, PIN)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::LimitExceeded), "{err}");

    // The agent goes on.
    let one = openssl(
        &["cms", "-encrypt", "-aes-128-cbc", "-recip", alice],
        MSG.as_bytes(),
    );
    let r = decrypt_answering(&agent.client().await, one, PIN)
        .await
        .expect("still decrypts");
    assert_eq!(r.mime.0, MSG.as_bytes());
}
