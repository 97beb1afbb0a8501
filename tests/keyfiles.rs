//! PKCS#12 key files as OpenSSL writes them, read by the agent's own PKCS#12 reader
//! (src/tokens/pkcs12.rs): today's default (PBES2, AES-256, PBKDF2, SHA-256 MAC), OpenSSL
//! 1.x's legacy defaults (RC2-40 certificates, 3DES key, SHA-1 MAC), 3DES for both, an
//! unencrypted certificate safe with a SHA-512 MAC, no MAC at all, and an empty passphrase.
//! Each key signs through the running agent and OpenSSL verifies the signature.

mod common;

use std::path::Path;

use common::*;
use smime_agent_proto::ErrorCode;
use smime_agent_proto::client::ClientError;

/// A key file of the test PKI's `name`, written by `openssl pkcs12 -export` with `options`.
/// With `cert_beside`, its certificate as NAME.pem next to it (how the agent lists a key
/// file without its passphrase).
fn key_file(dir: &Path, name: &str, passphrase: &str, options: &[&str], cert_beside: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let out = dir.join(format!("{name}.p12"));
    peers::export_p12(pki(), name, passphrase, options, &out);
    if cert_beside {
        std::fs::copy(
            pki_file(&format!("{name}.pem")),
            dir.join(format!("{name}.pem")),
        )
        .unwrap();
    }
}

fn agent_with_keys(dir: &Path, keys: &Path) -> Agent {
    Agent::start(
        &dir.join("agent"),
        AgentSpec {
            extra_config: format!("[soft_store]\ndir = \"{}\"\n", keys.display()),
            ..Default::default()
        },
    )
}

/// Signs as Alice with the key file's passphrase; OpenSSL must verify. Returns the number
/// of passphrase prompts.
async fn signs_and_openssl_verifies(
    agent: &Agent,
    dir: &Path,
    passphrase: &str,
    key: &str,
) -> usize {
    let client = agent.client().await;
    let (res, prompts) = sign_answering(
        &client,
        "alice@example.org",
        sample_entity("from a key file"),
        None,
        passphrase,
    )
    .await;
    let res = res.unwrap_or_else(|e| panic!("sign with the key file: {e}"));
    assert!(!res.certificate.hardware);
    assert_eq!(res.certificate.key, key);
    let (ok, err) = openssl_verifies("cms", &res.mime.0, dir);
    assert!(ok, "{err}");
    prompts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_files_in_every_form_openssl_writes_sign_and_openssl_verifies() {
    let cases: [(&str, &str, &[&str]); 5] = [
        ("today's default", "alice-sign-rsa", &[]),
        ("OpenSSL 1.x legacy", "alice-sign-ec", &["-legacy"]),
        (
            "3DES throughout",
            "alice-sign-rsa",
            &[
                "-keypbe",
                "PBE-SHA1-3DES",
                "-certpbe",
                "PBE-SHA1-3DES",
                "-macalg",
                "sha1",
            ],
        ),
        (
            "clear certificates, SHA-512 MAC",
            "alice-sign-ec",
            &["-certpbe", "NONE", "-macalg", "sha512", "-iter", "1"],
        ),
        ("no MAC", "alice-sign-rsa", &["-nomac"]),
    ];
    for (what, name, options) in cases {
        let dir = tempdir();
        let keys = dir.path().join("keys");
        key_file(&keys, name, "p12 secret", options, true);
        let agent = agent_with_keys(dir.path(), &keys);
        let key = if name.ends_with("rsa") {
            "rsa-2048"
        } else {
            "ec-p256"
        };
        let prompts = signs_and_openssl_verifies(&agent, dir.path(), "p12 secret", key).await;
        assert_eq!(prompts, 1, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_with_an_empty_passphrase_gives_its_certificate_and_key_without_a_prompt() {
    let dir = tempdir();
    let keys = dir.path().join("keys");
    // No certificate beside it: the agent reads it from the file itself.
    key_file(&keys, "alice-sign-ec", "", &[], false);
    let agent = agent_with_keys(dir.path(), &keys);
    let prompts = signs_and_openssl_verifies(&agent, dir.path(), "unused", "ec-p256").await;
    assert_eq!(prompts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_passphrase_is_pin_incorrect_and_the_right_one_then_works() {
    // Without a MAC nothing but the decryption tells a wrong passphrase: it must still be
    // pin_incorrect, every time, never a detail about the decrypted bytes.
    for options in [&[][..], &["-legacy"][..], &["-nomac"][..]] {
        let dir = tempdir();
        let keys = dir.path().join("keys");
        key_file(&keys, "alice-sign-rsa", "right one", options, true);
        let agent = agent_with_keys(dir.path(), &keys);
        let client = agent.client().await;
        let (res, prompts) = sign_answering(
            &client,
            "alice@example.org",
            sample_entity("wrong"),
            None,
            "wrong one",
        )
        .await;
        assert_eq!(prompts, 1, "{options:?}: one try, never retried");
        match res {
            Err(ClientError::Agent(e)) => assert_eq!(e.code, ErrorCode::PinIncorrect, "{e:?}"),
            other => panic!("{options:?}: {other:?}"),
        }
        let prompts = signs_and_openssl_verifies(&agent, dir.path(), "right one", "rsa-2048").await;
        assert_eq!(prompts, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_that_is_not_pkcs12_says_so_and_the_agent_keeps_serving() {
    let dir = tempdir();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    // A truncated file: its certificate is beside it, so it is listed; unlocking it fails.
    key_file(&keys, "alice-sign-rsa", "secret", &[], true);
    let p12 = keys.join("alice-sign-rsa.p12");
    let data = std::fs::read(&p12).unwrap();
    std::fs::write(&p12, &data[..data.len() / 2]).unwrap();
    let agent = agent_with_keys(dir.path(), &keys);
    let client = agent.client().await;
    let (res, _) = sign_answering(
        &client,
        "alice@example.org",
        sample_entity("broken"),
        None,
        "secret",
    )
    .await;
    let Err(ClientError::Agent(e)) = res else {
        panic!("a truncated key file signed: {res:?}")
    };
    assert_ne!(e.code, ErrorCode::PinIncorrect, "{e:?}");
    assert!(e.message.contains("PKCS#12"), "{}", e.message);
    // Still serving.
    client
        .status()
        .await
        .expect("status after the broken key file");
}
