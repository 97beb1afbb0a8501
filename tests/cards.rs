//! The card life cycle with a real smart card stack: a virtual PIV card in a virtual
//! reader under a private pcscd, OpenSC's PKCS#11 module, and the real agent.

mod common;
#[path = "common/oracle.rs"]
mod oracle;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::card::{CARD_PIN, pinpad_rig, rig, slot};
use common::*;
use smime_agent_proto::client::{Client, ClientError};
use smime_agent_proto::{ErrorCode, Event, Op};
use virtual_piv_card::{CardRig, OPENSC_PKCS11, PivSlot, SlotSpec};

/// Alice's card: her signing key in 9C, her decryption key in 9D.
fn alice_slots() -> Vec<SlotSpec> {
    vec![
        slot(PivSlot::Signature, "alice-sign-rsa"),
        slot(PivSlot::KeyManagement, "alice-enc-rsa"),
    ]
}

fn bob_slots() -> Vec<SlotSpec> {
    vec![slot(PivSlot::Signature, "bob-dual-rsa")]
}

/// The environment that points a process at the rig's pcscd.
fn rig_env(rig: &CardRig) -> impl Iterator<Item = (String, String)> {
    rig.env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.display().to_string()))
}

/// An agent that uses OpenSC on the rig's readers (plus whatever `extra` configures).
fn card_agent(dir: &Path, rig: &CardRig, hsm: Option<&SoftHsm>, extra: &str) -> Agent {
    card_agent_with(dir, rig, hsm, extra, "")
}

/// Same, with extra lines in `[pin]`.
fn card_agent_with(
    dir: &Path,
    rig: &CardRig,
    hsm: Option<&SoftHsm>,
    extra: &str,
    pin_extra: &str,
) -> Agent {
    let mut cfg =
        format!("[[tokens.module]]\npath = \"{OPENSC_PKCS11}\"\npoll_interval_ms = 500\n\n{extra}");
    if hsm.is_some() {
        cfg.push_str("\n[[tokens.module]]\npath = \"/usr/lib/softhsm/libsofthsm2.so\"\nkind = \"software\"\n");
    }
    Agent::start(
        dir,
        AgentSpec {
            softhsm: None,
            extra_config: cfg,
            pin_extra,
            env: rig_env(rig)
                .chain(hsm.map(|h| ("SOFTHSM2_CONF".to_string(), h.conf().display().to_string())))
                .collect(),
            ..Default::default()
        },
    )
}

/// An agent that uses OpenSC on the rig's readers and asks for PINs with `pinentry-tty`.
fn pinentry_card_agent(dir: &Path, rig: &CardRig) -> Agent {
    Agent::start(
        dir,
        AgentSpec {
            extra_config: format!("[[tokens.module]]\npath = \"{OPENSC_PKCS11}\"\n"),
            pin_source: "pinentry",
            pin_extra: "pinentry = \"pinentry-tty\"",
            env: rig_env(rig).collect(),
            ..Default::default()
        },
    )
}

/// Polls `status` until `pred` holds; returns how long it took.
async fn wait_status(
    client: &Client,
    what: &str,
    pred: impl Fn(&smime_agent_proto::StatusResult) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let st = client.status().await.expect("status");
        if pred(&st) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what} did not happen within 10 s; status: {st:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn card_certs(st: &smime_agent_proto::StatusResult, label_part: &str) -> usize {
    st.tokens
        .iter()
        .filter(|t| t.hardware && t.token.label.contains(label_part))
        .map(|t| t.certificates.len())
        .sum()
}

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
    let st = std::process::Command::new("openssl")
        .args(["pkcs12", "-export", "-inkey"])
        .arg(pki_file(&format!("{name}.key.pem")))
        .arg("-in")
        .arg(pki_file(&format!("{name}.pem")))
        .args(["-passout", &format!("pass:{passphrase}"), "-out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
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
    let (res, _) = sign_answering(
        &c,
        "alice@example.org",
        sample_entity("after pcscd"),
        None,
        CARD_PIN,
    )
    .await;
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

    // Second wrong PIN: locked.
    let c = agent.client().await;
    let (res, _) =
        sign_answering(&c, "alice@example.org", sample_entity("2"), None, "000000").await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_rsa_key_transport_answers_like_a_wrong_key_on_the_card() {
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
    let measured = oracle::measure(&cases, 12, CARD_PIN, || agent.client()).await;
    // The card's times spread wider (APDUs over TCP, a shared machine): a looser factor,
    // still far below the 55x of the removal wait this test was written against.
    oracle::assert_no_oracle(&measured, &content, 1.5);
    // The card is still there and logged in: no failure was taken for a removal.
    let st = client.status().await.unwrap();
    assert_eq!(card_certs(&st, "Alice"), 2);
}

/// What NSS's certutil lists of the module's tokens: lines of user certificates.
fn nss_user_certs(listing: &str) -> usize {
    listing
        .lines()
        .filter(|l| l.trim_end().ends_with("u,u,u"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nss_sees_the_card_come_and_go_and_a_wrong_pin_costs_one_try() {
    use common::module::*;
    let dir = tempdir();
    let rig = rig();
    let agent = pinentry_card_agent(&dir.path().join("agent"), &rig);
    let client = agent.client().await;
    let term = Terminal::start();
    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    wait_status(&client, "the card", |st| card_certs(st, "Alice") == 2).await;
    let db = nss_db(&dir.path().join("nssdb"));
    let list = |term: &Terminal| {
        let mut c = host_program("certutil", &agent, term);
        c.args(["-L", "-d", &db, "-h", "all"]);
        c
    };

    // The first listing logs in to the card, and the person mistypes: the card counts
    // exactly one failed try and the agent does not repeat it (certutil lists the public
    // certificates all the same).
    let tries = rig.tries_left("alice").unwrap();
    let out = with_pin(&agent, &term, list(&term), 1, "999999").await;
    assert_eq!(nss_user_certs(&String::from_utf8_lossy(&out.stdout)), 2);
    assert_eq!(rig.tries_left("alice").unwrap(), tries - 1, "one try spent");
    let log = agent.log_text();
    assert_eq!(
        log.matches("the token rejected the PIN").count(),
        1,
        "{log}"
    );
    // The next listing asks again; the right PIN resets the card's counter.
    let out = with_pin(&agent, &term, list(&term), 2, CARD_PIN).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(nss_user_certs(&String::from_utf8_lossy(&out.stdout)), 2);
    assert_eq!(rig.tries_left("alice").unwrap(), tries);

    // The card is pulled: its certificates are gone from NSS's view.
    rig.remove("alice").unwrap();
    wait_status(&client, "the card leaving", |st| st.tokens.is_empty()).await;
    let out = run_ok(&mut list(&term));
    assert_eq!(nss_user_certs(&String::from_utf8_lossy(&out.stdout)), 0);

    // Put back: they return. Its PIN went with it, so the listing asks again (prompt 3).
    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    wait_status(&client, "the card back", |st| card_certs(st, "Alice") == 2).await;
    let out = with_pin(&agent, &term, list(&term), 3, CARD_PIN).await;
    assert!(out.status.success());
    assert_eq!(nss_user_certs(&String::from_utf8_lossy(&out.stdout)), 2);
}
