//! One token present in a slot: its sessions, its login, and its private-key operations.
//!
//! Owns: the PKCS#11 sessions of the token, the login procedure (one at a time, never
//! retrying a rejected PIN, never trying a locked one), the token's PIN cache, and the raw
//! private-key operation. Blocking PKCS#11 calls run on tokio's blocking pool, never on the
//! async workers. Knows nothing of CMS or MIME: it signs the bytes it is given.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::{Slot, TokenInfo};
use cryptoki::types::RawAuthPin;
use smime_agent_proto::{PinReason, PinRetries, TokenRef};
use tokio::sync::{Semaphore, watch};
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use super::TokenError;
use super::pin::{PinCache, PinError, PinPrompter, PinRequest, SecretPin};
use super::soft::{self, KeyFile, SoftError};

/// How long a failed operation on a removable token waits for PC/SC to report the card
/// gone, before the failure is taken for a token error.
const REMOVAL_GRACE: Duration = Duration::from_millis(1500);

/// The raw private-key operations the agent asks of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignMechanism {
    /// CKM_RSA_PKCS over a DER DigestInfo.
    RsaPkcs1,
    /// CKM_ECDSA over the hash; the token returns r || s.
    Ecdsa,
}

/// A private-key operation.
#[derive(Debug)]
pub enum PrivateOp {
    Sign {
        mechanism: SignMechanism,
        data: Vec<u8>,
    },
    /// RSA decryption of an encrypted content key.
    Decrypt { padding: RsaDecrypt, data: Vec<u8> },
    /// ECDH with a peer's public point (SEC1); the result is the shared secret Z.
    DeriveEcdh { point: Vec<u8> },
}

/// How an RSA decryption unpads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaDecrypt {
    /// CKM_RSA_PKCS.
    Pkcs1,
    /// CKM_RSA_PKCS_OAEP with this hash (also for MGF1) and an empty label.
    Oaep(OaepHash),
    /// CKM_RSA_X_509: the raw result, for unpadding outside the token.
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OaepHash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl PrivateOp {
    /// A decryption whose unpadding the token does (PKCS#1 v1.5 or OAEP). How a token fails
    /// one depends on the plaintext, so its failures must all look alike (RFC 3218): one
    /// [`TokenError::Refused`] with no detail, no wait for a removal notice, and the key's
    /// handle kept, so neither the answer nor its time nor the next request's time tells a
    /// bad padding from a good one.
    pub fn is_padded_decrypt(&self) -> bool {
        matches!(
            self,
            PrivateOp::Decrypt {
                padding: RsaDecrypt::Pkcs1 | RsaDecrypt::Oaep(_),
                ..
            }
        )
    }

    fn call_name(&self) -> &'static str {
        match self {
            PrivateOp::Sign { .. } => "C_Sign",
            PrivateOp::Decrypt { .. } => "C_Decrypt",
            PrivateOp::DeriveEcdh { .. } => "C_DeriveKey",
        }
    }
}

