//! What issue 4's card life-cycle tests need from the rig, proved with OpenSC's tools: a
//! slow card that can be pulled in the middle of a signature, and reading a card's PIN
//! counter and its count of PIN attempts from the test.
//!
//! Every test has its own rig and runs `pkcs11-tool` as a child process, so they run in
//! parallel. (pcscd killed and restarted under a running process: `pcscd_restart.rs`.)

#[path = "../../common/card_crate.rs"]
mod common;

use std::fs;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    CARD_PIN as PIN, ok, pkcs11_sign, pkcs11_tool, pkcs11_tool_env, rig, slot, tempdir, time_until,
};
use virtual_piv_card::{CardConfig, CardRig, OPENSC_PKCS11, PivSlot, RigError};

const DELAY: Duration = Duration::from_secs(2);

/// A card whose private-key operations take [`DELAY`].
fn insert_slow_card(rig: &CardRig) {
    let mut config = CardConfig::new("slow", PIN, vec![slot(PivSlot::Signature, "alice-sign-ec")]);
    config.op_delay = Some(DELAY);
    rig.insert_card(0, config).unwrap();
}

/// `pkcs11-tool --sign` with the 9C key (ECDSA), started in the background.
fn spawn_sign(rig: &CardRig, work: &tempfile::TempDir) -> Child {
    let data = work.path().join("data");
    fs::write(&data, b"signed slowly\n").unwrap();
    Command::new("pkcs11-tool")
        .arg("--module")
        .arg(OPENSC_PKCS11)
        .args([
            "--login",
            "--pin",
            PIN,
            "--sign",
            "--id",
            "02",
            "-m",
            "ECDSA-SHA256",
        ])
        .arg("-i")
        .arg(&data)
        .arg("-o")
        .arg(work.path().join("sig"))
        .envs(rig.env())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pkcs11-tool runs")
}

/// Waits for `child` at most `limit`; kills it (and fails) if it hangs.
fn wait_at_most(mut child: Child, limit: Duration) -> Output {
    let exited = time_until(limit, || matches!(child.try_wait(), Ok(Some(_))));
    if exited.is_none() {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "pkcs11-tool still runs after {limit:?}: stderr {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_slow_card_holds_only_its_private_key_operations() {
    let rig = rig();
    insert_slow_card(&rig);
    let work = tempdir();

    // Everything but the private-key operation stays fast: listing, login, objects.
    let start = Instant::now();
    ok(
        "pkcs11-tool -O --login",
        &pkcs11_tool(&rig, &["-O", "--login", "--pin", PIN]),
    );
    let listing = start.elapsed();
    assert!(listing < Duration::from_secs(1), "listing took {listing:?}");
    assert!(
        rig.wait_for_operation("slow", Duration::from_millis(100))
            .is_err(),
        "an operation seen where there was none"
    );

    let start = Instant::now();
    let child = spawn_sign(&rig, &work);
    rig.wait_for_operation("slow", Duration::from_secs(5))
        .expect("the card starts holding the signature");
    let holding = start.elapsed();
    let out = wait_at_most(child, Duration::from_secs(10));
    let took = start.elapsed();
    ok("pkcs11-tool --sign", &out);
    println!(
        "slow card ({DELAY:?}): the signature was held {holding:?} after the start; \
         pkcs11-tool --sign took {took:?}, -O --login {listing:?}"
    );
    assert!(took >= DELAY, "the signature took only {took:?}");
    // One delayed answer, not one per APDU.
    assert!(
        took < DELAY + Duration::from_millis(1500),
        "the signature took {took:?}"
    );
    let sig = fs::read(work.path().join("sig")).unwrap();
    assert_eq!(sig.len(), 64, "an ECDSA P-256 signature r || s");
}

#[test]
fn pulling_a_slow_card_in_the_middle_of_a_signature_makes_pkcs11_tool_fail_not_hang() {
    let rig = rig();
    insert_slow_card(&rig);
    let work = tempdir();

    let child = spawn_sign(&rig, &work);
    rig.wait_for_operation("slow", Duration::from_secs(5))
        .expect("the card starts holding the signature");
    let pulled = Instant::now();
    rig.remove("slow").unwrap();
    let remove_took = pulled.elapsed();
    let out = wait_at_most(child, Duration::from_secs(10));
    let failed_after = pulled.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "pulled during the delay: remove() took {remove_took:?}; pkcs11-tool exited \
         {failed_after:?} after the pull with {}: {}",
        out.status,
        stderr.trim()
    );
    assert!(
        !out.status.success(),
        "the signature succeeded without the card"
    );
    assert!(
        remove_took < Duration::from_millis(500),
        "remove waited for the operation: {remove_took:?}"
    );
    assert!(
        failed_after < DELAY,
        "pkcs11-tool failed only {failed_after:?} after the pull"
    );
    assert!(
        !work.path().join("sig").exists() || fs::read(work.path().join("sig")).unwrap().is_empty(),
        "a signature was written"
    );
}

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
    let work = tempdir();
    let data = work.path().join("data");
    fs::write(&data, b"counted\n").unwrap();
    let sign = pkcs11_sign(
        &rig,
        "SHA256-RSA-PKCS",
        &[],
        &data,
        &work.path().join("sig"),
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
