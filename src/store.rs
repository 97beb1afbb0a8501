//! The session store: the certificates of the user's keys present now, and the rules that
//! choose one for an address and an operation.
//!
//! Owns: which tokens and certificates are present (inserted when a token appears, removed
//! when it goes), and certificate selection (behaviour.md section 2). Readers take a
//! snapshot (an `Arc`) and never wait on PKCS#11. Does not validate chains (that is
//! `trust/`) and does not talk to tokens.

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::certs::{CertFacts, rfc3339};
use crate::config::{IdentityConfig, PolicyConfig};
use crate::tokens::{Token, TokenCert};

/// A certificate of one of the user's keys, and the token that holds the key.
#[derive(Debug)]
pub struct StoredCert {
    pub cert: TokenCert,
    pub token: Arc<Token>,
}

impl StoredCert {
    pub fn facts(&self) -> &CertFacts {
        &self.cert.facts
    }
}

/// A present token and its certificates.
#[derive(Debug)]
pub struct TokenEntry {
    pub token: Arc<Token>,
    pub certs: Vec<Arc<StoredCert>>,
}

/// What the store holds at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub tokens: Vec<Arc<TokenEntry>>,
}

impl Snapshot {
    pub fn certs(&self) -> impl Iterator<Item = &Arc<StoredCert>> {
        self.tokens.iter().flat_map(|t| t.certs.iter())
    }
}

/// The session store.
#[derive(Debug, Default)]
pub struct SessionStore {
    current: RwLock<Arc<Snapshot>>,
}

impl SessionStore {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Adds a token; returns the entry it replaced (same id), if any.
    pub fn insert(&self, token: Arc<Token>, certs: Vec<TokenCert>) -> Option<Arc<TokenEntry>> {
        let entry = Arc::new(TokenEntry {
            certs: certs
                .into_iter()
                .map(|cert| {
                    Arc::new(StoredCert {
                        cert,
                        token: token.clone(),
                    })
                })
                .collect(),
            token,
        });
        let mut replaced = None;
        self.update(|tokens| {
            if let Some(i) = tokens
                .iter()
                .position(|t| t.token.token_ref().id == entry.token.token_ref().id)
            {
                replaced = Some(tokens.remove(i));
            }
            tokens.push(entry);
        });
        replaced
    }

    /// Removes a token by id; returns it.
    pub fn remove(&self, token_id: &str) -> Option<Arc<TokenEntry>> {
        let mut removed = None;
        self.update(|tokens| {
            if let Some(i) = tokens
                .iter()
                .position(|t| t.token.token_ref().id == token_id)
            {
                removed = Some(tokens.remove(i));
            }
        });
        removed
    }

    fn update(&self, f: impl FnOnce(&mut Vec<Arc<TokenEntry>>)) {
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut tokens = guard.tokens.clone();
        f(&mut tokens);
        *guard = Arc::new(Snapshot { tokens });
    }
}

// ---------------------------------------------------------------------------------------
// Selection
// ---------------------------------------------------------------------------------------

/// The operation a certificate is chosen for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Sign,
}

/// A certificate that was chosen, and why.
#[derive(Debug, Clone)]
pub struct Selection {
    pub cert: Arc<StoredCert>,
    pub why: String,
}

/// A certificate that matched the address but was not chosen, and why not.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub subject: String,
    pub serial: String,
    pub token: String,
    pub reason: String,
}

/// No certificate fits.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.message())]
pub struct NoCertificate {
    pub address: String,
    pub purpose: Purpose,
    pub rejected: Vec<Rejected>,
}

impl NoCertificate {
    pub fn message(&self) -> String {
        let op = match self.purpose {
            Purpose::Sign => "signing",
        };
        if self.rejected.is_empty() {
            return format!(
                "no certificate for {} on any present token; insert the card that holds it",
                self.address
            );
        }
        let found: Vec<String> = self
            .rejected
            .iter()
            .map(|r| {
                format!(
                    "{} (serial {}, token \"{}\"): {}",
                    r.subject, r.serial, r.token, r.reason
                )
            })
            .collect();
        format!(
            "no usable certificate for {} for {op}; found only: {}",
            self.address,
            found.join("; ")
        )
    }
}

/// How an address matched a certificate, in the order the rules try them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Match {
    Subject,
    SubjectAltName,
    Alias,
}

