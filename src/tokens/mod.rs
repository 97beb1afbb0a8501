//! Tokens: PKCS#11 modules, the tokens in their slots, PINs, and private-key operations.
//!
//! Owns everything that talks to a token or asks for a PIN. Knows nothing of sockets, CMS or
//! MIME: the server hands it a [`PinPrompter`], the S/MIME layer hands it bytes to sign.
//!
//! - [`module`]: load a configured module, read the tokens in its slots.
//! - [`token`]: one token: sessions, login, the raw signature.
//! - [`pin`]: PINs in locked memory, the per-token cache, the prompter interface.
//! - [`pinentry`]: the Assuan client that runs a pinentry program.
//! - [`watcher`]: PC/SC reader and card events, PKCS#11 slot events.

pub mod facts;
pub mod module;
pub mod op;
pub mod pin;
pub mod pinentry;
mod pkcs12;
pub mod soft;
pub mod token;
pub mod watcher;

use std::sync::Arc;

use smime_agent_proto::{PinRetries, TokenRef};
use tracing::{info, warn};

pub use facts::{TokenCert, TokenFacts};
pub use module::{Changes, Module, ScannedToken};
pub use op::{OaepHash, PinPolicy, PrivateOp, RsaDecrypt, SignMechanism};
pub use pin::{PinError, PinPrompter, PinRequest, SecretPin};
pub use token::Token;

use crate::config::Config;

/// Errors of token operations, each one a client can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error("the token \"{}\" (serial {}) was removed", token.label, token.serial)]
    Removed { token: TokenRef },
    #[error("\"{}\" rejected the PIN (or passphrase){}; it was not tried again", token.label, retries_note(*retries))]
    PinIncorrect {
        token: TokenRef,
        retries: PinRetries,
    },
    #[error("the PIN of the token \"{}\" is locked; unblock it with the PUK or the card's administrator", token.label)]
    PinLocked { token: TokenRef },
    #[error("no PIN for the token \"{}\": {reason}", token.label)]
    PinCancelled { token: TokenRef, reason: String },
    #[error("the token \"{}\" has no private key with id {key_id} (the certificate's key is missing)", token.label)]
    KeyNotFound { token: TokenRef, key_id: String },
    #[error("the token \"{}\" refused {call}: {error}", token.label)]
    Refused {
        token: TokenRef,
        call: &'static str,
        error: String,
    },
    #[error("the token \"{}\" failed in {call}: {error}", token.label)]
    Pkcs11 {
        token: TokenRef,
        call: &'static str,
        error: String,
    },
}

fn retries_note(r: PinRetries) -> &'static str {
    match r {
        PinRetries::FinalTry => " (one try left: the next wrong PIN locks it)",
        PinRetries::Low => " (tries are running low)",
        _ => "",
    }
}

impl TokenError {
    pub fn token(&self) -> &TokenRef {
        match self {
            TokenError::Removed { token }
            | TokenError::PinIncorrect { token, .. }
            | TokenError::PinLocked { token }
            | TokenError::PinCancelled { token, .. }
            | TokenError::KeyNotFound { token, .. }
            | TokenError::Refused { token, .. }
            | TokenError::Pkcs11 { token, .. } => token,
        }
    }
}

/// The loaded modules, and the software key files.
#[derive(Debug)]
pub struct Modules {
    pub modules: Vec<Arc<Module>>,
    /// `[soft_store] dir`, when configured.
    pub soft: Option<soft::SoftStore>,
}

impl Modules {
    /// Loads every configured module (blocking).
    pub fn load(config: &Config) -> Modules {
        let modules = config
            .tokens
            .module
            .iter()
            .map(|m| {
                let module = Module::load(m);
                match &module.error {
                    Some(e) => warn!(module = %m.path.display(), error = %e, "module unusable"),
                    None => info!(module = %m.path.display(), library = ?module.library, "module loaded"),
                }
                Arc::new(module)
            })
            .collect();
        let soft = config.soft_store.dir.as_ref().map(|d| {
            soft::SoftStore::new(
                d.clone(),
                std::time::Duration::from_secs(config.pin.cache_ttl_secs),
            )
        });
        Modules { modules, soft }
    }
}
