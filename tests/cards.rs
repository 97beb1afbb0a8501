//! The card life cycle with a real smart card stack: a virtual PIV card in a virtual
//! reader under a private pcscd, OpenSC's PKCS#11 module, and the real agent. PIN-pad
//! readers are in `card_pinpad.rs`; the card behind the PKCS#11 module in
//! `pkcs11_module.rs`; the card's padding-oracle test in `padding_oracle.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::card::{CARD_PIN, rig, slot};
use common::card_agent::*;
use common::*;
use smime_agent_proto::client::{Client, ClientError};
use smime_agent_proto::{ErrorCode, Event, Op};
use virtual_piv_card::PivSlot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserted_card_is_usable_within_a_second_and_its_removal_clears_it() {
    let dir = tempdir();
    let rig = rig();
    let agent = card_agent(dir.path(), &rig, None, "");
    let client = agent.client().await;
    assert_eq!(client.status().await.unwrap().tokens.len(), 0);

    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    let took = wait_status(&client, "the card's certificates appearing", |st| {
        card_certs(st, "Alice") == 2
    })
    .await;
    println!("insert -> certificates in the store: {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let st = client.status().await.unwrap();
    let t = &st.tokens[0];
    assert!(t.hardware && t.removable, "{t:?}");
    assert!(st.readers.watched);
    assert!(
        st.readers
            .readers
            .iter()
            .any(|r| r.card_present && r.name == t.slot)
    );

    let signer = agent.client().await;
    let (res, prompts) = sign_answering(
        &signer,
        "alice@example.org",
        sample_entity("from the card"),
        None,
        CARD_PIN,
    )
    .await;
    let res = res.expect("sign with the card");
    assert_eq!(
        prompts, 1,
        "one PIN for login and the 9C key's context-specific login"
    );
    assert!(res.certificate.hardware);
    let (ok, err) = openssl_verifies("cms", &res.mime.0, dir.path());
    assert!(ok, "{err}");

    let start = Instant::now();
    rig.remove("alice").unwrap();
    wait_status(&client, "the card's certificates leaving", |st| {
        st.tokens.is_empty()
    })
    .await;
    let took = start.elapsed();
    println!("remove -> certificates gone: {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // Its PIN went with it: after re-insertion the agent asks again.
    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    wait_status(&client, "re-insertion", |st| card_certs(st, "Alice") == 2).await;
    let signer = agent.client().await;
    let (res, prompts) = sign_answering(
        &signer,
        "alice@example.org",
        sample_entity("again"),
        None,
        CARD_PIN,
    )
    .await;
    let res = res.expect("sign after re-insertion");
    assert_eq!(prompts, 1);
    assert_openssl_signed(&res.mime.0, dir.path(), &sample_entity("again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_pulled_while_a_request_waits_for_its_pin_fails_only_that_request() {
    let dir = tempdir();
    let rig = rig();
    let hsm = SoftHsm::new(&dir.path().join("softhsm"));
    hsm.add_token("bob soft", PIN, &["bob-dual-rsa"]);
    let agent = card_agent(&dir.path().join("agent"), &rig, Some(&hsm), "");
    let watcher = agent.client().await;
    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    wait_status(&watcher, "the card", |st| card_certs(st, "Alice") == 2).await;

    // Alice's request waits for her PIN...
    let alice = agent.client().await;
    let mut alice_events = alice.take_events().unwrap();
    let (_, alice_rx) = alice
        .start(Op::Sign(sign_params("alice@example.org", "never signed")))
        .await
        .unwrap();
    let Some(Event::PinNeeded(p)) = alice_events.recv().await else {
        panic!("no PIN prompt")
    };
    assert_eq!(p.token.label, "Alice Example");

    // ...while Bob signs with his SoftHSM key.
    let bob = agent.client().await;
    let bob_sign = tokio::spawn(async move {
        let (res, _) =
            sign_answering(&bob, "bob@example.org", sample_entity("bob"), None, PIN).await;
        res
    });

    // The card is pulled: Alice's request ends with token_removed.
    rig.remove("alice").unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), alice_rx)
        .await
        .expect("the waiting request must end when its card is pulled")
        .unwrap();
    match outcome {
        smime_agent_proto::Outcome::Error(e) => {
            assert_eq!(e.code, ErrorCode::TokenRemoved, "{}", e.message)
        }
        other => panic!("expected token_removed, got {other:?}"),
    }
    // Answering the dead prompt now is a harmless bad_request.
    let late = alice
        .pin(p.prompt, Some(smime_agent_proto::Pin::new(CARD_PIN)))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Some(ErrorCode::BadRequest));

    let bob_res = bob_sign
        .await
        .unwrap()
        .expect("Bob's SoftHSM signature is not disturbed");
    assert!(!bob_res.certificate.hardware);

    // Put back, it signs.
    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    wait_status(&watcher, "re-insertion", |st| card_certs(st, "Alice") == 2).await;
    let again = agent.client().await;
    let (res, _) = sign_answering(
        &again,
        "alice@example.org",
        sample_entity("after"),
        None,
        CARD_PIN,
    )
    .await;
    let res = res.expect("sign after re-insertion");
    let (ok, err) = openssl_verifies("cms", &res.mime.0, dir.path());
    assert!(ok, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cards_in_two_readers_and_watch_shows_the_events_in_order() {
    let dir = tempdir();
    let rig = rig();
    let agent = card_agent(dir.path(), &rig, None, "");
    // `smime-agent watch --json`, the real CLI, records the events.
    let mut watch = agent
        .cli()
        .args(["watch", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        // Reader events may come first (the agent finds the rig's readers as it starts).
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if l.contains("\"token_") && line_tx.send(l).is_err() {
                return;
            }
        }
    });
    // The watcher subscribes before the first card goes in.
    let client = agent.client().await;
    let start = Instant::now();
    while !agent.log_text().contains("subscribed to events") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "watch did not subscribe"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    wait_status(&client, "alice's card", |st| card_certs(st, "Alice") == 2).await;
    rig.insert("bob", 1, "654321", &bob_slots()).unwrap();
    wait_status(&client, "bob's card", |st| card_certs(st, "Bob") == 1).await;

    for (who, pin) in [("alice", CARD_PIN), ("bob", "654321")] {
        let c = agent.client().await;
        let (res, _) = sign_answering(
            &c,
            &format!("{who}@example.org"),
            sample_entity(who),
            None,
            pin,
        )
        .await;
        let res = res.unwrap_or_else(|e| panic!("{who}: {e}"));
        assert!(
            res.certificate
                .emails
                .contains(&format!("{who}@example.org"))
        );
        let (ok, err) = openssl_verifies("cms", &res.mime.0, dir.path());
        assert!(ok, "{who}: {err}");
    }

    rig.remove("bob").unwrap();
    wait_status(&client, "bob's card leaving", |st| {
        card_certs(st, "Bob") == 0
    })
    .await;
    rig.remove("alice").unwrap();
    wait_status(&client, "alice's card leaving", |st| st.tokens.is_empty()).await;

    // Four events, each within 10 s; a missing one fails the test instead of hanging it.
    let lines: Vec<String> = (0..4)
        .map_while(|_| line_rx.recv_timeout(Duration::from_secs(10)).ok())
        .collect();
    let _ = watch.kill();
    let _ = watch.wait();
    let events: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["event"].as_str().unwrap().to_owned(),
                v["token"]["label"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let expected = [
        ("token_inserted", "Alice Example"),
        ("token_inserted", "Bob Example"),
        ("token_removed", "Bob Example"),
        ("token_removed", "Alice Example"),
    ];
    assert_eq!(
        events,
        expected
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    );
}

/// A PKCS#12 file of `name` (key and certificate of the test PKI) with `passphrase`, and its
/// certificate beside it.
fn key_file(dir: &Path, name: &str, passphrase: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let out = dir.join(format!("{name}.p12"));
    peers::export_p12(pki(), name, passphrase, &[], &out);
    std::fs::copy(
        pki_file(&format!("{name}.pem")),
        dir.join(format!("{name}.pem")),
    )
    .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_card_wins_over_a_software_key_and_smart_card_only_refuses_software() {
    let dir = tempdir();
    let rig = rig();
    let keys = dir.path().join("keys");
    key_file(&keys, "alice-sign-ec", "p12 secret");
    let soft = format!("[soft_store]\ndir = \"{}\"\n", keys.display());
    let agent = card_agent(&dir.path().join("a"), &rig, None, &soft);
    let client = agent.client().await;
    wait_status(&client, "the key file", |st| st.tokens.len() == 1).await;

    // Only the software key: it is used, after its passphrase.
    let c = agent.client().await;
    let (res, prompts) = sign_answering(
        &c,
        "alice@example.org",
        sample_entity("soft"),
        None,
        "p12 secret",
    )
    .await;
    let res = res.expect("sign with the PKCS#12 key");
    assert_eq!(prompts, 1);
    assert!(!res.certificate.hardware);
    assert_eq!(res.certificate.key, "ec-p256");
    let (ok, err) = openssl_verifies("cms", &res.mime.0, dir.path());
    assert!(ok, "{err}");

    // Card in: the hardware key wins, and the answer says why.
    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    wait_status(&client, "the card", |st| card_certs(st, "Alice") == 2).await;
    let c = agent.client().await;
    let (res, _) = sign_answering(
        &c,
        "alice@example.org",
        sample_entity("hard"),
        None,
        CARD_PIN,
    )
    .await;
    let res = res.expect("sign with the card");
    assert!(res.certificate.hardware, "{:?}", res.certificate);
    assert!(res.why.contains("hardware"), "{}", res.why);

    // With smart_card_only and the card pulled, the software key is not even considered.
    drop(agent);
    rig.remove("alice").unwrap();
    let strict = card_agent(
        &dir.path().join("b"),
        &rig,
        None,
        &format!("{soft}\n[policy]\nsmart_card_only = true\n"),
    );
    let c = strict.client().await;
    wait_status(&c, "the key file", |st| st.tokens.len() == 1).await;
    let err = c
        .sign(sign_params("alice@example.org", "x"))
        .await
        .unwrap_err();
    let ClientError::Agent(body) = err else {
        panic!("expected an agent error")
    };
    assert_eq!(body.code, ErrorCode::NoCertificate);
    assert!(
        body.message.contains("not a smart card") && body.message.contains("smart_card_only"),
        "{}",
        body.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcscd_killed_and_restarted_the_agent_finds_the_cards_again() {
    let dir = tempdir();
    let rig = rig();
    let agent = card_agent(dir.path(), &rig, None, "");
    let client = agent.client().await;
    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    wait_status(&client, "the card", |st| card_certs(st, "Alice") == 2).await;

    rig.kill_pcscd().unwrap();
    // The agent keeps serving; the card's certificates go (nobody can reach the card).
    let took = wait_status(&client, "the card leaving with pcscd", |st| {
        st.tokens.is_empty()
    })
    .await;
    println!("pcscd killed -> tokens gone: {took:?}");
    assert!(client.status().await.unwrap().readers.readers.is_empty());

    let start = Instant::now();
    rig.start_pcscd().unwrap();
    wait_status(&client, "the card after pcscd came back", |st| {
        card_certs(st, "Alice") == 2
    })
    .await;
    println!(
        "pcscd restarted -> certificates back: {:?}",
        start.elapsed()
    );
    let c = agent.client().await;
    let sign = || {
        sign_answering(
            &c,
            "alice@example.org",
            sample_entity("after pcscd"),
            None,
            CARD_PIN,
        )
    };
    let (mut res, _) = sign().await;
    if let Err(e) = &res
        && e.code() == Some(ErrorCode::TokenError)
        && e.to_string().contains("C_Login")
    {
        // OpenSC 0.23 now and then fails the first login right after pcscd came back
        // (CKR_GENERAL_ERROR; seen once in CI under load, never alone). The request gets
        // token_error, which the user can retry; no PIN try was spent and none is retried
        // by the agent. The retry must work.
        println!("first login after the restart failed: {e}");
        assert_eq!(rig.tries_left("alice").unwrap(), 3, "a PIN try was spent");
        (res, _) = sign().await;
    }
    let res = res.expect("sign after pcscd came back");
    let (ok, err) = openssl_verifies("cms", &res.mime.0, dir.path());
    assert!(ok, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_pulled_in_the_middle_of_a_signature_fails_that_request_only() {
    let dir = tempdir();
    let rig = rig();
    let agent = card_agent(dir.path(), &rig, None, "");
    let client = agent.client().await;
    let mut slow = virtual_piv_card::CardConfig::new("alice", CARD_PIN, alice_slots());
    slow.op_delay = Some(Duration::from_secs(3));
    rig.insert_card(0, slow).unwrap();
    wait_status(&client, "the slow card", |st| card_certs(st, "Alice") == 2).await;

    let signer = agent.client().await;
    let signing = tokio::spawn(async move {
        sign_answering(
            &signer,
            "alice@example.org",
            sample_entity("x"),
            None,
            CARD_PIN,
        )
        .await
    });
    // The card holds the private-key operation: pull it now.
    tokio::task::block_in_place(|| rig.wait_for_operation("alice", Duration::from_secs(10)))
        .expect("the card never started the signature");
    rig.remove("alice").unwrap();
    let (res, _) = tokio::time::timeout(Duration::from_secs(10), signing)
        .await
        .expect("the request must end when its card is pulled")
        .unwrap();
    let err = res.expect_err("no signature from a pulled card");
    assert_eq!(err.code(), Some(ErrorCode::TokenRemoved), "{err}");

    // The agent (and OpenSC in it) still works: the card put back signs.
    wait_status(&client, "the card leaving", |st| st.tokens.is_empty()).await;
    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    wait_status(&client, "the card back", |st| card_certs(st, "Alice") == 2).await;
    let c = agent.client().await;
    let (res, _) = sign_answering(
        &c,
        "alice@example.org",
        sample_entity("again"),
        None,
        CARD_PIN,
    )
    .await;
    let res = res.expect("sign after a card was pulled mid-signature");
    let (ok, err) = openssl_verifies("cms", &res.mime.0, dir.path());
    assert!(ok, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_concurrent_requests_and_one_wrong_pin_cost_one_try() {
    let dir = tempdir();
    let rig = rig();
    let agent = card_agent(dir.path(), &rig, None, "");
    let client = agent.client().await;
    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    wait_status(&client, "the card", |st| card_certs(st, "Alice") == 2).await;
    assert_eq!(rig.tries_left("alice").unwrap(), 3);
    let before = rig.verify_count("alice").unwrap();

    // The prompt is answered only once all three requests were sent, and a moment later,
    // so each is under way before the login fails (a request that came after the failure
    // would rightly ask again).
    let together = SentTogether::new(3);
    let mut tasks = vec![];
    for i in 0..3 {
        let socket = agent.socket.clone();
        let together = together.clone();
        tasks.push(tokio::spawn(async move {
            let c = Client::connect(&socket, hello(true)).await.unwrap();
            sign_answering_together(
                &c,
                "alice@example.org",
                sample_entity(&i.to_string()),
                None,
                "999999",
                Some(&together),
            )
            .await
        }));
    }
    let mut prompts = 0;
    for t in tasks {
        let (res, p) = t.await.unwrap();
        prompts += p;
        let err = res.expect_err("a wrong PIN must fail");
        assert_eq!(err.code(), Some(ErrorCode::PinIncorrect), "{err}");
    }
    assert_eq!(
        prompts, 1,
        "one prompt per token at a time, and the others share its outcome"
    );
    assert_eq!(
        rig.verify_count("alice").unwrap() - before,
        1,
        "PIN attempts sent to the card"
    );
    assert_eq!(
        rig.tries_left("alice").unwrap(),
        2,
        "exactly one try was spent"
    );

    // The right PIN afterwards works and restores the counter.
    let c = agent.client().await;
    let (res, _) =
        sign_answering(&c, "alice@example.org", sample_entity("ok"), None, CARD_PIN).await;
    res.expect("the right PIN");
    assert_eq!(rig.tries_left("alice").unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pin_the_card_rejected_is_not_sent_again_when_offered_again() {
    let dir = tempdir();
    let rig = rig();
    let agent = card_agent(dir.path(), &rig, None, "");
    let client = agent.client().await;
    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    wait_status(&client, "the card", |st| card_certs(st, "Alice") == 2).await;
    let before = rig.verify_count("alice").unwrap();

    // A mail client that cached the passphrase offers the same wrong PIN twice: the card
    // sees it once.
    for n in 0..2 {
        let c = agent.client().await;
        let (res, prompts) =
            sign_answering(&c, "alice@example.org", sample_entity("x"), None, "999999").await;
        let err = res.expect_err("a wrong PIN must fail");
        assert_eq!(
            err.code(),
            Some(ErrorCode::PinIncorrect),
            "attempt {n}: {err}"
        );
        assert_eq!(prompts, 1, "attempt {n}: the client is asked each time");
    }
    assert_eq!(
        rig.verify_count("alice").unwrap() - before,
        1,
        "PINs sent to the card"
    );
    assert_eq!(rig.tries_left("alice").unwrap(), 2);
    assert_eq!(
        agent
            .log_text()
            .matches("not sent to the token again")
            .count(),
        1,
        "the repeat is logged"
    );

    // Another wrong PIN is a new try; the right one then works and restores the counter.
    let c = agent.client().await;
    let (res, _) =
        sign_answering(&c, "alice@example.org", sample_entity("y"), None, "888888").await;
    assert_eq!(res.unwrap_err().code(), Some(ErrorCode::PinIncorrect));
    assert_eq!(rig.tries_left("alice").unwrap(), 1);
    let c = agent.client().await;
    let (res, _) =
        sign_answering(&c, "alice@example.org", sample_entity("z"), None, CARD_PIN).await;
    res.expect("the right PIN");
    assert_eq!(rig.tries_left("alice").unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_pin_is_reported_without_another_attempt() {
    let dir = tempdir();
    let rig = rig();
    let agent = card_agent(dir.path(), &rig, None, "");
    let client = agent.client().await;
    let mut card = virtual_piv_card::CardConfig::new("alice", CARD_PIN, alice_slots());
    card.pin_tries = 2;
    rig.insert_card(0, card).unwrap();
    wait_status(&client, "the card", |st| card_certs(st, "Alice") == 2).await;

    // First wrong PIN: one try left, and the error says so.
    let c = agent.client().await;
    let (res, _) =
        sign_answering(&c, "alice@example.org", sample_entity("1"), None, "000000").await;
    let ClientError::Agent(body) = res.unwrap_err() else {
        panic!("expected an agent error")
    };
    assert_eq!(body.code, ErrorCode::PinIncorrect);
    assert_eq!(body.retries_left, Some(1), "{body:?}");
    assert!(body.message.contains("one try left"), "{}", body.message);

    // Second wrong PIN (another one: the same would not be sent again): locked.
    let c = agent.client().await;
    let (res, _) =
        sign_answering(&c, "alice@example.org", sample_entity("2"), None, "111111").await;
    assert_eq!(res.unwrap_err().code(), Some(ErrorCode::PinLocked));
    assert_eq!(rig.tries_left("alice").unwrap(), 0);
    let attempts = rig.verify_count("alice").unwrap();

    // Now the agent must not even ask: no prompt, no VERIFY with a PIN.
    let c = agent.client().await;
    let (res, prompts) =
        sign_answering(&c, "alice@example.org", sample_entity("3"), None, CARD_PIN).await;
    assert_eq!(res.unwrap_err().code(), Some(ErrorCode::PinLocked));
    assert_eq!(prompts, 0, "the agent asked for a PIN for a locked card");
    assert_eq!(
        rig.verify_count("alice").unwrap(),
        attempts,
        "a PIN was tried on a locked card"
    );
    let st = client.status().await.unwrap();
    assert_eq!(
        st.tokens[0].pin.retries,
        smime_agent_proto::PinRetries::Locked
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pin_typed_into_pinentry_costs_the_card_exactly_one_try() {
    let dir = tempdir();
    let rig = rig();
    let agent = pinentry_card_agent(dir.path(), &rig);
    let client = agent.client().await;
    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    wait_status(&client, "the card", |st| card_certs(st, "Alice") == 2).await;
    let term = Terminal::start();
    let tty = term.tty();
    let hello = pinentry_hello(&tty);
    for (attempt, (typed, tries_after)) in [("111111", 2u8), ("222222", 1)].into_iter().enumerate()
    {
        let c = Client::connect(&agent.socket, hello.clone()).await.unwrap();
        let signing = sign_in_background(c, "typed");
        term.wait_for("PIN:", attempt + 1).await;
        term.type_line(typed);
        let err = signing.await.unwrap().expect_err("wrong PIN");
        assert_eq!(err.code(), Some(ErrorCode::PinIncorrect));
        assert_eq!(
            rig.tries_left("alice").unwrap(),
            tries_after,
            "attempt {attempt}"
        );
    }
    let c = Client::connect(&agent.socket, hello.clone()).await.unwrap();
    let signing = sign_in_background(c, "typed");
    // One try left: the prompt says so (OpenSC flags only the final try).
    let screen = term.wait_for("PIN:", 3).await;
    assert!(
        screen.contains("LAST"),
        "the prompt does not warn of the last try:\n{screen}"
    );
    term.type_line(CARD_PIN);
    let signed = signing.await.unwrap().expect("the right PIN, typed");
    let (ok, err) = openssl_verifies("cms", &signed.mime.0, dir.path());
    assert!(ok, "{err}");
    assert_eq!(rig.tries_left("alice").unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_always_asks_gets_the_pin_again_unless_policy_allows_the_cached_one() {
    for (uses_cache, expected_prompts) in [(false, 1usize), (true, 0)] {
        let dir = tempdir();
        let rig = rig();
        let pin_extra = format!("always_authenticate_uses_cache = {uses_cache}");
        let agent = card_agent_with(dir.path(), &rig, None, "", &pin_extra);
        let client = agent.client().await;
        rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
        wait_status(&client, "the card", |st| card_certs(st, "Alice") == 2).await;
        let c = agent.client().await;
        let (res, prompts) =
            sign_answering(&c, "alice@example.org", sample_entity("1"), None, CARD_PIN).await;
        res.unwrap();
        assert_eq!(prompts, 1, "the first signature logs in");
        // The token is logged in now; the 9C key still wants the PIN for each signature.
        let c = agent.client().await;
        let (res, prompts) =
            sign_answering(&c, "alice@example.org", sample_entity("2"), None, CARD_PIN).await;
        res.unwrap();
        assert_eq!(
            prompts, expected_prompts,
            "always_authenticate_uses_cache = {uses_cache}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_card_decrypts_rsa_and_ecdh_envelopes_from_openssl() {
    let dir = tempdir();
    let rig = rig();
    let agent = card_agent(dir.path(), &rig, None, "");
    let client = agent.client().await;
    let input = write_file(
        dir.path(),
        "m.txt",
        b"Content-Type: text/plain\r\n\r\nfor the card\r\n",
    );
    for (name, key) in [("rsa", "alice-enc-rsa"), ("ec", "alice-enc-ec")] {
        let card = vec![
            slot(PivSlot::Signature, "alice-sign-rsa"),
            slot(PivSlot::KeyManagement, key),
        ];
        rig.insert(name, 0, CARD_PIN, &card).unwrap();
        wait_status(&client, "the card", |st| card_certs(st, "Alice") == 2).await;
        for opts in [&["-aes-256-cbc"][..], &["-aes-128-gcm"][..]] {
            let out = std::process::Command::new("openssl")
                .args(["cms", "-encrypt", "-in"])
                .arg(&input)
                .arg("-recip")
                .arg(pki_file(&format!("{key}.pem")))
                .args(opts)
                .output()
                .unwrap();
            assert!(out.status.success());
            let r = decrypt_answering(&agent.client().await, out.stdout, CARD_PIN)
                .await
                .unwrap_or_else(|e| panic!("decrypt: {e}"));
            assert_eq!(
                r.mime.0, b"Content-Type: text/plain\r\n\r\nfor the card\r\n",
                "{name} {opts:?}"
            );
            assert!(r.certificate.hardware);
        }
        rig.remove(name).unwrap();
        wait_status(&client, "the card leaving", |st| st.tokens.is_empty()).await;
    }
}
