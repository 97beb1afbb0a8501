//! Validation of one certificate (behaviour.md section 3), in order: the certificate parsed and
//! its encoding checked strictly, a distrusted one refused, an anchor taken as its own path,
//! the pool of intermediates gathered (the request or message, the tokens, the local store,
//! AIA while no path is found), each candidate path checked strictly (its intermediates, the
//! anchor and the anchor's RFC 5937 constraints) and validated by certval (RFC 5280 6.1:
//! names, validity, signatures, basic constraints, key usage, policies, name constraints),
//! then the S/MIME profile
//! (`certs::profile`: usages, address, CA leaf, key floor) over the path, and the first that
//! passes both checked for revocation.
//!
//! Owns: that order, the pool of one validation, and which outcome is reported when no
//! candidate passes. Beside it: the request and outcome types (`validation.rs`), the search
//! (`build.rs`), the strict checks around certval (`strict.rs`), certval's settings
//! (`settings.rs`) and failures in words (`reasons.rs`), AIA
//! (`aia.rs`), revocation (`revocation.rs`). Must not touch: fetching (http), caching (crl).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use certval::{CertificationPath, CertificationPathResults, Error as CvError, PDVCertificate};

use super::aia::fetch_aia;
use super::build::{chain_of, search};
use super::dsa::DsaVerifier;
use super::reasons::path_problem;
use super::revocation::revocation;
use super::settings::{environment_with, settings};
use super::strict;
use super::validation::{link, sha256, subject};
use super::{CertOrigin, PoolCert, Trust};
use crate::certs::{profile, rfc3339};

// The types were defined here first: `crate::trust::path::Validation` and the rest still name them.
pub use super::validation::{
    ChainLink, CrlCheck, PolicyInputs, Problem, ProblemCode, RevocationStatus, RevocationSummary,
    Validation, ValidationRequest,
};

/// Rounds of AIA fetching per validation.
const MAX_AIA_ROUNDS: usize = 3;

