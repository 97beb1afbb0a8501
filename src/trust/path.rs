//! Validation of one certificate, with revocation by CRL.
//!
//! Owns: gathering the intermediates at hand (the request or message, the tokens, the local
//! store, AIA), having certval validate each candidate path `build.rs` finds (RFC 5280 6.1:
//! names, validity, signatures, basic constraints, key usage, policies, name constraints),
//! supplying the CRLs certval checks revocation against, and turning the outcome into reasons
//! a person can act on.
//!
//! CRLs, written by hand, and why: certval's CRL retrieval needs its `remote`
//! feature (reqwest, a TLS stack, its own cache); the agent fetches CRLs itself (`crl.rs`) to
//! honour its timeouts, size bound and cache, and hands them to certval's
//! `check_revocation_local`, which verifies and applies them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use certval::{
    CertificationPath, CertificationPathResults, CertificationPathSettings, Error as CvError,
    MemoryCrlSource, PDVCertificate, PathValidationStatus as Pvs, PkiEnvironment,
};
use der::Decode;

use super::aia::fetch_aia;
use super::build::{Candidate, chain_of, search};
use super::crl::{self, CachedCrl, CrlOrigin, IssuerKey};
use super::reasons::path_problem;
use super::settings::{environment, settings};
use super::validation::{link, sha256, subject};
use super::{CertOrigin, PoolCert, Trust};
use crate::certs::rfc3339;
use crate::config::CrlUnavailable;

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
        return Validation {
            valid: true,
            problems: vec![],
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
            let mut urls = vec![];
            certval::collect_uris_from_aia_and_sia(d, &mut urls);
            for url in urls {
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
        let cp = CertificationPath::new(
            cand.anchor.ta.clone(),
            cand.intermediates.iter().map(|p| p.cert.clone()).collect(),
            target.clone(),
        );
        let pe = environment();
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

/// Checks revocation of a path that passed basic validation.
#[allow(clippy::too_many_arguments)]
async fn revocation(
    trust: &Trust,
    req: &ValidationRequest,
    cp: &CertificationPath,
    cps: &CertificationPathSettings,
    cand: &Candidate,
    chain: Vec<ChainLink>,
    now: SystemTime,
    deadline: Option<Instant>,
) -> Validation {
    let source = MemoryCrlSource::new();
    // Every CRL at hand, for the delta-CRL check certval does not do.
    let mut at_hand: Vec<Vec<u8>> = req.crls.clone();
    let mut valid_until: Option<SystemTime> = None;
    let mut until = |t: Option<SystemTime>| {
        if let Some(t) = t {
            valid_until = Some(valid_until.map_or(t, |v: SystemTime| v.min(t)));
        }
    };
    let supplied: Vec<CachedCrl> = req
        .crls
        .iter()
        .filter(|der| source.add(der))
        .filter_map(|der| crl::parse("request", der.clone()).ok())
        .inspect(|c| until(c.next_update))
        .collect();

    let mut certs: Vec<&PDVCertificate> = cp.intermediates.iter().collect();
    certs.push(&cp.target);
    let mut checks: Vec<CrlCheck> = vec![];
    for (pos, cert) in certs.iter().enumerate() {
        let issuer_cert: &PDVCertificate = if pos == 0 {
            &cand.anchor.cert
        } else {
            certs[pos - 1]
        };
        let mut check = CrlCheck {
            subject: subject(cert),
            status: "unavailable",
            crl_issuer: None,
            this_update: None,
            next_update: None,
            origin: None,
            url: None,
            reason: None,
        };
        let issuer_name = cert.decoded().tbs_certificate().issuer();
        let key = IssuerKey {
            name: issuer_cert.decoded().tbs_certificate().subject(),
            spki: issuer_cert
                .decoded()
                .tbs_certificate()
                .subject_public_key_info(),
        };
        let mut urls = vec![];
        certval::collect_crl_dp_uris(cert, &mut urls);
        // A CRL that came with the message saves the fetch only when it is current and
        // signed by the issuer: otherwise a stale or forged one would stand in for the
        // real CRL, and with on_crl_unavailable = allow a revoked signer would pass.
        // Without a distribution point, the message's CRLs are all there is to judge.
        let named = |c: &CachedCrl| certval::compare_names(&c.issuer_name, issuer_name);
        if supplied.iter().any(|c| {
            named(c) && (urls.is_empty() || (c.is_current(now) && crl::verify(c, &key).is_ok()))
        }) {
            check.origin = Some("request");
            check.crl_issuer = Some(issuer_name.to_string());
            checks.push(check);
            continue;
        }
        if urls.is_empty() {
            check.reason = Some(format!(
                "no CRL of its issuer came with the request and {} names no CRL distribution point",
                check.subject
            ));
            checks.push(check);
            continue;
        }
        let mut reasons = vec![];
        for url in &urls {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) && trust.crls.lookup(url, &key, now).is_none() {
                reasons.push(format!(
                    "{url}: not fetched, crl_retrieval_timeout_ms ({} ms) is used up",
                    trust.revocation.crl_retrieval_timeout_ms
                ));
                continue;
            }
            let conn = match (trust.connection_timeout(), left) {
                (Some(c), Some(l)) => Some(c.min(l)),
                (c, l) => c.or(l),
            };
            let got = match left {
                Some(l) => {
                    match tokio::time::timeout(l, trust.crls.get(url, &key, now, conn)).await {
                        Ok(r) => r.map_err(|u| u.reason),
                        Err(_) => Err(format!(
                            "{url}: no CRL within crl_retrieval_timeout_ms ({} ms)",
                            trust.revocation.crl_retrieval_timeout_ms
                        )),
                    }
                }
                None => trust
                    .crls
                    .get(url, &key, now, conn)
                    .await
                    .map_err(|u| u.reason),
            };
            match got {
                Ok((crl, origin)) => {
                    source.add(&crl.der);
                    at_hand.push(crl.der.clone());
                    until(crl.next_update);
                    check.crl_issuer = Some(crl.issuer.clone());
                    check.this_update = Some(rfc3339(crl.this_update));
                    check.next_update = crl.next_update.map(rfc3339);
                    check.origin = Some(match origin {
                        CrlOrigin::Cache => "cache",
                        CrlOrigin::Fetched => "fetched",
                    });
                    check.url = Some(url.clone());
                    reasons.clear();
                    break;
                }
                Err(r) => reasons.push(r),
            }
        }
        if !reasons.is_empty() {
            check.url = urls.first().cloned();
            check.reason = Some(reasons.join("; "));
        }
        checks.push(check);
    }

    let mut pe = environment();
    pe.add_crl_source(Box::new(source));
    let mut cpr = CertificationPathResults::new();
    let mut outcome = certval::check_revocation_local(&pe, cps, cp, &mut cpr);
    let mut index = cpr.get_failure_index();
    let mut delta_note = String::new();
    if outcome.is_ok()
        && let Some(pos) = revoked_on_delta(&pe, &at_hand, &certs, &cand.anchor.cert, cps)
    {
        outcome = Err(CvError::PathValidation(if pos + 1 == certs.len() {
            Pvs::CertificateRevokedEndEntity
        } else {
            Pvs::CertificateRevokedIntermediateCa
        }));
        index = Some(pos as u32 + 1);
        delta_note = " (listed on a delta CRL)".into();
    }
    let mut v = Validation {
        valid: true,
        problems: vec![],
        warnings: vec![],
        chain,
        revocation: RevocationSummary {
            status: RevocationStatus::Good,
            checks: vec![],
        },
        from_cache: false,
        valid_until,
    };
    match outcome {
        Ok(()) => {
            for c in &mut checks {
                c.status = "good";
                c.reason = None;
            }
        }
        Err(CvError::PathValidation(
            Pvs::CertificateRevokedEndEntity | Pvs::CertificateRevokedIntermediateCa,
        )) => {
            let pos = index
                .map(|i| i as usize)
                .unwrap_or(certs.len())
                .saturating_sub(1);
            let entry = cpr
                .get_crl_entry()
                .and_then(|l| l.get(pos).and_then(|e| e.first().cloned()))
                .and_then(|der| {
                    x509_cert::crl::RevokedCert::<x509_cert::certificate::Raw>::from_der(&der).ok()
                });
            let when = entry
                .map(|e| format!(" on {}", rfc3339(e.revocation_date.to_system_time())))
                .unwrap_or_default();
            let who = certs.get(pos).map(|c| subject(c)).unwrap_or_default();
            for (i, c) in checks.iter_mut().enumerate() {
                if i == pos {
                    c.status = "revoked";
                } else if i < pos {
                    c.status = "good";
                }
                c.reason = None;
            }
            let target_who = subject(&cp.target);
            let message = if pos + 1 == certs.len() {
                format!("{who} was revoked{when} (its issuer's CRL lists it){delta_note}")
            } else {
                format!("{who}, a CA in the chain of {target_who}, was revoked{when}{delta_note}")
            };
            v.valid = false;
            v.problems.push(Problem {
                code: ProblemCode::Revoked,
                message,
            });
            v.revocation.status = RevocationStatus::Revoked;
        }
        Err(CvError::PathValidation(Pvs::RevocationStatusNotDetermined)) => {
            let first = index.map(|i| i as usize).unwrap_or(1).saturating_sub(1);
            let mut reasons = vec![];
            for (i, c) in checks.iter_mut().enumerate() {
                if c.reason.is_none() && c.origin.is_some() && i >= first {
                    // A CRL was at hand but certval could not use it for this certificate.
                    if i == first {
                        c.reason = Some(format!(
                            "the CRL at hand for {} could not be used (its signature, issuer, scope or validity does not fit)",
                            c.subject
                        ));
                    } else {
                        c.status = "good";
                    }
                } else if c.reason.is_none() {
                    c.status = "good";
                }
                if let Some(r) = &c.reason {
                    reasons.push(r.clone());
                }
            }
            v.revocation.status = RevocationStatus::Unavailable;
            let text = format!(
                "the revocation status could not be determined: {}",
                reasons.join("; ")
            );
            match (
                req.for_send && trust.revocation.check_crl_on_send,
                trust.on_crl_unavailable(),
            ) {
                (true, _) => {
                    v.valid = false;
                    v.problems.push(Problem {
                        code: ProblemCode::CrlUnavailableOnSend,
                        message: format!("{text}; check_crl_on_send refuses to send with it"),
                    });
                }
                (false, CrlUnavailable::Fail) => {
                    v.valid = false;
                    v.problems.push(Problem {
                        code: ProblemCode::CrlUnavailable,
                        message: format!("{text}; on_crl_unavailable = \"fail\""),
                    });
                }
                (false, CrlUnavailable::Warn) => v.warnings.push(text),
                (false, CrlUnavailable::Allow) => {}
            }
        }
        Err(e) => {
            let status = match e {
                CvError::PathValidation(s) => s,
                _ => Pvs::EncodingError,
            };
            v.valid = false;
            v.problems
                .push(path_problem(status, cp, index, &cand.anchor));
            v.revocation.status = RevocationStatus::Unavailable;
        }
    }
    v.revocation.checks = checks;
    v
}

/// certval does not use delta CRLs (RFC 5280 5.2.4): a certificate its complete CRL shows as
/// good could be revoked since. Fail safe without implementing delta processing: a current
/// delta CRL of the certificate's issuer, whose signature verifies with the issuer's key and
/// that lists the certificate (other than as removeFromCRL), makes it revoked. Returns the
/// position of the first such certificate.
fn revoked_on_delta(
    pe: &PkiEnvironment,
    crls: &[Vec<u8>],
    certs: &[&PDVCertificate],
    anchor: &PDVCertificate,
    cps: &CertificationPathSettings,
) -> Option<usize> {
    use x509_cert::certificate::Raw;
    use x509_cert::crl::CertificateList;
    const DELTA_CRL_INDICATOR: der::asn1::ObjectIdentifier =
        der::asn1::ObjectIdentifier::new_unwrap("2.5.29.27");
    const CRL_REASON: der::asn1::ObjectIdentifier =
        der::asn1::ObjectIdentifier::new_unwrap("2.5.29.21");
    const REMOVE_FROM_CRL: &[u8] = &[0x0a, 0x01, 0x08];
    let toi = cps.get_time_of_interest().as_unix_secs();
    let deltas: Vec<(CertificateList<Raw>, &Vec<u8>)> = crls
        .iter()
        .filter_map(|der| CertificateList::<Raw>::from_der(der).ok().map(|c| (c, der)))
        .filter(|(c, _)| {
            c.tbs_cert_list
                .crl_extensions
                .as_ref()
                .is_some_and(|e| e.iter().any(|x| x.extn_id == DELTA_CRL_INDICATOR))
        })
        .collect();
    if deltas.is_empty() {
        return None;
    }
    for (pos, cert) in certs.iter().enumerate() {
        let issuer = if pos == 0 { anchor } else { certs[pos - 1] };
        let itbs = issuer.decoded().tbs_certificate();
        let tbs = cert.decoded().tbs_certificate();
        for (crl, der) in &deltas {
            let t = &crl.tbs_cert_list;
            let current = t.this_update.to_unix_duration().as_secs() <= toi
                && t.next_update
                    .is_some_and(|n| toi <= n.to_unix_duration().as_secs());
            if !current || !certval::compare_names(&t.issuer, tbs.issuer()) {
                continue;
            }
            let listed = t.revoked_certificates.iter().flatten().any(|rc| {
                rc.serial_number.as_bytes() == tbs.serial_number().as_bytes()
                    && !rc.crl_entry_extensions.iter().flatten().any(|e| {
                        e.extn_id == CRL_REASON && e.extn_value.as_bytes() == REMOVE_FROM_CRL
                    })
            });
            if !listed {
                continue;
            }
            let Ok(signed) = certval::DeferDecodeSigned::from_der(der) else {
                continue;
            };
            if pe
                .verify_signature_message(
                    pe,
                    &signed.tbs_field,
                    &signed.signature,
                    &signed.signature_algorithm,
                    itbs.subject_public_key_info(),
                )
                .is_ok()
            {
                return Some(pos);
            }
        }
    }
    None
}
