//! Logging a token in: one login procedure at a time, the PIN from the cache or a prompt,
//! never retrying a rejected PIN and never trying a locked one; the context-specific login
//! of keys that want the PIN for every use; the retry state; and logging out.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::UserType;
use cryptoki::slot::TokenInfo;
use smime_agent_proto::{PinReason, PinRetries};
use tracing::{debug, info, warn};

use super::Token;
use super::backend::pkcs11::{already_ok, auth_pin, is_user_state, session_was_closed};
use super::rules::{self, RejectedPin, retries_left};
use crate::tokens::TokenError;
use crate::tokens::facts::retries_of;
use crate::tokens::pin::{PinError, PinPrompter, PinRequest, SecretPin};

/// The outcome of the last login attempt, for requests that waited for it, and the PIN
/// the token rejected last.
#[derive(Debug, Default)]
pub(super) struct AuthState {
    pub(super) last_failure: Option<TokenError>,
    pub(super) rejected: RejectedPin,
}

impl Token {
    /// Reads the token's flags now.
    pub(super) async fn token_info(self: &Arc<Self>) -> Result<TokenInfo, TokenError> {
        if self.is_removed() {
            return Err(self.removed_err());
        }
        let p11 = self.p11()?;
        let (pkcs11, slot) = (p11.pkcs11.clone(), p11.slot);
        let job = tokio::task::spawn_blocking(move || pkcs11.get_token_info(slot));
        // As for operations (`Token::run_with`): a pulled card ends the wait.
        let r = tokio::select! {
            biased;
            r = job => r,
            () = self.wait_gone() => return Err(self.removed_err()),
        };
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
        if self.backend.is_key_file() {
            return Ok(PinRetries::Ok);
        }
        let r = retries_of(&self.token_info().await?);
        self.note_retries(r);
        Ok(r)
    }

    pub(in crate::tokens) fn note_retries(&self, r: PinRetries) {
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

    pub(super) async fn logged_in(self: &Arc<Self>) -> Result<bool, TokenError> {
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
    pub(super) fn module_closed_sessions(&self) {
        if let Some(p) = self.backend.p11() {
            p.sessions_closed();
        }
        info!(token = %self.facts.token.label, "the module closed the token's sessions (its login was lost); opening new ones");
    }

    /// Asks the prompter, giving up when the token goes away.
    pub(super) async fn ask(
        self: &Arc<Self>,
        prompter: &dyn PinPrompter,
        req: PinRequest,
    ) -> Result<SecretPin, TokenError> {
        tokio::select! {
            r = prompter.ask(req) => r.map_err(|e| self.prompt_err(e)),
            _ = self.wait_gone() => Err(self.removed_err()),
        }
    }

    pub(super) fn prompt_err(&self, e: PinError) -> TokenError {
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
    pub(super) async fn ensure_login(
        self: &Arc<Self>,
        prompter: &dyn PinPrompter,
        certificate: &str,
    ) -> Result<Option<SecretPin>, TokenError> {
        let seen = self.attempts.load(Ordering::SeqCst);
        let mut state = tokio::select! {
            g = self.auth.lock() => g,
            _ = self.wait_gone() => return Err(self.removed_err()),
        };
        let now = self.attempts.load(Ordering::SeqCst);
        if let Some(e) = rules::shared_failure(seen, now, state.last_failure.as_ref()) {
            return Err(e);
        }
        if self.logged_in().await? {
            return Ok(None);
        }
        let info = self.token_info().await?;
        let retries = retries_of(&info);
        let token = self.facts.token.clone();
        rules::may_try(&token, retries)?;
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
            if let Err(e) = rules::refuse_again(&token, &pin, &state.rejected, self.known_retries())
            {
                warn!(token = %token.label, "offered the PIN the token rejected last; not sent to the token again");
                return Err(e);
            }
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
                state.rejected.clear();
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
                if let (TokenError::PinIncorrect { .. }, Some(p)) = (&e, &pin) {
                    state.rejected.remember(p);
                }
                let e = self.login_failure(e).await;
                state.last_failure = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Turns a failed C_Login into the client's error, with the retry state after it.
    pub(super) async fn login_failure(self: &Arc<Self>, e: TokenError) -> TokenError {
        if !matches!(e, TokenError::PinIncorrect { .. }) {
            return e;
        }
        let retries = self.pin_retries().await.ok();
        warn!(token = %self.facts.token.label, ?retries, "the token rejected the PIN; it will not be retried");
        rules::rejection(&self.facts.token, retries)
    }

    /// The prompt for a key's context-specific login, with the token's retry state.
    pub(super) async fn context_request(
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

    /// Wipes the token's PIN and logs it out once no operation is using it (a key file is
    /// locked again).
    pub async fn logout(self: Arc<Self>) {
        self.forget_pin();
        if self.is_removed() || self.backend.is_key_file() {
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
