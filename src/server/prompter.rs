//! PIN prompts on behalf of one request: through the client (`pin_needed` events), through
//! pinentry on the client's terminal or display, or on the reader's keypad.

use std::sync::Arc;
use std::time::Duration;

use smime_agent_proto::{Event, PinNeeded, PinentryEnv, RequestId};

use super::prompts::PinAnswer;
use super::session::Session;
use crate::config::PinSource;
use crate::tokens::pin::{BoxFuture, Notice};
use crate::tokens::{PinError, PinPrompter, PinRequest, SecretPin, pinentry};

/// The prompter of one request on one connection.
pub struct RequestPrompter {
    session: Arc<Session>,
    request: RequestId,
}

impl RequestPrompter {
    pub fn new(session: Arc<Session>, request: RequestId) -> Self {
        RequestPrompter { session, request }
    }

    fn client_answers(&self) -> bool {
        self.session
            .hello
            .get()
            .is_some_and(|h| h.pin_prompt || h.pin_from_client)
    }

    /// The client holds the PIN already (`--pin-fd`): it is asked whatever the source.
    fn client_has_pin(&self) -> bool {
        self.session.hello.get().is_some_and(|h| h.pin_from_client)
    }

    fn event(&self, req: &PinRequest, prompt: u64, on_reader: bool) -> Event {
        Event::PinNeeded(PinNeeded {
            request: self.request.clone(),
            prompt,
            token: req.token.clone(),
            certificate: req.certificate.clone(),
            reason: req.reason,
            on_reader,
            retries: req.retries,
            retries_left: req.retries_left,
        })
    }

    async fn ask_client(&self, req: PinRequest) -> Result<SecretPin, PinError> {
        if !self.client_answers() {
            return Err(PinError::Unavailable(
                "[pin] source is \"client\" but this client does not answer PIN prompts (hello pin_prompt = false)".into(),
            ));
        }
        let timeout = self.session.services().config.pin.prompt_timeout_secs;
        let (prompt, rx) = self.session.prompts.open();
        // Closed however this ends, also when the request is dropped (its token was pulled).
        let _open = OpenPrompt {
            session: &self.session,
            prompt,
        };
        self.session
            .send_event(self.event(&req, prompt, false))
            .await;
        let answer = tokio::time::timeout(Duration::from_secs(timeout), rx).await;
        match answer {
            Err(_) => Err(PinError::Timeout(timeout)),
            // The connection ended: nobody is left to answer.
            Ok(Err(_)) => Err(PinError::Cancelled),
            Ok(Ok(PinAnswer::Cancel)) => Err(PinError::Cancelled),
            Ok(Ok(PinAnswer::Pin(pin))) => {
                SecretPin::new(pin.expose().as_bytes()).ok_or_else(|| {
                    PinError::Unavailable(
                        "the PIN is empty, longer than 255 bytes, or contains NUL".into(),
                    )
                })
            }
        }
    }

    async fn ask_pinentry(&self, req: PinRequest) -> Result<SecretPin, PinError> {
        let services = self.session.services();
        let cfg = &services.config.pin;
        let env: PinentryEnv = self
            .session
            .hello
            .get()
            .and_then(|h| h.pinentry.clone())
            .unwrap_or_default();
        pinentry::ask(
            &cfg.pinentry,
            &env,
            &req,
            Duration::from_secs(cfg.prompt_timeout_secs),
        )
        .await
    }
}

/// Unregisters a prompt when dropped, so a late answer is refused.
struct OpenPrompt<'a> {
    session: &'a Session,
    prompt: u64,
}

impl Drop for OpenPrompt<'_> {
    fn drop(&mut self) {
        self.session.prompts.close(self.prompt);
    }
}

impl PinPrompter for RequestPrompter {
    fn ask(&self, req: PinRequest) -> BoxFuture<'_, Result<SecretPin, PinError>> {
        Box::pin(async move {
            match self.session.services().config.pin.source {
                PinSource::Client => self.ask_client(req).await,
                PinSource::Pinentry if self.client_has_pin() => self.ask_client(req).await,
                PinSource::Pinentry => self.ask_pinentry(req).await,
                PinSource::Pinpad => Err(PinError::Unavailable(format!(
                    "[pin] source is \"pinpad\" but the token \"{}\" has no PIN pad",
                    req.token.label
                ))),
            }
        })
    }

    fn notify_on_reader(&self, req: PinRequest) -> BoxFuture<'_, Option<Notice>> {
        Box::pin(async move {
            if self.client_answers() {
                let (prompt, _rx) = self.session.prompts.open();
                self.session
                    .send_event(self.event(&req, prompt, true))
                    .await;
                self.session.prompts.close(prompt);
                return None;
            }
            // A client that shows no prompts gets a pinentry notice, when PINs come from
            // pinentry, so the person knows the reader is waiting.
            let services = self.session.services();
            let cfg = &services.config.pin;
            if cfg.source != PinSource::Pinentry {
                return None;
            }
            let env = self
                .session
                .hello
                .get()
                .and_then(|h| h.pinentry.clone())
                .unwrap_or_default();
            let timeout = Duration::from_secs(cfg.prompt_timeout_secs);
            match pinentry::notice(&cfg.pinentry, &env, &req, timeout) {
                Ok(n) => Some(n),
                Err(e) => {
                    tracing::warn!(token = %req.token.label, "cannot show the PIN-pad notice: {e}");
                    None
                }
            }
        })
    }
}
