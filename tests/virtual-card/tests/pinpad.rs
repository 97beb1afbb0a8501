//! The PIN-pad reader (`ifd-pinpad` in front of vpcd) as OpenSC sees it: a token with a
//! protected authentication path, whose PIN is typed on the reader and checked by the card.

#[path = "../../common/card_crate.rs"]
mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{
    CARD_PIN as PIN, ok, openssl_dgst_verifies, path_str, pinpad_rig, pkcs11_tool, public_key_of,
    slot, tempdir,
};
use virtual_piv_card::{CardRig, OPENSC_PKCS11, PivSlot, RigOptions};

const WAIT: Duration = Duration::from_secs(10);

/// A PIN-pad rig with Alice's signature key in reader 0.
fn alice_on_a_pin_pad_reader() -> CardRig {
    let rig = pinpad_rig();
    rig.insert(
        "alice",
        0,
        PIN,
        &[slot(PivSlot::Signature, "alice-sign-rsa")],
    )
    .unwrap();
    rig
}

/// `pkcs11-tool --login --sign` with the 9C key, no PIN given: OpenSC asks the reader.
fn spawn_sign(rig: &CardRig, data: &Path, sig: &Path) -> Child {
    Command::new("pkcs11-tool")
        .arg("--module")
        .arg(OPENSC_PKCS11)
        .args(["--login", "--sign", "--id", "02", "-m", "SHA256-RSA-PKCS"])
        .args(["-i", path_str(data), "-o", path_str(sig)])
        .envs(rig.env())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pkcs11-tool runs")
}

fn finish(child: Child) -> Output {
    child.wait_with_output().expect("pkcs11-tool finishes")
}

#[test]
fn opensc_takes_the_pin_from_the_readers_keypad_and_the_card_checks_it() {
    let rig = alice_on_a_pin_pad_reader();
    let listing = ok("pkcs11-tool -L", &pkcs11_tool(&rig, &["-L"]));
    assert!(
        listing.contains("PIN pad present"),
        "OpenSC does not see the PIN pad:\n{listing}"
    );

    let work = tempdir();
    let data = work.path().join("data");
    fs::write(&data, b"signed after a PIN typed on the reader\n").unwrap();
    let sig = work.path().join("sig");

    // The login, then the signature key's own (PIV: user consent), each on the keypad.
    let child = spawn_sign(&rig, &data, &sig);
    rig.keypad_enter(0, PIN, WAIT).unwrap();
    rig.keypad_enter(0, PIN, WAIT).unwrap();
    ok("pkcs11-tool --sign with the PIN pad", &finish(child));
    assert_eq!(rig.verify_count("alice").unwrap(), 2);
    let pubkey = public_key_of(&work, "alice-sign-rsa");
    let verified = openssl_dgst_verifies("-sha256", &pubkey, &[], &sig, &data);
    assert!(verified);

    // A wrong PIN on the keypad reaches the card and costs one try.
    let child = spawn_sign(&rig, &data, &sig);
    rig.keypad_enter(0, "654321", WAIT).unwrap();
    let out = finish(child);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CKR_PIN_INCORRECT"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rig.tries_left("alice").unwrap(), 2);

    // Cancel on the keypad: OpenSC's login is cancelled and the card sees no VERIFY.
    let verifies = rig.verify_count("alice").unwrap();
    let child = spawn_sign(&rig, &data, &sig);
    rig.wait_for_keypad(0, WAIT).unwrap();
    rig.keypad_cancel(0).unwrap();
    let out = finish(child);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CKR_FUNCTION_CANCELED"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rig.verify_count("alice").unwrap(), verifies);
    assert_eq!(rig.tries_left("alice").unwrap(), 2);
}

#[test]
fn a_pin_shorter_than_the_card_allows_is_refused_by_the_reader_not_sent() {
    let rig = alice_on_a_pin_pad_reader();
    let work = tempdir();
    let data = work.path().join("data");
    fs::write(&data, b"x").unwrap();
    let child = spawn_sign(&rig, &data, &work.path().join("sig"));
    rig.keypad_enter(0, "12", WAIT).unwrap();
    let out = finish(child);
    assert!(!out.status.success());
    assert_eq!(
        rig.verify_count("alice").unwrap(),
        0,
        "nothing reached the card"
    );
    assert_eq!(rig.tries_left("alice").unwrap(), 3);
}

#[test]
fn keypad_calls_on_a_rig_without_pin_pads_say_so() {
    let rig = CardRig::start_in_tempdir(RigOptions::default()).unwrap();
    let err = rig.keypad_type(0, PIN).unwrap_err();
    assert!(err.to_string().contains("--pinpad"), "{err}");
}
