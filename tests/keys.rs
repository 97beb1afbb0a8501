//! The raw key operations the PKCS#11 module stands on (`keys`, `key_login`, `key_sign`,
//! `key_decrypt`, `key_derive`), through the real agent on SoftHSM keys; what they produce
//! is checked with OpenSSL.

mod common;

use std::process::Command;

use common::*;
use sha2::Digest;
use smime_agent_proto::{
    KeyDecryptMechanism, KeyDecryptParams, KeyDeriveParams, KeyOaepHash, KeyOpResult,
    KeySignMechanism, KeySignParams, KeysParams, KeysResult, Op,
};

const KEYS: &[&str] = &[
    "alice-sign-rsa",
    "alice-sign-ec",
    "alice-enc-rsa",
    "alice-enc-ec",
];

fn start_agent(dir: &std::path::Path, extra: &str) -> (SoftHsm, Agent) {
    softhsm_agent(
        dir,
        "alice",
        KEYS,
        AgentSpec {
            extra_config: extra.into(),
            ..Default::default()
        },
    )
}

/// Runs a key op, answering PIN prompts; its bytes, or the error code and message.
async fn key_op(agent: &Agent, op: Op) -> Result<Vec<u8>, (String, String)> {
    let r: Result<KeyOpResult, _> = op_answering(&agent.client().await, op, PIN).await;
    r.map(|r| r.data.0).map_err(|e| match e {
        smime_agent_proto::client::ClientError::Agent(b) => {
            (format!("{:?}", b.code), b.message.clone())
        }
        other => panic!("{other}"),
    })
}

async fn keys(agent: &Agent) -> KeysResult {
    op_answering(&agent.client().await, Op::Keys(KeysParams {}), PIN)
        .await
        .unwrap()
}

