//! What the agent knows of a token and its certificates, read when the token appeared.
//!
//! Plain data shared by the token, the module and key-file scans, and the store; owns no
//! state and calls nothing.

use std::path::PathBuf;

use cryptoki::slot::TokenInfo;
use smime_agent_proto::{PinRetries, TokenRef};

use crate::certs::CertFacts;

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
    /// in constant time instead of by the token (see [`super::PrivateOp::is_padded_decrypt`]).
    pub raw_rsa: bool,
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

/// A certificate on a token, with the id that pairs it with its private key.
#[derive(Debug, Clone)]
pub struct TokenCert {
    pub facts: CertFacts,
    /// CKA_ID shared by the certificate and its private key.
    pub key_id: Vec<u8>,
    /// Whether a private key with this id exists: `None` until a login shows private keys.
    pub has_key: Option<bool>,
}
