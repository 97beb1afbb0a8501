//! How messages name a token and describe a certificate of the user's keys.
//!
//! [`TokenRef`], [`PinRetries`] and [`CertInfo`] appear in results, errors and events alike,
//! so they live here rather than with any one of them. They only describe: what the agent
//! does with a token is not the protocol's business.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::wire::Base64Bytes;

/// Names a token in responses and events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenRef {
    /// Stable id of the token in this agent: derived from module, serial and label.
    pub id: String,
    pub label: String,
    pub serial: String,
}

/// The token's PIN retry state, from its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PinRetries {
    /// No failed attempts reported (or the token does not say).
    Ok,
    /// A wrong PIN was entered at least once (CKF_USER_PIN_COUNT_LOW).
    Low,
    /// One more wrong PIN locks the token (CKF_USER_PIN_FINAL_TRY).
    FinalTry,
    /// The PIN is locked (CKF_USER_PIN_LOCKED).
    Locked,
}

/// A certificate of one of the user's keys.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct CertInfo {
    /// RFC 4514 string.
    pub subject: String,
    pub issuer: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// RFC 3339, UTC.
    pub not_before: String,
    pub not_after: String,
    /// E-mail addresses: subject emailAddress, a CN that is an address, subjectAltName
    /// rfc822Name.
    pub emails: Vec<String>,
    /// `rsa-2048`, `ec-p256`, `ec-p384`, ...
    pub key: String,
    /// keyUsage bits by their RFC 5280 names; empty when the extension is absent.
    pub key_usage: Vec<String>,
    /// extendedKeyUsage purposes by name (or dotted OID); empty when absent.
    pub ext_key_usage: Vec<String>,
    /// SHA-256 of the DER, lowercase hex.
    pub sha256: String,
    /// The CKA_ID that pairs the certificate with its private key, lowercase hex.
    pub key_id: String,
    pub token: TokenRef,
    pub hardware: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub der: Option<Base64Bytes>,
}
