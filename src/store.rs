//! The session store: the certificates of the user's keys present now, and the rules that
//! choose one for an address and an operation.
//!
//! Owns: which tokens and certificates are present (inserted when a token appears, removed
//! when it goes), and certificate selection (behaviour.md section 2). Readers take a
//! snapshot (an `Arc`) and never wait on PKCS#11. Rule 5 (the chosen certificate's chain
//! must be valid) asks `trust/`, which owns validation; the store does not talk to tokens.

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::certs::address::same_address;
use crate::certs::profile::ProfileRequest;
use crate::certs::usage::{Purpose, cert_unusable_for, single_usage};
use crate::certs::{CertFacts, rfc3339};
use crate::config::{IdentityConfig, PolicyConfig};
use crate::tokens::{Token, TokenCert};
use crate::trust::{Trust, ValidationRequest};

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

/// A certificate that was chosen, and why.
#[derive(Debug, Clone)]
pub struct Selection {
    pub cert: Arc<StoredCert>,
    pub why: String,
    /// Warnings of its validation (a CRL that could not be had under `warn`).
    pub warnings: Vec<String>,
}

/// A certificate that matched the address but was not chosen, and why not.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub cert: Arc<StoredCert>,
    /// The kind of reason (`expired`, `key_usage`, `revoked`, ...; see `which` in
    /// PROTOCOL.md).
    pub code: &'static str,
    pub reason: String,
}

impl Rejected {
    pub fn subject(&self) -> &str {
        &self.cert.facts().subject
    }
    pub fn serial(&self) -> &str {
        &self.cert.facts().serial_hex
    }
    pub fn token(&self) -> &str {
        &self.cert.token.token_ref().label
    }
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
    /// A certificate was refused only because `check_crl_on_send` found its CRL unreachable:
    /// the administrator's policy, not the certificate, stops the operation.
    pub fn policy_denied(&self) -> bool {
        self.rejected
            .iter()
            .any(|r| r.code == crate::trust::ProblemCode::CrlUnavailableOnSend.as_str())
    }

    pub fn message(&self) -> String {
        let op = self.purpose.gerund();
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
                    r.subject(),
                    r.serial(),
                    r.token(),
                    r.reason
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
pub enum Match {
    Subject,
    SubjectAltName,
    Alias,
}

impl Match {
    pub fn as_str(self) -> &'static str {
        match self {
            Match::Subject => "subject",
            Match::SubjectAltName => "subject_alt_name",
            Match::Alias => "alias",
        }
    }
}

/// What became of one matching certificate.
#[derive(Debug, Clone)]
pub enum Verdict {
    Chosen,
    Rejected {
        code: &'static str,
        reason: String,
    },
    /// Usable, but a better one was chosen first.
    NotConsidered,
}

/// A certificate that matched the address, and its verdict.
#[derive(Debug, Clone)]
pub struct CandidateCert {
    pub cert: Arc<StoredCert>,
    pub matched: Match,
    pub verdict: Verdict,
}

/// The whole selection, explained (what `which` shows).
#[derive(Debug, Clone)]
pub struct Explained {
    pub candidates: Vec<CandidateCert>,
    pub chosen: Option<Selection>,
}

impl Explained {
    pub fn rejected(&self) -> Vec<Rejected> {
        self.candidates
            .iter()
            .filter_map(|c| match &c.verdict {
                Verdict::Rejected { code, reason } => Some(Rejected {
                    cert: c.cert.clone(),
                    code,
                    reason: reason.clone(),
                }),
                _ => None,
            })
            .collect()
    }
}

/// What selection needs besides the store.
pub struct SelectionContext<'a> {
    pub policy: &'a PolicyConfig,
    pub identities: &'a [IdentityConfig],
    pub trust: &'a Trust,
    pub now: SystemTime,
}

/// Chooses the certificate for `address` and `purpose` (behaviour.md section 2).
pub async fn select(
    snapshot: &Snapshot,
    address: &str,
    purpose: Purpose,
    ctx: &SelectionContext<'_>,
) -> Result<Selection, NoCertificate> {
    let e = explain(snapshot, address, purpose, ctx).await;
    match e.chosen.clone() {
        Some(s) => Ok(s),
        None => Err(NoCertificate {
            address: address.to_owned(),
            purpose,
            rejected: e.rejected(),
        }),
    }
}

