//! The virtual PIV card for tests (crate `virtual-piv-card`): rigs, cards holding keys of the
//! test PKI, and OpenSC on them, as a tool (`pkcs11-tool`) or loaded into the test process
//! (`cryptoki`). The agent's card tests and the card crate's own tests share it.
//!
//! Nothing here needs the agent (see `fixtures.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use der::{DecodePem, Encode};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::pkcs8::DecodePublicKey;
use sha2::{Digest, Sha256};
use virtual_piv_card::{CardRig, OPENSC_PKCS11, PivSlot, RigOptions, SlotSpec, pinpad_library};

use super::{path_str, pki, run};

/// The PIN of every test card.
pub const CARD_PIN: &str = "123456";

/// Slot `slot` holding the PKI's key and certificate `name` (e.g. `alice-sign-rsa`).
pub fn slot(slot: PivSlot, name: &str) -> SlotSpec {
    let pki = pki();
    SlotSpec::new(
        slot,
        pki.join(format!("{name}.key.pem")),
        pki.join(format!("{name}.pem")),
    )
}

/// A rig in a fresh temporary directory, removed with the rig.
pub fn rig() -> CardRig {
    CardRig::start_in_tempdir(RigOptions::default()).expect("card rig starts")
}

/// A rig whose readers have PIN pads (the `ifd-pinpad` reader library in front of vpcd).
pub fn pinpad_rig() -> CardRig {
    let options = RigOptions {
        pinpad: Some(pinpad_library().expect("the PIN-pad reader library")),
        ..RigOptions::default()
    };
    CardRig::start_in_tempdir(options).expect("card rig with PIN pads starts")
}

/// Runs `pkcs11-tool --module opensc-pkcs11.so ARGS` against the rig.
pub fn pkcs11_tool(rig: &CardRig, args: &[&str]) -> Output {
    pkcs11_tool_env(rig, args, &[])
}

/// The same with extra environment (e.g. `OPENSC_DEBUG`).
pub fn pkcs11_tool_env(rig: &CardRig, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new("pkcs11-tool")
        .arg("--module")
        .arg(OPENSC_PKCS11)
        .args(args)
        .envs(rig.env())
        .envs(env.iter().copied())
        .output()
        .expect("pkcs11-tool runs (Debian package opensc)")
}

/// The objects `pkcs11-tool -O` lists, as (kind, id): kind is the text before the first
/// `;` or ` Object` ("Private Key", "Public Key", "Certificate").
pub fn listed_objects(listing: &str) -> Vec<(String, String)> {
    let mut objects = Vec::new();
    let mut kind: Option<String> = None;
    for line in listing.lines() {
        if let Some(k) = line
            .split(" Object")
            .next()
            .filter(|_| line.contains(" Object"))
        {
            kind = Some(k.trim().to_owned());
        } else if let Some(id) = line.trim().strip_prefix("ID:")
            && let Some(k) = kind.take()
        {
            objects.push((k, id.trim().to_owned()));
        }
    }
    objects
}

/// `pkcs11-tool --login --pin CARD_PIN --sign --id 02 -m MECHANISM [EXTRA]` of `data` into
/// `sig`: a signature with the 9C key.
pub fn pkcs11_sign(
    rig: &CardRig,
    mechanism: &str,
    extra: &[&str],
    data: &Path,
    sig: &Path,
) -> Output {
    let mut args = vec![
        "--login", "--pin", CARD_PIN, "--sign", "--id", "02", "-m", mechanism,
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-i", path_str(data), "-o", path_str(sig)]);
    pkcs11_tool(rig, &args)
}

/// The public key of the PKI's certificate `name`, as a PEM file in `work`.
pub fn public_key_of(work: &tempfile::TempDir, name: &str) -> PathBuf {
    let out = work.path().join(format!("{name}.pub.pem"));
    public_key_from(&pki().join(format!("{name}.pem")), &out);
    out
}

/// Writes the public key of the certificate `cert` to `out`, both PEM.
pub fn public_key_from(cert: &Path, out: &Path) {
    run(
        "openssl",
        &[
            "x509",
            "-in",
            path_str(cert),
            "-pubkey",
            "-noout",
            "-out",
            path_str(out),
        ],
    );
}

/// Whether `openssl dgst DIGEST -verify PUBKEY [OPTS] -signature SIG DATA` verifies.
pub fn openssl_dgst_verifies(
    digest: &str,
    pubkey: &Path,
    opts: &[&str],
    sig: &Path,
    data: &Path,
) -> bool {
    let mut args = vec!["dgst", digest, "-verify", path_str(pubkey)];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["-signature", path_str(sig), path_str(data)]);
    run("openssl", &args).contains("Verified OK")
}

/// The label of the token in `slot`, as OpenSC loaded into this process reports it.
pub fn token_label(p11: &Pkcs11, slot: Slot) -> String {
    p11.get_token_info(slot).unwrap().label().trim().to_owned()
}

/// The 9C private key (CKA_ID 02), if the session can see it.
pub fn key_handle(session: &Session) -> Option<ObjectHandle> {
    session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(vec![2]),
        ])
        .ok()?
        .into_iter()
        .next()
}

/// Signs the hash of `data` with the 9C key (a context-specific login first: 9C is
/// PIN-always) and verifies the signature with the certificate `name` (EC P-256) of the test
/// PKI.
pub fn sign_and_verify(session: &Session, name: &str, data: &[u8]) {
    let key = key_handle(session).expect("the 9C private key after login");
    session
        .login(
            UserType::ContextSpecific,
            Some(&AuthPin::new(CARD_PIN.into())),
        )
        .unwrap();
    let hash = Sha256::digest(data);
    let sig = session.sign(&Mechanism::Ecdsa, key, &hash).unwrap();
    let pem = std::fs::read(pki().join(format!("{name}.pem"))).unwrap();
    let cert = x509_cert::Certificate::from_pem(&pem).unwrap();
    let spki = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .unwrap();
    let vk = p256::ecdsa::VerifyingKey::from_public_key_der(&spki).unwrap();
    let sig = p256::ecdsa::Signature::from_slice(&sig).expect("r || s");
    vk.verify_prehash(&hash, &sig)
        .expect("the card's signature verifies");
}
