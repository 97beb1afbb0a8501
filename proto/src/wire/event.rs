//! Unsolicited messages from the agent: [`Event`] and its payloads (a PIN prompt, tokens and
//! readers coming and going, the late certificate verdict of a `verify`).
//!
//! Owns the event shapes and their names. Who receives which event is the agent's to decide,
//! not this module's.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::wire::{CertificateCheck, PinRetries, RequestId, TokenRef, VerifyStatus};

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
