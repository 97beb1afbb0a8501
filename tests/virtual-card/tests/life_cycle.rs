//! What issue 4's card life-cycle tests need from the rig, proved with OpenSC's tools:
//! reading a card's PIN counter and its count of PIN attempts from the test.
//!
//! Every test has its own rig and runs `pkcs11-tool` as a child process, so they run in
//! parallel.

mod common;

use std::fs;

use common::{ok, pkcs11_tool, pkcs11_tool_env, rig, scratch, slot};
use virtual_piv_card::{PivSlot, RigError};

const PIN: &str = "123456";

#[test]
fn the_pin_counter_and_the_count_of_pin_attempts_are_readable_during_and_after_insertion() {
    let rig = rig();
    assert!(matches!(
        rig.tries_left("alice"),
        Err(RigError::NoPinState { .. })
    ));
    let slots = [slot(PivSlot::Signature, "alice-sign-rsa")];
    rig.insert("alice", 0, PIN, &slots).unwrap();
    assert_eq!(rig.tries_left("alice").unwrap(), 3);
    assert_eq!(rig.verify_count("alice").unwrap(), 0);

    // Listing asks for the PIN state with the empty VERIFY: no attempt.
    ok("pkcs11-tool -L", &pkcs11_tool(&rig, &["-L"]));
    ok("pkcs11-tool -O", &pkcs11_tool(&rig, &["-O"]));
    assert_eq!(rig.verify_count("alice").unwrap(), 0);

    // One wrong PIN from pkcs11-tool is exactly one attempt and costs one try.
    let wrong = pkcs11_tool(&rig, &["--login", "--pin", "999999", "-O"]);
    assert!(!wrong.status.success());
    assert_eq!(rig.tries_left("alice").unwrap(), 2);
    assert_eq!(rig.verify_count("alice").unwrap(), 1);

    // A signature with 9C: the login and the context-specific login, two attempts.
    let work = scratch();
    let data = work.path().join("data");
    fs::write(&data, b"counted\n").unwrap();
    let sign = pkcs11_tool(
        &rig,
        &[
            "--login",
            "--pin",
            PIN,
            "--sign",
            "--id",
            "02",
            "-m",
            "SHA256-RSA-PKCS",
            "-i",
            data.to_str().unwrap(),
            "-o",
            work.path().join("sig").to_str().unwrap(),
        ],
    );
    ok("pkcs11-tool --sign", &sign);
    assert_eq!(
        rig.tries_left("alice").unwrap(),
        3,
        "the right PIN resets the counter"
    );
    assert_eq!(rig.verify_count("alice").unwrap(), 3);

    // Another wrong PIN, then the card is pulled: both stay readable.
    let wrong = pkcs11_tool_env(
        &rig,
        &["--login", "--pin", "000000", "-O"],
        &[("OPENSC_DEBUG", "9")],
    );
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("remaining tries: 2"));
    rig.remove("alice").unwrap();
    assert_eq!(rig.tries_left("alice").unwrap(), 2);
    assert_eq!(rig.verify_count("alice").unwrap(), 4);
    // What another process reads: the state file.
    let file = fs::read_to_string(rig.pin_state_file("alice")).unwrap();
    assert_eq!(file, "pin-tries-left 2\npin-verifies 4\n");

    // Inserted again: the counter is kept, the count starts again.
    rig.insert("alice", 1, PIN, &slots).unwrap();
    assert_eq!(rig.tries_left("alice").unwrap(), 2);
    assert_eq!(rig.verify_count("alice").unwrap(), 0);

    // Two wrong PINs block it; OpenSC still sends the third one to the card, and an
    // attempt on a blocked PIN is counted too (the agent must not make it).
    for _ in 0..3 {
        assert!(
            !pkcs11_tool(&rig, &["--login", "--pin", "000000", "-O"])
                .status
                .success()
        );
    }
    assert_eq!(rig.tries_left("alice").unwrap(), 0);
    assert_eq!(rig.verify_count("alice").unwrap(), 3);
}
