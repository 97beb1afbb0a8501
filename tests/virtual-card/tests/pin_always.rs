//! Slot 9C is "PIN Always" as on a real PIV card: one signature per VERIFY, so an
//! application must do a context-specific login before every signature.
//!
//! In-process OpenSC: one test, one rig in this binary (see `hotplug.rs`).

#[path = "../../common/card_crate.rs"]
mod common;

use common::{CARD_PIN as PIN, slot};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use sha2::{Digest, Sha256};
use virtual_piv_card::{OPENSC_PKCS11, PivSlot};

#[test]
fn the_signature_key_needs_a_context_login_for_every_signature() {
    let rig = common::rig();
    // SAFETY: set before OpenSC is loaded; the only test of this binary.
    unsafe { std::env::set_var("PCSCLITE_CSOCK_NAME", rig.csock_path()) };
    rig.insert(
        "alice",
        0,
        PIN,
        &[
            slot(PivSlot::Signature, "alice-sign-rsa"),
            slot(PivSlot::KeyManagement, "alice-enc-rsa"),
        ],
    )
    .unwrap();
    let p11 = Pkcs11::new(OPENSC_PKCS11).unwrap();
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = p11.get_slots_with_token().unwrap()[0];
    let session = p11.open_ro_session(slot).unwrap();
    let pin = AuthPin::new(PIN.into());
    session.login(UserType::User, Some(&pin)).unwrap();
    let key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(vec![2]),
        ])
        .unwrap()[0];
    let always = session
        .get_attributes(key, &[AttributeType::AlwaysAuthenticate])
        .unwrap();
    assert!(
        matches!(always.as_slice(), [Attribute::AlwaysAuthenticate(true)]),
        "{always:?}"
    );

    let hash = Sha256::digest(b"one signature per PIN");
    let mut digest_info = vec![
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    digest_info.extend_from_slice(&hash);
    for round in 0..2 {
        session
            .login(UserType::ContextSpecific, Some(&pin))
            .unwrap();
        let sig = session.sign(&Mechanism::RsaPkcs, key, &digest_info);
        assert!(sig.is_ok_and(|s| s.len() == 256), "signature {round}");
    }
    let again = session.sign(&Mechanism::RsaPkcs, key, &digest_info);
    assert!(
        matches!(again, Err(Error::Pkcs11(RvError::UserNotLoggedIn, _))),
        "a second signature without a context login: {again:?}"
    );
    p11.finalize().unwrap();
}
