//! The PKCS#11 module inside one long-running host program (the `cryptoki` crate loads it as
//! any program would): eight threads signing at once on sessions of their own, slot events
//! for a token that comes and goes (blocking and non-blocking C_WaitForSlotEvent), and a
//! C_Finalize that leaves nothing running. One test in this file: it names the agent to the
//! module through the process environment, which is set before any thread starts.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use p256::ecdsa::signature::hazmat::PrehashVerifier;

fn module_path() -> std::path::PathBuf {
    agent_bin()
        .parent()
        .unwrap()
        .join("libsmime_agent_pkcs11.so")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_program_signs_from_eight_threads_and_follows_a_token_coming_and_going() {
    let dir = tempdir();
    let (hsm, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &["alice-sign-ec"],
        AgentSpec {
            pin_source: "pinentry",
            pin_extra: "pinentry = \"pinentry-tty\"",
            ..Default::default()
        },
    );
    let term = Terminal::start();
    // SAFETY of set_var: this is the only test of this binary, and nothing else reads the
    // environment while it is set.
    unsafe {
        std::env::set_var(smime_agent_proto::SOCKET_ENV, &agent.socket);
        std::env::set_var("GPG_TTY", term.tty());
    }
    let p11 = Arc::new(Pkcs11::new(module_path()).expect("load the module"));
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slots = p11.get_slots_with_token().unwrap();
    assert_eq!(slots.len(), 1);
    let alice = slots[0];
    assert_eq!(p11.get_token_info(alice).unwrap().label(), "alice");
    assert!(
        p11.get_slot_event().unwrap().is_none(),
        "no event before any change"
    );

    // Log in: the person types the PIN at the one prompt.
    let login = {
        let p11 = p11.clone();
        tokio::task::spawn_blocking(move || {
            let s = p11.open_ro_session(alice).unwrap();
            s.login(UserType::User, None)
        })
    };
    term.wait_for("PIN:", 1).await;
    term.type_line(PIN);
    login.await.unwrap().expect("C_Login");

    // Eight threads, a session each, twenty signatures each, all at once.
    let cert = std::fs::read(pki_file("alice-sign-ec.der")).unwrap();
    let facts = smime_agent::certs::CertFacts::from_der(&cert).unwrap();
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(
        facts
            .cert
            .tbs_certificate()
            .subject_public_key_info()
            .subject_public_key
            .raw_bytes(),
    )
    .unwrap();
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let p11 = p11.clone();
            std::thread::spawn(move || {
                let s = p11.open_ro_session(alice).unwrap();
                let keys = s
                    .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
                    .unwrap();
                assert_eq!(keys.len(), 1, "the private key is visible once logged in");
                (0..20u8)
                    .map(|i| {
                        let hash = [t.wrapping_mul(31).wrapping_add(i); 32];
                        (hash, s.sign(&Mechanism::Ecdsa, keys[0], &hash).unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for (hash, sig) in t.join().expect("a signing thread") {
            let sig = p256::ecdsa::Signature::from_slice(&sig).unwrap();
            key.verify_prehash(&hash, &sig)
                .expect("each signature verifies");
        }
    }

    // Bob's token appears (SoftHSM needs the agent's rescan to see it): a blocking
    // C_WaitForSlotEvent returns its slot.
    let waiter = {
        let p11 = p11.clone();
        std::thread::spawn(move || p11.wait_for_slot_event())
    };
    hsm.add_token("bob", PIN, &["bob-dual-rsa"]);
    agent.client().await.rescan().await.unwrap();
    let bob = waiter.join().unwrap().expect("a slot event");
    assert_ne!(bob, alice);
    assert_eq!(p11.get_token_info(bob).unwrap().label(), "bob");
    let s = p11.open_ro_session(bob).unwrap();
    let certs = s
        .find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE)])
        .unwrap();
    let value = s.get_attributes(certs[0], &[AttributeType::Value]).unwrap();
    assert!(
        matches!(&value[0], Attribute::Value(v) if *v == std::fs::read(pki_file("bob-dual-rsa.der")).unwrap())
    );
    drop(s);
    assert!(
        p11.get_slot_event().unwrap().is_none(),
        "one event per change"
    );

    // Bob's token goes: its slot stays, empty, and says so at once.
    let out = std::process::Command::new("softhsm2-util")
        .args(["--delete-token", "--token", "bob"])
        .env("SOFTHSM2_CONF", hsm.conf())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.client().await.rescan().await.unwrap();
    let start = Instant::now();
    let gone = loop {
        if let Some(s) = p11.get_slot_event().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no event for the removal"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(gone, bob);
    assert!(!p11.get_slot_info(bob).unwrap().token_present());
    assert_eq!(p11.get_slots_with_token().unwrap(), vec![alice]);

    // C_Finalize ends the event watcher and the connections promptly.
    let start = Instant::now();
    let Ok(p11) = Arc::try_unwrap(p11) else {
        panic!("a thread still holds the module");
    };
    p11.finalize().expect("C_Finalize");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}
