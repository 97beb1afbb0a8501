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
mod token;

pub use primitives::*;
pub use request::*;
pub use token::*;

// ---------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------

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

/// Result of `status`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct StatusResult {
    pub agent: AgentInfo,
    pub modules: Vec<ModuleStatus>,
    /// Card readers (PC/SC), when the agent watches them.
    pub readers: ReadersStatus,
    pub tokens: Vec<TokenStatus>,
    /// Trust anchors, distrusted and intermediate certificates loaded.
    #[serde(default)]
    pub trust: TrustStatus,
    /// The CRLs the agent holds.
    #[serde(default)]
    pub crl_cache: CrlCacheStatus,
}

/// What the agent sees of the PC/SC card readers.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct ReadersStatus {
    /// The agent watches readers (it does when a module is not marked `software`).
    pub watched: bool,
    /// Why PC/SC is not available now (pcscd not running, ...); the agent keeps retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub readers: Vec<ReaderInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReaderInfo {
    pub name: String,
    pub card_present: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct AgentInfo {
    pub version: String,
    pub protocol_version: u32,
    pub pid: u32,
    pub socket: String,
    /// Seconds since the agent started.
    pub uptime_secs: u64,
}

/// A configured PKCS#11 module.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ModuleStatus {
    pub path: String,
    /// `auto`, `hardware` or `software`, as configured.
    pub kind: String,
    /// The library's own description and version, when it loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
    /// Why the module is not usable, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A token present now.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct TokenStatus {
    #[serde(flatten)]
    pub token: TokenRef,
    pub manufacturer: String,
    pub model: String,
    /// The module's path.
    pub module: String,
    /// Keys on hardware (smart card, HSM) rather than in software.
    pub hardware: bool,
    /// A removable device (smart card, USB token).
    pub removable: bool,
    /// The slot's description: for smart cards, the reader's name.
    pub slot: String,
    pub pin: PinStatus,
    pub certificates: Vec<CertInfo>,
}

/// What the agent knows of a token's PIN. Never the PIN itself.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct PinStatus {
    /// A PIN for this token is held in the agent's cache.
    pub cached: bool,
    /// The token takes the PIN on its own keypad (protected authentication path).
    pub protected_path: bool,
    pub retries: PinRetries,
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
    /// `request`, `contacts` or `own`.
    pub source: String,
    /// `rsa-pkcs1`, `rsa-oaep` or `ecdh`.
    pub key_transport: String,
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

/// Result of `validate`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ValidateResult {
    /// `valid` or `invalid`.
    pub status: ValidityStatus,
    /// Why the certificate is not valid; empty when it is.
    pub reasons: Vec<ValidationReason>,
    /// Reported but not fatal, e.g. a CRL that could not be had under
    /// `on_crl_unavailable = "warn"`.
    pub warnings: Vec<String>,
    /// The path that decided: the certificate first, the trust anchor last (only the
    /// certificate when no path was found).
    pub chain: Vec<ChainCert>,
    pub revocation: RevocationResult,
    /// The validation time used, RFC 3339.
    pub time: String,
    /// Answered from the agent's validation cache.
    pub cached: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ValidityStatus {
    Valid,
    Invalid,
}

/// One reason a certificate is not valid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ValidationReason {
    /// `malformed`, `expired`, `not_yet_valid`, `untrusted`, `no_trusted_root`,
    /// `bad_signature`, `revoked`, `crl_unavailable`, `crl_unavailable_on_send`, `invalid`.
    pub code: String,
    pub message: String,
}

/// A certificate of a validated path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChainCert {
    pub subject: String,
    pub issuer: String,
    /// Lowercase hex.
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    pub sha256: String,
    /// Where it came from: `request` (the certificate itself, or the request's chain),
    /// `token`, `local` (the local intermediate store), `aia`, `anchor`.
    pub source: String,
}

/// The revocation check of a path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RevocationResult {
    /// `good`, `revoked`, `unavailable` (some status could not be determined), `disabled`
    /// (`disable_crl_check`), `not_checked` (the path failed first, or the certificate is
    /// itself a trust anchor).
    pub status: String,
    /// One entry per certificate checked, the one nearest the anchor first.
    pub checks: Vec<CrlCheckInfo>,
}

/// The CRL check of one certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CrlCheckInfo {
    pub subject: String,
    /// `good`, `revoked` or `unavailable`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub this_update: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_update: Option<String>,
    /// `request` (came with the request), `cache`, `fetched`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Why no CRL could be used (unreachable, timed out, LDAP unsupported, bad signature...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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