/// Validates `req` at `time` (behaviour.md section 3).
pub(super) async fn validate(
    trust: &Trust,
    req: &ValidationRequest,
    time: SystemTime,
) -> Validation {
    let target = match PDVCertificate::try_from(req.cert.as_slice()) {
        Ok(t) => t,
        Err(e) => {
            return Validation::invalid(
                ProblemCode::Malformed,
                format!("not a DER X.509 certificate ({e})"),
                vec![],
            );
        }
    };
    let target_sha = sha256(&req.cert);
    let now = SystemTime::now();
    let started = Instant::now();
    let deadline = trust.retrieval_timeout().map(|d| started + d);
    let who = subject(&target);

    if let Some(label) = trust.store.distrust_label(&target, &target_sha) {
        return Validation::invalid(
            ProblemCode::Untrusted,
            format!("{who} is in the untrusted store ({label}); it is never valid"),
            vec![link(&target, CertOrigin::Request)],
        );
    }

    // Duplicate or malformed extensions make it no certificate to judge at all.
    if let Some(p) = strict::certificate_problem(&target) {
        return Validation::invalid(p.code, p.message, vec![link(&target, CertOrigin::Request)]);
    }

    // An explicitly trusted certificate (or a root) is its own anchor.
    if let Some(a) = trust.store.anchors.iter().find(|a| a.sha256 == target_sha) {
        let chain = vec![link(&a.cert, CertOrigin::Anchor)];
        let v = a.cert.decoded().tbs_certificate().validity();
        if time < v.not_before.to_system_time() {
            return Validation::invalid(
                ProblemCode::NotYetValid,
                format!(
                    "{who} is not valid before {}",
                    rfc3339(v.not_before.to_system_time())
                ),
                chain,
            );
        }
        if time > v.not_after.to_system_time() {
            return Validation::invalid(
                ProblemCode::Expired,
                format!("{who} expired on {}", rfc3339(v.not_after.to_system_time())),
                chain,
            );
        }
        if let Some(p) = strict::self_anchor_problem(&a.cert) {
            return Validation::invalid(p.code, p.message, chain);
        }
        let problems = profile_problems(req, &a.cert, &[]);
        return Validation {
            valid: problems.is_empty(),
            problems,
            warnings: vec![],
            chain,
            revocation: RevocationSummary {
                status: RevocationStatus::NotChecked,
                checks: vec![],
            },
            from_cache: false,
            valid_until: None,
        };
    }

    let mut pool: Vec<Arc<PoolCert>> = vec![];
    let mut seen: HashSet<[u8; 32]> = HashSet::from([target_sha]);
    let add = |pool: &mut Vec<Arc<PoolCert>>,
               seen: &mut HashSet<[u8; 32]>,
               der: &[u8],
               origin: CertOrigin| {
        let h = sha256(der);
        if !seen.insert(h) {
            return;
        }
        if let Ok(cert) = PDVCertificate::try_from(der) {
            pool.push(Arc::new(PoolCert {
                cert,
                sha256: h,
                origin,
            }));
        }
    };
    for der in &req.chain {
        add(&mut pool, &mut seen, der, CertOrigin::Request);
    }
    for der in &req.token_certs {
        add(&mut pool, &mut seen, der, CertOrigin::Token);
    }
    // The local store's certificates are parsed and hashed once, when it is loaded.
    for p in &trust.store.intermediates {
        if seen.insert(p.sha256) {
            pool.push(p.clone());
        }
    }

    let mut aia_notes: Vec<String> = vec![];
    let mut aia_tried: HashSet<String> = HashSet::new();
    let mut round = 0;
    let (candidates, dangling) = loop {
        let (cands, dangling) = search(&target, target_sha, &pool, &trust.store.anchors);
        if !cands.is_empty() || round >= MAX_AIA_ROUNDS {
            break (cands, dangling);
        }
        round += 1;
        let mut added = false;
        for d in &dangling {
            for url in super::aia::ca_issuer_urls(d) {
                if !aia_tried.insert(url.clone()) {
                    continue;
                }
                match fetch_aia(trust, &url, deadline).await {
                    Ok(ders) => {
                        for der in ders {
                            let before = pool.len();
                            add(&mut pool, &mut seen, &der, CertOrigin::Aia);
                            added |= pool.len() > before;
                        }
                    }
                    Err(e) => aia_notes.push(e),
                }
            }
        }
        if !added {
            break (cands, dangling);
        }
    };

    if candidates.is_empty() {
        let top = dangling.first().unwrap_or(&target);
        let mut msg = format!(
            "no path from {who} to a trusted root: {} (issuer of {}) is not a trust anchor and was not found in the message, on a token, in the local store or at an AIA URL",
            top.decoded().tbs_certificate().issuer(),
            subject(top)
        );
        for n in &aia_notes {
            msg.push_str("; ");
            msg.push_str(n);
        }
        return Validation::invalid(
            ProblemCode::NoTrustedRoot,
            msg,
            vec![link(&target, CertOrigin::Request)],
        );
    }

    let check_rev = !trust.revocation.disable_crl_check;
    let cps = settings(time, &req.policy, check_rev);
    let mut first_failure: Option<Validation> = None;
    for cand in &candidates {
        let chain = chain_of(&target, cand);
        if let Some((p, label)) = cand.intermediates.iter().find_map(|p| {
            trust
                .store
                .distrust_label(&p.cert, &p.sha256)
                .map(|l| (p, l))
        }) {
            first_failure.get_or_insert_with(|| {
                Validation::invalid(
                    ProblemCode::Untrusted,
                    format!(
                        "{} in the chain of {who} is in the untrusted store ({label}); nothing that chains through it is valid",
                        subject(&p.cert)
                    ),
                    chain.clone(),
                )
            });
            continue;
        }
        if let Some(problem) = cand
            .intermediates
            .iter()
            .find_map(|p| strict::certificate_problem(&p.cert))
        {
            first_failure.get_or_insert_with(|| Validation {
                problems: vec![problem],
                ..Validation::invalid(ProblemCode::Invalid, String::new(), chain)
            });
            continue;
        }
        // The anchor's own certificate and constraints, which certval does not look at.
        let cps = match strict::anchor_settings(&cps, &cand.anchor) {
            Ok(c) => c,
            Err(problem) => {
                first_failure.get_or_insert_with(|| Validation {
                    problems: vec![problem],
                    ..Validation::invalid(ProblemCode::Invalid, String::new(), chain)
                });
                continue;
            }
        };
        let cp = CertificationPath::new(
            cand.anchor.ta.clone(),
            cand.intermediates.iter().map(|p| p.cert.clone()).collect(),
            target.clone(),
        );
        let mut path_certs: Vec<
            &x509_cert::certificate::CertificateInner<x509_cert::certificate::Raw>,
        > = vec![cand.anchor.cert.decoded()];
        path_certs.extend(cand.intermediates.iter().map(|p| p.cert.decoded()));
        path_certs.push(target.decoded());
        let pe = environment_with(DsaVerifier::for_path(&path_certs));
        let mut cpr = CertificationPathResults::new();
        if let Err(e) = pe.validate_path(&pe, &cps, &cp, &mut cpr) {
            let problem = match e {
                CvError::PathValidation(s) => {
                    path_problem(s, &cp, cpr.get_failure_index(), &cand.anchor)
                }
                other => Problem {
                    code: ProblemCode::Invalid,
                    message: format!("the path from {who} could not be validated ({other})"),
                },
            };
            first_failure.get_or_insert_with(|| Validation {
                problems: vec![problem],
                ..Validation::invalid(ProblemCode::Invalid, String::new(), chain)
            });
            continue;
        }
        let mut cas: Vec<&PDVCertificate> = cand.intermediates.iter().map(|p| &p.cert).collect();
        cas.push(&cand.anchor.cert);
        let problems = profile_problems(req, &target, &cas);
        if !problems.is_empty() {
            first_failure.get_or_insert_with(|| Validation {
                problems,
                ..Validation::invalid(ProblemCode::Invalid, String::new(), chain)
            });
            continue;
        }
        if !check_rev {
            return Validation {
                valid: true,
                problems: vec![],
                warnings: vec![],
                chain,
                revocation: RevocationSummary {
                    status: RevocationStatus::Disabled,
                    checks: vec![],
                },
                from_cache: false,
                valid_until: None,
            };
        }
        return revocation(trust, req, &cp, &cps, cand, chain, now, deadline).await;
    }
    first_failure.unwrap_or_else(|| {
        Validation::invalid(
            ProblemCode::NoTrustedRoot,
            format!("no usable path from {who} to a trusted root"),
            vec![link(&target, CertOrigin::Request)],
        )
    })
}

/// The S/MIME profile over a path certval accepted (`certs::profile`): the leaf's usages,
/// address and key, and the CA certificates' EKU and keys. Nothing with `path_only`.
fn profile_problems(
    req: &ValidationRequest,
    target: &PDVCertificate,
    cas: &[&PDVCertificate],
) -> Vec<Problem> {
    if req.path_only {
        return vec![];
    }
    let cas: Vec<_> = cas.iter().map(|c| c.decoded()).collect();
    profile::check(target.decoded(), &cas, &req.profile)
        .into_iter()
        .map(|v| Problem {
            code: ProblemCode::Profile(v.rule),
            message: v.message,
        })
        .collect()
}
