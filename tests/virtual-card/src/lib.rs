//! A virtual PIV smart card in a virtual reader, for tests that need a card they can insert,
//! pull and type PINs into — with no hardware.
//!
//! The path is the one a physical card takes: **card** (this crate, a TCP client of
//! vsmartcard-vpcd) → **vpcd reader** (a pcscd driver) → a **private pcscd** (its own
//! socket, its own reader configuration, free ports) → **OpenSC's PKCS#11 module** → the
//! application. Whatever the application sees is what it would see with a real PIV card.
//!
//! # Test support
//!
//! ```no_run
//! use virtual_piv_card::{CardRig, PivSlot, RigOptions, SlotSpec};
//!
//! # fn main() -> Result<(), virtual_piv_card::RigError> {
//! // A private pcscd with readers 0 and 1, in a temporary directory.
//! let rig = CardRig::start_in_tempdir(RigOptions::default())?;
//! rig.insert(
//!     "alice",
//!     0,
//!     "123456",
//!     &[SlotSpec::new(PivSlot::Signature, "pki/alice-sign-rsa.key.pem", "pki/alice-sign-rsa.pem")],
//! )?;
//! // Any PC/SC client started now, with this variable, sees the card:
//! let status = std::process::Command::new("pkcs11-tool")
//!     .args(["--module", virtual_piv_card::OPENSC_PKCS11, "-L"])
//!     .env("PCSCLITE_CSOCK_NAME", rig.csock_path())
//!     .status();
//! rig.remove("alice")?; // pulled: the token disappears
//! # Ok(()) }
//! // Dropping the rig pulls every card, stops pcscd and removes the directory, also
//! // when a test panics.
//! ```
//!
//! libpcsclite reads `PCSCLITE_CSOCK_NAME` once per process. A test that loads OpenSC
//! *in-process* must set it before the first PC/SC call and can use only one rig; tests
//! that run tools or the agent as child processes pass [`CardRig::env`] to each and can
//! run many rigs in parallel.
//!
//! # Card life cycle
//!
//! ```no_run
//! # use std::time::Duration;
//! # use virtual_piv_card::{CardConfig, CardRig, PivSlot, RigOptions, SlotSpec};
//! # fn main() -> Result<(), virtual_piv_card::RigError> {
//! # let rig = CardRig::start_in_tempdir(RigOptions::default())?;
//! # let slots = vec![SlotSpec::new(PivSlot::Signature, "k.pem", "c.pem")];
//! // pcscd crashes and comes back on the same socket and reader ports; the cards stay in
//! // their readers and are taken again (start_pcscd returns once they are).
//! rig.kill_pcscd()?;
//! rig.start_pcscd()?; // or rig.restart_pcscd()
//!
//! // A slow card: private-key operations are answered after 2 s, so a test can pull the
//! // card in the middle of a signature.
//! let mut slow = CardConfig::new("slow", "123456", slots);
//! slow.op_delay = Some(Duration::from_secs(2));
//! rig.insert_card(1, slow)?;
//! // ... start a signature, then:
//! rig.wait_for_operation("slow", Duration::from_secs(5))?;
//! rig.remove("slow")?; // the application's C_Sign fails at once
//!
//! // The PIN counter, and the PIN attempts since insertion, also after removal:
//! assert_eq!(rig.tries_left("slow")?, 3);
//! assert_eq!(rig.verify_count("slow")?, 2); // the login + the context-specific login
//! # Ok(()) }
//! ```
//!
//! Measured here (Debian 12, pcscd 1.9.9, OpenSC 0.23; `cargo test -- --nocapture`
//! prints them): a killed pcscd is noticed by a running OpenSC at once (the next
//! `C_GetSlotList` shows no token); `start_pcscd` takes ~0.41 s (pcscd's readers listen
//! after ~0.03 s; the rest is pcscd's 0.4 s presence poll taking the card), and the token
//! is listed again ~0.01 s later, in the same slot. A card pulled in the middle of a
//! signature makes OpenSC's `C_Sign` fail with `CKR_GENERAL_ERROR` (pcscd:
//! `SCARD_E_NOT_TRANSACTED`) within ~10 ms, not `CKR_DEVICE_REMOVED`.
//!
//! # Pieces
//! - [`card`]: the PIV application (APDU in, APDU out), [`keys`] and [`pin`] its contents.
//! - [`vpcd`]: the card's connection to a vpcd reader.
//! - [`pcscd`]: starting a private pcscd with vpcd readers (optionally with PIN pads: the
//!   `ifd-pinpad` reader library in front of vpcd's driver, see [`pinpad_library`]).
//! - [`keypad`]: typing on a PIN-pad reader's keypad.
//! - [`rig`]: [`CardRig`], the test-support handle that ties them together.
//! - [`cli`]: the `virtual-piv-card` and `card-rig` commands.

#![deny(unsafe_code)]

pub mod apdu;
pub mod card;
pub mod cli;
pub mod keypad;
pub mod keys;
pub mod pcscd;
pub mod pin;
pub mod rig;
pub mod tlv;
pub mod vpcd;

use std::io;
use std::path::PathBuf;

pub use card::{CardConfig, PivCard};
pub use keys::{PivSlot, SlotSpec};
pub use rig::{CardRig, RigOptions};

