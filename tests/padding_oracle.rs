//! RSA decryption is no padding oracle (RFC 3218; Bleichenbacher, Marvin): through the real
//! agent on a SoftHSM key, an envelope whose encrypted content key is malformed in any way
//! gets the same answer as a well-padded wrong key, in the same time: on SoftHSM and on the
//! virtual card.

mod common;
#[path = "common/oracle.rs"]
mod oracle;

use common::card::{CARD_PIN, rig};
use common::card_agent::*;
use common::*;

/// The two measurements never overlap: each would be the other's noise.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_rsa_key_transport_answers_like_a_wrong_key_on_softhsm() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let dir = tempdir();
    let (_hsm, agent) = softhsm_agent(dir.path(), "alice", &["alice-enc-rsa"], Default::default());
    let content = sample_entity(&"x".repeat(4096));
    let cases = oracle::cases("alice-enc-rsa", &content);
    // Log in first, so no round includes a PIN prompt.
    let first = oracle::decrypt(&agent.client().await, cases[0].mime.clone(), PIN).await;
    assert_eq!(first.as_deref().ok(), Some(&content[..]));
    let measured = oracle::measure(&cases, 40, PIN, || agent.client()).await;
    oracle::assert_no_oracle(&measured, &content, 1.5);
    // Nothing about the token's answers reached the log either.
    let log = agent.log_text();
    assert!(!log.contains("CKR_"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_rsa_key_transport_answers_like_a_wrong_key_on_the_card() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let dir = tempdir();
    let rig = rig();
    let agent = card_agent(dir.path(), &rig, None, "");
    let client = agent.client().await;
    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    wait_status(&client, "the card", |st| card_certs(st, "Alice") == 2).await;
    let content = sample_entity(&"x".repeat(4096));
    let cases = oracle::cases("alice-enc-rsa", &content);
    let first = oracle::decrypt(&agent.client().await, cases[0].mime.clone(), CARD_PIN).await;
    assert_eq!(first.as_deref().ok(), Some(&content[..]));
    let measured = oracle::measure(&cases, 20, CARD_PIN, || agent.client()).await;
    // The card's times spread wide (APDUs over TCP to the virtual card, a shared machine): a
    // loose factor, still far below the 55x of the removal wait this test was written
    // against. The answers are checked exactly.
    oracle::assert_no_oracle(&measured, &content, 2.0);
    // The card is still there and logged in: no failure was taken for a removal.
    let st = client.status().await.unwrap();
    assert_eq!(card_certs(&st, "Alice"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_that_fails_the_rsa_step_is_a_token_error_and_a_ciphertext_too_large_is_not() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let dir = tempdir();
    let rig = rig();
    let agent = card_agent(dir.path(), &rig, None, "");
    let client = agent.client().await;
    let fault = dir.path().join("card-fault");
    let mut flaky = virtual_piv_card::CardConfig::new("alice", CARD_PIN, alice_slots());
    flaky.fault_file = Some(fault.clone());
    rig.insert_card(0, flaky).unwrap();
    wait_status(&client, "the card", |st| card_certs(st, "Alice") == 2).await;
    let content = sample_entity("a card fault is not a damaged message");
    let cases = oracle::cases("alice-enc-rsa", &content);
    let good = cases[0].mime.clone();
    let first = oracle::decrypt(&agent.client().await, good.clone(), CARD_PIN).await;
    assert_eq!(first.as_deref().ok(), Some(&content[..]));

    // The card fails the raw RSA step itself (6F00), twice: OpenSC tries any failed
    // decryption once more by itself. The token's error, to try again, not decrypt_failed:
    // raw RSA sees no padding, so saying so tells nothing about one.
    std::fs::write(&fault, b"2").unwrap();
    let failed = oracle::decrypt(&agent.client().await, good.clone(), CARD_PIN).await;
    assert!(!fault.exists(), "the card was not asked twice");
    let (code, message) = failed.expect_err("the card failed the operation");
    assert_eq!(code, "TokenError", "{message}");
    let again = oracle::decrypt(&agent.client().await, good.clone(), CARD_PIN).await;
    assert_eq!(
        again.as_deref().ok(),
        Some(&content[..]),
        "the retry works: {:?}",
        again.as_ref().err()
    );

    // A key transport that is no RSA ciphertext at all (not below the modulus: public facts)
    // is a malformed message, answered like a wrong key, without asking the card.
    std::fs::write(&fault, b"").unwrap();
    let answer = oracle::decrypt(
        &agent.client().await,
        oracle::above_modulus("alice-enc-rsa", &content),
        CARD_PIN,
    )
    .await;
    let (code, _) = answer.expect_err("no content from a ciphertext above the modulus");
    assert_eq!(code, "DecryptFailed");
    assert!(
        fault.exists(),
        "the card was asked about a ciphertext above its modulus"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_pin_cache_a_failed_decryption_logs_the_card_out_too() {
    // cache_ttl_secs = 0: nothing stays logged in, after a failure as after a success.
    // Otherwise the next request, from any client, would sign with no PIN asked.
    let _alone = ONE_AT_A_TIME.lock().await;
    let dir = tempdir();
    let rig = rig();
    let agent = card_agent_with(dir.path(), &rig, None, "", "cache_ttl_secs = 0");
    let client = agent.client().await;
    let fault = dir.path().join("card-fault");
    let mut flaky = virtual_piv_card::CardConfig::new("alice", CARD_PIN, alice_slots());
    flaky.fault_file = Some(fault.clone());
    rig.insert_card(0, flaky).unwrap();
    wait_status(&client, "the card", |st| card_certs(st, "Alice") == 2).await;
    let content = sample_entity("logged out after a failure");
    let good = oracle::cases("alice-enc-rsa", &content)[0].mime.clone();
    std::fs::write(&fault, b"2").unwrap();
    let failed = oracle::decrypt(&agent.client().await, good.clone(), CARD_PIN).await;
    assert!(failed.is_err(), "the card failed the decryption");
    // The logout runs right after the response; give it a moment.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // The key management key (9D) needs no PIN per use: only a login asks for it.
    let client = agent.client().await;
    let op = smime_agent_proto::Op::Decrypt(smime_agent_proto::DecryptParams {
        content: good.into(),
        ..Default::default()
    });
    let mut sent = SentRequest::send(&client, op).await;
    let mut prompts = 0;
    while let Some(p) = sent.next_prompt().await {
        prompts += 1;
        answer_pin(&client, &p, CARD_PIN).await;
    }
    let res: smime_agent_proto::DecryptResult = result_of(sent.outcome()).expect("decrypt");
    assert_eq!(res.mime.0, content);
    assert_eq!(
        prompts, 1,
        "decrypted with no PIN asked after a failed operation"
    );
}
