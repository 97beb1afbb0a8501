//! The `ok` body of each op that answers with neither a status report nor a validation:
//! `hello`, `list_certs`, `sign`, `pin`, `subscribe`, `rescan`, `forget`, `which`, `encrypt`,
//! `decrypt` and `compose`.
//!
//! Owns those result shapes only: `status` is in `status.rs`, `validate` and `verify` in
//! `validation.rs`, the parameters in `request.rs`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::wire::{
    Base64Bytes, CertInfo, Purpose, SignFormat, SignedLayer, TokenRef, VerifyStatus,
};

/// Result of `hello`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct HelloResult {
    pub protocol_version: u32,
    /// The agent's name and version, e.g. `smime-agent 0.1.0`.
    pub agent: String,
    /// The operations this agent serves.
    pub capabilities: Vec<String>,
    /// The largest frame the agent reads; a larger one is answered with `frame_too_large`.
    pub max_frame_bytes: u64,
    /// Where PINs come from: `pinentry`, `client` or `pinpad`.
    pub pin_source: String,
}

/// Result of `list_certs`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ListCertsResult {
    pub certificates: Vec<CertInfo>,
}

/// A recipient an envelope was made for.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct EnvelopeRecipient {
    pub address: String,
    pub subject: String,
    pub serial: String,
    /// `request`, `contacts`, `directory` or `own`.
    pub source: String,
    /// `rsa-pkcs1`, `rsa-oaep` or `ecdh`.
    pub key_transport: String,
    /// The distribution list (as addressed) this recipient was expanded from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
}

/// Result of `encrypt`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct EncryptResult {
    /// `application/pkcs7-mime; smime-type=enveloped-data` (or `authEnveloped-data`).
    pub mime: Base64Bytes,
    /// `aes256-cbc`, `aes128-cbc`, `aes256-gcm` or `aes128-gcm`.
    pub algorithm: String,
    pub recipients: Vec<EnvelopeRecipient>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Result of `decrypt`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct DecryptResult {
    /// The decrypted MIME entity.
    pub mime: Base64Bytes,
    /// The certificate of the key that opened it.
    pub certificate: CertInfo,
    /// The content was integrity-protected (AuthEnvelopedData, AES-GCM). CBC envelopes are
    /// not: only a signature inside proves who wrote them.
    pub authenticated: bool,
    /// Every layer read, outermost first: a triple-wrapped message has a signed layer, an
    /// encrypted one and a signed one.
    pub layers: Vec<MessageLayer>,
    /// Over the signed layers: `valid` when there are some and every signature and signer
    /// certificate is valid, `invalid` when one is not; absent for an unsigned message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signatures: Option<VerifyStatus>,
}

/// One layer of a message, as `decrypt` read it.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MessageLayer {
    /// A signed layer, with its signers (as `verify` reports them).
    Signed(SignedLayer),
    /// An envelope, opened with the key of `certificate`.
    Encrypted(EncryptedLayer),
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct EncryptedLayer {
    /// Boxed: a certificate is large next to a signed layer (serialized the same).
    pub certificate: Box<CertInfo>,
    pub authenticated: bool,
}

/// One message to hand to the mail transport.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct OutgoingMessage {
    /// Who gets this message (the SMTP envelope recipients).
    pub recipients: Vec<String>,
    /// The RFC 5322 message, CRLF line ends, without Bcc.
    pub mime: Base64Bytes,
}

/// Result of `compose`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ComposeResult {
    /// One message for the To and Cc recipients, and, when encrypted, one per Bcc recipient
    /// (an envelope lists its recipients, so Bcc recipients get envelopes of their own).
    pub messages: Vec<OutgoingMessage>,
    pub signed: bool,
    pub encrypted: bool,
    /// Signed, encrypted and signed again.
    pub triple_wrapped: bool,
    /// The signer's certificate, when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<CertInfo>,
    /// The certificates encrypted to, when encrypted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encrypted_to: Vec<EnvelopeRecipient>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Result of `sign`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct SignResult {
    /// The signed MIME entity, CRLF line ends.
    pub mime: Base64Bytes,
    pub format: SignFormat,
    /// Digest algorithm used: `sha256`, `sha384` or `sha512`.
    pub digest_algorithm: String,
    /// The signer's certificate.
    pub certificate: CertInfo,
    /// Why this certificate was chosen (the selection rule that decided).
    pub why: String,
    /// Reported but not fatal: e.g. the signer's CRL could not be had under
    /// `on_crl_unavailable = "warn"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Result of `pin`: empty.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct PinResult {}

/// Result of `subscribe`: empty; events follow.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct SubscribeResult {}

/// Result of `rescan`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct RescanResult {
    /// Tokens that appeared.
    pub inserted: Vec<TokenRef>,
    /// Tokens that went away.
    pub removed: Vec<TokenRef>,
    /// Modules that could not be rescanned now, and why.
    pub skipped: Vec<String>,
}

/// Result of `which`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct WhichResult {
    pub address: String,
    #[serde(rename = "for")]
    pub purpose: Purpose,
    /// Every certificate of the user's that matched the address, in the order the rules
    /// consider them.
    pub candidates: Vec<Candidate>,
    /// The certificate the agent would use; `null` when none is usable.
    pub chosen: Option<Chosen>,
    /// The candidates that were not used, each with the reason.
    pub rejected: Vec<RejectedCert>,
    /// `for = encrypt`: what `encrypt` would use for the address as someone else's (the
    /// request's certificates aside): the certificates found with their source, and the
    /// addresses without a usable one (a distribution list gives one per member).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<WhichRecipient>,
}

/// `which` for `encrypt`: the address as a recipient.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct WhichRecipient {
    /// The certificates `encrypt` would use, as its result lists them.
    pub found: Vec<EnvelopeRecipient>,
    /// The addresses without a usable certificate, each with the reason.
    pub without_certificate: Vec<RecipientWithout>,
}

/// A recipient without a usable certificate.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RecipientWithout {
    pub address: String,
    pub reason: String,
}

/// A certificate that matched the address.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Candidate {
    pub certificate: CertInfo,
    /// How the address matched: `subject`, `subject_alt_name` or `alias`.
    pub matched_by: String,
    /// `chosen`, `rejected`, or `not_considered` (usable, but another one was chosen first).
    pub status: String,
}

/// The chosen certificate.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Chosen {
    pub subject: String,
    /// Lowercase hex.
    pub serial: String,
    pub token: TokenRef,
    /// The rule that decided, in words.
    pub why: String,
    pub certificate: CertInfo,
    /// Warnings of its validation (a CRL that could not be had, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A certificate that matched the address but is not used.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RejectedCert {
    pub subject: String,
    pub serial: String,
    pub token: TokenRef,
    /// Why, in words: expired, wrong usage, revoked, untrusted, ...
    pub reason: String,
    /// The kind: `smart_card_only`, `no_private_key`, `key_usage`, `extended_key_usage`,
    /// `not_yet_valid`, `expired`, or a validation reason code (`revoked`, `untrusted`,
    /// `no_trusted_root`, `crl_unavailable`, `crl_unavailable_on_send`, ...).
    pub code: String,
    pub certificate: CertInfo,
}

/// Result of `reload`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct ReloadResult {
    /// The file read, absent when there is none (the defaults apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// Settings that changed in the file but take effect only when the agent restarts
    /// (`[agent]`, `[[tokens.module]]`, `[soft_store]`, the PIN cache time of tokens
    /// already present).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_needed: Vec<String>,
}

/// Result of `forget`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct ForgetResult {
    /// Tokens whose cached PIN was wiped (or that were logged in).
    pub tokens: Vec<TokenRef>,
}
