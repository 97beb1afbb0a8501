//! RSA decryption is no padding oracle (RFC 3218; Bleichenbacher, Marvin): through the real
//! agent on a SoftHSM key, an envelope whose encrypted content key is malformed in any way
//! gets the same answer as a well-padded wrong key, in the same time. The virtual card's
//! counterpart is in `cards.rs`.

mod common;
#[path = "common/oracle.rs"]
mod oracle;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_rsa_key_transport_answers_like_a_wrong_key_on_softhsm() {
    let dir = tempdir();
    let (_hsm, agent) = softhsm_agent(dir.path(), "alice", &["alice-enc-rsa"], Default::default());
    let content = sample_entity(&"x".repeat(4096));
    let cases = oracle::cases("alice-enc-rsa", &content);
    // Log in first, so no round includes a PIN prompt.
    let first = oracle::decrypt(&agent.client().await, cases[0].mime.clone(), PIN).await;
    assert_eq!(first.as_deref().ok(), Some(&content[..]));
    let measured = oracle::measure(&cases, 40, PIN, || agent.client()).await;
    oracle::assert_no_oracle(&measured, &content, 1.25);
    // Nothing about the token's answers reached the log either.
    let log = agent.log_text();
    assert!(!log.contains("CKR_"), "{log}");
}
