//! Encrypting and decrypting through the running agent, with SoftHSM keys, checked against
//! OpenSSL both ways.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use smime_agent_proto::client::{Client, ClientError};
use smime_agent_proto::{DecryptParams, EncryptParams, ErrorCode};

const MSG: &str =
    "Content-Type: text/plain; charset=utf-8\r\n\r\nFor Bob, and for Alice's sent folder.\r\n";

/// Alice's agent: her keys on a SoftHSM token, Bob's certificates in her contacts.
fn alice_agent(dir: &Path, extra: &str) -> (SoftHsm, Agent) {
    let hsm = SoftHsm::new(&dir.join("softhsm"));
    hsm.add_token(
        "alice",
        PIN,
        &["alice-sign-rsa", "alice-enc-rsa", "alice-enc-ec"],
    );
    let contacts = dir.join("contacts");
    std::fs::create_dir_all(&contacts).unwrap();
    for c in ["bob-dual-rsa", "bob-enc-ec"] {
        std::fs::copy(
            pki_file(&format!("{c}.pem")),
            contacts.join(format!("{c}.pem")),
        )
        .unwrap();
    }
    let agent = Agent::start(
        &dir.join("agent"),
        AgentSpec {
            softhsm: Some(&hsm),
            extra_config: format!(
                "[contacts]\ndir = \"{}\"\n\n[[identity]]\naddress = \"alice@example.org\"\n\n{extra}",
                contacts.display()
            ),
            ..Default::default()
        },
    );
    (hsm, agent)
}

/// `openssl cms -decrypt` with the PKI's key of `name`.
fn openssl_decrypt(dir: &Path, mime: &[u8], name: &str) -> Result<Vec<u8>, String> {
    let input = write_file(dir, &format!("enc-{}.eml", rand_suffix()), mime);
    let out = Command::new("openssl")
        .args(["cms", "-decrypt", "-in"])
        .arg(&input)
        .arg("-recip")
        .arg(pki_file(&format!("{name}.pem")))
        .arg("-inkey")
        .arg(pki_file(&format!("{name}.key.pem")))
        .output()
        .unwrap();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

async fn decrypt_answering(
    client: &Client,
    content: Vec<u8>,
    pin: &str,
) -> Result<smime_agent_proto::DecryptResult, ClientError> {
    let mut events = client.take_events().expect("events");
    let (_, rx) = client
        .start(smime_agent_proto::Op::Decrypt(DecryptParams {
            content: content.into(),
        }))
        .await
        .unwrap();
    let mut rx = rx;
    loop {
        tokio::select! {
            ev = events.recv() => {
                if let Some(smime_agent_proto::Event::PinNeeded(p)) = ev {
                    client.pin(p.prompt, Some(smime_agent_proto::Pin::new(pin))).await.unwrap();
                }
            }
            out = &mut rx => {
                return match out.unwrap() {
                    smime_agent_proto::Outcome::Ok(v) => Ok(serde_json::from_value(v).unwrap()),
                    smime_agent_proto::Outcome::Error(e) => Err(ClientError::Agent(Box::new(e))),
                };
            }
        }
    }
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
        // And OpenSSL with Alice's key too.
        let alice_cert = &r
            .recipients
            .iter()
            .find(|x| x.source == "own")
            .unwrap()
            .subject;
        assert!(alice_cert.contains("alice@example.org"));
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
    let cases: &[(&str, &[&str])] = &[
        ("alice-enc-rsa", &["-aes-256-cbc"]),
        (
            "alice-enc-rsa",
            &["-aes-128-cbc", "-keyopt", "rsa_padding_mode:oaep"],
        ),
        (
            "alice-enc-rsa",
            &[
                "-aes-256-cbc",
                "-keyopt",
                "rsa_padding_mode:oaep",
                "-keyopt",
                "rsa_oaep_md:sha256",
            ],
        ),
        ("alice-enc-rsa", &["-aes-256-gcm"]),
        ("alice-enc-ec", &["-aes-256-cbc"]),
        ("alice-enc-ec", &["-aes-128-gcm"]),
    ];
    for (name, opts) in cases {
        let out = Command::new("openssl")
            .args(["cms", "-encrypt", "-in"])
            .arg(&input)
            .arg("-recip")
            .arg(pki_file(&format!("{name}.pem")))
            .args(*opts)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let c = agent.client().await;
        let r = decrypt_answering(&c, out.stdout, PIN)
            .await
            .unwrap_or_else(|e| panic!("{name} {opts:?}: {e}"));
        assert_eq!(r.mime.0, MSG.as_bytes(), "{name} {opts:?}");
    }
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
