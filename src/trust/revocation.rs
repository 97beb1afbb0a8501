//! Revocation of a path that passed validation: each certificate's CRL, from the request, the
//! cache or its distribution point (within the connection and retrieval timeouts), handed to
//! certval's `check_revocation_local`; the delta-CRL check certval does not do; the outcome in
//! words, with `on_crl_unavailable` and `check_crl_on_send` applied.
//!
//! Written by hand, and why: certval's CRL retrieval needs its `remote`
//! feature (reqwest, a TLS stack, its own cache); the agent fetches CRLs itself (`crl.rs`) to
//! honour its timeouts, size bound and cache, and hands them to certval's
//! `check_revocation_local`, which verifies and applies them.
//!
//! Owns: which CRL stands for each certificate and what the outcome says. Must not touch:
//! fetching (http), caching (crl), building or choosing the path (`build.rs`, `path.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use certval::{
    CertificationPath, CertificationPathResults, CertificationPathSettings, Error as CvError,
    MemoryCrlSource, PDVCertificate, PathValidationStatus as Pvs, PkiEnvironment,
};
use der::Decode;
use spki::SubjectPublicKeyInfoOwned;

use super::Trust;
use super::build::Candidate;
use super::crl::{self, CachedCrl, CrlOrigin, IssuerKey};
use super::crl_status;
use super::dsa::DsaVerifier;
use super::ocsp;
use super::reasons::path_problem;
use super::settings::environment_with;
use super::strict;
use super::validation::{
    ChainLink, CrlCheck, Problem, ProblemCode, RevocationStatus, RevocationSummary, Validation,
    ValidationRequest, subject,
};
use crate::certs::rfc3339;
use crate::config::{CrlUnavailable, RevocationSource};