/// Debian's OpenSC PKCS#11 module.
pub const OPENSC_PKCS11: &str = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so";

/// The PIN-pad reader library (`tests/pinpad-reader`, crate `ifd-pinpad`) for
/// [`RigOptions::pinpad`]: `IFD_PINPAD_LIB` when set, else the one next to the running
/// program in the workspace's target directory, built with cargo when it is not there.
pub fn pinpad_library() -> Result<PathBuf, RigError> {
    if let Some(lib) = std::env::var_os("IFD_PINPAD_LIB") {
        return Ok(PathBuf::from(lib));
    }
    let exe =
        std::env::current_exe().map_err(|e| RigError::io("finding the running program", e))?;
    // target/<profile>/deps/<test> or target/<profile>/<binary>.
    let mut profile_dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if profile_dir.ends_with("deps") {
        profile_dir.pop();
    }
    let lib = profile_dir.join("libifd_pinpad.so");
    // Built once per process whether or not it exists (a no-op when up to date), so a
    // changed reader library is never tested stale. Without cargo at hand (a built
    // card-rig run by hand) the library already built serves.
    static BUILT: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    let built = *BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
        let mut build = std::process::Command::new(cargo);
        build.args([
            "build",
            "--quiet",
            "-p",
            "ifd-pinpad",
            "--manifest-path",
            manifest,
        ]);
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        build.status().ok().map(|s| s.success())
    });
    if built == Some(false) || !lib.exists() {
        return Err(RigError::Missing {
            what: "the PIN-pad reader library (libifd_pinpad.so)",
            hint: "build it with `cargo build -p ifd-pinpad`, or set IFD_PINPAD_LIB",
        });
    }
    Ok(lib)
}

/// A card could not be made from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error("key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("certificate file {path}: {reason}")]
    CertFile { path: PathBuf, reason: String },
    #[error(
        "slot {slot}: the certificate {cert} is not for the key {key}; give the key and \
         certificate of the same user"
    )]
    KeyMismatch {
        slot: PivSlot,
        key: PathBuf,
        cert: PathBuf,
    },
    #[error("slot {spec:?}: {reason}")]
    BadSlotSpec { spec: String, reason: String },
    #[error("PIN: {0}")]
    BadPin(String),
    #[error("PIN state file {path}: {reason}")]
    StateFile { path: PathBuf, reason: String },
}

/// The rig could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RigError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} not found: {hint}")]
    Missing {
        what: &'static str,
        hint: &'static str,
    },
    #[error(
        "socket path {0} is longer than the 107 bytes a Unix socket allows; use a shorter \
         rig directory"
    )]
    SocketPathTooLong(PathBuf),
    #[error("pcscd exited at start ({status}); see {log}")]
    PcscdExited { status: String, log: PathBuf },
    #[error("pcscd's readers do not listen on ports {ports}; see {log}")]
    ReadersNotListening { ports: String, log: PathBuf },
    #[error("card: {0}")]
    Card(#[from] CardError),
    #[error(
        "card name {0:?}: use letters, digits, '.', '_' and '-' (it names files in the rig \
         directory)"
    )]
    BadCardName(String),
    #[error("card {0:?} is already inserted; remove it first")]
    CardAlreadyInserted(String),
    #[error("card {0:?} is not inserted")]
    CardNotInserted(String),
    #[error("reader {reader} does not exist; this rig has readers 0 to {last}")]
    NoSuchReader { reader: u8, last: u8 },
    #[error("reader {reader} already holds card {card:?}; remove it first")]
    ReaderBusy { reader: u8, card: String },
    #[error("the reader on port {port} did not take the card within {seconds} s; see {log}")]
    CardNotSeen {
        port: u16,
        seconds: u64,
        log: PathBuf,
    },
    #[error("no card rig runs in {0}; start one with `card-rig up {0}`")]
    NotRunning(PathBuf),
    #[error("a card rig already runs in {0}; stop it with `card-rig down {0}`")]
    AlreadyRunning(PathBuf),
    #[error("rig state {path}: {reason}")]
    BadState { path: PathBuf, reason: String },
    #[error(
        "the rig's pcscd is not running (it was killed); start it again with \
         CardRig::start_pcscd or `card-rig start-pcscd DIR`"
    )]
    PcscdNotRunning,
    #[error("the rig's pcscd is already running; kill it first (or restart it)")]
    PcscdAlreadyRunning,
    #[error("card {card:?} has no PIN state in {path}: it was never inserted into this rig")]
    NoPinState { card: String, path: PathBuf },
    #[error(
        "card {card:?} started no private-key operation within {millis} ms (only a card \
         with an op_delay holds one long enough to be seen)"
    )]
    NoOperation { card: String, millis: u128 },
    #[error(
        "this rig's readers have no PIN pad; start the rig with PIN pads (`card-rig up DIR \
         --pinpad`, or RigOptions::pinpad)"
    )]
    NoPinPad,
    #[error("reader {reader} did not ask for a PIN on its keypad within {millis} ms")]
    NoKeypadPrompt { reader: u8, millis: u128 },
}

impl RigError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        RigError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Whether `name` can name a card (and its files).
pub(crate) fn valid_card_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
