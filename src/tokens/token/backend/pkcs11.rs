//! The PKCS#11 side of a token: its pool of sessions and their generations, the call that
//! runs an operation on a session, and what each PKCS#11 error means for the session and
//! for the caller.
//!
//! Owns the sessions; knows nothing of PINs beyond passing one to C_Login.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState};
use cryptoki::slot::Slot;
use cryptoki::types::RawAuthPin;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::tokens::op::{OaepHash, PrivateOp, RsaDecrypt, SignMechanism};
use crate::tokens::pin::SecretPin;

/// Runs `op` on a logged-in session.
/// A hash as PKCS#11 names it for OAEP and PSS: the hash mechanism and MGF1 with it.
fn oaep_hash(
    h: OaepHash,
) -> (
    cryptoki::mechanism::MechanismType,
    cryptoki::mechanism::rsa::PkcsMgfType,
) {
    use cryptoki::mechanism::MechanismType as M;
    use cryptoki::mechanism::rsa::PkcsMgfType as G;
    match h {
        OaepHash::Sha1 => (M::SHA1, G::MGF1_SHA1),
        OaepHash::Sha256 => (M::SHA256, G::MGF1_SHA256),
        OaepHash::Sha384 => (M::SHA384, G::MGF1_SHA384),
        OaepHash::Sha512 => (M::SHA512, G::MGF1_SHA512),
    }
}

pub(in crate::tokens::token) fn run_op(
    s: &Session,
    key: ObjectHandle,
    op: PrivateOp,
) -> Result<Zeroizing<Vec<u8>>, CkError> {
    use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
    use cryptoki::mechanism::rsa::{PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
    use cryptoki::object::KeyType;
    match op {
        PrivateOp::Sign { mechanism, data } => {
            let m = match mechanism {
                SignMechanism::RsaPkcs1 => Mechanism::RsaPkcs,
                SignMechanism::Ecdsa => Mechanism::Ecdsa,
                SignMechanism::RsaPss { hash, salt_len } => {
                    let (hash_alg, mgf) = oaep_hash(hash);
                    Mechanism::RsaPkcsPss(PkcsPssParams {
                        hash_alg,
                        mgf,
                        s_len: (salt_len as u64).into(),
                    })
                }
            };
            s.sign(&m, key, &data).map(Zeroizing::new)
        }
        PrivateOp::Decrypt { padding, data } => {
            let (hash, mgf) = match padding {
                RsaDecrypt::Oaep(h) => oaep_hash(h),
                _ => oaep_hash(OaepHash::Sha1),
            };
            let m = match padding {
                RsaDecrypt::Pkcs1 => Mechanism::RsaPkcs,
                RsaDecrypt::Raw => Mechanism::RsaX509,
                RsaDecrypt::Oaep(_) => {
                    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()))
                }
            };
            s.decrypt(&m, key, &data).map(Zeroizing::new)
        }
        PrivateOp::DeriveEcdh { point } => {
            let params = Ecdh1DeriveParams::new(EcKdf::null(), &point);
            // A session object whose value can be read back: the shared secret is all the
            // agent needs, and the KDF happens outside the token (few tokens do X9.63).
            let derived = s.derive_key(
                &Mechanism::Ecdh1Derive(params),
                key,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::GENERIC_SECRET),
                    Attribute::Token(false),
                    Attribute::Sensitive(false),
                    Attribute::Extractable(true),
                ],
            )?;
            let value = s.get_attributes(derived, &[AttributeType::Value]);
            let _ = s.destroy_object(derived);
            let value = value?.into_iter().find_map(|a| match a {
                Attribute::Value(v) => Some(Zeroizing::new(v)),
                _ => None,
            });
            value.ok_or(CkError::NotSupported)
        }
    }
}

/// A private key found on the token.
#[derive(Debug, Clone, Copy)]
pub(in crate::tokens::token) struct KeyInfo {
    pub(in crate::tokens::token) handle: ObjectHandle,
    pub(in crate::tokens::token) always_authenticate: bool,
}

/// The PKCS#11 side of a token.
pub(in crate::tokens::token) struct P11 {
    pub(in crate::tokens::token) pkcs11: Pkcs11,
    pub(in crate::tokens::token) slot: Slot,
    /// Idle sessions, all of the current generation; `permits` bounds how many are in use
    /// at once (1 for a card, which does one thing at a time; more for software tokens,
    /// which work in parallel).
    pub(in crate::tokens::token) idle: Mutex<Vec<Session>>,
    /// Moves on when the module closed the token's sessions by itself: OpenSC does
    /// (C_CloseAllSessions, then CKR_SESSION_HANDLE_INVALID) when it finds the card no longer
    /// logged in, e.g. after a wrong context-specific PIN or another program's reset.
    /// Sessions of an older generation are never used again.
    pub(in crate::tokens::token) generation: AtomicU64,
    pub(in crate::tokens::token) permits: Semaphore,
    pub(in crate::tokens::token) keys: Mutex<HashMap<Vec<u8>, KeyInfo>>,
}

