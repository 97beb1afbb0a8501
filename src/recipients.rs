//! Finding other people's certificates to encrypt to (behaviour.md section 5).
//!
//! Owns: the order of sources (certificates the client passed in the request, then the
//! contacts store, then the directory's entry: the ops hand them in that order), matching an address to a
//! certificate (subject, then subjectAltName), the usage, validity and strength rules for
//! encryption, and validating the chosen certificate. Stops at the first valid
//! certificate for the address. The user's own certificates are the store's business.

use std::sync::Arc;
use std::time::SystemTime;

use crate::certs::address::same_address;
use crate::certs::profile::{Fitness, ProfileRequest};
use crate::certs::usage::{Purpose, cert_unusable_for, single_usage};
use crate::certs::{CertFacts, KeyKind};
use crate::trust::{Trust, ValidationRequest};

/// Weakest RSA key accepted for encryption.
pub const MIN_RSA_BITS: usize = 2048;

/// Why [`find`] found nothing: no certificate of any source carries the address.
pub const NONE_KNOWN: &str = "no certificate known (pass one with the request, add it to the \
                              contacts, or configure a [directory] that has it)";

/// Where a certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Request,
    Contacts,
    /// An LDAP entry of `[directory]` (the address's own, or a list member's).
    Directory,
    Own,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Request => "request",
            Source::Contacts => "contacts",
            Source::Directory => "directory",
            Source::Own => "own",
        }
    }
}

/// The certificate found for an address.
#[derive(Debug, Clone)]
pub struct Found {
    pub address: String,
    pub cert: Arc<CertFacts>,
    pub source: Source,
    /// The distribution list this recipient was expanded from.
    pub list: Option<String>,
}

/// Chooses the certificate to encrypt to `address` from the sources, in order. `Err` says
/// why none is usable (the reasons of every candidate, or that there was none).
pub async fn find(
    address: &str,
    sources: &[(Source, Vec<Arc<CertFacts>>)],
    trust: &Trust,
    check_crl_on_send: bool,
    now: SystemTime,
) -> Result<Found, String> {
    let mut reasons = vec![];
    for (source, certs) in sources {
        // Subject first, then subjectAltName (rule 1).
        for subject_stage in [true, false] {
            let mut usable: Vec<&Arc<CertFacts>> = vec![];
            for c in certs {
                let in_subject = c.subject_emails.iter().any(|e| same_address(e, address));
                let matched = if subject_stage {
                    in_subject
                } else {
                    !in_subject && c.san_emails.iter().any(|e| same_address(e, address))
                };
                if !matched {
                    continue;
                }
                match unusable(c, now) {
                    Some(why) => reasons.push(format!("serial {}: {why}", c.serial_hex)),
                    None => usable.push(c),
                }
            }
            usable.sort_by(|a, b| {
                single_usage(b, Purpose::Encrypt)
                    .cmp(&single_usage(a, Purpose::Encrypt))
                    .then(b.not_before.cmp(&a.not_before))
                    .then(a.sha256.cmp(&b.sha256))
            });
            for c in usable {
                let v = trust
                    .validate(&ValidationRequest {
                        cert: c.der.clone(),
                        time: Some(now),
                        for_send: check_crl_on_send,
                        profile: ProfileRequest {
                            fitness: Fitness::Encrypt,
                            address: Some(address.to_owned()),
                        },
                        ..Default::default()
                    })
                    .await;
                if v.valid {
                    return Ok(Found {
                        address: address.to_owned(),
                        cert: c.clone(),
                        source: *source,
                        list: None,
                    });
                }
                reasons.push(format!(
                    "serial {}: not valid: {}",
                    c.serial_hex,
                    v.reason()
                ));
            }
        }
    }
    if reasons.is_empty() {
        Err(NONE_KNOWN.into())
    } else {
        Err(reasons.join("; "))
    }
}

/// Why a certificate cannot be encrypted to, by its content.
pub fn unusable(c: &CertFacts, now: SystemTime) -> Option<String> {
    if let Some((_, why)) = cert_unusable_for(c, Purpose::Encrypt, now) {
        return Some(why);
    }
    match c.key {
        KeyKind::Rsa { bits } if bits < MIN_RSA_BITS => Some(format!(
            "its RSA key has {bits} bits, fewer than the {MIN_RSA_BITS} required"
        )),
        KeyKind::EcP521 => Some("P-521 keys are not supported for encryption".into()),
        _ => None,
    }
}