/// Checks revocation of a path that passed basic validation.
#[allow(clippy::too_many_arguments)]
pub(super) async fn revocation(
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
    // A CRL the strict rules refuse (no CRL number, a critical one) is not handed to certval.
    let refused: Vec<String> = req
        .crls
        .iter()
        .filter_map(|der| strict::crl_problem(der))
        .collect();
    let supplied: Vec<CachedCrl> = req
        .crls
        .iter()
        .filter(|der| strict::crl_problem(der).is_none())
        .filter(|der| source.add(der))
        .filter_map(|der| crl::parse("request", der.clone()).ok())
        .inspect(|c| until(c.next_update))
        .collect();

    let mut certs: Vec<&PDVCertificate> = cp.intermediates.iter().collect();
    certs.push(&cp.target);
    let mut path_certs = vec![cand.anchor.cert.decoded()];
    path_certs.extend(certs.iter().map(|c| c.decoded()));
    let dsa = DsaVerifier::for_path(&path_certs);
    // One environment for the OCSP checks during the loop and the path check after it.
    let mut pe = environment_with(dsa.clone());
    let mut stapled: Vec<Option<Arc<ocsp::OcspAnswer>>> = vec![None; certs.len()];
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
            method: None,
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
            dsa: &dsa,
        };
        let mut urls = vec![];
        certval::collect_crl_dp_uris(cert, &mut urls);
        let mut responders = vec![];
        certval::collect_ocsp_uris(cert, &mut responders);
        // A CRL that came with the message saves the fetch only when it is current and
        // signed by the issuer: otherwise a stale or forged one would stand in for the
        // real CRL, and with on_crl_unavailable = allow a revoked signer would pass.
        // Without a distribution point, the message's CRLs are all there is to judge.
        let named = |c: &CachedCrl| certval::compare_names(&c.issuer_name, issuer_name);
        if supplied.iter().any(|c| {
            named(c)
                && ((urls.is_empty() && responders.is_empty())
                    || (c.is_current(now) && crl::verify(c, &key).is_ok()))
        }) {
            check.origin = Some("request");
            check.method = Some("crl");
            check.crl_issuer = Some(issuer_name.to_string());
            checks.push(check);
            continue;
        }
        if urls.is_empty() && responders.is_empty() {
            let mut why = format!(
                "no CRL of its issuer came with the request and {} names neither an OCSP responder nor a CRL distribution point",
                check.subject
            );
            for r in &refused {
                why.push_str("; ");
                why.push_str(r);
            }
            check.reason = Some(why);
            checks.push(check);
            continue;
        }
        let subject = ocsp::Subject {
            cert,
            issuer: issuer_cert,
        };
        // A current answer of either kind that is at hand comes first; then the sources in
        // the configured order.
        if let Some(answer) = trust.ocsp.lookup(&subject, now) {
            staple(&mut stapled, &mut check, pos, &answer, "cache");
            until(Some(answer.next_update));
            checks.push(check);
            continue;
        }
        let crl_cached = urls
            .iter()
            .any(|u| trust.crls.lookup(u, &key, now).is_some());
        let mut order = trust.revocation.order.clone();
        if crl_cached {
            order.sort_by_key(|s| *s != RevocationSource::Crl);
        }
        let mut reasons = vec![];
        for asked in order {
            let settled = match asked {
                RevocationSource::Ocsp => {
                    let mut settled = false;
                    for url in &responders {
                        let budget = match Budget::left(trust, deadline, url) {
                            Ok(b) => b,
                            Err(r) => {
                                reasons.push(r);
                                continue;
                            }
                        };
                        let asked = trust.ocsp.ask(
                            url,
                            &subject,
                            &pe,
                            cps,
                            trust.revocation.ocsp_nonce,
                            budget.conn,
                            trust.crls.client(),
                            now,
                        );
                        match budget.bound(url, asked).await {
                            Ok(answer) => {
                                staple(&mut stapled, &mut check, pos, &answer, "fetched");
                                until(Some(answer.next_update));
                                settled = true;
                                break;
                            }
                            Err(r) => reasons.push(r),
                        }
                    }
                    settled
                }
                RevocationSource::Crl => {
                    let mut settled = false;
                    for url in &urls {
                        // A cached CRL is read even when the time for fetches is used up.
                        let budget = match Budget::left(trust, deadline, url) {
                            Ok(b) => b,
                            Err(_) if trust.crls.lookup(url, &key, now).is_some() => Budget {
                                conn: None,
                                left: None,
                            },
                            Err(r) => {
                                reasons.push(r);
                                continue;
                            }
                        };
                        let fetched = async {
                            trust
                                .crls
                                .get(url, &key, now, budget.conn)
                                .await
                                .map_err(|u| {
                                    // Not the issuer's signature: perhaps another signer the
                                    // path vouches for (crl_status.rs judges that).
                                    if let Some(der) = &u.unverified {
                                        at_hand.push(der.as_ref().clone());
                                    }
                                    u.reason
                                })
                        };
                        match budget.bound(url, fetched).await {
                            Ok((crl, origin)) => {
                                source.add(&crl.der);
                                at_hand.push(crl.der.clone());
                                until(crl.next_update);
                                check.method = Some("crl");
                                check.crl_issuer = Some(crl.issuer.clone());
                                check.this_update = Some(rfc3339(crl.this_update));
                                check.next_update = crl.next_update.map(rfc3339);
                                check.origin = Some(match origin {
                                    CrlOrigin::Cache => "cache",
                                    CrlOrigin::Fetched => "fetched",
                                });
                                check.url = Some(url.clone());
                                settled = true;
                                break;
                            }
                            Err(r) => reasons.push(r),
                        }
                    }
                    settled
                }
            };
            if settled {
                reasons.clear();
                break;
            }
        }
        if !reasons.is_empty() {
            check.url = urls.first().or(responders.first()).cloned();
            check.reason = Some(reasons.join("; "));
        }
        checks.push(check);
    }

    pe.add_crl_source(Box::new(source));
    let mut cpr = CertificationPathResults::new();
    let mut stapled_path;
    let cp = if stapled.iter().any(Option::is_some) {
        stapled_path = cp.clone();
        for (pos, answer) in stapled.iter().enumerate() {
            if let Some(a) = answer {
                stapled_path.ocsp_responses[pos] = Some(a.der.clone());
            }
        }
        &stapled_path
    } else {
        cp
    };
    let mut outcome = certval::check_revocation_local(&pe, cps, cp, &mut cpr);
    // Where certval's CRL model stops (another key or issuer signed the CRL, distribution
    // points, reasons, indirect and delta CRLs), RFC 5280 6.3 over the same CRLs settles
    // what it left open; the answers go back to certval as cached statuses.
    let mut second: Vec<Option<crl_status::Status>> = vec![None; certs.len()];
    let has_ocsp: Vec<bool> = stapled.iter().map(Option::is_some).collect();
    // The CRL processing ran out of signature checks: a signer it did not get to may be the
    // one that says "revoked", so the status is not left to on_crl_unavailable.
    let mut overworked = false;
    if let Some(open) = left_open(&outcome, &cpr, &has_ocsp) {
        let signers: Vec<PDVCertificate> = req
            .chain
            .iter()
            .chain(req.token_certs.iter())
            .filter_map(|d| PDVCertificate::try_from(d.as_slice()).ok())
            .collect();
        let crls: Vec<crl_status::Crl> = at_hand
            .iter()
            .filter(|d| strict::crl_problem(d).is_none())
            .filter_map(|d| crl_status::Crl::parse(d))
            .collect();
        let mut vouchers = vec![cand.anchor.cert.decoded()];
        vouchers.extend(cp.intermediates.iter().map(|c| c.decoded()));
        let others: Vec<_> = signers
            .iter()
            .map(|c| c.decoded())
            .chain(trust.store.intermediates.iter().map(|p| p.cert.decoded()))
            .collect();
        let verify = |tbs: &[u8],
                      sig: &der::asn1::BitString,
                      alg: &spki::AlgorithmIdentifierOwned,
                      key: &spki::SubjectPublicKeyInfoOwned| {
            pe.verify_signature_message(&pe, tbs, sig, alg, key).is_ok()
        };
        let ctx = crl_status::Context {
            crls: &crls,
            vouchers: &vouchers,
            others: &others,
            toi: cps.get_time_of_interest().as_unix_secs(),
            verify: &verify,
            work: Default::default(),
        };
        for pos in open {
            let issuer = if pos == 0 {
                cand.anchor.cert.decoded()
            } else {
                certs[pos - 1].decoded()
            };
            second[pos] = Some(crl_status::status(&ctx, pos, certs[pos].decoded(), issuer));
        }
        overworked = ctx.work.exhausted();
        let settled = Settled::of(&second, &certs, &cand.anchor.cert);
        if !settled.0.is_empty() {
            pe.add_revocation_cache(Box::new(settled));
            cpr = CertificationPathResults::new();
            outcome = certval::check_revocation_local(&pe, cps, cp, &mut cpr);
        }
    }
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
            let by_ocsp = stapled.get(pos).and_then(Option::as_ref);
            let by_second = match second.get(pos) {
                Some(Some(crl_status::Status::Revoked { at })) => Some(*at),
                _ => None,
            };
            let when = match by_ocsp {
                Some(a) => a.revoked_at,
                None => by_second.or(entry.map(|e| e.revocation_date.to_system_time())),
            }
            .map(|t| format!(" on {}", rfc3339(t)))
            .unwrap_or_default();
            let says = if by_ocsp.is_some() {
                "its issuer's OCSP responder says so"
            } else {
                "its issuer's CRL lists it"
            };
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
                format!("{who} was revoked{when} ({says}){delta_note}")
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
                        c.reason = Some(match second.get(i) {
                            Some(Some(crl_status::Status::Undetermined(why))) => {
                                format!("the CRLs at hand do not settle {}: {why}", c.subject)
                            }
                            _ => format!(
                                "the CRL at hand for {} could not be used (its signature, issuer, scope or validity does not fit)",
                                c.subject
                            ),
                        });
                    } else {
                        c.status = "good";
                    }
                } else if c.reason.is_none() {
                    c.status = "good";
                }
                if c.status == "unavailable"
                    && let (Some(r), Some(Some(crl_status::Status::Undetermined(why)))) =
                        (&c.reason, second.get(i))
                    && !r.contains(why.as_str())
                {
                    c.reason = Some(format!("{r}; the CRLs at hand do not settle it: {why}"));
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
    if overworked && v.revocation.status != RevocationStatus::Revoked {
        v.valid = false;
        v.revocation.status = RevocationStatus::Unavailable;
        v.problems.push(Problem {
            code: ProblemCode::CrlUnavailable,
            message: format!(
                "the CRLs and certificates at hand take more than {} signature checks to judge; the revocation status is not taken as merely unavailable",
                crl_status::MAX_CHECKS
            ),
        });
    }
    v.revocation.checks = checks;
    v
}

