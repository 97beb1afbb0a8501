//! PIN-pad readers (the `ifd-pinpad` reader library in front of vpcd): the person types the
//! PIN on the reader's keypad, Cancel and timeouts end the request, nothing is retried, and
//! a pinentry notice tells the person to look at the reader.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::card::{CARD_PIN, pinpad_rig, rig};
use common::card_agent::*;
use common::*;
use smime_agent_proto::client::Client;
use smime_agent_proto::{ErrorCode, Event, Op};
use virtual_piv_card::CardRig;

/// Signs as Alice; at each `pin_needed` the person types `keys` on reader 0's keypad, or
/// presses Cancel when `None`. Returns the outcome and the prompts the client saw.
async fn sign_on_pin_pad(
    agent: &Agent,
    rig: &Arc<CardRig>,
    keys: Option<&'static str>,
) -> (
    smime_agent_proto::Outcome,
    Vec<smime_agent_proto::PinNeeded>,
) {
    let client = agent.client().await;
    let op = Op::Sign(sign_params("alice@example.org", "typed on the reader"));
    let mut sent = SentRequest::send(&client, op).await;
    let mut prompts = Vec::new();
    while let Some(p) = sent.next_prompt().await {
        prompts.push(p);
        let rig = rig.clone();
        tokio::task::spawn_blocking(move || match keys {
            Some(pin) => rig.keypad_enter(0, pin, Duration::from_secs(10)),
            None => rig
                .wait_for_keypad(0, Duration::from_secs(10))
                .and_then(|()| rig.keypad_cancel(0)),
        })
        .await
        .unwrap()
        .expect("the reader asks for the PIN after pin_needed");
    }
    (sent.outcome(), prompts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_pad_reader_takes_the_pin_and_a_wrong_or_cancelled_entry_is_not_retried() {
    let dir = tempdir();
    let rig = Arc::new(pinpad_rig());
    let agent = card_agent(dir.path(), &rig, None, "");
    let client = agent.client().await;
    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    wait_status(&client, "the card", |st| card_certs(st, "Alice") == 2).await;
    let st = client.status().await.unwrap();
    let token = st.tokens.iter().find(|t| t.hardware).unwrap();
    assert!(
        token.pin.protected_path,
        "OpenSC must report the PIN pad: {token:#?}"
    );

    // The login and the signature key's own login are each typed on the reader; the
    // client is told to look there, and is never asked for the PIN itself.
    let (outcome, prompts) = sign_on_pin_pad(&agent, &rig, Some(CARD_PIN)).await;
    let smime_agent_proto::Outcome::Ok(v) = outcome else {
        panic!("signing with the PIN pad failed: {outcome:?}")
    };
    let signed: smime_agent_proto::SignResult = serde_json::from_value(v).unwrap();
    let (ok, err) = openssl_verifies("cms", &signed.mime.0, dir.path());
    assert!(ok, "{err}");
    assert!(prompts.iter().all(|p| p.on_reader), "{prompts:#?}");
    let reasons: Vec<_> = prompts.iter().map(|p| p.reason).collect();
    assert_eq!(
        reasons,
        [
            smime_agent_proto::PinReason::Login,
            smime_agent_proto::PinReason::ContextSpecific
        ]
    );
    assert_eq!(rig.verify_count("alice").unwrap(), 2);

    // A wrong PIN on the keypad costs one try and is not entered again.
    let (outcome, prompts) = sign_on_pin_pad(&agent, &rig, Some("999999")).await;
    match outcome {
        smime_agent_proto::Outcome::Error(e) => {
            assert_eq!(e.code, ErrorCode::PinIncorrect, "{}", e.message)
        }
        other => panic!("expected pin_incorrect, got {other:?}"),
    }
    assert_eq!(prompts.len(), 1, "one entry, no retry: {prompts:#?}");
    assert_eq!(rig.tries_left("alice").unwrap(), 2);
    assert_eq!(rig.verify_count("alice").unwrap(), 3);
    assert!(
        !rig.keypad_waiting(0).unwrap(),
        "the reader must not ask again"
    );

    // Cancel on the keypad: pin_cancelled, and the card's counter is untouched.
    let (outcome, _) = sign_on_pin_pad(&agent, &rig, None).await;
    match outcome {
        smime_agent_proto::Outcome::Error(e) => {
            assert_eq!(e.code, ErrorCode::PinCancelled, "{}", e.message)
        }
        other => panic!("expected pin_cancelled, got {other:?}"),
    }
    assert_eq!(rig.tries_left("alice").unwrap(), 2);
    assert_eq!(rig.verify_count("alice").unwrap(), 3);

    // The right PIN works again and restores the counter.
    let (outcome, _) = sign_on_pin_pad(&agent, &rig, Some(CARD_PIN)).await;
    assert!(
        matches!(outcome, smime_agent_proto::Outcome::Ok(_)),
        "{outcome:?}"
    );
    assert_eq!(rig.tries_left("alice").unwrap(), 3);
}

/// Signs as Alice answering the client's PIN prompts with `pins`, in order.
async fn sign_answering_each(agent: &Agent, pins: &[&str]) -> (smime_agent_proto::Outcome, usize) {
    let client = agent.client().await;
    let op = Op::Sign(sign_params("alice@example.org", "each prompt its own PIN"));
    let mut sent = SentRequest::send(&client, op).await;
    let mut prompts = 0;
    while let Some(p) = sent.next_prompt().await {
        let pin = pins.get(prompts).copied().unwrap_or("no more PINs");
        prompts += 1;
        answer_pin(&client, &p, pin).await;
    }
    (sent.outcome(), prompts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_context_specific_pin_costs_one_try_and_the_next_request_logs_in_again() {
    let dir = tempdir();
    let rig = rig();
    let agent = card_agent(dir.path(), &rig, None, "");
    let client = agent.client().await;
    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    wait_status(&client, "the card", |st| card_certs(st, "Alice") == 2).await;

    // The first signature logs in; its PIN also serves the key's own login.
    let (outcome, prompts) = sign_answering_each(&agent, &[CARD_PIN]).await;
    assert!(
        matches!(outcome, smime_agent_proto::Outcome::Ok(_)),
        "{outcome:?}"
    );
    assert_eq!(prompts, 1);
    // The second finds the token logged in; the key's own login gets a wrong PIN.
    let (outcome, prompts) = sign_answering_each(&agent, &["999999"]).await;
    match outcome {
        smime_agent_proto::Outcome::Error(e) => {
            assert_eq!(e.code, ErrorCode::PinIncorrect, "{}", e.message)
        }
        other => panic!("expected pin_incorrect, got {other:?}"),
    }
    assert_eq!(prompts, 1);
    assert_eq!(rig.tries_left("alice").unwrap(), 2);
    assert_eq!(rig.verify_count("alice").unwrap(), 3);

    // The wrong VERIFY logged the card out, and OpenSC closes the agent's sessions when it
    // notices. The next request logs in again on a new session instead of failing.
    let (outcome, prompts) = sign_answering_each(&agent, &[CARD_PIN]).await;
    let smime_agent_proto::Outcome::Ok(v) = outcome else {
        panic!("the request after a wrong PIN failed: {outcome:?}")
    };
    assert_eq!(prompts, 1, "a new login");
    let signed: smime_agent_proto::SignResult = serde_json::from_value(v).unwrap();
    let (ok, err) = openssl_verifies("cms", &signed.mime.0, dir.path());
    assert!(ok, "{err}");
    assert_eq!(rig.tries_left("alice").unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_pulled_while_the_reader_waits_for_the_pin_fails_that_request_only() {
    let dir = tempdir();
    let rig = Arc::new(pinpad_rig());
    let agent = card_agent(dir.path(), &rig, None, "");
    let client = agent.client().await;
    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    wait_status(&client, "the card", |st| card_certs(st, "Alice") == 2).await;

    let signer = agent.client().await;
    let mut events = signer.take_events().unwrap();
    let (_, rx) = signer
        .start(Op::Sign(sign_params("alice@example.org", "never signed")))
        .await
        .unwrap();
    let Some(Event::PinNeeded(p)) = events.recv().await else {
        panic!("no PIN prompt")
    };
    assert!(p.on_reader);
    // The reader shows its prompt; the card is pulled instead of a PIN being typed.
    let pull = rig.clone();
    tokio::task::spawn_blocking(move || {
        pull.wait_for_keypad(0, Duration::from_secs(10))?;
        pull.remove("alice")
    })
    .await
    .unwrap()
    .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("the request waiting on the keypad must end when the card is pulled")
        .unwrap();
    match outcome {
        smime_agent_proto::Outcome::Error(e) => {
            assert_eq!(e.code, ErrorCode::TokenRemoved, "{}", e.message)
        }
        other => panic!("expected token_removed, got {other:?}"),
    }
    assert_eq!(
        rig.verify_count("alice").unwrap(),
        0,
        "no PIN reached the card"
    );

    // Put back, it signs with the PIN typed on the reader.
    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    wait_status(&client, "re-insertion", |st| card_certs(st, "Alice") == 2).await;
    let (outcome, _) = sign_on_pin_pad(&agent, &rig, Some(CARD_PIN)).await;
    assert!(
        matches!(outcome, smime_agent_proto::Outcome::Ok(_)),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pinentry_a_pin_pad_entry_is_announced_by_a_notice_that_goes_away() {
    let dir = tempdir();
    let rig = Arc::new(pinpad_rig());
    let agent = pinentry_card_agent(dir.path(), &rig);
    let client = agent.client().await;
    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    wait_status(&client, "the card", |st| card_certs(st, "Alice") == 2).await;

    // A mail client that shows no prompts itself, on a terminal where pinentry can.
    let term = Terminal::start();
    let hello = pinentry_hello(&term.tty());
    let c = Client::connect(&agent.socket, hello).await.unwrap();
    let signing = sign_in_background(c, "on the keypad");
    // The notice names the token and says where to type; it asks for no PIN itself.
    let screen = term.wait_for("reader's keypad", 1).await;
    assert!(screen.contains("Alice Example"), "{screen}");
    assert!(
        !screen.contains("PIN:"),
        "pinentry must not ask for the PIN:\n{screen}"
    );
    assert_eq!(
        pinentries_on(&term.tty()),
        1,
        "the notice is a pinentry on the tty"
    );
    let keys = rig.clone();
    tokio::task::spawn_blocking(move || keys.keypad_enter(0, CARD_PIN, Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();
    // The signature key asks again: a second notice.
    term.wait_for("reader's keypad", 2).await;
    let keys = rig.clone();
    tokio::task::spawn_blocking(move || keys.keypad_enter(0, CARD_PIN, Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();
    let signed = signing
        .await
        .unwrap()
        .expect("signed with the PIN typed on the reader");
    let (ok, err) = openssl_verifies("cms", &signed.mime.0, dir.path());
    assert!(ok, "{err}");
    // Each notice was taken down when its entry was over: no pinentry is left running.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pinentries_on(&term.tty()) > 0 {
        assert!(Instant::now() < deadline, "a pinentry notice stayed up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many pinentry-tty processes were told to use `tty`.
fn pinentries_on(tty: &str) -> usize {
    let out = std::process::Command::new("pgrep")
        .args(["-x", "pinentry-tty"])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/fd/0")).is_ok()
                && std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .map(|d| {
                        d.flatten().any(|f| {
                            std::fs::read_link(f.path()).is_ok_and(|t| t.to_string_lossy() == tty)
                        })
                    })
                    .unwrap_or(false)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_pad_login_ends_with_the_pin_cache_time_to_live() {
    let dir = tempdir();
    let rig = Arc::new(pinpad_rig());
    let agent = card_agent_with(dir.path(), &rig, None, "", "cache_ttl_secs = 1");
    let client = agent.client().await;
    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    wait_status(&client, "the card", |st| card_certs(st, "Alice") == 2).await;
    let reasons = |prompts: &[smime_agent_proto::PinNeeded]| -> Vec<_> {
        prompts.iter().map(|p| p.reason).collect()
    };
    use smime_agent_proto::PinReason::{ContextSpecific, Login};

    let (outcome, prompts) = sign_on_pin_pad(&agent, &rig, Some(CARD_PIN)).await;
    assert!(
        matches!(outcome, smime_agent_proto::Outcome::Ok(_)),
        "{outcome:?}"
    );
    assert_eq!(reasons(&prompts), [Login, ContextSpecific]);
    // The login stands no longer than a cached PIN would: the token is logged out...
    let start = Instant::now();
    while !agent.log_text().contains("token logged out") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the PIN-pad login was not ended:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and the next signature logs in on the reader again.
    let (outcome, prompts) = sign_on_pin_pad(&agent, &rig, Some(CARD_PIN)).await;
    assert!(
        matches!(outcome, smime_agent_proto::Outcome::Ok(_)),
        "{outcome:?}"
    );
    assert_eq!(reasons(&prompts), [Login, ContextSpecific]);
}