fn fingerprint(name: &str) -> String {
    let der = std::fs::read(pki_file(&format!("{name}.der"))).unwrap();
    hex(&sha2::Sha256::digest(&der))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// OpenSSL checks a raw signature over `data` with the certificate's public key.
fn openssl_verifies(dir: &std::path::Path, name: &str, data: &[u8], sig: &[u8], ec: bool) -> bool {
    let pubkey = dir.join(format!("{name}.pub.pem"));
    let out = Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(pki_file(&format!("{name}.pem")))
        .output()
        .unwrap();
    std::fs::write(&pubkey, out.stdout).unwrap();
    let data_file = write_file(dir, &format!("{name}.data"), data);
    let sig_file = write_file(dir, &format!("{name}.sig"), sig);
    let mut cmd = Command::new("openssl");
    cmd.args(["pkeyutl", "-verify", "-pubin", "-inkey"])
        .arg(&pubkey)
        .arg("-in")
        .arg(&data_file)
        .arg("-sigfile")
        .arg(&sig_file);
    if !ec {
        // The data is a whole DigestInfo: no digest of OpenSSL's own.
        cmd.args(["-pkeyopt", "rsa_padding_mode:pkcs1"]);
    }
    cmd.status().unwrap().success()
}

/// r || s as OpenSSL wants it: a DER ECDSA-Sig-Value.
fn ecdsa_der(sig: &[u8]) -> Vec<u8> {
    p256::ecdsa::Signature::from_slice(sig)
        .unwrap()
        .to_der()
        .as_bytes()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_lists_each_certificate_with_what_its_key_may_do() {
    let dir = tempdir();
    let (_hsm, agent) = start_agent(dir.path(), "");
    let k = keys(&agent).await;
    assert!(k.operations_allowed);
    assert_eq!(k.tokens.len(), 1);
    let t = &k.tokens[0];
    assert!(!t.logged_in && !t.hardware);
    let entry = |name: &str| {
        t.keys
            .iter()
            .find(|e| e.key == fingerprint(name))
            .unwrap_or_else(|| panic!("{name} listed"))
    };
    for name in KEYS {
        let e = entry(name);
        assert!(e.private_key, "{name}");
        assert_eq!(
            e.certificate.0,
            std::fs::read(pki_file(&format!("{name}.der"))).unwrap()
        );
    }
    let flags = |n: &str| (entry(n).sign, entry(n).decrypt, entry(n).derive);
    assert_eq!(flags("alice-sign-rsa"), (true, false, false));
    assert_eq!(flags("alice-sign-ec"), (true, false, false));
    assert_eq!(flags("alice-enc-rsa"), (false, true, false));
    assert_eq!(flags("alice-enc-ec"), (false, false, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_sign_makes_signatures_openssl_verifies() {
    let dir = tempdir();
    let (_hsm, agent) = start_agent(dir.path(), "");
    let hash = sha2::Sha256::digest(b"the message");
    // DigestInfo for SHA-256.
    let mut digest_info = vec![
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    digest_info.extend_from_slice(&hash);
    let sig = key_op(
        &agent,
        Op::KeySign(KeySignParams {
            key: fingerprint("alice-sign-rsa"),
            mechanism: KeySignMechanism::RsaPkcs,
            data: digest_info.clone().into(),
        }),
    )
    .await
    .expect("RSA signature");
    assert!(openssl_verifies(
        dir.path(),
        "alice-sign-rsa",
        &digest_info,
        &sig,
        false
    ));

    let sig = key_op(
        &agent,
        Op::KeySign(KeySignParams {
            key: fingerprint("alice-sign-ec"),
            mechanism: KeySignMechanism::Ecdsa,
            data: hash.to_vec().into(),
        }),
    )
    .await
    .expect("ECDSA signature");
    assert!(openssl_verifies(
        dir.path(),
        "alice-sign-ec",
        &hash,
        &ecdsa_der(&sig),
        true
    ));
    // A signature over other bytes does not verify: the check above means something.
    assert!(!openssl_verifies(
        dir.path(),
        "alice-sign-ec",
        b"other bytes 0123456789abcdef0",
        &ecdsa_der(&sig),
        true
    ));

    // RSA-PSS over the hash (SHA-256, MGF1-SHA-256, 32 bytes of salt), as OpenSSL checks it.
    let sig = key_op(
        &agent,
        Op::KeySign(KeySignParams {
            key: fingerprint("alice-sign-rsa"),
            mechanism: KeySignMechanism::RsaPss {
                hash: KeyOaepHash::Sha256,
                salt_len: 32,
            },
            data: hash.to_vec().into(),
        }),
    )
    .await
    .expect("RSA-PSS signature");
    let pubkey = dir.path().join("alice-sign-rsa.pub.pem");
    let data_file = write_file(dir.path(), "hash.bin", &hash);
    let sig_file = write_file(dir.path(), "pss.sig", &sig);
    let verified = |salt: &str| {
        Command::new("openssl")
            .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
            .arg(&pubkey)
            .arg("-in")
            .arg(&data_file)
            .arg("-sigfile")
            .arg(&sig_file)
            .args([
                "-pkeyopt",
                "rsa_padding_mode:pss",
                "-pkeyopt",
                "digest:sha256",
            ])
            .args(["-pkeyopt", &format!("rsa_pss_saltlen:{salt}")])
            .status()
            .unwrap()
            .success()
    };
    assert!(verified("32"), "OpenSSL verifies the PSS signature");
    assert!(!verified("20"), "and checks the salt length it was told");
    // The longest salt a 2048-bit key holds with SHA-256 (256 - 32 - 2 bytes) signs; one
    // byte more, or the largest number the protocol carries, is a bad request, answered
    // before any backend sizes a buffer from it.
    let pss = |salt_len: u32| {
        Op::KeySign(KeySignParams {
            key: fingerprint("alice-sign-rsa"),
            mechanism: KeySignMechanism::RsaPss {
                hash: KeyOaepHash::Sha256,
                salt_len,
            },
            data: hash.to_vec().into(),
        })
    };
    key_op(&agent, pss(222)).await.expect("the longest salt");
    for salt_len in [223, u32::MAX] {
        let err = key_op(&agent, pss(salt_len)).await.unwrap_err();
        assert_eq!(err.0, "BadRequest", "{salt_len}: {err:?}");
        assert!(err.1.contains("salt"), "{err:?}");
    }

    // The key usage decides: the encryption key does not sign.
    let err = key_op(
        &agent,
        Op::KeySign(KeySignParams {
            key: fingerprint("alice-enc-rsa"),
            mechanism: KeySignMechanism::RsaPkcs,
            data: digest_info.into(),
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(err.0, "PolicyDenied", "{err:?}");
    // Every use is in the audit log, with the operation.
    let log = agent.log_text();
    assert!(
        log.contains("op=\"key_sign\"") || log.contains("op=key_sign"),
        "{log}"
    );
}

/// OpenSSL encrypts `secret` to the certificate `name` with the given pkeyutl options.
fn openssl_encrypt(dir: &std::path::Path, name: &str, secret: &[u8], opts: &[&str]) -> Vec<u8> {
    let input = write_file(dir, "secret.bin", secret);
    let out = Command::new("openssl")
        .args(["pkeyutl", "-encrypt", "-certin", "-inkey"])
        .arg(pki_file(&format!("{name}.pem")))
        .arg("-in")
        .arg(&input)
        .args(opts)
        .output()
        .unwrap();
    ok("openssl", &out);
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_decrypt_opens_what_openssl_encrypts_and_refuses_bad_padding_alike() {
    let dir = tempdir();
    let (_hsm, agent) = start_agent(dir.path(), "");
    let secret = b"a content key of 32 bytes!!!!!!";
    let key = fingerprint("alice-enc-rsa");
    let cases: [(&[&str], KeyDecryptMechanism); 3] = [
        (
            &["-pkeyopt", "rsa_padding_mode:pkcs1"],
            KeyDecryptMechanism::RsaPkcs,
        ),
        (
            &["-pkeyopt", "rsa_padding_mode:oaep"],
            KeyDecryptMechanism::RsaOaep {
                hash: KeyOaepHash::Sha1,
            },
        ),
        (
            &[
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                "rsa_oaep_md:sha256",
                "-pkeyopt",
                "rsa_mgf1_md:sha256",
            ],
            KeyDecryptMechanism::RsaOaep {
                hash: KeyOaepHash::Sha256,
            },
        ),
    ];
    for (opts, mechanism) in cases {
        let c = openssl_encrypt(dir.path(), "alice-enc-rsa", secret, opts);
        let plain = key_op(
            &agent,
            Op::KeyDecrypt(KeyDecryptParams {
                key: key.clone(),
                mechanism,
                data: c.clone().into(),
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("{opts:?}: {e:?}"));
        assert_eq!(plain, secret, "{opts:?}");
        // One bit flipped: bad padding, which answers as every padding failure does.
        let mut bad = c;
        bad[40] ^= 0x08;
        let err = key_op(
            &agent,
            Op::KeyDecrypt(KeyDecryptParams {
                key: key.clone(),
                mechanism,
                data: bad.into(),
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(err.0, "DecryptFailed", "{opts:?} {err:?}");
    }
    // PKCS#1 v1.5 ciphertext read as OAEP: the same answer.
    let c = openssl_encrypt(
        dir.path(),
        "alice-enc-rsa",
        secret,
        &["-pkeyopt", "rsa_padding_mode:pkcs1"],
    );
    let err = key_op(
        &agent,
        Op::KeyDecrypt(KeyDecryptParams {
            key,
            mechanism: KeyDecryptMechanism::RsaOaep {
                hash: KeyOaepHash::Sha1,
            },
            data: c.into(),
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(err.0, "DecryptFailed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_derive_agrees_the_secret_the_peer_computes() {
    let dir = tempdir();
    let (_hsm, agent) = start_agent(dir.path(), "");
    // The peer: an ephemeral P-256 key in software; its secret with Alice's public key.
    use p256::elliptic_curve::Generate;
    let peer =
        p256::SecretKey::generate_from_rng(&mut getrandom::rand_core::UnwrapErr(getrandom::SysRng));
    let cert = std::fs::read(pki_file("alice-enc-ec.der")).unwrap();
    let facts = smime_agent::certs::CertFacts::from_der(&cert).unwrap();
    let alice_pub = p256::PublicKey::from_sec1_bytes(
        facts
            .cert
            .tbs_certificate()
            .subject_public_key_info()
            .subject_public_key
            .raw_bytes(),
    )
    .unwrap();
    let expected = p256::ecdh::diffie_hellman(peer.to_nonzero_scalar(), alice_pub.as_affine());
    let z = key_op(
        &agent,
        Op::KeyDerive(KeyDeriveParams {
            key: fingerprint("alice-enc-ec"),
            public_point: peer.public_key().to_sec1_bytes().to_vec().into(),
        }),
    )
    .await
    .expect("ECDH");
    assert_eq!(&z[..], &expected.raw_secret_bytes()[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_can_turn_raw_operations_off_and_keep_software_keys_out() {
    let dir = tempdir();
    let (_hsm, agent) = start_agent(dir.path(), "[policy]\nraw_key_operations = false\n");
    let k = keys(&agent).await;
    assert!(!k.operations_allowed);
    let err = key_op(
        &agent,
        Op::KeySign(KeySignParams {
            key: fingerprint("alice-sign-ec"),
            mechanism: KeySignMechanism::Ecdsa,
            data: vec![1u8; 32].into(),
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(err.0, "PolicyDenied", "{err:?}");

    let dir = tempdir();
    let (_hsm, agent) = start_agent(dir.path(), "[policy]\nsmart_card_only = true\n");
    assert!(
        keys(&agent).await.tokens.is_empty(),
        "SoftHSM keys are not smart cards"
    );
    let err = key_op(
        &agent,
        Op::KeySign(KeySignParams {
            key: fingerprint("alice-sign-ec"),
            mechanism: KeySignMechanism::Ecdsa,
            data: vec![1u8; 32].into(),
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(err.0, "PolicyDenied", "{err:?}");
}