/// Records an accepted OCSP answer for position `pos`: it is stapled to the path for
/// certval's check, and the check says where it came from.
fn staple(
    stapled: &mut [Option<Arc<ocsp::OcspAnswer>>],
    check: &mut CrlCheck,
    pos: usize,
    answer: &Arc<ocsp::OcspAnswer>,
    origin: &'static str,
) {
    stapled[pos] = Some(answer.clone());
    check.method = Some("ocsp");
    check.origin = Some(origin);
    check.url = Some(answer.url.clone());
    check.this_update = Some(rfc3339(answer.this_update));
    check.next_update = Some(rfc3339(answer.next_update));
}

/// The time one fetch may take: the connection timeout, cut to what is left of the
/// validation's retrieval time.
struct Budget {
    conn: Option<Duration>,
    left: Option<Duration>,
}

impl Budget {
    /// The budget for a fetch from `url`, or why there is none left.
    fn left(trust: &Trust, deadline: Option<Instant>, url: &str) -> Result<Budget, String> {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            return Err(format!(
                "{url}: not fetched, crl_retrieval_timeout_ms ({} ms) is used up",
                trust.revocation.crl_retrieval_timeout_ms
            ));
        }
        let conn = match (trust.connection_timeout(), left) {
            (Some(c), Some(l)) => Some(c.min(l)),
            (c, l) => c.or(l),
        };
        Ok(Budget { conn, left })
    }

    /// Runs `fut`, giving up when the validation's retrieval time runs out.
    async fn bound<T>(
        &self,
        url: &str,
        fut: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        match self.left {
            Some(l) => tokio::time::timeout(l, fut).await.unwrap_or_else(|_| {
                Err(format!(
                    "{url}: no answer within crl_retrieval_timeout_ms ({} ms)",
                    l.as_millis()
                ))
            }),
            None => fut.await,
        }
    }
}

