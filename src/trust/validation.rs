//! What a validation is asked and what it answers: the request (the certificate, what the
//! caller brings, the time, the RFC 5280 6.1.1 policy inputs) and the outcome (valid or not,
//! the problems by code, warnings, the chain, the CRL check of each certificate), with the
//! chain link made from a certificate.
//!
//! Owns: these types and the stable words of their codes (`as_str`), which the protocol
//! carries. Must not touch: finding or judging a path (`path.rs` and the files it names);
//! this file only describes the outcome.

use std::time::SystemTime;

use certval::PDVCertificate;
use sha2::{Digest, Sha256};

use super::CertOrigin;
use crate::certs::profile::{ProfileRequest, Rule};
use crate::certs::{hex, rfc3339};

/// The RFC 5280 6.1.1 policy inputs. An empty set means anyPolicy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyInputs {
    /// Dotted OIDs.
    pub initial_policy_set: Vec<String>,
    pub initial_explicit_policy: bool,
    pub initial_policy_mapping_inhibit: bool,
    pub initial_inhibit_any_policy: bool,
}

/// What to validate, and what the caller brings.
#[derive(Debug, Clone, Default)]
pub struct ValidationRequest {
    /// The certificate, DER.
    pub cert: Vec<u8>,
    /// Intermediates from the message or the request, DER.
    pub chain: Vec<Vec<u8>>,
    /// CRLs from the message or the request, DER.
    pub crls: Vec<Vec<u8>>,
    /// Certificates on the present tokens (candidate intermediates), DER.
    pub token_certs: Vec<Vec<u8>>,
    /// Validation time; now when `None`.
    pub time: Option<SystemTime>,
    pub policy: PolicyInputs,
    /// The certificate is about to sign or encrypt outgoing mail (`check_crl_on_send`).
    pub for_send: bool,
    /// What the S/MIME profile (`certs::profile`) must find the certificate fit for.
    pub profile: ProfileRequest,
    /// Judge the path alone (RFC 5280 and the strict checks), not the S/MIME profile: for
    /// test suites of path validation such as NIST PKITS, whose certificates are not mail
    /// certificates.
    pub path_only: bool,
}

/// Why a certificate is not valid, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemCode {
    Malformed,
    Expired,
    NotYetValid,
    Untrusted,
    NoTrustedRoot,
    BadSignature,
    Revoked,
    CrlUnavailable,
    CrlUnavailableOnSend,
    Invalid,
    /// A rule of the S/MIME profile (`certs::profile`), by its own name.
    Profile(Rule),
    /// An extension appears twice in one certificate (RFC 5280 4.2).
    DuplicateExtension,
    /// An extension (or another part of the certificate) does not decode as its ASN.1 says.
    MalformedExtension,
    /// A critical extension the agent does not process (the anchor's included).
    UnknownCriticalExtension,
    /// A name of the path is outside the name constraints of the trust anchor or a CA.
    NameConstraints,
    /// The trust anchor's own constraints (RFC 5937: basicConstraints, key usage, policies)
    /// refuse the path.
    AnchorConstraints,
}

impl ProblemCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemCode::Malformed => "malformed",
            ProblemCode::Expired => "expired",
            ProblemCode::NotYetValid => "not_yet_valid",
            ProblemCode::Untrusted => "untrusted",
            ProblemCode::NoTrustedRoot => "no_trusted_root",
            ProblemCode::BadSignature => "bad_signature",
            ProblemCode::Revoked => "revoked",
            ProblemCode::CrlUnavailable => "crl_unavailable",
            ProblemCode::CrlUnavailableOnSend => "crl_unavailable_on_send",
            ProblemCode::Invalid => "invalid",
            ProblemCode::Profile(rule) => rule.code(),
            ProblemCode::DuplicateExtension => "duplicate_extension",
            ProblemCode::MalformedExtension => "malformed_extension",
            ProblemCode::UnknownCriticalExtension => "unknown_critical_extension",
            ProblemCode::NameConstraints => "name_constraints",
            ProblemCode::AnchorConstraints => "anchor_constraints",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub code: ProblemCode,
    pub message: String,
}

/// One certificate of the path, anchor last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    pub sha256: String,
    pub origin: CertOrigin,
    /// The certificate (for carrying the chain in signed mail).
    pub der: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationStatus {
    /// Every certificate of the path was checked against a CRL and none is revoked.
    Good,
    Revoked,
    /// Some status could not be determined (no CRL could be had).
    Unavailable,
    /// `disable_crl_check`.
    Disabled,
    /// The path failed before revocation mattered, or the certificate is itself an anchor.
    NotChecked,
}

impl RevocationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationStatus::Good => "good",
            RevocationStatus::Revoked => "revoked",
            RevocationStatus::Unavailable => "unavailable",
            RevocationStatus::Disabled => "disabled",
            RevocationStatus::NotChecked => "not_checked",
        }
    }
}

/// The CRL check of one certificate of the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlCheck {
    /// The certificate checked.
    pub subject: String,
    /// `good`, `revoked` or `unavailable`.
    pub status: &'static str,
    /// What settled it: `crl` or `ocsp`.
    pub method: Option<&'static str>,
    pub crl_issuer: Option<String>,
    pub this_update: Option<String>,
    pub next_update: Option<String>,
    /// `request`, `cache` or `fetched`.
    pub origin: Option<&'static str>,
    pub url: Option<String>,
    /// Why no CRL could be used, when none could.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationSummary {
    pub status: RevocationStatus,
    pub checks: Vec<CrlCheck>,
}

/// The outcome of a validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    pub valid: bool,
    /// Why not valid (empty when valid).
    pub problems: Vec<Problem>,
    /// Reported but not fatal (a CRL that could not be had, with `on_crl_unavailable = warn`).
    pub warnings: Vec<String>,
    /// The path: the certificate first, the anchor last.
    pub chain: Vec<ChainLink>,
    pub revocation: RevocationSummary,
    /// Answered from the validation cache.
    pub from_cache: bool,
    /// The earliest nextUpdate of the CRLs the outcome rests on: a cached outcome is not
    /// reused after it.
    pub valid_until: Option<SystemTime>,
}

impl Validation {
    pub(super) fn invalid(code: ProblemCode, message: String, chain: Vec<ChainLink>) -> Validation {
        Validation {
            valid: false,
            problems: vec![Problem { code, message }],
            warnings: vec![],
            chain,
            revocation: RevocationSummary {
                status: RevocationStatus::NotChecked,
                checks: vec![],
            },
            from_cache: false,
            valid_until: None,
        }
    }

    /// The first problem, in words.
    pub fn reason(&self) -> String {
        self.problems
            .iter()
            .map(|p| p.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The first problem's code.
    pub fn code(&self) -> Option<ProblemCode> {
        self.problems.first().map(|p| p.code)
    }
}

pub(super) fn sha256(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

pub(super) fn subject(c: &PDVCertificate) -> String {
    c.decoded().tbs_certificate().subject().to_string()
}

pub(super) fn link(c: &PDVCertificate, origin: CertOrigin) -> ChainLink {
    let tbs = c.decoded().tbs_certificate();
    ChainLink {
        subject: tbs.subject().to_string(),
        issuer: tbs.issuer().to_string(),
        serial: hex(tbs.serial_number().as_bytes()),
        not_before: rfc3339(tbs.validity().not_before.to_system_time()),
        not_after: rfc3339(tbs.validity().not_after.to_system_time()),
        sha256: hex(&sha256(c.as_bytes())),
        origin,
        der: c.as_bytes().to_vec(),
    }
}