/// The CRL cache, in `status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct CrlCacheStatus {
    /// The cache directory, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// CRL downloads started since the agent started.
    pub fetches: u64,
    pub crls: Vec<CrlCacheEntry>,
}

/// A CRL in the cache.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct CrlCacheEntry {
    pub issuer: String,
    pub url: String,
    pub this_update: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_update: Option<String>,
    /// Revoked certificates listed.
    pub entries: usize,
    /// Current now (before its nextUpdate); a CRL that is not is fetched again when needed.
    pub current: bool,
}

/// The trust store, in `status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct TrustStatus {
    pub anchors: usize,
    pub untrusted: usize,
    pub intermediates: usize,
    /// Files of the trust configuration that could not be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// Result of `forget`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct ForgetResult {
    /// Tokens whose cached PIN was wiped (or that were logged in).
    pub tokens: Vec<TokenRef>,
}

// ---------------------------------------------------------------------------------------
// Verify
// ---------------------------------------------------------------------------------------

/// Result of `verify`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct VerifyResult {
    /// `valid` when every signature and every signer certificate is valid, `invalid` when
    /// one is not, `pending` when every signature is valid and the certificates are still
    /// being validated (`validation: event`).
    pub status: VerifyStatus,
    /// The signed layers, outermost first: a signed entity whose content is itself a signed
    /// entity has two.
    pub layers: Vec<SignedLayer>,
    /// The signed content of the innermost layer: the MIME entity that was signed.
    pub content: Base64Bytes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerifyStatus {
    Valid,
    Invalid,
    Pending,
}

/// One signed layer of a message.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct SignedLayer {
    /// `clear` (multipart/signed) or `opaque` (application/pkcs7-mime).
    pub format: SignFormat,
    /// The encapsulated content type: `data` for S/MIME, else a dotted OID.
    pub content_type: String,
    pub signers: Vec<SignerResult>,
}

/// One signer of a layer.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct SignerResult {
    /// The signer's position in its layer, from 0.
    pub index: u32,
    /// How the signature names its certificate: issuer and serial, or subject key identifier.
    pub signer_id: String,
    /// The signer's certificate, when the message carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<SignerCert>,
    /// `sha256`, `sha384`, `sha512`, `sha1`, or a dotted OID.
    pub digest_algorithm: String,
    /// `rsa-pkcs1`, `rsa-pss`, `ecdsa`, or a dotted OID.
    pub signature_algorithm: String,
    /// The signed signing-time attribute, RFC 3339 UTC, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_time: Option<String>,
    pub signature: SignatureCheck,
    /// The signer certificate's status (`pending` until `validation_done` with
    /// `validation: event`).
    pub certificate: CertificateCheck,
    /// Reported but not fatal: a signing time in the future or outside the certificate's
    /// validity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The signer's certificate, as read from the message.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct SignerCert {
    /// RFC 4514 string.
    pub subject: String,
    pub issuer: String,
    /// Lowercase hex.
    pub serial: String,
    /// RFC 3339, UTC.
    pub not_before: String,
    pub not_after: String,
    /// Subject emailAddress, a CN that is an address, subjectAltName rfc822Name.
    pub emails: Vec<String>,
    /// `rsa-2048`, `ec-p256`, ...
    pub key: String,
    /// SHA-256 of the DER, lowercase hex.
    pub sha256: String,
}

/// Whether a signature is valid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SignatureCheck {
    pub status: SignatureStatus,
    /// Why not valid: `bad_signature`, `digest_mismatch`, `no_signer_certificate`,
    /// `certificate_mismatch`, `weak_algorithm`, `unsupported_algorithm`, `malformed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Why not valid, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignatureStatus {
    Valid,
    Invalid,
}

/// The status of a signer's certificate (as `validate` reports it).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct CertificateCheck {
    pub status: CertificateStatus,
    /// Why not valid (the `validate` reason codes), or why unknown
    /// (`no_signer_certificate`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<ValidationReason>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The path that decided, the certificate first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<ChainCert>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<RevocationResult>,
    /// The certificate was added to the contacts store (a valid signer, first seen).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub added_to_contacts: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CertificateStatus {
    Valid,
    Invalid,
    /// There is no certificate to judge (the message does not carry it).
    Unknown,
    /// Being validated; a `validation_done` event will tell.
    Pending,
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
