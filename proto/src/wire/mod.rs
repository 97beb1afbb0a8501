//! The messages of the protocol, as serde types.
//!
//! Client to agent: [`Request`] (`{"id":..,"op":"..",...params}`).
//! Agent to client: [`Response`] (`{"id":..,"ok":{..}}` or `{"id":..,"error":{..}}`) and
//! [`Event`] (`{"event":"..",...}`), told apart by [`AgentFrame::parse`].
//!
//! Requests are strict: an unknown field is a `bad_request`, so a misspelt option is never
//! silently ignored. Responses and events may grow new fields in a later minor release;
//! clients must ignore fields they do not know.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// Private modules with every item re-exported: the public paths stay `wire::X` (and `X`
// at the crate root) whichever file a type lives in.
mod primitives;
mod request;
mod result;
mod status;
mod token;
mod validation;

pub use primitives::*;
pub use request::*;
pub use result::*;
pub use status::*;
pub use token::*;
pub use validation::*;

// ---------------------------------------------------------------------------------------
// Verify
// ---------------------------------------------------------------------------------------

/// `validation_done`: the signer certificates' status for a `verify` that asked for
/// `validation: event`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ValidationDone {
    /// The `verify` request.
    pub request: RequestId,
    /// `valid` or `invalid`, now that every certificate is judged.
    pub status: VerifyStatus,
    pub signers: Vec<SignerValidation>,
}

/// One signer's certificate status, in a `validation_done` event.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct SignerValidation {
    /// The layer, from 0 (outermost), and the signer's `index` in it.
    pub layer: u32,
    pub index: u32,
    pub certificate: CertificateCheck,
}

// ---------------------------------------------------------------------------------------
// Responses and errors
// ---------------------------------------------------------------------------------------

/// One response frame: exactly one per request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Response {
    /// The request's id; `null` only when the request was so malformed that its id could not
    /// be read.
    pub id: Option<RequestId>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// `{"ok": {...}}` or `{"error": {...}}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok(serde_json::Value),
    Error(ErrorBody),
}

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
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
    ];
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

/// Unsolicited messages from the agent, tagged by the `event` field.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A request of this connection needs a PIN (PIN source `client`), or waits for the
    /// person to type it on the reader's keypad (`on_reader`).
    PinNeeded(PinNeeded),
    /// A token appeared (card inserted); its certificates are usable now. Subscribers only.
    TokenInserted(TokenEvent),
    /// A token went away (card removed); its certificates and cached PIN are gone.
    /// Subscribers only.
    TokenRemoved(TokenEvent),
    /// A card reader was attached. Subscribers only.
    ReaderAdded(ReaderEvent),
    /// A card reader was detached. Subscribers only.
    ReaderRemoved(ReaderEvent),
    /// The signer certificates of a `verify` with `validation: event` are judged.
    ValidationDone(ValidationDone),
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct TokenEvent {
    pub token: TokenRef,
    pub hardware: bool,
    pub removable: bool,
    /// The slot's description (for a smart card, its reader).
    pub slot: String,
    /// Number of certificates the token brought (inserted) or took away (removed).
    pub certificates: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ReaderEvent {
    pub reader: String,
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::PinNeeded(_) => "pin_needed",
            Event::TokenInserted(_) => "token_inserted",
            Event::TokenRemoved(_) => "token_removed",
            Event::ReaderAdded(_) => "reader_added",
            Event::ReaderRemoved(_) => "reader_removed",
            Event::ValidationDone(_) => "validation_done",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct PinNeeded {
    /// The request waiting for the PIN.
    pub request: RequestId,
    /// Number to quote in the `pin` answer.
    pub prompt: u64,
    pub token: TokenRef,
    /// Subject of the certificate whose key is about to be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// `login` (open the token) or `context_specific` (a key that asks for the PIN before
    /// every use).
    pub reason: PinReason,
    /// The PIN is typed on the reader's keypad: show a notice, do not answer with a PIN
    /// (a `cancel` answer is ignored by the reader).
    pub on_reader: bool,
    pub retries: PinRetries,
    /// Tries left, when the token tells (1 on the final try).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries_left: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PinReason {
    Login,
    ContextSpecific,
}

/// A frame from the agent: a response or an event.
#[derive(Clone, Debug)]
pub enum AgentFrame {
    Response(Response),
    Event(Event),
}

impl AgentFrame {
    /// Parses one frame. A frame with an `event` member is an event, anything else a response.
    pub fn parse(line: &[u8]) -> Result<AgentFrame, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_slice(line)?;
        if value.get("event").is_some() {
            serde_json::from_value(value).map(AgentFrame::Event)
        } else {
            serde_json::from_value(value).map(AgentFrame::Response)
        }
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

    #[test]
    fn response_and_event_frames_are_told_apart() {
        let r = AgentFrame::parse(br#"{"id":"x","error":{"code":"pin_locked","message":"m"}}"#)
            .unwrap();
        assert!(
            matches!(r, AgentFrame::Response(Response { outcome: Outcome::Error(ref e), .. }) if e.code == ErrorCode::PinLocked)
        );
        let e = AgentFrame::parse(
            br#"{"event":"pin_needed","request":1,"prompt":2,"token":{"id":"t","label":"l","serial":"s"},"reason":"login","on_reader":false,"retries":"ok"}"#,
        )
        .unwrap();
        assert!(matches!(e, AgentFrame::Event(Event::PinNeeded(_))));
    }
}
