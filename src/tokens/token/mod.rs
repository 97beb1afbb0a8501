//! One token present in a slot (or a key file): its login, its removal and its private-key
//! operations.
//!
//! Owns: the token's backend (`backend/`: the PKCS#11 sessions, or the key file), the login
//! procedure (`login.rs`, under the rules of `rules.rs`: one at a time, never retrying a
//! rejected PIN, never trying a locked one), the token's PIN cache, and the raw private-key
//! operation. Blocking PKCS#11 calls run on tokio's blocking pool, never on the
//! async workers. Knows nothing of CMS or MIME: it signs the bytes it is given.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use smime_agent_proto::{PinRetries, TokenRef};
use tokio::sync::{Semaphore, watch};
use tracing::info;
use zeroize::Zeroizing;

mod backend;
mod keyfile;
mod login;
mod rules;

use self::backend::Backend;
use self::backend::pkcs11::{
    KeyInfo, P11, auth_pin, is_refusal, is_user_state, run_op, session_is_dead, session_was_closed,
    token_answered,
};
use self::login::AuthState;
use super::TokenError;
use super::facts::TokenFacts;
use super::op::{PinPolicy, PrivateOp, SignMechanism};
use super::pin::{PinCache, PinPrompter};
use super::soft::KeyFile;

/// How long a failed operation on a removable token waits for PC/SC to report the card
/// gone, before the failure is taken for a token error.
const REMOVAL_GRACE: Duration = Duration::from_millis(1500);

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
        Self::with_backend(facts, Backend::KeyFile(file), Duration::ZERO)
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
        self.backend.p11().ok_or_else(|| TokenError::Pkcs11 {
            token: self.facts.token.clone(),
            call: "PKCS#11",
            error: "a key file is not a PKCS#11 token".into(),
        })
    }

    fn clear_keys(&self) {
        self.backend.clear_keys();
    }

    /// A PIN is cached, or the key file is unlocked.
    pub fn pin_cached(&self) -> bool {
        self.backend.secret_held(&self.pin_cache)
    }

    /// Wipes the PIN (or locks the key file) if its time ran out; true when it did.
    pub fn expire_pin(&self) -> bool {
        self.backend.expire(&self.pin_cache)
    }

    /// Wipes the PIN now (or locks the key file).
    pub fn forget_pin(&self) {
        self.backend.forget(&self.pin_cache);
    }

    /// Marks the token removed: its PIN is wiped, its idle sessions are closed, and every
    /// operation waiting on it ends with `token_removed`.
    pub fn mark_removed(&self) {
        self.gone.store(true, Ordering::SeqCst);
        self.gone_tx.send_replace(true);
        self.forget_pin();
        self.backend.removed();
    }

    /// Closes the token's idle sessions and forgets key handles, before its module is
    /// re-initialized (which invalidates them). Its login is gone afterwards.
    pub fn reset_sessions(&self) {
        self.backend.reset_sessions();
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
        self.run_with(call, true, f, |_| false).await
    }

    /// [`Token::run`]; without `removal_grace`, a failure is reported at once even on a
    /// removable token (for answers whose timing must not depend on the data).
    ///
    /// A session whose call failed is not used again (see [`P11::replace`]), also when `f`
    /// turned the failure into a value (`failed` says so); without `removal_grace` the
    /// session is replaced after every call, so a failure costs what a success costs.
    async fn run_with<T, F>(
        self: &Arc<Self>,
        call: &'static str,
        removal_grace: bool,
        f: F,
        failed: fn(&T) -> bool,
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
        let job = tokio::task::spawn_blocking(move || {
            let Some(p11) = this.backend.p11() else {
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
                Err(_) => p11.replace(generation, session),
                Ok(v) if !removal_grace || failed(v) => p11.replace(generation, session),
                Ok(_) => p11.checkin(generation, session),
            }
            r.map_err(|e| (call, e))
        });
        // A card PC/SC saw leave ends the request now, also while the module still has the
        // call: OpenSC 0.23 can hang for good in a call on a card pulled under it (the soak
        // test found it), and a request must get its answer. The call ends, or not, on its
        // own; its session is not reused (the token is gone).
        let result = tokio::select! {
            biased;
            r = job => r,
            () = self.wait_gone() => return Err(self.removed_err()),
        };
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

    /// Logs the token in now unless it is (the PIN from the cache or `prompter`, under the
    /// same rules as an operation's login). A key file is unlocked when its key is first
    /// used, so for it this does nothing.
    pub async fn login(self: &Arc<Self>, prompter: &dyn PinPrompter) -> Result<(), TokenError> {
        if self.backend.is_key_file() {
            return Ok(());
        }
        let _lease = tokio::select! {
            l = self.usage.read() => l,
            _ = self.wait_gone() => return Err(self.removed_err()),
        };
        let label = self.facts.token.label.clone();
        self.ensure_login(prompter, &label).await.map(|_| ())
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
        if result.is_err() && !self.pin_cache.enabled() {
            // Nothing may stay logged in, after a failure as after a success (`op_done` logs
            // out after one): else the next request would sign with no PIN asked.
            tokio::spawn(self.clone().logout());
        }
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
        if let Some(file) = self.backend.key_file() {
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
                    .run_with(
                        op.call_name(),
                        !padded_decrypt,
                        move |s| {
                            if padded_decrypt {
                                // Asked first, every time: a padded decryption's failures must
                                // all cost what a success costs.
                                match s.get_session_info() {
                                    Ok(i) if is_user_state(i.session_state()) => {}
                                    Ok(_) => return Ok(Err(op)),
                                    Err(e) if session_was_closed(&e) => {
                                        this.module_closed_sessions();
                                        return Ok(Err(op));
                                    }
                                    Err(e) => return Err(e),
                                }
                                return run_op(s, key.handle, op).map(Ok);
                            }
                            // One call into the module in the usual case. Only a failure asks
                            // for the login state, so a token that lost its login (a card
                            // reset, another program's C_Logout) goes through the login
                            // procedure below instead of failing the request.
                            let again = op.clone();
                            match run_op(s, key.handle, op) {
                                Ok(out) => Ok(Ok(out)),
                                Err(CkError::Pkcs11(RvError::UserNotLoggedIn, _)) => Ok(Err(again)),
                                Err(e) if session_was_closed(&e) => {
                                    this.module_closed_sessions();
                                    Ok(Err(again))
                                }
                                Err(e) => match s.get_session_info() {
                                    Ok(i) if !is_user_state(i.session_state()) => Ok(Err(again)),
                                    // OpenSC closes every session when it finds the login lost.
                                    Err(e2) if session_was_closed(&e2) => {
                                        this.module_closed_sessions();
                                        Ok(Err(again))
                                    }
                                    _ => Err(e),
                                },
                            }
                        },
                        |v| v.is_err(),
                    )
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
            .run_with(
                call,
                !padded_decrypt,
                move |s| {
                    if context_login {
                        match &context_pin {
                            Some(pin) => s.login_with_raw(UserType::ContextSpecific, pin)?,
                            // PIN pad: the reader asks again.
                            None => s.login(UserType::ContextSpecific, None)?,
                        }
                    }
                    run_op(s, key.handle, op)
                },
                |_| false,
            )
            .await;
        drop(lease);
        self.op_done(key_id, padded_decrypt, result).await
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
                    && let Some(p11) = self.backend.p11()
                {
                    p11.forget_key(key_id);
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
}