/// The positions certval left open: every unsettled one when it could not determine a
/// status; when it found a certificate on hold (certificateHold), that one (a delta CRL may
/// take it off hold, RFC 5280 5.3.1) and the unsettled ones after it, which it never reached.
/// A position with an accepted OCSP answer (`has_ocsp`) is certval's to judge from it: a
/// cached CRL status would come before the answer and could hide a revocation.
fn left_open(
    outcome: &Result<(), CvError>,
    cpr: &CertificationPathResults,
    has_ocsp: &[bool],
) -> Option<Vec<usize>> {
    let n = has_ocsp.len();
    let sources = cpr.get_revocation_source().unwrap_or_default();
    let unsettled = |i: &usize| {
        !has_ocsp[*i]
            && sources
                .get(*i)
                .is_none_or(|s| *s == certval::RevocationSource::None)
    };
    match outcome {
        Err(CvError::PathValidation(Pvs::RevocationStatusNotDetermined)) => {
            Some((0..n).filter(unsettled).collect())
        }
        Err(CvError::PathValidation(
            Pvs::CertificateRevokedEndEntity | Pvs::CertificateRevokedIntermediateCa,
        )) => {
            const CERTIFICATE_HOLD: &[u8] = &[0x0a, 0x01, 0x06];
            let pos = (cpr.get_failure_index()? as usize).checked_sub(1)?;
            let entry = cpr.get_crl_entry()?.get(pos)?.first().cloned()?;
            let entry =
                x509_cert::crl::RevokedCert::<x509_cert::certificate::Raw>::from_der(&entry)
                    .ok()?;
            let held = entry.crl_entry_extensions.iter().flatten().any(|e| {
                e.extn_id == const_oid::db::rfc5280::ID_CE_CRL_REASONS
                    && e.extn_value.as_bytes() == CERTIFICATE_HOLD
            });
            (held && !has_ocsp[pos]).then(|| {
                std::iter::once(pos)
                    .chain((pos + 1..n).filter(unsettled))
                    .collect()
            })
        }
        _ => None,
    }
}

/// The statuses `crl_status.rs` settled, as certval's revocation status cache: keyed by the
/// certificate and its issuer's key.
struct Settled(Vec<(Vec<u8>, SubjectPublicKeyInfoOwned, Pvs)>);

impl Settled {
    fn of(
        statuses: &[Option<crl_status::Status>],
        certs: &[&PDVCertificate],
        anchor: &PDVCertificate,
    ) -> Settled {
        let mut out = vec![];
        for (pos, s) in statuses.iter().enumerate() {
            let status = match s {
                Some(crl_status::Status::Good) => Pvs::Valid,
                Some(crl_status::Status::Revoked { .. }) => Pvs::CertificateRevoked,
                _ => continue,
            };
            let issuer = if pos == 0 { anchor } else { certs[pos - 1] };
            out.push((
                certs[pos].as_bytes().to_vec(),
                issuer
                    .decoded()
                    .tbs_certificate()
                    .subject_public_key_info()
                    .clone(),
                status,
            ));
        }
        Settled(out)
    }
}

impl certval::RevocationStatusCache for Settled {
    fn get_status(
        &self,
        cert: &PDVCertificate,
        issuer: &dyn certval::SubjectNameAndKey,
        _toi: certval::TimeOfInterest,
    ) -> Pvs {
        self.0
            .iter()
            .find(|(der, key, _)| der == cert.as_bytes() && key == issuer.spki())
            .map_or(Pvs::RevocationStatusNotDetermined, |(_, _, s)| *s)
    }

    fn add_status(
        &self,
        _cert: &PDVCertificate,
        _issuer: &dyn certval::SubjectNameAndKey,
        _next_update: u64,
        _status: Pvs,
    ) {
    }
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
