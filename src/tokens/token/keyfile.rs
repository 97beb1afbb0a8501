//! A key file's private-key operation: unlocking it first when needed (one passphrase
//! prompt at a time; a wrong passphrase reported, never tried again).

use std::sync::Arc;

use smime_agent_proto::{PinReason, PinRetries};
use tracing::{info, warn};
use zeroize::Zeroizing;

use super::Token;
use crate::tokens::TokenError;
use crate::tokens::op::PrivateOp;
use crate::tokens::pin::{PinPrompter, PinRequest};
use crate::tokens::soft::{self, KeyFile, SoftError};

impl Token {
    /// Uses a key file's key, unlocking it first if needed (one passphrase prompt at a
    /// time; a wrong passphrase is reported, never tried again).
    pub(super) async fn soft_op(
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
                        let r =
                            tokio::task::spawn_blocking(move || match this.backend.key_file() {
                                Some(f) => f.unlock(pass.as_ref()),
                                None => Err(SoftError::Unusable {
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

    pub(super) fn software_err(&self, error: String) -> TokenError {
        TokenError::Pkcs11 {
            token: self.facts.token.clone(),
            call: "the software key",
            error,
        }
    }
}