/// Compares addresses as mail clients do: the whole address case-insensitively (the
/// domain is case-insensitive by RFC 5321; local parts are in practice).
pub fn same_address(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// Chooses the certificate to sign as `address` (behaviour.md section 2).
///
/// The rules: match the address on the subject, else on subjectAltName, else on the
/// address's aliases (`[[identity]]`, unless `use_secondary_proxies = false`); keep
/// certificates whose key usage and extended key usage allow the operation and that are
/// inside their validity; a single-usage certificate wins over a multi-usage one; then a
/// hardware key over a software one; then the latest notBefore; then the lowest SHA-256,
/// so the choice is deterministic. A stage that yields no usable certificate falls through
/// to the next one.
pub fn select(
    snapshot: &Snapshot,
    address: &str,
    purpose: Purpose,
    policy: &PolicyConfig,
    identities: &[IdentityConfig],
    now: SystemTime,
) -> Result<Selection, NoCertificate> {
    let aliases: Vec<&str> = if policy.use_secondary_proxies {
        identities
            .iter()
            .filter(|i| {
                same_address(&i.address, address)
                    || i.aliases.iter().any(|a| same_address(a, address))
            })
            .flat_map(|i| {
                std::iter::once(i.address.as_str()).chain(i.aliases.iter().map(String::as_str))
            })
            .filter(|a| !same_address(a, address))
            .collect()
    } else {
        vec![]
    };

    let mut rejected = vec![];
    for stage in [Match::Subject, Match::SubjectAltName, Match::Alias] {
        let mut usable: Vec<&Arc<StoredCert>> = vec![];
        for c in snapshot.certs() {
            let f = c.facts();
            let matched = match stage {
                Match::Subject => f.subject_emails.iter().any(|e| same_address(e, address)),
                Match::SubjectAltName => {
                    !f.subject_emails.iter().any(|e| same_address(e, address))
                        && f.san_emails.iter().any(|e| same_address(e, address))
                }
                Match::Alias => {
                    !f.all_emails().any(|e| same_address(e, address))
                        && f.all_emails()
                            .any(|e| aliases.iter().any(|a| same_address(a, e)))
                }
            };
            if !matched {
                continue;
            }
            match unusable_because(c, purpose, policy, now) {
                Some(reason) => rejected.push(Rejected {
                    subject: f.subject.clone(),
                    serial: f.serial_hex.clone(),
                    token: c.token.token_ref().label.clone(),
                    reason,
                }),
                None => usable.push(c),
            }
        }
        if usable.is_empty() {
            continue;
        }
        usable.sort_by(|a, b| {
            let (fa, fb) = (a.facts(), b.facts());
            single_usage(fb, purpose)
                .cmp(&single_usage(fa, purpose))
                .then(b.token.facts.hardware.cmp(&a.token.facts.hardware))
                .then(fb.not_before.cmp(&fa.not_before))
                .then(fa.sha256.cmp(&fb.sha256))
        });
        let chosen = usable[0];
        let why = explain(chosen, stage, &usable, purpose);
        return Ok(Selection {
            cert: chosen.clone(),
            why,
        });
    }
    Err(NoCertificate {
        address: address.to_owned(),
        purpose,
        rejected,
    })
}

fn unusable_because(
    c: &StoredCert,
    purpose: Purpose,
    policy: &PolicyConfig,
    now: SystemTime,
) -> Option<String> {
    let f = c.facts();
    let t = &c.token.facts;
    if policy.smart_card_only && !(t.hardware && t.removable) {
        return Some(format!(
            "its key is on \"{}\", which is not a smart card, and policy smart_card_only is set",
            t.token.label
        ));
    }
    if c.cert.key_id.is_empty() || c.cert.has_key == Some(false) {
        return Some("no private key on the token".into());
    }
    match purpose {
        Purpose::Sign if !f.can_sign() => {
            return Some(format!(
                "its key usage ({}) does not allow signing",
                f.key_usage_names().join(", ")
            ));
        }
        _ => {}
    }
    if !f.eku_allows_email() {
        return Some(format!(
            "its extended key usage ({}) does not include emailProtection",
            f.ext_key_usage_names().join(", ")
        ));
    }
    if now < f.not_before {
        return Some(format!("not valid before {}", rfc3339(f.not_before)));
    }
    if now > f.not_after {
        return Some(format!("expired on {}", rfc3339(f.not_after)));
    }
    None
}

/// The key usage allows only the operation's own usages.
fn single_usage(f: &CertFacts, purpose: Purpose) -> bool {
    let u = &f.usage;
    match purpose {
        Purpose::Sign => {
            u.present && !u.key_encipherment && !u.data_encipherment && !u.key_agreement
        }
    }
}

fn explain(
    chosen: &StoredCert,
    stage: Match,
    usable: &[&Arc<StoredCert>],
    purpose: Purpose,
) -> String {
    let how = match stage {
        Match::Subject => "the address is in the certificate subject",
        Match::SubjectAltName => "the address is in the certificate subjectAltName",
        Match::Alias => "a proxy address (alias) of the address is in the certificate",
    };
    let mut why = format!(
        "{how}; key usage allows {}",
        match purpose {
            Purpose::Sign => "signing",
        }
    );
    if usable.len() > 1 {
        let f = chosen.facts();
        let runner = usable[1];
        let reason = if single_usage(f, purpose) != single_usage(runner.facts(), purpose) {
            "it has a single key usage, preferred over a multi-usage certificate"
        } else if chosen.token.facts.hardware != runner.token.facts.hardware {
            "its key is on a hardware token, preferred over a software key"
        } else if f.not_before != runner.facts().not_before {
            "it is the most recently issued"
        } else {
            "tie broken by certificate fingerprint"
        };
        why.push_str(&format!("; chosen among {}: {reason}", usable.len()));
    }
    if chosen.token.facts.hardware {
        why.push_str(&format!(
            "; key on hardware token \"{}\"",
            chosen.token.token_ref().label
        ));
    } else {
        why.push_str(&format!(
            "; key on software token \"{}\"",
            chosen.token.token_ref().label
        ));
    }
    why
}
