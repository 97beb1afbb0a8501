//! Composing outgoing mail under policy, checked with OpenSSL as the recipients would.

mod common;

use std::path::Path;

use common::*;
use smime_agent_proto::client::{Client, ClientError};
use smime_agent_proto::{ComposeParams, ComposeResult, ErrorCode, Op};

const MAIL: &str = "From: Alice <alice@example.org>\nTo: Bob <bob@example.org>\nBcc: carol@example.org\nSubject: quarterly numbers\nContent-Type: text/plain; charset=utf-8\n\nThe numbers are attached in spirit.\n";

fn agent_with(dir: &Path, policy: &str) -> (SoftHsm, Agent) {
    agent_with_contacts(
        dir,
        &["alice-sign-rsa", "alice-enc-rsa"],
        &["bob-enc-ec", "carol-san-rsa"],
        &format!("[policy]\n{policy}\n"),
    )
}

async fn compose(
    client: &Client,
    mail: &str,
    sign: bool,
    encrypt: bool,
    allow_unencrypted: bool,
) -> Result<ComposeResult, ClientError> {
    let op = Op::Compose(ComposeParams {
        content: mail.as_bytes().to_vec().into(),
        sign,
        encrypt,
        allow_unencrypted,
        certificates: vec![],
    });
    op_answering(client, op, PIN).await
}

fn verify(dir: &Path, m: &[u8]) -> Result<Vec<u8>, String> {
    let ca = pki_file("chain.pem");
    openssl(dir, &["cms", "-verify", "-CAfile", ca.to_str().unwrap()], m)
}

