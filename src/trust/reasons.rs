//! certval's path validation failures in words: the certificate at certval's failure index,
//! and a `Problem` whose code a caller can act on and whose message names the certificate.
//!
//! Owns: the mapping from certval's `PathValidationStatus` to `ProblemCode` and message.
//! Must not touch: deciding validity (certval, called from `path.rs` and `revocation.rs`);
//! revocation outcomes, which `revocation.rs` words itself.

use certval::{CertificationPath, PDVCertificate, PathValidationStatus as Pvs};

use super::Anchor;
use super::validation::{Problem, ProblemCode, subject};
use crate::certs::rfc3339;

/// The certificate at certval's failure index (trust anchor first).
fn at_index(cp: &CertificationPath, index: Option<u32>) -> Option<&PDVCertificate> {
    let i = index? as usize;
    if i == 0 {
        None
    } else if i <= cp.intermediates.len() {
        cp.intermediates.get(i - 1)
    } else {
        Some(&cp.target)
    }
}

/// Words for a failed path.
pub(super) fn path_problem(
    status: Pvs,
    cp: &CertificationPath,
    index: Option<u32>,
    anchor: &Anchor,
) -> Problem {
    let cert = at_index(cp, index);
    let who = match cert {
        Some(c) => subject(c),
        None => format!("trust anchor {}", subject(&anchor.cert)),
    };
    let validity = |c: Option<&PDVCertificate>| {
        let c = c.unwrap_or(&anchor.cert);
        let v = c.decoded().tbs_certificate().validity();
        (
            rfc3339(v.not_before.to_system_time()),
            rfc3339(v.not_after.to_system_time()),
        )
    };
    let (code, message) = match status {
        Pvs::InvalidNotAfterDate => (
            ProblemCode::Expired,
            format!("{who} expired on {}", validity(cert).1),
        ),
        Pvs::InvalidNotBeforeDate => (
            ProblemCode::NotYetValid,
            format!("{who} is not valid before {}", validity(cert).0),
        ),
        Pvs::SignatureVerificationFailure => (
            ProblemCode::BadSignature,
            format!(
                "the signature on {who} does not verify with its issuer's key (or uses an algorithm the agent does not support)"
            ),
        ),
        Pvs::NameConstraintsViolation => (
            ProblemCode::NameConstraints,
            format!(
                "{who}: a name is outside the name constraints of the trust anchor or a CA above it"
            ),
        ),
        Pvs::NameChainingFailure => (
            ProblemCode::NoTrustedRoot,
            format!("the names do not chain at {who}"),
        ),
        other => (
            ProblemCode::Invalid,
            format!("{who}: {} ({other})", describe(other)),
        ),
    };
    Problem { code, message }
}

fn describe(s: Pvs) -> &'static str {
    match s {
        Pvs::MissingBasicConstraints => "a CA certificate without basicConstraints",
        Pvs::InvalidBasicConstraints => "basicConstraints do not allow it to issue certificates",
        Pvs::InvalidPathLength => "the path is longer than a pathLenConstraint allows",
        Pvs::InvalidKeyUsage => "its key usage does not allow this use",
        Pvs::NullPolicySet => "no certificate policy is valid for the whole path",
        Pvs::NameConstraintsViolation => "a name violates the issuers' name constraints",
        Pvs::UnprocessedCriticalExtension => "an unknown critical extension",
        Pvs::InvalidPolicyMapping => "an invalid policy mapping",
        Pvs::InsufficientKeySize => "the key is too small",
        Pvs::EncodingError => "an encoding error",
        Pvs::ProcessingLimitExceeded => "a processing limit was exceeded",
        Pvs::SelfSignedEndIdentity => "a self-signed end-entity certificate",
        Pvs::TrustAnchorConstraintsMismatch => "the trust anchor's constraints do not match",
        _ => "path validation failed",
    }
}
