//! How a token does its work: the one interface over its two kinds, a PKCS#11 token in a
//! slot and a PKCS#12 key file. [`super::Token`] keeps what both share (the login lock,
//! removal, the PIN cache) and asks its backend for the rest through these methods.
//!
//! An enum, not a trait object: the set is closed, and the PKCS#11 side runs closures over
//! a `cryptoki::Session` on the blocking pool, which a trait could only offer through a
//! generic method (not object-safe) or boxed closures on every call.

pub(super) mod pkcs11;

use super::super::pin::PinCache;
use super::super::soft::KeyFile;
use pkcs11::P11;

pub(super) enum Backend {
    /// A PKCS#11 token in a slot.
    Pkcs11(P11),
    /// A PKCS#12 key file: a software key, unlocked with its passphrase.
    KeyFile(KeyFile),
}

impl Backend {
    /// The PKCS#11 side, for what exists only there.
    pub(super) fn p11(&self) -> Option<&P11> {
        match self {
            Backend::Pkcs11(p) => Some(p),
            Backend::KeyFile(_) => None,
        }
    }

    pub(super) fn key_file(&self) -> Option<&KeyFile> {
        match self {
            Backend::Pkcs11(_) => None,
            Backend::KeyFile(f) => Some(f),
        }
    }

    /// A key file has no PIN counter, no login and no sessions.
    pub(super) fn is_key_file(&self) -> bool {
        matches!(self, Backend::KeyFile(_))
    }

    /// A PIN is cached (PKCS#11), or the key file is unlocked.
    pub(super) fn secret_held(&self, pins: &PinCache) -> bool {
        match self {
            Backend::Pkcs11(_) => pins.is_cached(),
            Backend::KeyFile(f) => f.is_unlocked(),
        }
    }

    /// Wipes the PIN, or locks the key file, if its time ran out; true when it did.
    pub(super) fn expire(&self, pins: &PinCache) -> bool {
        match self {
            Backend::Pkcs11(_) => pins.expire(),
            Backend::KeyFile(f) => f.expire(),
        }
    }

    /// Wipes the PIN now, and locks a key file.
    pub(super) fn forget(&self, pins: &PinCache) {
        pins.clear();
        if let Backend::KeyFile(f) = self {
            f.lock();
        }
    }

    /// Forgets the key handles found so far (a key file has none).
    pub(super) fn clear_keys(&self) {
        if let Some(p) = self.p11() {
            p.clear_keys();
        }
    }

    /// The token was removed: its idle sessions are let go without a call into the module.
    pub(super) fn removed(&self) {
        if let Some(p) = self.p11() {
            p.abandon_idle();
        }
        self.clear_keys();
    }

    /// Its module is about to be re-initialized: idle sessions are closed while it can.
    pub(super) fn reset_sessions(&self) {
        if let Some(p) = self.p11() {
            p.close_idle();
        }
        self.clear_keys();
    }
}
