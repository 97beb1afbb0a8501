//! Trust: whether a certificate is valid (chain, time, revocation), and the stores behind it.
//!
//! Owns: the trust anchors (`[trust] roots`, files and directories; the system bundle with
//! `use_system_roots`; the agent's own roots directory when `roots` is empty), the distrusted
//! certificates (`untrusted`: never valid, whatever their chain), the explicitly trusted
//! (cross-certified) certificates (`trusted_certs`: accepted as anchors), the local store of
//! intermediate certificates (`intermediates`), the CRL cache (`crl.rs`), path building and
//! validation (`path.rs`, and the files it names: `build.rs`, `revocation.rs`, ...), and a
//! validation cache keyed by certificate and time bucket that is dropped when CRLs change.
//! Knows nothing of tokens or sockets: callers hand in the certificates of the tokens as
//! candidate intermediates.

mod aia;
mod build;
pub mod crl;
mod crl_status;
mod dsa;
pub mod http;
mod ldap;
pub mod ocsp;
pub mod path;
pub mod proxy;
mod reasons;
mod revocation;
mod settings;
mod strict;
mod tls;
mod validation;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use certval::{PDVCertificate, PDVTrustAnchorChoice};
use sha2::{Digest, Sha256};
use tracing::{info, warn};
use x509_cert::name::Name;

use crate::config::{CrlUnavailable, RevocationConfig, TrustConfig};

pub use path::{
    ChainLink, CrlCheck, PolicyInputs, Problem, ProblemCode, RevocationStatus, Validation,
    ValidationRequest,
};

/// Where the system's CA bundle is, by distribution; the first that exists is used.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Seconds per time bucket of the validation cache.
const BUCKET_SECS: u64 = 60;
/// Entries the validation cache holds before it starts over.
const CACHE_MAX: usize = 4096;

/// The agent's own roots directory: `$XDG_CONFIG_HOME/smime-agent/roots`.
pub fn own_roots_dir() -> Option<PathBuf> {
    crate::config::default_config_path()?
        .parent()
        .map(|d| d.join("roots"))
}

/// A trust anchor.
pub struct Anchor {
    pub cert: PDVCertificate,
    pub ta: PDVTrustAnchorChoice,
    pub sha256: [u8; 32],
    /// The file it came from, or `system bundle`.
    pub origin: String,
    /// From `trusted_certs` (explicitly trusted, cross-certified) rather than a root store.
    pub explicit: bool,
}

impl std::fmt::Debug for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Anchor({}, {})",
            self.cert.decoded().tbs_certificate().subject(),
            self.origin
        )
    }
}

impl std::fmt::Debug for PoolCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PoolCert({})",
            self.cert.decoded().tbs_certificate().subject()
        )
    }
}

/// Where an intermediate certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertOrigin {
    /// The message or the request.
    Request,
    /// A token in the session store.
    Token,
    /// The local intermediate store (`[trust] intermediates`).
    Local,
    /// Fetched from an Authority Information Access URL.
    Aia,
    /// A trust anchor.
    Anchor,
}

impl CertOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            CertOrigin::Request => "request",
            CertOrigin::Token => "token",
            CertOrigin::Local => "local",
            CertOrigin::Aia => "aia",
            CertOrigin::Anchor => "anchor",
        }
    }
}

/// A certificate that may serve as an intermediate.
pub struct PoolCert {
    pub cert: PDVCertificate,
    pub sha256: [u8; 32],
    pub origin: CertOrigin,
}

/// A distrusted certificate: never valid, and nothing chains through it.
#[derive(Debug)]
struct Distrusted {
    sha256: [u8; 32],
    subject: Name,
    spki: Vec<u8>,
    label: String,
}

/// The anchors, distrusted certificates and local intermediates, read at start.
#[derive(Debug, Default)]
pub struct TrustStore {
    pub anchors: Vec<Arc<Anchor>>,
    distrusted: Vec<Distrusted>,
    pub intermediates: Vec<Arc<PoolCert>>,
    /// Files that could not be read, for `status` and the log.
    pub problems: Vec<String>,
}

