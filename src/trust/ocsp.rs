//! OCSP (RFC 6960) as a revocation source: asking the responder a certificate names in its
//! AIA about that one certificate, judging the answer, and keeping good and revoked answers
//! until their nextUpdate.
//!
//! The request and the response structures are certval's (`build_ocsp_request`,
//! `certval::ocsp`), and so is the decision that counts: `process_ocsp_response` checks the
//! signature with the issuer's key or a delegated responder certificate the issuer signed
//! with id-kp-OCSPSigning (RFC 6960 4.2.2.2), the CertID, critical extensions and the times;
//! `revocation.rs` hands an accepted answer to certval's path check as a stapled response.
//! What is written here: the exchange (POST, RFC 6960 A.1, through `http.rs`), the nonce
//! (certval checks none on a response handed to it), the cache, and the reason in words
//! when an answer cannot be used, which certval only logs.
//!
//! Owns: one question to one responder and what its answer says. Must not touch: HTTP itself
//! (`http.rs`), the order of sources and the outcome of the path (`revocation.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use certval::ocsp::{BasicOcspResponse, CertStatus, OcspResponse, OcspResponseStatus};
use certval::{
    CertificationPathResults, CertificationPathSettings, Error as CvError, PDVCertificate,
    PathValidationStatus as Pvs, PkiEnvironment,
};
use const_oid::db::rfc6960::ID_PKIX_OCSP_BASIC;
use der::{Decode, Encode};
use sha2::{Digest, Sha256};

use super::http::{self, FetchError};

/// Largest OCSP answer accepted (a response with a few responder certificates is a few KiB).
pub const MAX_OCSP_BYTES: u64 = 1 << 20;
/// Answers kept at most; the oldest nextUpdate goes first when full.
const MAX_ENTRIES: usize = 4096;
/// How far a responder's clock may run ahead of ours (certval allows the same for
/// producedAt and thisUpdate).
const CLOCK_SKEW: Duration = Duration::from_secs(certval::OCSP_TIME_SKEW_ALLOWANCE_SECS);

/// What an accepted answer says of the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcspStatus {
    Good,
    Revoked,
}

/// An answer that passed every check, as fetched.
#[derive(Debug)]
pub struct OcspAnswer {
    /// The whole OCSPResponse, for certval's path check.
    pub der: Vec<u8>,
    pub url: String,
    pub status: OcspStatus,
    pub revoked_at: Option<SystemTime>,
    pub this_update: SystemTime,
    pub next_update: SystemTime,
    pub produced_at: SystemTime,
}

impl OcspAnswer {
    /// Whether the answer speaks of `toi`: made by then (within the clock skew) and not past
    /// its nextUpdate, as certval reads it too.
    fn is_current(&self, toi: SystemTime) -> bool {
        self.this_update <= toi + CLOCK_SKEW
            && self.produced_at <= toi + CLOCK_SKEW
            && toi <= self.next_update
    }
}

/// The certificate asked about and its issuer (the preceding certificate of the path, or
/// the anchor).
pub struct Subject<'a> {
    pub cert: &'a PDVCertificate,
    pub issuer: &'a PDVCertificate,
}

impl Subject<'_> {
    /// What an answer is about, as its CertID says: the issuer's name and key, and the
    /// serial.
    fn key(&self) -> CacheKey {
        let issuer = self.issuer.decoded().tbs_certificate();
        let mut h = Sha256::new();
        for part in [
            issuer.subject().to_der().unwrap_or_default(),
            issuer
                .subject_public_key_info()
                .to_der()
                .unwrap_or_default(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        (
            h.finalize().into(),
            self.cert
                .decoded()
                .tbs_certificate()
                .serial_number()
                .as_bytes()
                .to_vec(),
        )
    }
}

type CacheKey = ([u8; 32], Vec<u8>);

/// Accepted answers by issuer key and serial, each until its nextUpdate.
#[derive(Default)]
pub struct OcspCache {
    answers: Mutex<HashMap<CacheKey, Arc<OcspAnswer>>>,
    fetches: AtomicU64,
}

impl std::fmt::Debug for OcspCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspCache")
            .field(
                "answers",
                &self.answers.lock().map(|m| m.len()).unwrap_or(0),
            )
            .finish()
    }
}

impl OcspCache {
    /// A current answer about `subject`, if one is kept.
    pub fn lookup(&self, subject: &Subject<'_>, now: SystemTime) -> Option<Arc<OcspAnswer>> {
        let map = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&subject.key())
            .filter(|a| a.is_current(now))
            .cloned()
    }

    /// Requests sent so far (for tests and `status`).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn store(&self, subject: &Subject<'_>, answer: Arc<OcspAnswer>, now: SystemTime) {
        let mut map = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, a| a.next_update >= now);
        if map.len() >= MAX_ENTRIES
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, a)| a.next_update)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(subject.key(), answer);
    }

    /// Asks the responder at `url` about `subject` and judges the answer; an accepted one is
    /// kept. `timeout` bounds the whole exchange.
    #[allow(clippy::too_many_arguments)]
    pub async fn ask(
        &self,
        url: &str,
        subject: &Subject<'_>,
        pe: &PkiEnvironment,
        cps: &CertificationPathSettings,
        nonce: bool,
        timeout: Option<Duration>,
        client: &http::Client,
        now: SystemTime,
    ) -> Result<Arc<OcspAnswer>, String> {
        if !matches!(http::url_scheme(url), Some("http" | "https")) {
            return Err(format!(
                "OCSP {url}: only http:// and https:// responders are supported"
            ));
        }
        let nonce = nonce.then(|| {
            let mut n = [0u8; 16];
            getrandom::fill(&mut n).ok().map(|()| n)
        });
        let nonce = match nonce {
            Some(None) => return Err("OCSP: the system has no random numbers for a nonce".into()),
            Some(Some(n)) => Some(n),
            None => None,
        };
        let request = certval::build_ocsp_request(
            subject.cert.decoded(),
            subject.issuer.decoded(),
            nonce.as_ref().map(|n| &n[..]),
        )
        .map_err(|e| format!("OCSP {url}: cannot build the request ({e:?})"))?;
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let body = client
            .post(
                url,
                "application/ocsp-request",
                "application/ocsp-response",
                request,
                timeout,
                MAX_OCSP_BYTES,
            )
            .await
            .map_err(|e| match e {
                FetchError::TooLarge(_) => {
                    format!("OCSP {url}: the answer is larger than {MAX_OCSP_BYTES} bytes")
                }
                e => format!("OCSP {e}"),
            })?;
        let answer = Arc::new(judge(
            &body,
            url,
            subject,
            pe,
            cps,
            nonce.as_ref().map(|n| &n[..]),
            now,
        )?);
        self.store(subject, answer.clone(), now);
        Ok(answer)
    }
}

