//! pcscd killed and started again under a long-running OpenSC process (as the agent will
//! live through it): the token goes away, and comes back on the same socket without the
//! process doing anything but asking again.
//!
//! In-process OpenSC: one test, one rig in this binary (see `hotplug.rs`).

#[path = "../../common/card_crate.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{CARD_PIN as PIN, sign_and_verify, slot, time_until, token_label};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use virtual_piv_card::pcscd::process_alive;
use virtual_piv_card::{OPENSC_PKCS11, PivSlot};

#[test]
fn one_opensc_process_sees_the_cards_again_after_pcscd_is_killed_and_started_again() {
    let start = Instant::now();
    let rig = common::rig();
    let first_start = start.elapsed();
    // SAFETY: set before OpenSC (and so libpcsclite) is loaded; this binary's only test is
    // the only thread that touches the environment.
    unsafe { std::env::set_var("PCSCLITE_CSOCK_NAME", rig.csock_path()) };
    rig.insert(
        "alice",
        0,
        PIN,
        &[slot(PivSlot::Signature, "alice-sign-ec")],
    )
    .unwrap();

    let p11 = Pkcs11::new(OPENSC_PKCS11).expect("OpenSC's PKCS#11 module loads");
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let present = || p11.get_slots_with_token();
    let slots = present().unwrap();
    assert_eq!(slots.len(), 1, "{slots:?}");
    let alice_slot = slots[0];
    let session = login(&p11, alice_slot);
    sign_and_verify(&session, "alice-sign-ec", b"signed across a pcscd restart");

    // Killed: pcscd is gone at once; OpenSC loses the token (or fails) soon after.
    let pid = rig.pcscd_pid().expect("pcscd runs");
    let start = Instant::now();
    rig.kill_pcscd().unwrap();
    let killed = start.elapsed();
    assert!(!process_alive(pid) && rig.pcscd_pid().is_none());
    assert!(rig.kill_pcscd().is_err(), "killed twice");
    let mut seen = Vec::new();
    let gone = time_until(Duration::from_secs(5), || {
        let r = present();
        let gone = !matches!(&r, Ok(s) if !s.is_empty());
        seen.push(format!("{r:?}"));
        gone
    })
    .expect("the token disappears when pcscd is killed");
    seen.dedup();
    println!("pcscd killed in {killed:?}; token gone after {gone:?}; C_GetSlotList said {seen:?}");
    let stale = session.find_objects(&[]);
    println!("the old session with pcscd dead: {stale:?}");
    drop(session);
    // Still dead a while later: nothing brings it back by itself.
    std::thread::sleep(Duration::from_millis(500));
    let still = present();
    println!("C_GetSlotList with pcscd dead: {still:?}");
    assert!(rig.pcscd_pid().is_none(), "pcscd came back by itself");
    assert!(
        !matches!(&still, Ok(s) if !s.is_empty()),
        "a token is listed with pcscd dead: {still:?}"
    );

    // Started again: same socket, same ports; the card comes back by itself.
    let start = Instant::now();
    rig.start_pcscd().unwrap();
    let started = start.elapsed();
    assert!(rig.start_pcscd().is_err(), "started twice");
    let mut seen = Vec::new();
    time_until(Duration::from_secs(10), || {
        let r = present();
        seen.push(format!("{r:?}"));
        matches!(&r, Ok(s) if s.len() == 1)
    })
    .unwrap_or_else(|| panic!("the token does not come back; C_GetSlotList said {seen:?}"));
    let back = start.elapsed();
    seen.dedup();
    println!(
        "start_pcscd took {started:?} (readers listening and the card taken; the first \
         pcscd, without cards, took {first_start:?}); the token was listed again {back:?} \
         after the start_pcscd call, {:?} after it returned; C_GetSlotList said {seen:?}",
        back - started
    );
    let back_slot = present().unwrap()[0];
    println!("slot id before {alice_slot:?}, after {back_slot:?}");
    let session = login(&p11, back_slot);
    sign_and_verify(&session, "alice-sign-ec", b"signed across a pcscd restart");
    drop(session);
    assert!(back < Duration::from_secs(5), "token back after {back:?}");

    // restart_pcscd, with a second card inserted while pcscd is dead.
    rig.kill_pcscd().unwrap();
    rig.insert("bob", 1, PIN, &[slot(PivSlot::Signature, "bob-dual-rsa")])
        .expect("a card goes in while pcscd is dead");
    let start = Instant::now();
    rig.restart_pcscd().unwrap();
    time_until(
        Duration::from_secs(10),
        || matches!(present(), Ok(s) if s.len() == 2),
    )
    .expect("both cards listed after the restart");
    println!(
        "two tokens listed {:?} after restart_pcscd",
        start.elapsed()
    );
    let alice = present()
        .unwrap()
        .into_iter()
        .find(|s| token_label(&p11, *s) == "Alice Example")
        .expect("alice's token");
    let session = login(&p11, alice);
    sign_and_verify(&session, "alice-sign-ec", b"signed across a pcscd restart");
    drop(session);
    p11.finalize().unwrap();
}

fn login(p11: &Pkcs11, slot: Slot) -> Session {
    let session = p11.open_ro_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .unwrap();
    session
}