fn sha256(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

fn spki_der(cert: &PDVCertificate) -> Vec<u8> {
    der::Encode::to_der(cert.decoded().tbs_certificate().subject_public_key_info())
        .unwrap_or_default()
}

/// Splits PEM text into the DER of its CERTIFICATE blocks, skipping blocks that do not
/// decode (one bad certificate in a bundle must not hide the others).
fn pem_certs(text: &str) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let mut out = vec![];
    let mut b64: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line == "-----BEGIN CERTIFICATE-----" || line == "-----BEGIN X509 CERTIFICATE-----" {
            b64 = Some(String::new());
        } else if line.starts_with("-----END") {
            if let Some(s) = b64.take()
                && let Ok(der) = base64::engine::general_purpose::STANDARD.decode(s)
            {
                out.push(der);
            }
        } else if let Some(s) = b64.as_mut() {
            s.push_str(line);
        }
    }
    out
}

/// The certificates in a PEM or DER file.
pub fn read_cert_file(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(certs_from_bytes(&bytes))
}

/// The certificates in PEM (any number) or DER (one) bytes.
pub fn certs_from_bytes(bytes: &[u8]) -> Vec<Vec<u8>> {
    match std::str::from_utf8(bytes) {
        Ok(text) if text.contains("-----BEGIN") => pem_certs(text),
        _ => vec![bytes.to_vec()],
    }
}

/// The files named: a file is itself, a directory its regular files (not recursive).
fn expand(paths: &[PathBuf], problems: &mut Vec<String>) -> Vec<PathBuf> {
    let mut files = vec![];
    for p in paths {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => match std::fs::read_dir(p) {
                Ok(rd) => {
                    let mut v: Vec<PathBuf> = rd
                        .flatten()
                        .map(|e| e.path())
                        .filter(|f| f.is_file())
                        .collect();
                    v.sort();
                    files.extend(v);
                }
                Err(e) => problems.push(format!("{}: {e}", p.display())),
            },
            Ok(_) => files.push(p.clone()),
            Err(e) => problems.push(format!("{}: {e}", p.display())),
        }
    }
    files
}

impl TrustStore {
    /// Reads the stores the configuration names. Unreadable files are reported, not fatal:
    /// a missing anchor makes chains fail with a clear reason instead.
    pub fn load(cfg: &TrustConfig) -> TrustStore {
        let mut store = TrustStore::default();
        let mut problems = vec![];

        let mut root_paths = cfg.roots.clone();
        if root_paths.is_empty()
            && let Some(d) = own_roots_dir()
            && d.is_dir()
        {
            root_paths.push(d);
        }
        for f in expand(&root_paths, &mut problems) {
            store.add_anchors(&f, &f.display().to_string(), false, &mut problems);
        }
        if cfg.use_system_roots
            && let Some(bundle) = SYSTEM_BUNDLES.iter().map(Path::new).find(|p| p.exists())
        {
            store.add_anchors(bundle, "system bundle", false, &mut problems);
        }
        for f in expand(&cfg.trusted_certs, &mut problems) {
            store.add_anchors(&f, &f.display().to_string(), true, &mut problems);
        }
        for f in expand(&cfg.untrusted, &mut problems) {
            match read_cert_file(&f) {
                Ok(ders) => {
                    for der in ders {
                        match PDVCertificate::try_from(der.as_slice()) {
                            Ok(c) => store.distrusted.push(Distrusted {
                                sha256: sha256(&der),
                                subject: c.decoded().tbs_certificate().subject().clone(),
                                spki: spki_der(&c),
                                label: f.display().to_string(),
                            }),
                            Err(e) => problems.push(format!("{}: {e}", f.display())),
                        }
                    }
                }
                Err(e) => problems.push(e),
            }
        }
        for f in expand(&cfg.intermediates, &mut problems) {
            match read_cert_file(&f) {
                Ok(ders) => {
                    for der in ders {
                        match PDVCertificate::try_from(der.as_slice()) {
                            Ok(c) => store.intermediates.push(Arc::new(PoolCert {
                                sha256: sha256(&der),
                                cert: c,
                                origin: CertOrigin::Local,
                            })),
                            Err(e) => problems.push(format!("{}: {e}", f.display())),
                        }
                    }
                }
                Err(e) => problems.push(e),
            }
        }
        // An anchor that is also distrusted is no anchor.
        let distrusted: Vec<Arc<Anchor>> = store
            .anchors
            .iter()
            .filter(|a| store.distrust_label(&a.cert, &a.sha256).is_some())
            .cloned()
            .collect();
        store
            .anchors
            .retain(|a| !distrusted.iter().any(|d| Arc::ptr_eq(a, d)));
        for p in &problems {
            warn!(problem = %p, "trust store");
        }
        store.problems = problems;
        info!(
            anchors = store.anchors.len(),
            distrusted = store.distrusted.len(),
            intermediates = store.intermediates.len(),
            "trust store loaded"
        );
        store
    }