pub(in crate::tokens::token) fn is_user_state(s: SessionState) -> bool {
    matches!(s, SessionState::RoUser | SessionState::RwUser)
}

/// The module closed the session itself (not a removal): the token is still there, but no
/// longer logged in, and the module's other sessions on it are closed too.
pub(in crate::tokens::token) fn session_was_closed(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(RvError::SessionHandleInvalid | RvError::SessionClosed, _)
    )
}

impl P11 {
    pub(in crate::tokens::token) fn clear_keys(&self) {
        if let Ok(mut k) = self.keys.lock() {
            k.clear();
        }
    }

    /// A stale handle (the module re-enumerated) is found again next time.
    pub(in crate::tokens::token) fn forget_key(&self, key_id: &[u8]) {
        if let Ok(mut m) = self.keys.lock() {
            m.remove(key_id);
        }
    }

    /// The token was removed. Its idle sessions are not closed: the module closes a removed
    /// token's sessions itself when it notices, and calling into it for a card that is gone
    /// is what OpenSC 0.23 handles worst (sc_unlock returns without releasing the card
    /// mutex when sc_lock failed, and the next call on that card deadlocks the module). The
    /// few bytes of each handle are leaked instead.
    pub(in crate::tokens::token) fn abandon_idle(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            for session in idle.drain(..) {
                std::mem::forget(session);
            }
        }
    }

    /// Closes the idle sessions now, while the module is still initialized (before it is
    /// re-initialized, which invalidates them).
    pub(in crate::tokens::token) fn close_idle(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// An idle session, or a new one; with the generation it belongs to.
    pub(in crate::tokens::token) fn checkout(&self) -> Result<(u64, Session), CkError> {
        let generation = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = idle.pop() {
                return Ok((self.generation.load(Ordering::SeqCst), s));
            }
            self.generation.load(Ordering::SeqCst)
        };
        Ok((generation, self.pkcs11.open_ro_session(self.slot)?))
    }

    /// Back to the pool, unless the module closed its generation meanwhile. The generation
    /// is compared and moved on only under the pool's lock, so no stale session gets in.
    pub(in crate::tokens::token) fn checkin(&self, generation: u64, session: Session) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if generation == self.generation.load(Ordering::SeqCst) {
            idle.push(session);
        } else {
            // Already closed by the module (it closes all of a token's sessions at once);
            // closing it again would only log errors. The handle's few bytes are leaked.
            std::mem::forget(session);
        }
    }

    /// A session whose call failed, replaced: its operation may still be active (OpenSC 0.23
    /// keeps a C_Decrypt whose length query failed active, against PKCS#11 2.40 section 5.2,
    /// and the session's next C_DecryptInit fails with CKR_OPERATION_ACTIVE). A new session
    /// is opened first, so the token stays logged in, then the old one is closed.
    pub(in crate::tokens::token) fn replace(&self, generation: u64, used: Session) {
        if let Ok(fresh) = self.pkcs11.open_ro_session(self.slot) {
            self.checkin(generation, fresh);
        }
        if generation == self.generation.load(Ordering::SeqCst) {
            drop(used);
        } else {
            // Already closed by the module with its generation (see `checkin`).
            std::mem::forget(used);
        }
    }

    /// The module closed the token's sessions: none of the idle ones is used again.
    pub(in crate::tokens::token) fn sessions_closed(&self) {
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            self.generation.fetch_add(1, Ordering::SeqCst);
            for session in idle.drain(..) {
                std::mem::forget(session);
            }
        }
        if let Ok(mut keys) = self.keys.lock() {
            keys.clear();
        }
    }
}

/// The token declined this operation with this data or mechanism: a present token's answer.
pub(in crate::tokens::token) fn is_refusal(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::MechanismInvalid
                | RvError::MechanismParamInvalid
                | RvError::ArgumentsBad
                | RvError::KeyFunctionNotPermitted
                | RvError::KeyTypeInconsistent
                | RvError::FunctionNotSupported,
            _
        )
    )
}

/// Answers only a token that is there gives: no reason to wait for a removal notice.
pub(in crate::tokens::token) fn token_answered(e: &CkError) -> bool {
    is_refusal(e)
        || matches!(
            e,
            CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLocked, _)
        )
}

/// Errors after which a session is no good and must not go back to the pool.
pub(in crate::tokens::token) fn session_is_dead(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::DeviceError,
            _
        )
    )
}

/// The PIN as cryptoki takes it: raw bytes, exactly as typed (a zeroizing copy).
pub(in crate::tokens::token) fn auth_pin(pin: &SecretPin) -> RawAuthPin {
    RawAuthPin::new(Box::new(pin.expose().to_vec()))
}

/// C_Login on a token that is already logged in (by another session of this process) is
/// success.
pub(in crate::tokens::token) fn already_ok(r: Result<(), CkError>) -> Result<(), CkError> {
    match r {
        Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        other => other,
    }
}
