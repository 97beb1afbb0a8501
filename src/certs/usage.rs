//! Whether a certificate is fit for an S/MIME use: its key usage and extended key usage
//! for signing, encryption or decryption, and its validity period. The same rules serve
//! the user's own certificates (selection), recipients' and signers'.
//!
//! Owns only rules over [`CertFacts`]; the key usage and EKU rules themselves are the S/MIME
//! profile's (`profile.rs`); chains and revocation are `trust/`'s.

use std::time::SystemTime;

use super::profile::{self, Fitness};
use super::{CertFacts, rfc3339};

/// The operation a certificate is chosen for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Sign,
    Encrypt,
    Decrypt,
}

impl Purpose {
    pub fn gerund(self) -> &'static str {
        match self {
            Purpose::Sign => "signing",
            Purpose::Encrypt => "encryption",
            Purpose::Decrypt => "decryption",
        }
    }

    /// What the S/MIME profile is asked for this operation.
    pub fn fitness(self) -> Fitness {
        match self {
            Purpose::Sign => Fitness::Sign,
            Purpose::Encrypt | Purpose::Decrypt => Fitness::Encrypt,
        }
    }

    /// Outgoing mail: `check_crl_on_send` applies.
    pub fn is_send(self) -> bool {
        matches!(self, Purpose::Sign | Purpose::Encrypt)
    }
}

/// Why a certificate's key usage or extended key usage rules out `purpose` (S/MIME), if
/// it does: for the user's own certificates and for signers of received mail alike. The rule
/// is the S/MIME profile's (`certs::profile`).
pub fn usage_forbids(f: &CertFacts, purpose: Purpose) -> Option<(&'static str, String)> {
    profile::usage_violation(&f.cert, purpose.fitness()).map(|v| (v.rule.code(), v.message))
}

/// Why a certificate (anyone's) cannot serve `purpose` at `now`, by its own content: key
/// usage, extended key usage, validity. `None` when it can.
pub fn cert_unusable_for(
    f: &CertFacts,
    purpose: Purpose,
    now: SystemTime,
) -> Option<(&'static str, String)> {
    if let Some(problem) = usage_forbids(f, purpose) {
        return Some(problem);
    }
    if now < f.not_before {
        return Some((
            "not_yet_valid",
            format!(
                "not valid before {} (valid {} to {})",
                rfc3339(f.not_before),
                rfc3339(f.not_before),
                rfc3339(f.not_after)
            ),
        ));
    }
    if now > f.not_after {
        return Some((
            "expired",
            format!(
                "expired on {} (valid {} to {})",
                rfc3339(f.not_after),
                rfc3339(f.not_before),
                rfc3339(f.not_after)
            ),
        ));
    }
    None
}

/// The key usage allows the operation (an absent extension allows everything).
pub fn usage_allows(f: &CertFacts, purpose: Purpose) -> bool {
    let u = &f.usage;
    if !u.present {
        return true;
    }
    match purpose {
        Purpose::Sign => u.digital_signature || u.non_repudiation,
        Purpose::Encrypt | Purpose::Decrypt if f.key.is_ec() => u.key_agreement,
        Purpose::Encrypt | Purpose::Decrypt => u.key_encipherment,
    }
}

/// The key usage allows only the operation's own usages.
pub fn single_usage(f: &CertFacts, purpose: Purpose) -> bool {
    let u = &f.usage;
    u.present
        && usage_allows(f, purpose)
        && match purpose {
            Purpose::Sign => !u.key_encipherment && !u.data_encipherment && !u.key_agreement,
            Purpose::Encrypt | Purpose::Decrypt => !u.digital_signature && !u.non_repudiation,
        }
}