    fn add_anchors(
        &mut self,
        file: &Path,
        origin: &str,
        explicit: bool,
        problems: &mut Vec<String>,
    ) {
        let ders = match read_cert_file(file) {
            Ok(d) => d,
            Err(e) => {
                problems.push(e);
                return;
            }
        };
        for der in ders {
            let parsed = PDVCertificate::try_from(der.as_slice())
                .and_then(|c| PDVTrustAnchorChoice::try_from(der.as_slice()).map(|ta| (c, ta)));
            match parsed {
                Ok((cert, ta)) => {
                    let h = sha256(&der);
                    if self.anchors.iter().any(|a| a.sha256 == h) {
                        continue;
                    }
                    self.anchors.push(Arc::new(Anchor {
                        cert,
                        ta,
                        sha256: h,
                        origin: origin.to_owned(),
                        explicit,
                    }));
                }
                // The system bundle holds certificates that may not parse here; they cannot
                // be anchors, and saying so once is enough.
                Err(e) if origin == "system bundle" => {
                    tracing::debug!(error = %e, "skipping a system root that does not parse")
                }
                Err(e) => problems.push(format!("{}: not a certificate ({e})", file.display())),
            }
        }
    }

    /// Why `cert` is distrusted (the file that distrusts it), when it is: the same certificate,
    /// or the same subject and key (a re-issue or cross-certificate of a distrusted CA).
    pub fn distrust_label(&self, cert: &PDVCertificate, sha: &[u8; 32]) -> Option<&str> {
        let subject = cert.decoded().tbs_certificate().subject();
        let mut spki: Option<Vec<u8>> = None;
        self.distrusted
            .iter()
            .find(|d| {
                d.sha256 == *sha
                    || (certval::compare_names(&d.subject, subject)
                        && *spki.get_or_insert_with(|| spki_der(cert)) == d.spki)
            })
            .map(|d| d.label.as_str())
    }

    pub fn distrusted_count(&self) -> usize {
        self.distrusted.len()
    }
}

/// A cached validation outcome, tied to the CRL cache generation it was computed under.
struct CacheEntry {
    crl_generation: u64,
    /// The time bucket of the validation (part of the key): entries of past buckets are
    /// never asked for again.
    bucket: u64,
    validation: Validation,
}

/// The trust layer as the agent holds it.
pub struct Trust {
    pub store: TrustStore,
    pub crls: crl::CrlCache,
    pub ocsp: ocsp::OcspCache,
    pub revocation: RevocationConfig,
    aia: Mutex<HashMap<String, Vec<Vec<u8>>>>,
    cache: Mutex<HashMap<[u8; 32], CacheEntry>>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("anchors", &self.store.anchors.len())
            .finish()
    }
}

