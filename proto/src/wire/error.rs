//! The error of a failed request: [`ErrorBody`] and the closed set of [`ErrorCode`]s.
//!
//! Owns the codes and their wire names, which clients act on. Must not map any layer's
//! errors to codes; that is the agent's job.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::wire::{PinRetries, TokenRef};

/// The error of a failed request.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// For people: names the thing (address, token, certificate) and what to do next.
    pub message: String,
    /// `pin_incorrect`: tries left, when the token tells (1 on the final try).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries_left: Option<u32>,
    /// `pin_incorrect`, `pin_locked`: the token's retry state after the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_retries: Option<PinRetries>,
    /// The token the error concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenRef>,
    /// `unsupported_version`: the versions the agent speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_versions: Option<Vec<u32>>,
    /// `frame_too_large`: the agent's bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frame_bytes: Option<u64>,
    /// `recipient_without_certificate`: the addresses that have no usable certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients: Option<Vec<String>>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
            retries_left: None,
            pin_retries: None,
            token: None,
            supported_versions: None,
            max_frame_bytes: None,
            recipients: None,
        }
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// The closed set of error codes. A client acts on the code, never on the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not a valid request (not JSON, missing `id`/`op`, wrong or unknown
    /// parameter, request before `hello`).
    BadRequest,
    /// The `op` is not one the agent knows.
    UnknownOp,
    /// The frame is larger than the agent's `max_frame_bytes`.
    FrameTooLarge,
    /// The `hello` asked for a protocol version the agent does not speak.
    UnsupportedVersion,
    /// The connecting process runs as another user.
    PermissionDenied,
    /// The agent already serves its maximum number of connections.
    TooManyConnections,
    /// No certificate of the user's fits the address and operation.
    NoCertificate,
    /// The token rejected the PIN. It is not retried.
    PinIncorrect,
    /// The PIN is locked; no attempt was made.
    PinLocked,
    /// The person (or client) declined to give the PIN, or the prompt timed out.
    PinCancelled,
    /// The token or its module failed.
    TokenError,
    /// The token was removed before or during the operation.
    TokenRemoved,
    /// The administrator's policy does not allow the request.
    PolicyDenied,
    /// The message given is not valid S/MIME or CMS (malformed, truncated, inconsistent).
    BadMessage,
    /// The message uses an algorithm or structure the agent does not support.
    Unsupported,
    /// A bound was exceeded: content size, recipients, signers or nesting depth.
    LimitExceeded,
    /// The message is addressed to one of the user's keys but cannot be decrypted with it
    /// (wrong key, damaged or tampered content).
    DecryptFailed,
    /// No key of the user's can open the message (it is not addressed to them).
    NotARecipient,
    /// Some recipients have no usable certificate; `recipients` lists them.
    RecipientWithoutCertificate,
    /// The configuration file cannot be used (`reload`); the agent keeps its settings.
    ConfigInvalid,
    /// The agent is shutting down.
    ShuttingDown,
    /// A bug or an unexpected condition in the agent.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::NoCertificate => "no_certificate",
            ErrorCode::PinIncorrect => "pin_incorrect",
            ErrorCode::PinLocked => "pin_locked",
            ErrorCode::PinCancelled => "pin_cancelled",
            ErrorCode::TokenError => "token_error",
            ErrorCode::TokenRemoved => "token_removed",
            ErrorCode::PolicyDenied => "policy_denied",
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::DecryptFailed => "decrypt_failed",
            ErrorCode::NotARecipient => "not_a_recipient",
            ErrorCode::RecipientWithoutCertificate => "recipient_without_certificate",
            ErrorCode::ConfigInvalid => "config_invalid",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
        }
    }

    /// Every code, for documentation tests.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadRequest,
        ErrorCode::UnknownOp,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnsupportedVersion,
        ErrorCode::PermissionDenied,
        ErrorCode::TooManyConnections,
        ErrorCode::NoCertificate,
        ErrorCode::PinIncorrect,
        ErrorCode::PinLocked,
        ErrorCode::PinCancelled,
        ErrorCode::TokenError,
        ErrorCode::TokenRemoved,
        ErrorCode::PolicyDenied,
        ErrorCode::BadMessage,
        ErrorCode::Unsupported,
        ErrorCode::LimitExceeded,
        ErrorCode::DecryptFailed,
        ErrorCode::NotARecipient,
        ErrorCode::RecipientWithoutCertificate,
        ErrorCode::ConfigInvalid,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
    ];
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_serialize_as_documented_names() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