/// The selection rules, with every candidate's verdict.
///
/// 1. Match the address on the subject (emailAddress, or a CN that is the address); if no
///    usable certificate matches there, on subjectAltName rfc822Name; then on the address's
///    aliases (`[[identity]]`), unless `use_secondary_proxies = false`.
/// 2. Keep certificates whose key usage allows the operation (sign: digitalSignature or
///    nonRepudiation; encrypt/decrypt: keyEncipherment for RSA, keyAgreement for EC) and whose
///    extended key usage, if present, allows emailProtection; with `smart_card_only`, only
///    keys on removable hardware tokens; only certificates with their private key.
/// 3. A key on a hardware token always wins over a software key (the seed: "always uses
///    hardware-based certificates if both ... are located"); among keys of the same kind, a
///    certificate whose key usage is the operation's alone wins over a multi-usage one.
/// 4. Only certificates inside notBefore..notAfter.
/// 5. The best one's chain is validated (trust/); an invalid one is rejected with its reason
///    and the next one tried.
/// 6. Ties: the latest notBefore, then the lowest SHA-256.
pub async fn explain(
    snapshot: &Snapshot,
    address: &str,
    purpose: Purpose,
    ctx: &SelectionContext<'_>,
) -> Explained {
    let policy = ctx.policy;
    let aliases: Vec<&str> = if policy.use_secondary_proxies {
        ctx.identities
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
    // The tokens' certificates (CA certificates included) are candidate intermediates.
    let token_certs: Vec<Vec<u8>> = snapshot.certs().map(|c| c.facts().der.clone()).collect();

    let mut candidates: Vec<CandidateCert> = vec![];
    let mut chosen = None;
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
            if chosen.is_some() {
                // A usable one was chosen in an earlier stage; later matches only show.
                candidates.push(CandidateCert {
                    cert: c.clone(),
                    matched: stage,
                    verdict: Verdict::NotConsidered,
                });
                continue;
            }
            match unusable_because(c, purpose, policy, ctx.now) {
                Some((code, reason)) => candidates.push(CandidateCert {
                    cert: c.clone(),
                    matched: stage,
                    verdict: Verdict::Rejected { code, reason },
                }),
                None => usable.push(c),
            }
        }
        if usable.is_empty() {
            continue;
        }
        usable.sort_by(|a, b| {
            let (fa, fb) = (a.facts(), b.facts());
            b.token
                .facts
                .hardware
                .cmp(&a.token.facts.hardware)
                .then(single_usage(fb, purpose).cmp(&single_usage(fa, purpose)))
                .then(fb.not_before.cmp(&fa.not_before))
                .then(fa.sha256.cmp(&fb.sha256))
        });
        let mut passed_over: Vec<String> = vec![];
        for (i, c) in usable.iter().enumerate() {
            if chosen.is_some() {
                candidates.push(CandidateCert {
                    cert: (*c).clone(),
                    matched: stage,
                    verdict: Verdict::NotConsidered,
                });
                continue;
            }
            let v = ctx
                .trust
                .validate(&ValidationRequest {
                    cert: c.facts().der.clone(),
                    token_certs: token_certs.clone(),
                    time: Some(ctx.now),
                    for_send: purpose.is_send(),
                    profile: ProfileRequest {
                        fitness: purpose.fitness(),
                        address: None,
                    },
                    ..Default::default()
                })
                .await;
            if v.valid {
                let mut why = explain_choice(c, stage, &usable[i..], purpose);
                if !passed_over.is_empty() {
                    why.push_str(&format!(
                        "; preferred certificate(s) not used: {}",
                        passed_over.join("; ")
                    ));
                }
                chosen = Some(Selection {
                    cert: (*c).clone(),
                    why,
                    warnings: v.warnings.clone(),
                });
                candidates.push(CandidateCert {
                    cert: (*c).clone(),
                    matched: stage,
                    verdict: Verdict::Chosen,
                });
            } else {
                let reason = format!("its chain is not valid: {}", v.reason());
                passed_over.push(format!("serial {} ({reason})", c.facts().serial_hex));
                candidates.push(CandidateCert {
                    cert: (*c).clone(),
                    matched: stage,
                    verdict: Verdict::Rejected {
                        code: v.code().map_or("invalid", |c| c.as_str()),
                        reason,
                    },
                });
            }
        }
    }
    Explained { candidates, chosen }
}

fn unusable_because(
    c: &StoredCert,
    purpose: Purpose,
    policy: &PolicyConfig,
    now: SystemTime,
) -> Option<(&'static str, String)> {
    let f = c.facts();
    let t = &c.token.facts;
    if policy.smart_card_only && !(t.hardware && t.removable) {
        return Some((
            "smart_card_only",
            format!(
                "its key is on \"{}\", which is not a smart card, and policy smart_card_only is set",
                t.token.label
            ),
        ));
    }
    if c.cert.key_id.is_empty() || c.cert.has_key == Some(false) {
        return Some(("no_private_key", "no private key on the token".into()));
    }
    cert_unusable_for(f, purpose, now)
}

fn explain_choice(
    chosen: &StoredCert,
    stage: Match,
    rest: &[&Arc<StoredCert>],
    purpose: Purpose,
) -> String {
    let how = match stage {
        Match::Subject => "the address is in the certificate subject",
        Match::SubjectAltName => "the address is in the certificate subjectAltName",
        Match::Alias => "a proxy address (alias) of the address is in the certificate",
    };
    let mut why = format!(
        "{how}; key usage allows {}; valid until {}; its chain is valid",
        purpose.gerund(),
        rfc3339(chosen.facts().not_after)
    );
    if rest.len() > 1 {
        let f = chosen.facts();
        let runner = rest[1];
        let reason = if chosen.token.facts.hardware != runner.token.facts.hardware {
            "its key is on a hardware token, preferred over a software key"
        } else if single_usage(f, purpose) != single_usage(runner.facts(), purpose) {
            "it has a single key usage, preferred over a multi-usage certificate"
        } else if f.not_before != runner.facts().not_before {
            "it is the most recently issued"
        } else {
            "tie broken by certificate fingerprint"
        };
        why.push_str(&format!("; chosen among {}: {reason}", rest.len()));
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
