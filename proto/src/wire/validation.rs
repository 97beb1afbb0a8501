//! What `validate` and `verify` report: a certificate judged (its path, revocation and the
//! reasons it is not valid) and each signature of a signed message checked.
//!
//! Owns these result shapes. The `validation_done` event that completes a `verify` is in
//! `event.rs`; the rules that reach a verdict belong to the agent, not to the protocol.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::wire::{Base64Bytes, SignFormat};

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
    /// `bad_signature`, `revoked`, `crl_unavailable`, `crl_unavailable_on_send`, `invalid`;
    /// the S/MIME profile's `extended_key_usage`, `ca_extended_key_usage`, `key_usage`,
    /// `no_address`, `address_mismatch`, `ca_certificate`, `weak_key`, `key_algorithm`; the
    /// strict checks' `duplicate_extension`, `malformed_extension`,
    /// `unknown_critical_extension`, `name_constraints`, `anchor_constraints`.
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

/// The revocation check of one certificate (by CRL or OCSP).
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
    /// What settled it: `crl` (a CRL; `crl_issuer` names its issuer) or `ocsp` (an OCSP
    /// response from the responder at `url`, RFC 6960). Absent when nothing did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// `request` (came with the request), `cache`, `fetched`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The distribution point or responder asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Why no status could be had from any source (unreachable, timed out, a responder that
    /// does not know the certificate, a bad signature...), each source's reason in turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Result of `verify`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct VerifyResult {
    /// `valid` when every signature and every signer certificate is valid and, in each layer
    /// whose message has a From or Sender, a signer's certificate names that sender;
    /// `invalid` when one of these fails; `pending` when nothing failed and the certificates
    /// are still being validated (`validation: event`).
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
    /// The signing time minus the message's `Date` header field, in seconds (negative: signed
    /// before the date the message gives), when both are present. Beyond the agent's
    /// `[policy] signing_time_tolerance_secs` either way it is a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_offset_secs: Option<i64>,
    /// Whether the signer's certificate names the message's sender (RFC 8550 section 3):
    /// present when the signed message has a From or Sender header field, absent for a bare
    /// MIME entity or bare CMS (the client compares addresses itself then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<SenderMatch>,
    /// Reported but not fatal: a signing time in the future, outside the certificate's
    /// validity, or far from the message's `Date`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The message's sender against the signer's certificate: From (or Sender) must be one of
/// the certificate's addresses. A mismatch makes the message `invalid` though the signature
/// and the certificate may each be valid: the mail claims an author the signer is not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SenderMatch {
    /// `match` or `mismatch`.
    pub status: SenderStatus,
    /// The addresses the message gives, From's then Sender's, as they were compared: the
    /// header fields of the signed entity itself, else of the nearest message around it.
    pub addresses: Vec<String>,
    /// The certificate's address that matched one of `addresses` (compared
    /// case-insensitively); the certificate's addresses are the signer's `emails`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<String>,
    /// Why not, in words: which address was expected and which the certificate has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SenderStatus {
    Match,
    Mismatch,
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
