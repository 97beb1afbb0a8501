//! OpenSC loaded in one long-running process (as the agent will load it) follows cards
//! being pulled and inserted, and sees two cards as two tokens.
//!
//! libpcsclite reads `PCSCLITE_CSOCK_NAME` once per process, so this binary holds a single
//! test with a single rig.

#[path = "../../common/card_crate.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{CARD_PIN as PIN, key_handle, sign_and_verify, slot, time_until, token_label};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use virtual_piv_card::{OPENSC_PKCS11, PivSlot};

#[test]
fn one_opensc_process_follows_removal_and_insertion_and_sees_two_cards() {
    let rig = common::rig();
    // SAFETY: set before OpenSC (and so libpcsclite) is loaded; this binary's only test is
    // the only thread that touches the environment.
    unsafe { std::env::set_var("PCSCLITE_CSOCK_NAME", rig.csock_path()) };
    let alice = [slot(PivSlot::Signature, "alice-sign-ec")];
    rig.insert("alice", 0, PIN, &alice).unwrap();

    let p11 = Pkcs11::new(OPENSC_PKCS11).expect("OpenSC's PKCS#11 module loads");
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let present = || p11.get_slots_with_token().expect("C_GetSlotList");

    let slots = present();
    assert_eq!(slots.len(), 1, "one card, one token: {slots:?}");
    let alice_slot = slots[0];
    let info = p11.get_slot_info(alice_slot).unwrap();
    assert!(info.removable_device() && info.hardware_slot(), "{info:?}");
    assert_eq!(token_label(&p11, alice_slot), "Alice Example");

    // The card works in this process before it is pulled.
    let session = p11.open_ro_session(alice_slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .unwrap();
    sign_and_verify(
        &session,
        "alice-sign-ec",
        b"signed in a long-running process",
    );

    // Pulled: the token is gone within a second, the old session with it.
    let start = Instant::now();
    rig.remove("alice").unwrap();
    let gone = time_until(Duration::from_secs(3), || present().is_empty())
        .map(|_| start.elapsed())
        .expect("the token disappears after removal");
    println!("token gone {gone:?} after removal");
    assert!(gone < Duration::from_secs(1), "removal seen after {gone:?}");
    let stale = session.find_objects(&[]);
    println!("the old session after removal: {stale:?}");
    assert!(stale.is_err(), "the old session still works: {stale:?}");
    drop(session);

    // Inserted again: back within a second (counted from the insert call, which includes
    // the reader taking the card), in the same slot, needing a new login.
    let start = Instant::now();
    rig.insert("alice", 0, PIN, &alice).unwrap();
    let inserted = start.elapsed();
    time_until(Duration::from_secs(3), || present() == [alice_slot])
        .expect("the token comes back after insertion");
    let back = start.elapsed();
    println!("token back {back:?} after insertion (the insert call took {inserted:?})");
    assert!(
        back < Duration::from_secs(1),
        "insertion seen after {back:?}"
    );
    let session = p11.open_ro_session(alice_slot).unwrap();
    assert!(
        key_handle(&session).is_none(),
        "private keys visible without a new login"
    );
    session
        .login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .unwrap();
    sign_and_verify(
        &session,
        "alice-sign-ec",
        b"signed in a long-running process",
    );
    drop(session);

    // A second card in the second reader is a second token.
    let start = Instant::now();
    rig.insert("bob", 1, PIN, &[slot(PivSlot::Signature, "bob-dual-rsa")])
        .unwrap();
    time_until(Duration::from_secs(3), || present().len() == 2).expect("the second card appears");
    let second = start.elapsed();
    println!("second token present {second:?} after insertion");
    assert!(
        second < Duration::from_secs(1),
        "second card seen after {second:?}"
    );
    let slots = present();
    let mut labels: Vec<String> = slots.iter().map(|s| token_label(&p11, *s)).collect();
    labels.sort();
    assert_eq!(labels, ["Alice Example", "Bob Example"]);
    let serials: Vec<String> = slots
        .iter()
        .map(|s| p11.get_token_info(*s).unwrap().serial_number().to_owned())
        .collect();
    assert_ne!(serials[0], serials[1], "two cards, one serial number");

    p11.finalize().unwrap();
}