impl Trust {
    /// Reads the stores and opens the CRL cache.
    pub fn new(trust: &TrustConfig, revocation: &RevocationConfig) -> Trust {
        let dir = revocation.cache_dir.clone().or_else(crl::default_cache_dir);
        let store = TrustStore::load(trust);
        let client = http::Client::new(
            proxy::Proxy::resolve(
                revocation.http_proxy.as_deref(),
                revocation.no_proxy.as_deref(),
                |k| std::env::var(k).ok(),
            ),
            store
                .anchors
                .iter()
                .map(|a| a.cert.as_bytes().to_vec())
                .collect(),
        );
        Trust {
            store,
            crls: crl::CrlCache::open(dir, revocation.max_crl_bytes, client),
            ocsp: ocsp::OcspCache::default(),
            revocation: revocation.clone(),
            aia: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Per-connection timeout for one CRL or AIA fetch; `None` when unlimited (the seed's
    /// maximum value).
    pub fn connection_timeout(&self) -> Option<Duration> {
        let ms = self.revocation.effective_connection_timeout_ms();
        (ms < 2_147_483_647).then(|| Duration::from_millis(ms))
    }

    /// Time for all CRL (and AIA) retrievals of one validation; `None` when unlimited.
    pub fn retrieval_timeout(&self) -> Option<Duration> {
        let ms = self.revocation.crl_retrieval_timeout_ms;
        (ms < 2_147_483_647).then(|| Duration::from_millis(ms))
    }

    pub fn on_crl_unavailable(&self) -> CrlUnavailable {
        self.revocation.on_crl_unavailable
    }

    /// Validates a certificate (behaviour.md section 3). Answers from the validation cache
    /// when the same question was answered in the same time bucket and no CRL changed since.
    pub async fn validate(&self, req: &ValidationRequest) -> Validation {
        let time = req.time.unwrap_or_else(SystemTime::now);
        let key = cache_key(req, time);
        let generation = self.crls.generation();
        if let Ok(c) = self.cache.lock()
            && let Some(e) = c.get(&key)
            && e.crl_generation == generation
            && e.validation
                .valid_until
                .is_none_or(|u| SystemTime::now() < u)
        {
            let mut v = e.validation.clone();
            v.from_cache = true;
            return v;
        }
        let v = path::validate(self, req, time).await;
        let mut kept = v.clone();
        // An outcome that could change on the next try (a CRL that could not be had) is kept
        // only as long as the CRL cache would not try that download again anyway: the
        // validation is the same until then, and an offline agent would otherwise build
        // and check the path again for every signature.
        if v.revocation.status == RevocationStatus::Unavailable {
            let retry = SystemTime::now() + crl::FAILURE_MEMORY;
            kept.valid_until = Some(kept.valid_until.map_or(retry, |u| u.min(retry)));
        }
        if let Ok(mut c) = self.cache.lock() {
            let (bucket, generation) = (bucket_of(time), self.crls.generation());
            if c.len() >= CACHE_MAX {
                // First what can no longer be asked for; all of it only if that is not enough.
                c.retain(|_, e| e.bucket == bucket && e.crl_generation == generation);
                if c.len() >= CACHE_MAX {
                    c.clear();
                }
            }
            c.insert(
                key,
                CacheEntry {
                    crl_generation: generation,
                    bucket,
                    validation: kept,
                },
            );
        }
        v
    }

    /// Certificates fetched from an AIA URL before (this process).
    fn aia_cached(&self, url: &str) -> Option<Vec<Vec<u8>>> {
        self.aia.lock().ok()?.get(url).cloned()
    }

    /// AIA URLs come from certificates anyone can put in a message: the cache is bounded
    /// by its bytes (8 MiB), not only by its number of URLs.
    fn aia_store(&self, url: &str, certs: Vec<Vec<u8>>) {
        const MAX_URLS: usize = 256;
        const MAX_BYTES: usize = 8 << 20;
        if let Ok(mut m) = self.aia.lock() {
            let size = |c: &Vec<Vec<u8>>| c.iter().map(Vec::len).sum::<usize>();
            let held: usize = m.values().map(size).sum();
            if m.len() >= MAX_URLS || held + size(&certs) > MAX_BYTES {
                m.clear();
            }
            m.insert(url.to_owned(), certs);
        }
    }
}

fn bucket_of(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / BUCKET_SECS)
        .unwrap_or(0)
}

/// The validation cache key: the certificate, everything else the request brings, the
/// options, and the time bucket.
fn cache_key(req: &ValidationRequest, time: SystemTime) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(bucket_of(time).to_be_bytes());
    h.update([req.for_send as u8, req.path_only as u8]);
    h.update([req.profile.fitness as u8]);
    if let Some(a) = &req.profile.address {
        h.update(a.to_ascii_lowercase().as_bytes());
    }
    h.update([0]);
    h.update(sha256(&req.cert));
    for list in [&req.chain, &req.crls, &req.token_certs] {
        h.update((list.len() as u64).to_be_bytes());
        for item in list {
            h.update(sha256(item));
        }
    }
    let p = &req.policy;
    for oid in &p.initial_policy_set {
        h.update(oid.as_bytes());
        h.update([0]);
    }
    h.update([
        p.initial_explicit_policy as u8,
        p.initial_policy_mapping_inhibit as u8,
        p.initial_inhibit_any_policy as u8,
    ]);
    h.finalize().into()
}

/// Fuzzing entry points for revocation (`cargo fuzz`, `--cfg fuzzing`): hostile OCSP answers
/// and CRLs judged about a fixed certificate (tests/data/signing/rsa.pem, self-signed, so
/// it is its own issuer and the CRL signer the path vouches for).
#[cfg(fuzzing)]
pub mod fuzzing {
    use std::sync::OnceLock;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use certval::PDVCertificate;