/// Runs `op` on a logged-in session.
fn run_op(s: &Session, key: ObjectHandle, op: PrivateOp) -> Result<Zeroizing<Vec<u8>>, CkError> {
    use cryptoki::mechanism::MechanismType;
    use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
    use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
    use cryptoki::object::KeyType;
    match op {
        PrivateOp::Sign { mechanism, data } => {
            let m = match mechanism {
                SignMechanism::RsaPkcs1 => Mechanism::RsaPkcs,
                SignMechanism::Ecdsa => Mechanism::Ecdsa,
            };
            s.sign(&m, key, &data).map(Zeroizing::new)
        }
        PrivateOp::Decrypt { padding, data } => {
            let (hash, mgf) = match padding {
                RsaDecrypt::Oaep(OaepHash::Sha1) => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
                RsaDecrypt::Oaep(OaepHash::Sha256) => {
                    (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256)
                }
                RsaDecrypt::Oaep(OaepHash::Sha384) => {
                    (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384)
                }
                RsaDecrypt::Oaep(OaepHash::Sha512) => {
                    (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512)
                }
                _ => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
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

/// How PINs are handled, from `[pin]`.
#[derive(Debug, Clone, Copy)]
pub struct PinPolicy {
    /// A key that demands the PIN before every use may get the cached one.
    pub always_authenticate_uses_cache: bool,
}

/// A private key found on the token.
#[derive(Debug, Clone, Copy)]
struct KeyInfo {
    handle: ObjectHandle,
    always_authenticate: bool,
}

/// The outcome of the last login attempt, for requests that waited for it.
#[derive(Debug, Default)]
struct AuthState {
    last_failure: Option<TokenError>,
}

/// Facts about the token, read when it appeared.
#[derive(Debug, Clone)]
pub struct TokenFacts {
    pub token: TokenRef,
    /// For smart cards: the reader's name.
    pub slot_description: String,
    pub manufacturer: String,
    pub model: String,
    pub module_path: PathBuf,
    pub hardware: bool,
    pub removable: bool,
    pub protected_path: bool,
    pub login_required: bool,
    /// The token offers CKM_RSA_X_509, so RSA key transport can be unpadded in the agent
    /// in constant time instead of by the token (see [`PrivateOp::is_padded_decrypt`]).
    pub raw_rsa: bool,
}

/// How a token does its work.
enum Backend {
    /// A PKCS#11 token in a slot.
    Pkcs11(P11),
    /// A PKCS#12 key file: a software key, unlocked with its passphrase.
    Soft(KeyFile),
}

/// The PKCS#11 side of a token.
struct P11 {
    pkcs11: Pkcs11,
    slot: Slot,
    /// Idle sessions, all of the current generation; `permits` bounds how many are in use
    /// at once (1 for a card, which does one thing at a time; more for software tokens,
    /// which work in parallel).
    idle: Mutex<Vec<Session>>,
    /// Moves on when the module closed the token's sessions by itself: OpenSC does
    /// (C_CloseAllSessions, then CKR_SESSION_HANDLE_INVALID) when it finds the card no longer
    /// logged in, e.g. after a wrong context-specific PIN or another program's reset.
    /// Sessions of an older generation are never used again.
    generation: AtomicU64,
    permits: Semaphore,
    keys: Mutex<HashMap<Vec<u8>, KeyInfo>>,
}

/// A token: a PKCS#11 token in a slot, or a software key file.
pub struct Token {
    pub facts: TokenFacts,
    backend: Backend,
    /// The PIN of a PKCS#11 token (a key file keeps its unlocked key instead).
    pin_cache: PinCache,
    /// One login procedure (and so one PIN prompt) per token at a time.
    auth: tokio::sync::Mutex<AuthState>,
    /// Operations hold it shared from login to signature; logout holds it exclusively, so a
    /// logout never falls between an operation's login and its signature.
    usage: tokio::sync::RwLock<()>,
    /// Counts finished login attempts, so a waiter can tell that one happened meanwhile.
    attempts: AtomicU64,
    /// The PIN retry state last read from the token, for `status`: reading it afresh would
    /// mean a call into the module for every status request, and OpenSC can deadlock when
    /// such calls meet a card being pulled (see `mark_removed`).
    last_retries: Mutex<PinRetries>,
    /// Set when the token is removed; operations waiting on it end with `token_removed`.
    gone_tx: watch::Sender<bool>,
    gone: AtomicBool,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("facts", &self.facts).finish()
    }
}

fn is_user_state(s: SessionState) -> bool {
    matches!(s, SessionState::RoUser | SessionState::RwUser)
}

/// The retry state a token's flags report.
pub fn retries_of(info: &TokenInfo) -> PinRetries {
    if info.user_pin_locked() {
        PinRetries::Locked
    } else if info.user_pin_final_try() {
        PinRetries::FinalTry
    } else if info.user_pin_count_low() {
        PinRetries::Low
    } else {
        PinRetries::Ok
    }
}

fn retries_left(r: PinRetries) -> Option<u32> {
    match r {
        PinRetries::FinalTry => Some(1),
        PinRetries::Locked => Some(0),
        _ => None,
    }
}

/// The module closed the session itself (not a removal): the token is still there, but no
/// longer logged in, and the module's other sessions on it are closed too.
fn session_was_closed(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(RvError::SessionHandleInvalid | RvError::SessionClosed, _)
    )
}

impl P11 {
    /// An idle session, or a new one; with the generation it belongs to.
    fn checkout(&self) -> Result<(u64, Session), CkError> {
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
    fn checkin(&self, generation: u64, session: Session) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if generation == self.generation.load(Ordering::SeqCst) {
            idle.push(session);
        } else {
            // Already closed by the module (it closes all of a token's sessions at once);
            // closing it again would only log errors. The handle's few bytes are leaked.
            std::mem::forget(session);
        }
    }

    /// The module closed the token's sessions: none of the idle ones is used again.
    fn sessions_closed(&self) {
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
fn is_refusal(e: &CkError) -> bool {
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
fn token_answered(e: &CkError) -> bool {
    is_refusal(e)
        || matches!(
            e,
            CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLocked, _)
        )
}

/// Errors that a padded decryption reports as they are: the token is gone, the PIN is
/// needed or was refused, the key is missing. They do not depend on the encrypted data.
fn says_who_or_where(e: &TokenError) -> bool {
    matches!(
        e,
        TokenError::Removed { .. }
            | TokenError::PinIncorrect { .. }
            | TokenError::PinLocked { .. }
            | TokenError::PinCancelled { .. }
            | TokenError::KeyNotFound { .. }
    )
}

/// Errors after which a session is no good and must not go back to the pool.
fn session_is_dead(e: &CkError) -> bool {
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

impl Token {
    /// Wraps a token found in `slot`. `session` is the one used to read it.
    pub(super) fn new(
        facts: TokenFacts,
        pkcs11: Pkcs11,
        slot: Slot,
        session: Session,
        max_sessions: u32,
        pin_ttl: Duration,
    ) -> Token {
        Self::with_backend(
            facts,
            Backend::Pkcs11(P11 {
                pkcs11,
                slot,
                idle: Mutex::new(vec![session]),
                generation: AtomicU64::new(0),
                permits: Semaphore::new(max_sessions as usize),
                keys: Mutex::new(HashMap::new()),
            }),
            pin_ttl,
        )
    }

    /// A key file as a token of its own.
    pub(super) fn new_soft(facts: TokenFacts, file: KeyFile) -> Token {
        Self::with_backend(facts, Backend::Soft(file), Duration::ZERO)
    }

    fn with_backend(facts: TokenFacts, backend: Backend, pin_ttl: Duration) -> Token {
        let (gone_tx, _) = watch::channel(false);
        Token {
            facts,
            backend,
            pin_cache: PinCache::new(pin_ttl),
            auth: tokio::sync::Mutex::new(AuthState::default()),
            usage: tokio::sync::RwLock::new(()),
            attempts: AtomicU64::new(0),
            last_retries: Mutex::new(PinRetries::Ok),
            gone_tx,
            gone: AtomicBool::new(false),
        }
    }

    pub fn token_ref(&self) -> &TokenRef {
        &self.facts.token
    }

    /// The PKCS#11 side, for operations that exist only there.
    fn p11(&self) -> Result<&P11, TokenError> {
        match &self.backend {
            Backend::Pkcs11(p) => Ok(p),
            Backend::Soft(_) => Err(TokenError::Pkcs11 {
                token: self.facts.token.clone(),
                call: "PKCS#11",
                error: "a key file is not a PKCS#11 token".into(),
            }),
        }
    }

    fn clear_keys(&self) {
        if let Backend::Pkcs11(p) = &self.backend
            && let Ok(mut k) = p.keys.lock()
        {
            k.clear();
        }
    }

    /// A PIN is cached, or the key file is unlocked.
    pub fn pin_cached(&self) -> bool {
        match &self.backend {
            Backend::Pkcs11(_) => self.pin_cache.is_cached(),
            Backend::Soft(f) => f.is_unlocked(),
        }
    }

    /// Wipes the PIN (or locks the key file) if its time ran out; true when it did.
    pub fn expire_pin(&self) -> bool {
        match &self.backend {
            Backend::Pkcs11(_) => self.pin_cache.expire(),
            Backend::Soft(f) => f.expire(),
        }
    }

    /// Wipes the PIN now (or locks the key file).
    pub fn forget_pin(&self) {
        self.pin_cache.clear();
        if let Backend::Soft(f) = &self.backend {
            f.lock();
        }
    }

    /// Marks the token removed: its PIN is wiped, its idle sessions are closed, and every
    /// operation waiting on it ends with `token_removed`.
    pub fn mark_removed(&self) {
        self.gone.store(true, Ordering::SeqCst);
        self.gone_tx.send_replace(true);
        self.forget_pin();
        if let Backend::Pkcs11(p) = &self.backend
            && let Ok(mut idle) = p.idle.lock()
        {
            // Not closed: the module closes a removed token's sessions itself when it
            // notices, and calling into it for a card that is gone is what OpenSC 0.23
            // handles worst (sc_unlock returns without releasing the card mutex when
            // sc_lock failed, and the next call on that card deadlocks the module). The
            // few bytes of each handle are leaked instead.
            for session in idle.drain(..) {
                std::mem::forget(session);
            }
        }
        self.clear_keys();
    }

    /// Closes the token's idle sessions and forgets key handles, before its module is
    /// re-initialized (which invalidates them). Its login is gone afterwards.
    pub fn reset_sessions(&self) {
        if let Backend::Pkcs11(p) = &self.backend
            && let Ok(mut idle) = p.idle.lock()
        {
            // Closed now, while the module is still initialized.
            idle.clear();
        }
        self.clear_keys();
    }

    /// Exclusive use of the token: no operation runs while the guard lives.
    pub async fn exclusive(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.usage.write().await
    }

    pub fn is_removed(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }

    fn removed_err(&self) -> TokenError {
        TokenError::Removed {
            token: self.facts.token.clone(),
        }
    }

    /// Resolves when the token is removed.
    async fn wait_gone(&self) {
        let mut rx = self.gone_tx.subscribe();
        let _ = rx.wait_for(|g| *g).await;
    }

    /// Maps a PKCS#11 error of `call` to the error a client can act on.
    fn classify(&self, call: &'static str, e: CkError) -> TokenError {
        match e {
            CkError::Pkcs11(RvError::DeviceRemoved | RvError::TokenNotPresent, _) => {
                self.removed_err()
            }
            _ if self.is_removed() => self.removed_err(),
            CkError::Pkcs11(RvError::PinLocked, _) => TokenError::PinLocked {
                token: self.facts.token.clone(),
            },
            // A PIN pad's Cancel key or its timeout (OpenSC: SC_ERROR_KEYPAD_CANCELLED/TIMEOUT).
            CkError::Pkcs11(RvError::FunctionCanceled, _) => TokenError::PinCancelled {
                token: self.facts.token.clone(),
                reason: format!("{call} was cancelled on the reader's keypad or timed out"),
            },
            // The retry state is read again by `login_failure`.
            CkError::Pkcs11(RvError::PinIncorrect, _) => TokenError::PinIncorrect {
                token: self.facts.token.clone(),
                retries: PinRetries::Low,
            },
            // The token will not do this with this data or mechanism; a decryption may fall
            // back to another mechanism, or go on with a decoy key (RFC 3218).
            e if is_refusal(&e) => TokenError::Refused {
                token: self.facts.token.clone(),
                call,
                error: e.to_string(),
            },
            other => TokenError::Pkcs11 {
                token: self.facts.token.clone(),
                call,
                error: other.to_string(),
            },
        }
    }

    /// Runs `f` on one of the token's sessions, on the blocking pool.
    async fn run<T, F>(self: &Arc<Self>, call: &'static str, f: F) -> Result<T, TokenError>
    where
        T: Send + 'static,
        F: FnOnce(&Session) -> Result<T, CkError> + Send + 'static,
    {
        self.run_with(call, true, f).await
    }

    /// [`Token::run`]; without `removal_grace`, a failure is reported at once even on a
    /// removable token (for answers whose timing must not depend on the data).
    async fn run_with<T, F>(
        self: &Arc<Self>,
        call: &'static str,
        removal_grace: bool,
        f: F,
    ) -> Result<T, TokenError>
    where
        T: Send + 'static,
        F: FnOnce(&Session) -> Result<T, CkError> + Send + 'static,
    {
        if self.is_removed() {
            return Err(self.removed_err());
        }
        let p11 = self.p11()?;
        let permit = tokio::select! {
            p = p11.permits.acquire() => p.map_err(|_| self.removed_err())?,
            _ = self.wait_gone() => return Err(self.removed_err()),
        };
        let this = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let Backend::Pkcs11(p11) = &this.backend else {
                return Err((call, CkError::NotSupported));
            };
            let (generation, session) = p11.checkout().map_err(|e| ("C_OpenSession", e))?;
            let r = f(&session);
            match &r {
                Err(e) if session_was_closed(e) && !this.is_removed() => {
                    p11.sessions_closed();
                    std::mem::forget(session);
                }
                Err(e) if session_is_dead(e) => drop(session),
                _ if this.is_removed() => {}
                _ => p11.checkin(generation, session),
            }
            r.map_err(|e| (call, e))
        })
        .await;
        drop(permit);
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err((call, e))) => {
                // A card pulled mid-operation fails with any error (OpenSC: often
                // CKR_GENERAL_ERROR), and PC/SC reports the removal a few hundred
                // milliseconds later: give it that time before calling it a token error.
                // Not for a wrong PIN or a refused mechanism, which only a present card
                // answers: waiting would slow them, and make a refused decryption slower
                // than a good one (an RFC 3218 timing signal).
                if removal_grace
                    && self.facts.removable
                    && !self.is_removed()
                    && !token_answered(&e)
                {
                    let _ = tokio::time::timeout(REMOVAL_GRACE, self.wait_gone()).await;
                    if !self.is_removed() && !self.still_present().await {
                        self.mark_removed();
                    }
                }
                Err(self.classify(call, e))
            }
            Err(join) => Err(TokenError::Pkcs11 {
                token: self.facts.token.clone(),
                call,
                error: format!("the PKCS#11 call did not finish: {join}"),
            }),
        }
    }

    /// Whether the slot still holds a token (after an error on a removable token).
    async fn still_present(self: &Arc<Self>) -> bool {
        let Ok(p11) = self.p11() else { return true };
        let (pkcs11, slot) = (p11.pkcs11.clone(), p11.slot);
        tokio::task::spawn_blocking(move || {
            pkcs11
                .get_slot_info(slot)
                .map(|i| i.token_present())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }

    /// Reads the token's flags now.
    async fn token_info(self: &Arc<Self>) -> Result<TokenInfo, TokenError> {
        if self.is_removed() {
            return Err(self.removed_err());
        }
        let p11 = self.p11()?;
        let (pkcs11, slot) = (p11.pkcs11.clone(), p11.slot);
        let r = tokio::task::spawn_blocking(move || pkcs11.get_token_info(slot)).await;
        match r {
            Ok(Ok(info)) => Ok(info),
            Ok(Err(e)) => Err(self.classify("C_GetTokenInfo", e)),
            Err(e) => Err(TokenError::Pkcs11 {
                token: self.facts.token.clone(),
                call: "C_GetTokenInfo",
                error: e.to_string(),
            }),
        }
    }

    /// The PIN retry state as the token reports it now (a key file has no counter).
    pub async fn pin_retries(self: &Arc<Self>) -> Result<PinRetries, TokenError> {
        if let Backend::Soft(_) = self.backend {
            return Ok(PinRetries::Ok);
        }
        let r = retries_of(&self.token_info().await?);
        self.note_retries(r);
        Ok(r)
    }

    pub(super) fn note_retries(&self, r: PinRetries) {
        if let Ok(mut l) = self.last_retries.lock() {
            *l = r;
        }
    }

    /// The PIN retry state as last seen, without asking the token.
    pub fn known_retries(&self) -> PinRetries {
        self.last_retries
            .lock()
            .map(|r| *r)
            .unwrap_or(PinRetries::Ok)
    }

    async fn logged_in(self: &Arc<Self>) -> Result<bool, TokenError> {
        let this = self.clone();
        self.run("C_GetSessionInfo", move |s| match s.get_session_info() {
            Ok(info) => Ok(is_user_state(info.session_state())),
            // Closed by the module because the token is no longer logged in.
            Err(e) if session_was_closed(&e) => {
                this.module_closed_sessions();
                Ok(false)
            }
            Err(e) => Err(e),
        })
        .await
    }

    /// The module closed this token's sessions (see [`P11::generation`]).
    fn module_closed_sessions(&self) {
        if let Backend::Pkcs11(p) = &self.backend {
            p.sessions_closed();
        }
        info!(token = %self.facts.token.label, "the module closed the token's sessions (its login was lost); opening new ones");
    }

    /// Asks the prompter, giving up when the token goes away.
    async fn ask(
        self: &Arc<Self>,
        prompter: &dyn PinPrompter,
        req: PinRequest,
    ) -> Result<SecretPin, TokenError> {
        tokio::select! {
            r = prompter.ask(req) => r.map_err(|e| self.prompt_err(e)),
            _ = self.wait_gone() => Err(self.removed_err()),
        }
    }

    fn prompt_err(&self, e: PinError) -> TokenError {
        TokenError::PinCancelled {
            token: self.facts.token.clone(),
            reason: e.to_string(),
        }
    }

    /// Logs the token in unless it is. Returns the PIN when this call asked for one, so the
    /// same request can use it for a context-specific login without asking twice.
    ///
    /// A rejected PIN is wiped from the cache and never tried again; a locked PIN is never
    /// tried. Requests that waited while another one logged in share its failure instead of
    /// trying (and burning) another attempt themselves.
    async fn ensure_login(
        self: &Arc<Self>,
        prompter: &dyn PinPrompter,
        certificate: &str,
    ) -> Result<Option<SecretPin>, TokenError> {
        let seen = self.attempts.load(Ordering::SeqCst);
        let mut state = tokio::select! {
            g = self.auth.lock() => g,
            _ = self.wait_gone() => return Err(self.removed_err()),
        };
        if self.attempts.load(Ordering::SeqCst) != seen
            && let Some(e) = &state.last_failure
        {
            return Err(e.clone());
        }
        if self.logged_in().await? {
            return Ok(None);
        }
        let info = self.token_info().await?;
        let retries = retries_of(&info);
        let token = self.facts.token.clone();
        if retries == PinRetries::Locked {
            return Err(TokenError::PinLocked { token });
        }
        let req = PinRequest {
            token: token.clone(),
            certificate: Some(certificate.to_owned()),
            reason: PinReason::Login,
            retries,
            retries_left: retries_left(retries),
            passphrase: false,
        };

        let (pin, result) = if self.facts.protected_path {
            // Kept up while the reader waits for the PIN.
            let _notice = tokio::select! {
                n = prompter.notify_on_reader(req) => n,
                _ = self.wait_gone() => return Err(self.removed_err()),
            };
            info!(token = %token.label, "waiting for the PIN on the reader's keypad");
            let r = self
                .run("C_Login", |s| already_ok(s.login(UserType::User, None)))
                .await;
            (None, r)
        } else {
            let pin = match self.pin_cache.get() {
                Some(p) => p,
                None => self.ask(prompter, req).await?,
            };
            let auth = auth_pin(&pin);
            let r = self
                .run("C_Login", move |s| {
                    already_ok(s.login_with_raw(UserType::User, &auth))
                })
                .await;
            (Some(pin), r)
        };
        self.attempts.fetch_add(1, Ordering::SeqCst);
        match result {
            Ok(()) => {
                state.last_failure = None;
                self.note_retries(PinRetries::Ok);
                match &pin {
                    Some(p) => self.pin_cache.put(p),
                    None => self.pin_cache.put_pinpad_login(),
                }
                self.clear_keys();
                info!(token = %token.label, "token logged in");
                Ok(pin)
            }
            Err(e) => {
                self.pin_cache.clear();
                let e = self.login_failure(e).await;
                state.last_failure = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Turns a failed C_Login into the client's error, with the retry state after it.
    async fn login_failure(self: &Arc<Self>, e: TokenError) -> TokenError {
        let token = self.facts.token.clone();
        if !matches!(e, TokenError::PinIncorrect { .. }) {
            return e;
        }
        let retries = self.pin_retries().await.unwrap_or(PinRetries::Low);
        warn!(token = %token.label, ?retries, "the token rejected the PIN; it will not be retried");
        if retries == PinRetries::Locked {
            return TokenError::PinLocked { token };
        }
        TokenError::PinIncorrect {
            token,
            retries: if retries == PinRetries::Ok {
                PinRetries::Low
            } else {
                retries
            },
        }
    }

    /// Finds the private key with CKA_ID `key_id` (after login, when private keys show).
    /// The key's handle, when it was found before (no call into the module).
    fn cached_key(&self, key_id: &[u8]) -> Option<KeyInfo> {
        let p11 = self.p11().ok()?;
        p11.keys.lock().ok()?.get(key_id).copied()
    }

    async fn key(self: &Arc<Self>, key_id: &[u8]) -> Result<KeyInfo, TokenError> {
        if let Some(k) = self.cached_key(key_id) {
            return Ok(k);
        }
        let p11 = self.p11()?;
        let id = key_id.to_vec();
        let found = self
            .run("C_FindObjects", move |s| {
                let handles = s.find_objects(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Id(id),
                ])?;
                let Some(&handle) = handles.first() else {
                    return Ok(None);
                };
                // Modules that do not know CKA_ALWAYS_AUTHENTICATE leave it out.
                let always = s
                    .get_attributes(handle, &[AttributeType::AlwaysAuthenticate])
                    .ok()
                    .and_then(|attrs| {
                        attrs.into_iter().find_map(|a| match a {
                            Attribute::AlwaysAuthenticate(b) => Some(b),
                            _ => None,
                        })
                    })
                    .unwrap_or(false);
                Ok(Some(KeyInfo {
                    handle,
                    always_authenticate: always,
                }))
            })
            .await?;
        let key = found.ok_or_else(|| TokenError::KeyNotFound {
            token: self.facts.token.clone(),
            key_id: crate::certs::hex(key_id),
        })?;
        if let Ok(mut m) = p11.keys.lock() {
            m.insert(key_id.to_vec(), key);
        }
        Ok(key)
    }

    /// Signs `data` with the private key `key_id`, logging in first if needed. The PIN comes
    /// from the cache or from `prompter`.
    pub async fn sign(
        self: &Arc<Self>,
        key_id: &[u8],
        certificate: &str,
        mechanism: SignMechanism,
        data: Vec<u8>,
        prompter: &dyn PinPrompter,
        policy: PinPolicy,
    ) -> Result<Vec<u8>, TokenError> {
        let out = self
            .private_op(
                key_id,
                certificate,
                PrivateOp::Sign { mechanism, data },
                prompter,
                policy,
            )
            .await?;
        Ok(out.to_vec())
    }

    /// Runs one private-key operation with the key `key_id`, logging in first if needed.
    /// The result of a decryption or derivation is secret and comes back zeroizing.
    pub async fn private_op(
        self: &Arc<Self>,
        key_id: &[u8],
        certificate: &str,
        op: PrivateOp,
        prompter: &dyn PinPrompter,
        policy: PinPolicy,
    ) -> Result<Zeroizing<Vec<u8>>, TokenError> {
        let padded_decrypt = op.is_padded_decrypt();
        let result = self
            .private_op_inner(key_id, certificate, op, prompter, policy)
            .await;
        match result {
            Err(e) if padded_decrypt && !says_who_or_where(&e) => Err(TokenError::Refused {
                token: self.facts.token.clone(),
                call: "C_Decrypt",
                error: "the encrypted key was not accepted".into(),
            }),
            r => r,
        }
    }

    async fn private_op_inner(
        self: &Arc<Self>,
        key_id: &[u8],
        certificate: &str,
        op: PrivateOp,
        prompter: &dyn PinPrompter,
        policy: PinPolicy,
    ) -> Result<Zeroizing<Vec<u8>>, TokenError> {
        if let Backend::Soft(file) = &self.backend {
            return self.soft_op(file, certificate, op, prompter).await;
        }
        let padded_decrypt = op.is_padded_decrypt();
        let lease = tokio::select! {
            l = self.usage.read() => l,
            _ = self.wait_gone() => return Err(self.removed_err()),
        };
        // The usual case: logged in already and the key's handle known. One call into the
        // module checks the login and does the operation; only a token that is not logged
        // in goes through the login procedure (its lock, perhaps a prompt) below.
        let op = match self.cached_key(key_id) {
            Some(key) if !key.always_authenticate => {
                let this = self.clone();
                let r = self
                    .run_with(op.call_name(), !padded_decrypt, move |s| {
                        match s.get_session_info() {
                            Ok(i) if is_user_state(i.session_state()) => {}
                            Ok(_) => return Ok(Err(op)),
                            Err(e) if session_was_closed(&e) => {
                                this.module_closed_sessions();
                                return Ok(Err(op));
                            }
                            Err(e) => return Err(e),
                        }
                        run_op(s, key.handle, op).map(Ok)
                    })
                    .await;
                match r {
                    Ok(Err(op)) => op,
                    Ok(Ok(out)) => {
                        drop(lease);
                        return self.op_done(key_id, padded_decrypt, Ok(out)).await;
                    }
                    Err(e) => {
                        drop(lease);
                        return self.op_done(key_id, padded_decrypt, Err(e)).await;
                    }
                }
            }
            _ => op,
        };
        let mut fresh_pin = self.ensure_login(prompter, certificate).await?;
        let key = self.key(key_id).await?;

        let context_pin = if key.always_authenticate && !self.facts.protected_path {
            let pin = match fresh_pin.take() {
                Some(p) => p,
                None => match self
                    .pin_cache
                    .get()
                    .filter(|_| policy.always_authenticate_uses_cache)
                {
                    Some(p) => p,
                    None => {
                        let req = self.context_request(certificate).await?;
                        self.ask(prompter, req).await?
                    }
                },
            };
            Some(auth_pin(&pin))
        } else {
            None
        };
        let context_login = key.always_authenticate;
        // The reader asks for the PIN again; the person must know to look at it (a notice
        // stays up until the operation returns).
        let _notice = if context_login && self.facts.protected_path {
            let req = self.context_request(certificate).await?;
            let notice = tokio::select! {
                n = prompter.notify_on_reader(req) => n,
                _ = self.wait_gone() => return Err(self.removed_err()),
            };
            info!(token = %self.facts.token.label, "waiting for the PIN on the reader's keypad (context-specific login)");
            notice
        } else {
            None
        };

        let call = op.call_name();
        let result = self
            .run_with(call, !padded_decrypt, move |s| {
                if context_login {
                    match &context_pin {
                        Some(pin) => s.login_with_raw(UserType::ContextSpecific, pin)?,
                        // PIN pad: the reader asks again.
                        None => s.login(UserType::ContextSpecific, None)?,
                    }
                }
                run_op(s, key.handle, op)
            })
            .await;
        drop(lease);
        self.op_done(key_id, padded_decrypt, result).await
    }

    /// The prompt for a key's context-specific login, with the token's retry state.
    async fn context_request(
        self: &Arc<Self>,
        certificate: &str,
    ) -> Result<PinRequest, TokenError> {
        let retries = self.pin_retries().await?;
        Ok(PinRequest {
            token: self.facts.token.clone(),
            certificate: Some(certificate.to_owned()),
            reason: PinReason::ContextSpecific,
            retries,
            retries_left: retries_left(retries),
            passphrase: false,
        })
    }

    /// After a private-key operation: log out when no PIN may be kept; on failure forget the
    /// key's handle and, for a rejected context-specific PIN, wipe it and report retries.
    async fn op_done(
        self: &Arc<Self>,
        key_id: &[u8],
        padded_decrypt: bool,
        result: Result<Zeroizing<Vec<u8>>, TokenError>,
    ) -> Result<Zeroizing<Vec<u8>>, TokenError> {
        match result {
            Ok(out) => {
                if !self.pin_cache.enabled() {
                    // Nothing may stay logged in; the response need not wait for it.
                    tokio::spawn(self.clone().logout());
                }
                Ok(out)
            }
            Err(e) => {
                // A stale handle (the module re-enumerated) is found again next time. A
                // refusal, a PIN error or a cancelled prompt says nothing against the handle,
                // and keeping it lets a decryption's fallback take the one-call path.
                // A padded decryption's failure keeps it: see [`PrivateOp::is_padded_decrypt`].
                if matches!(
                    e,
                    TokenError::Pkcs11 { .. } | TokenError::KeyNotFound { .. }
                ) && !padded_decrypt
                    && let Ok(p11) = self.p11()
                    && let Ok(mut m) = p11.keys.lock()
                {
                    m.remove(key_id);
                }
                if matches!(e, TokenError::PinIncorrect { .. }) {
                    // The context-specific PIN was rejected: wipe it, report the retries.
                    self.pin_cache.clear();
                    return Err(self.login_failure(e).await);
                }
                Err(e)
            }
        }
    }

    /// Uses a key file's key, unlocking it first if needed (one passphrase prompt at a
    /// time; a wrong passphrase is reported, never tried again).
    async fn soft_op(
        self: &Arc<Self>,
        file: &KeyFile,
        certificate: &str,
        op: PrivateOp,
        prompter: &dyn PinPrompter,
    ) -> Result<Zeroizing<Vec<u8>>, TokenError> {
        let key = match file.key() {
            Some(k) => k,
            None => {
                let _one = tokio::select! {
                    g = self.auth.lock() => g,
                    _ = self.wait_gone() => return Err(self.removed_err()),
                };
                match file.key() {
                    Some(k) => k,
                    None => {
                        let pass = if file.empty_passphrase {
                            None
                        } else {
                            let req = PinRequest {
                                token: self.facts.token.clone(),
                                certificate: Some(certificate.to_owned()),
                                reason: PinReason::Login,
                                retries: PinRetries::Ok,
                                retries_left: None,
                                passphrase: true,
                            };
                            Some(self.ask(prompter, req).await?)
                        };
                        let this = self.clone();
                        let r = tokio::task::spawn_blocking(move || match &this.backend {
                            Backend::Soft(f) => f.unlock(pass.as_ref()),
                            Backend::Pkcs11(_) => Err(SoftError::Unusable {
                                file: String::new(),
                                why: "not a key file".into(),
                            }),
                        })
                        .await
                        .map_err(|e| self.software_err(e.to_string()))?;
                        match r {
                            Ok(k) => {
                                info!(token = %self.facts.token.label, "key file unlocked");
                                k
                            }
                            Err(SoftError::WrongPassphrase(_)) => {
                                warn!(token = %self.facts.token.label, "wrong passphrase; it will not be retried");
                                return Err(TokenError::PinIncorrect {
                                    token: self.facts.token.clone(),
                                    retries: PinRetries::Ok,
                                });
                            }
                            Err(e) => return Err(self.software_err(e.to_string())),
                        }
                    }
                }
            }
        };
        let decrypting = matches!(op, PrivateOp::Decrypt { .. });
        tokio::task::spawn_blocking(move || soft::private_op(&key, op))
            .await
            .map_err(|e| self.software_err(e.to_string()))?
            .map_err(|e| {
                if decrypting {
                    TokenError::Refused {
                        token: self.facts.token.clone(),
                        call: "the software key",
                        error: e,
                    }
                } else {
                    self.software_err(e)
                }
            })
    }

    fn software_err(&self, error: String) -> TokenError {
        TokenError::Pkcs11 {
            token: self.facts.token.clone(),
            call: "the software key",
            error,
        }
    }

    /// Wipes the token's PIN and logs it out once no operation is using it (a key file is
    /// locked again).
    pub async fn logout(self: Arc<Self>) {
        self.forget_pin();
        if self.is_removed() || matches!(self.backend, Backend::Soft(_)) {
            return;
        }
        let _exclusive = tokio::select! {
            w = self.usage.write() => w,
            _ = self.wait_gone() => return,
        };
        let r = self
            .run("C_Logout", |s| match s.logout() {
                Err(CkError::Pkcs11(RvError::UserNotLoggedIn, _)) => Ok(()),
                other => other,
            })
            .await;
        self.clear_keys();
        match r {
            Ok(()) => info!(token = %self.facts.token.label, "token logged out"),
            Err(e) => debug!(error = %e, "C_Logout failed"),
        }
    }
}

/// The PIN as cryptoki takes it: raw bytes, exactly as typed (a zeroizing copy).
fn auth_pin(pin: &SecretPin) -> RawAuthPin {
    RawAuthPin::new(Box::new(pin.expose().to_vec()))
}

/// C_Login on a token that is already logged in (by another session of this process) is
/// success.
fn already_ok(r: Result<(), CkError>) -> Result<(), CkError> {
    match r {
        Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        other => other,
    }
}