fn text(m: &[u8]) -> String {
    String::from_utf8_lossy(m).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_mail_keeps_its_headers_outside_and_drops_bcc() {
    let dir = tempdir();
    let (_hsm, agent) = agent_with(dir.path(), "");
    let c = agent.client().await;
    let r = compose(&c, MAIL, true, false, false)
        .await
        .expect("compose");
    assert!(r.signed && !r.encrypted);
    assert_eq!(r.messages.len(), 1);
    let m = &r.messages[0];
    assert_eq!(m.recipients, ["bob@example.org", "carol@example.org"]);
    let t = text(&m.mime.0);
    assert!(t.starts_with("From: Alice <alice@example.org>\r\nTo: Bob <bob@example.org>\r\nSubject: quarterly numbers\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed"), "{t}");
    assert!(
        !t.to_ascii_lowercase().contains("\nbcc:") && !t.contains("carol@"),
        "Bcc leaked:\n{t}"
    );
    let content = verify(dir.path(), &m.mime.0).expect("OpenSSL verifies");
    assert!(
        text(&content).contains("charset=utf-8") && text(&content).contains("attached in spirit")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_sign_signs_what_the_client_did_not_ask_to_sign() {
    let dir = tempdir();
    let (_hsm, agent) = agent_with(dir.path(), "always_sign = true\nclear_sign = false\n");
    let c = agent.client().await;
    let r = compose(&c, MAIL, false, false, false).await.unwrap();
    assert!(r.signed);
    assert!(
        text(&r.messages[0].mime.0).contains("smime-type=signed-data"),
        "clear_sign = false gives opaque"
    );
    verify(dir.path(), &r.messages[0].mime.0).expect("OpenSSL verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triple_wrapped_mail_and_a_bcc_recipient_with_an_envelope_of_their_own() {
    let dir = tempdir();
    let (_hsm, agent) = agent_with(dir.path(), "");
    let c = agent.client().await;
    let r = compose(&c, MAIL, true, true, false).await.expect("compose");
    assert!(r.signed && r.encrypted && r.triple_wrapped);
    assert_eq!(
        r.messages.len(),
        2,
        "one for To/Cc, one for the Bcc recipient"
    );
    let (main, blind) = (&r.messages[0], &r.messages[1]);
    assert_eq!(main.recipients, ["bob@example.org"]);
    assert_eq!(blind.recipients, ["carol@example.org"]);
    for m in [main, blind] {
        assert!(!text(&m.mime.0).to_ascii_lowercase().contains("\nbcc:"));
    }
    // Bob: outer signature, envelope, inner signature, the text.
    let outer = verify(dir.path(), &main.mime.0).expect("outer signature");
    let inner = openssl_decrypt(dir.path(), &outer, "bob-enc-ec").expect("Bob decrypts");
    let content = verify(dir.path(), &inner).expect("inner signature");
    assert!(text(&content).contains("attached in spirit"));
    // Nor does anything inside Bob's envelope name the Bcc recipient.
    for layer in [&inner, &content] {
        let t = text(layer).to_ascii_lowercase();
        assert!(!t.contains("\nbcc:") && !t.contains("carol@"), "{t}");
    }
    // Bob's envelope does not name Carol's certificate: she cannot open it.
    assert!(
        openssl_decrypt(dir.path(), &outer, "carol-san-rsa").is_err(),
        "Carol reads Bob's copy"
    );
    // Carol's own copy opens for her, and Alice can read both.
    let outer = verify(dir.path(), &blind.mime.0).unwrap();
    let hers =
        openssl_decrypt(dir.path(), &outer, "carol-san-rsa").expect("Carol decrypts her copy");
    let hers = verify(dir.path(), &hers).expect("inner signature of Carol's copy");
    assert!(text(&hers).contains("attached in spirit"));
    assert!(!text(&hers).to_ascii_lowercase().contains("\nbcc:"));
    assert!(
        openssl_decrypt(dir.path(), &outer, "bob-enc-ec").is_err(),
        "Bob reads Carol's copy"
    );
    openssl_decrypt(dir.path(), &outer, "alice-enc-rsa").expect("Alice reads her sent mail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_triple_wrap_the_envelope_is_outermost() {
    let dir = tempdir();
    let (_hsm, agent) = agent_with(dir.path(), "triple_wrap = false\n");
    let c = agent.client().await;
    let mail = MAIL.replace("Bcc: carol@example.org\n", "");
    let r = compose(&c, &mail, true, true, false).await.unwrap();
    assert!(r.signed && r.encrypted && !r.triple_wrapped);
    let m = &r.messages[0].mime.0;
    assert!(text(m).contains("smime-type=enveloped-data"));
    let inner = openssl_decrypt(dir.path(), m, "bob-enc-ec").unwrap();
    verify(dir.path(), &inner).expect("signed inside the envelope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_without_certificates_fail_unless_unencrypted_is_allowed() {
    let dir = tempdir();
    let (_hsm, agent) = agent_with(dir.path(), "");
    let mail = MAIL.replace(
        "Bob <bob@example.org>",
        "Bob <bob@example.org>, dave@example.org",
    );
    let c = agent.client().await;
    let err = compose(&c, &mail, true, true, false).await.unwrap_err();
    let ClientError::Agent(body) = err else {
        panic!()
    };
    assert_eq!(body.code, ErrorCode::RecipientWithoutCertificate);
    assert_eq!(body.recipients, Some(vec!["dave@example.org".to_string()]));

    let c = agent.client().await;
    let r = compose(&c, &mail, true, true, true)
        .await
        .expect("allowed unencrypted");
    assert!(r.signed && !r.encrypted);
    assert!(
        r.warnings.iter().any(|w| w.contains("dave@example.org")),
        "{:?}",
        r.warnings
    );
    verify(dir.path(), &r.messages[0].mime.0).unwrap();

    // always_encrypt: no way around it.
    drop(agent);
    let (_hsm2, strict) = agent_with(&dir.path().join("strict"), "always_encrypt = true\n");
    let c = strict.client().await;
    let err = compose(&c, &mail, false, false, true).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RecipientWithoutCertificate));
    // With every certificate, always_encrypt encrypts unasked.
    let c = strict.client().await;
    let r = compose(&c, MAIL, false, false, false).await.unwrap();
    assert!(r.encrypted && !r.signed);
    openssl_decrypt(dir.path(), &r.messages[0].mime.0, "bob-enc-ec").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_chain_carries_the_intermediate_but_not_the_root() {
    let root_only = pki_file("root-ca.pem");
    for (include, verifies_with_root_only) in [(false, false), (true, true)] {
        let dir = tempdir();
        let (_hsm, agent) = agent_with(dir.path(), &format!("include_chain = {include}\n"));
        let c = agent.client().await;
        let r = compose(&c, MAIL, true, false, false).await.unwrap();
        let m = &r.messages[0].mime.0;
        let ok = openssl(
            dir.path(),
            &["cms", "-verify", "-CAfile", root_only.to_str().unwrap()],
            m,
        )
        .is_ok();
        assert_eq!(ok, verifies_with_root_only, "include_chain = {include}");
        // The signer, plus the intermediate when asked; never the root.
        let certs_out = dir.path().join("certs.pem");
        openssl(
            dir.path(),
            &[
                "cms",
                "-verify",
                "-noverify",
                "-certsout",
                certs_out.to_str().unwrap(),
                "-out",
                "/dev/null",
            ],
            m,
        )
        .unwrap();
        let carried = std::fs::read_to_string(&certs_out).unwrap();
        assert_eq!(
            carried.matches("BEGIN CERTIFICATE").count(),
            if include { 2 } else { 1 }
        );
        let root = std::fs::read_to_string(&root_only).unwrap();
        assert!(!carried.contains(root.trim()), "the root was carried");
        let ca = std::fs::read_to_string(pki_file("ca.pem")).unwrap();
        assert_eq!(carried.contains(ca.trim()), include);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reads_its_triple_wrapped_mail_layer_by_layer() {
    use smime_agent_proto::{MessageLayer, VerifyStatus};
    let dir = tempdir();
    let (_hsm, agent) = agent_with(dir.path(), "");
    let mail = MAIL.replace("Bcc: carol@example.org\n", "");
    let c = agent.client().await;
    let r = compose(&c, &mail, true, true, false).await.unwrap();
    assert!(r.triple_wrapped);
    // Alice reads her sent mail: outer signature, envelope, inner signature, the text.
    let c = agent.client().await;
    let d = c
        .decrypt(smime_agent_proto::DecryptParams {
            content: r.messages[0].mime.0.clone().into(),
            ..Default::default()
        })
        .await
        .expect("decrypt a triple-wrapped message");
    let kinds = layer_kinds(&d.layers);
    assert_eq!(kinds, ["signed", "encrypted", "signed"]);
    assert_eq!(d.signatures, Some(VerifyStatus::Valid), "{:#?}", d.layers);
    for l in &d.layers {
        if let MessageLayer::Signed(s) = l {
            let signer = s.signers[0].signer.as_ref().unwrap();
            assert!(signer.emails.iter().any(|e| e == "alice@example.org"));
        }
    }
    assert!(String::from_utf8_lossy(&d.mime.0).contains("attached in spirit"));
}