    use super::dsa::DsaVerifier;
    use super::settings::{environment_with, settings};
    use super::validation::PolicyInputs;

    fn cert() -> &'static PDVCertificate {
        static CERT: OnceLock<PDVCertificate> = OnceLock::new();
        CERT.get_or_init(|| {
            let pem = include_bytes!("../../tests/data/signing/rsa.pem");
            let der = super::certs_from_bytes(pem)
                .into_iter()
                .next()
                .expect("the fuzz certificate");
            PDVCertificate::try_from(der.as_slice()).expect("the fuzz certificate parses")
        })
    }

    /// A time inside the certificate's validity (2027).
    fn time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    /// Any bytes as an OCSP answer about the fixed certificate, with a nonce sent.
    pub fn ocsp(der: &[u8]) {
        let cert = cert();
        let subject = super::ocsp::Subject { cert, issuer: cert };
        let pe = environment_with(DsaVerifier::default());
        let cps = settings(time(), &PolicyInputs::default(), true);
        let _ = super::ocsp::judge(der, "fuzz:", &subject, &pe, &cps, Some(&[7u8; 16]), time());
    }

    /// Any bytes as a CRL at hand for the fixed certificate, judged by RFC 5280 6.3.
    pub fn crl_status(der: &[u8]) {
        let Some(crl) = super::crl_status::Crl::parse(der) else {
            return;
        };
        let cert = cert().decoded();
        // Every signature "verifies": a mutated CRL still reaches the scope, entry, delta
        // and certificate-issuer code, which the real check would stop at.
        let verify = |_: &[u8],
                      _: &der::asn1::BitString,
                      _: &spki::AlgorithmIdentifierOwned,
                      _: &spki::SubjectPublicKeyInfoOwned| true;
        let crls = [crl];
        let vouchers = [cert];
        let ctx = super::crl_status::Context {
            crls: &crls,
            vouchers: &vouchers,
            others: &[],
            toi: 1_800_000_000,
            verify: &verify,
            work: Default::default(),
        };
        let _ = super::crl_status::status(&ctx, 0, cert, cert);
    }
}