/// Judges an OCSP answer about `subject`: its form, the nonce, which certificate it speaks
/// of, its times, then certval's signature and responder checks. The reason names the first
/// thing that is wrong.
pub fn judge(
    der: &[u8],
    url: &str,
    subject: &Subject<'_>,
    pe: &PkiEnvironment,
    cps: &CertificationPathSettings,
    sent_nonce: Option<&[u8]>,
    now: SystemTime,
) -> Result<OcspAnswer, String> {
    let fail = |what: &str| format!("OCSP {url}: {what}");
    let response =
        OcspResponse::from_der(der).map_err(|_| fail("the answer is not an OCSP response"))?;
    if response.response_status != OcspResponseStatus::Successful {
        let status = match response.response_status {
            OcspResponseStatus::MalformedRequest => "malformedRequest",
            OcspResponseStatus::InternalError => "internalError",
            OcspResponseStatus::TryLater => "tryLater",
            OcspResponseStatus::SigRequired => "sigRequired",
            OcspResponseStatus::Unauthorized => "unauthorized",
            OcspResponseStatus::Successful => "successful",
        };
        return Err(fail(&format!("the responder answered {status}")));
    }
    let bytes = response
        .response_bytes
        .as_ref()
        .filter(|b| b.response_type == ID_PKIX_OCSP_BASIC)
        .ok_or_else(|| fail("the answer is not a basic OCSP response"))?;
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(|_| fail("the basic OCSP response does not parse"))?;
    if let (Some(sent), Some(got)) = (sent_nonce, basic.nonce())
        && got.0.as_bytes() != sent
    {
        return Err(fail(
            "the answer echoes another nonce than the one sent (a replayed answer?)",
        ));
    }
    // OCSP speaks of the time it answers; a validation asked about an earlier time cannot
    // use it (certval refuses it too).
    let produced_at = basic.tbs_response_data.produced_at.0.to_system_time();
    if produced_at > now + CLOCK_SKEW {
        return Err(fail(&format!(
            "the answer was made at {}, after the time the validation asks about",
            crate::certs::rfc3339(produced_at)
        )));
    }
    let cert = subject.cert.decoded();
    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|r| {
            certval::cert_id_match(
                &r.cert_id,
                cert.tbs_certificate().serial_number(),
                subject.issuer.decoded(),
            )
        })
        .ok_or_else(|| fail("the answer speaks of another certificate"))?;
    let revoked_at = match &single.cert_status {
        CertStatus::Good(_) => None,
        CertStatus::Revoked(info) => Some(info.revocation_time.0.to_system_time()),
        CertStatus::Unknown(_) => {
            return Err(fail(
                "the responder does not know the certificate (unknown)",
            ));
        }
    };
    let this_update = single.this_update.0.to_system_time();
    if this_update > now + CLOCK_SKEW {
        return Err(fail(&format!(
            "the answer is not valid yet (thisUpdate {})",
            crate::certs::rfc3339(this_update)
        )));
    }
    let next_update = single
        .next_update
        .map(|t| t.0.to_system_time())
        .ok_or_else(|| fail("the answer has no nextUpdate, so its freshness cannot be judged"))?;
    if next_update < now {
        return Err(fail(&format!(
            "the answer is stale (its nextUpdate {} has passed)",
            crate::certs::rfc3339(next_update)
        )));
    }
    let mut scratch = CertificationPathResults::new();
    let status = match certval::process_ocsp_response(
        pe,
        cps,
        &mut scratch,
        der,
        subject.issuer.decoded(),
        0,
        url,
        subject.cert,
    ) {
        Ok(()) => OcspStatus::Good,
        Err(CvError::PathValidation(Pvs::CertificateRevoked)) => OcspStatus::Revoked,
        Err(CvError::PathValidation(Pvs::UnprocessedCriticalExtension)) => {
            return Err(fail(
                "the answer has a critical extension the agent does not know",
            ));
        }
        Err(_) => {
            return Err(fail(
                "the answer is not signed by the issuer or by a responder certificate the issuer gave id-kp-OCSPSigning",
            ));
        }
    };
    // certval and the checks above read the same fields; a disagreement is a bug, not an
    // answer.
    if (status == OcspStatus::Revoked) != revoked_at.is_some() {
        return Err(fail("the answer could not be read consistently"));
    }
    Ok(OcspAnswer {
        der: der.to_vec(),
        url: url.to_owned(),
        status,
        revoked_at,
        this_update,
        next_update,
        produced_at,
    })
}
