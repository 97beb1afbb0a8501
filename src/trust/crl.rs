//! CRLs: fetched from distribution points over HTTP, checked, cached in memory and on disk.
//!
//! Owns: the CRL cache (`$XDG_CACHE_HOME/smime-agent/crls`, or `[revocation] cache_dir`), which
//! is used until a CRL's nextUpdate, survives a restart, and is written atomically (a temporary
//! file renamed into place); one fetch per URL at a time (concurrent validations that need the
//! same CRL wait for the one fetch and share its outcome); the `max_crl_bytes` bound; and the
//! rule that a CRL is kept only when its signature verifies against the issuer and it is
//! current. Deciding whether a certificate is revoked is certval's job (`revocation.rs` hands it
//! the CRLs); this module only supplies believable ones.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use der::Decode;
use sha2::{Digest, Sha256};
use spki::SubjectPublicKeyInfoOwned;
use tracing::{debug, info, warn};
use x509_cert::certificate::Raw;
use x509_cert::crl::CertificateList;
use x509_cert::name::Name;

use super::dsa::DsaVerifier;
use super::http::{self, FetchError};

/// First line of a cache file; the URL follows on the second, then the DER.
const CACHE_MAGIC: &[u8] = b"smime-agent-crl 1\n";
/// Clock skew tolerated on a CRL's thisUpdate.
/// Room for the URL line of a cache file when its size is checked before reading.
const MAX_URL_LINE: u64 = 64 * 1024;

const SKEW: Duration = Duration::from_secs(300);

/// A CRL the agent holds, with the facts `status` shows.
/// How long a failed fetch is remembered before the distribution point is tried again.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct CachedCrl {
    pub url: String,
    pub der: Vec<u8>,
    /// RFC 4514 string of the CRL issuer.
    pub issuer: String,
    pub issuer_name: Name,
    pub this_update: SystemTime,
    pub next_update: Option<SystemTime>,
    pub entries: usize,
    /// SHA-256 of the issuer public key the signature was verified with; `None` for a CRL read
    /// back from disk and not yet checked against an issuer in this process.
    verified_by: Mutex<Option<[u8; 32]>>,
}

impl CachedCrl {
    /// Current at `now`: thisUpdate is not in the future and nextUpdate has not passed.
    pub fn is_current(&self, now: SystemTime) -> bool {
        self.this_update <= now + SKEW && self.next_update.is_some_and(|n| now < n)
    }
}

/// The key that must have signed a CRL: the certificate issuer's.
pub struct IssuerKey<'a> {
    pub name: &'a Name,
    pub spki: &'a SubjectPublicKeyInfoOwned,
    /// DSA verification with the path's inherited parameters (RFC 3279 2.3.2).
    pub dsa: &'a DsaVerifier,
}

/// Why no CRL could be had from a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlUnavailable {
    pub url: String,
    pub reason: String,
    /// LDAP or another scheme the agent does not fetch.
    pub unsupported: bool,
    /// A current CRL that was fetched but is not signed by the certificate issuer's key: not
    /// kept, but handed to RFC 5280 6.3 processing (`crl_status.rs`), which may find a
    /// CRL signer the path vouches for (another key of the CA, a separate CRL issuer).
    pub unverified: Option<Arc<Vec<u8>>>,
}

/// Where a CRL came from, for the `validate` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlOrigin {
    Cache,
    Fetched,
}

/// What became of the last fetch of one URL, for the requests that waited on it.
#[derive(Default)]
struct Slot {
    last_failure: Option<(Instant, CrlUnavailable)>,
}

/// The CRL cache.
pub struct CrlCache {
    dir: Option<PathBuf>,
    max_bytes: u64,
    /// What every fetch goes through (CRLs here, AIA in `aia.rs`, OCSP in `ocsp.rs`).
    client: http::Client,
    entries: RwLock<HashMap<String, Arc<CachedCrl>>>,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    /// Bumped whenever a CRL is added or dropped; the validation cache keys on it.
    generation: AtomicU64,
    /// HTTP fetches started (tests and `status` read it).
    fetches: AtomicU64,
}

impl std::fmt::Debug for CrlCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrlCache").field("dir", &self.dir).finish()
    }
}

/// The default cache directory: `$XDG_CACHE_HOME/smime-agent/crls`, else `~/.cache/...`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".cache"),
    };
    Some(base.join("smime-agent").join("crls"))
}

fn unix(t: &x509_cert::time::Time) -> SystemTime {
    t.to_system_time()
}

/// Parses a CRL and reads the facts the cache keeps.
pub(crate) fn parse(url: &str, der: Vec<u8>) -> Result<CachedCrl, String> {
    let crl = CertificateList::<Raw>::from_der(&der).map_err(|e| format!("not a DER CRL ({e})"))?;
    if let Some(why) = super::strict::crl_problem(&der) {
        return Err(why);
    }
    let tbs = &crl.tbs_cert_list;
    Ok(CachedCrl {
        url: url.to_owned(),
        issuer: tbs.issuer.to_string(),
        issuer_name: tbs.issuer.clone(),
        this_update: unix(&tbs.this_update),
        next_update: tbs.next_update.as_ref().map(unix),
        entries: tbs.revoked_certificates.as_ref().map_or(0, |r| r.len()),
        der,
        verified_by: Mutex::new(None),
    })
}

fn spki_hash(spki: &SubjectPublicKeyInfoOwned) -> [u8; 32] {
    let der = der::Encode::to_der(spki).unwrap_or_default();
    Sha256::digest(der).into()
}

/// Checks that `crl` was signed by `issuer` and names it as its issuer.
pub fn verify(crl: &CachedCrl, issuer: &IssuerKey<'_>) -> Result<(), String> {
    let key = spki_hash(issuer.spki);
    if let Ok(v) = crl.verified_by.lock()
        && *v == Some(key)
    {
        return Ok(());
    }
    if !certval::compare_names(&crl.issuer_name, issuer.name) {
        return Err(format!(
            "the CRL is issued by {}, not by the certificate's issuer {}",
            crl.issuer, issuer.name
        ));
    }
    let signed = certval::DeferDecodeSigned::from_der(&crl.der)
        .map_err(|e| format!("the CRL does not parse ({e})"))?;
    let mut pe = certval::PkiEnvironment::new();
    pe.populate_5280_pki_environment();
    pe.add_verify_signature_message_callback(issuer.dsa.clone());
    pe.verify_signature_message(
        &pe,
        &signed.tbs_field,
        &signed.signature,
        &signed.signature_algorithm,
        issuer.spki,
    )
    .map_err(|e| {
        format!(
            "its signature does not verify with the key of {} ({e}); the CRL is not believed",
            crl.issuer
        )
    })?;
    if let Ok(mut v) = crl.verified_by.lock() {
        *v = Some(key);
    }
    Ok(())
}

impl CrlCache {
    /// A cache in `dir` (created when missing), with what earlier runs left there.
    pub fn open(dir: Option<PathBuf>, max_bytes: u64, client: http::Client) -> CrlCache {
        let cache = CrlCache {
            dir,
            max_bytes,
            client,
            entries: RwLock::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
        };
        cache.load();
        cache
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    pub fn client(&self) -> &http::Client {
        &self.client
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Every CRL held, sorted by issuer then URL.
    pub fn list(&self) -> Vec<Arc<CachedCrl>> {
        let mut v: Vec<_> = match self.entries.read() {
            Ok(m) => m.values().cloned().collect(),
            Err(p) => p.into_inner().values().cloned().collect(),
        };
        v.sort_by(|a, b| a.issuer.cmp(&b.issuer).then(a.url.cmp(&b.url)));
        v
    }

    fn file_for(&self, url: &str) -> Option<PathBuf> {
        let name = crate::certs::hex(&Sha256::digest(url.as_bytes())[..16]);
        Some(self.dir.as_ref()?.join(format!("{name}.crl")))
    }

    /// Reads the cache directory; files that do not parse are ignored (and replaced when their
    /// URL is fetched again).
    fn load(&self) {
        let Some(dir) = &self.dir else { return };
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut loaded = 0;
        for e in rd.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("crl") {
                continue;
            }
            // A file larger than any CRL the cache would have written is not read.
            let limit = self.max_bytes + CACHE_MAGIC.len() as u64 + MAX_URL_LINE;
            if e.metadata().map_or(true, |m| m.len() > limit) {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let Some(rest) = bytes.strip_prefix(CACHE_MAGIC) else {
                continue;
            };
            let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
                continue;
            };
            let Ok(url) = std::str::from_utf8(&rest[..nl]) else {
                continue;
            };
            match parse(url, rest[nl + 1..].to_vec()) {
                Ok(c) => {
                    loaded += 1;
                    self.insert_mem(Arc::new(c));
                }
                Err(err) => debug!(file = %path.display(), %err, "ignoring a cache file"),
            }
        }
        if loaded > 0 {
            info!(dir = %dir.display(), crls = loaded, "CRL cache loaded");
        }
    }

    fn insert_mem(&self, c: Arc<CachedCrl>) {
        let mut m = match self.entries.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.insert(c.url.clone(), c);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    fn remove(&self, url: &str) {
        let mut m = match self.entries.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if m.remove(url).is_some() {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn cached(&self, url: &str) -> Option<Arc<CachedCrl>> {
        match self.entries.read() {
            Ok(m) => m.get(url).cloned(),
            Err(p) => p.into_inner().get(url).cloned(),
        }
    }

    /// A cached CRL for `url` that is current at `now` and verifies against `issuer`.
    /// One that fails the check is dropped from the cache.
    pub fn lookup(
        &self,
        url: &str,
        issuer: &IssuerKey<'_>,
        now: SystemTime,
    ) -> Option<Arc<CachedCrl>> {
        let c = self.cached(url)?;
        if !c.is_current(now) {
            return None;
        }
        match verify(&c, issuer) {
            Ok(()) => Some(c),
            Err(err) => {
                warn!(%url, %err, "dropping a cached CRL");
                self.remove(url);
                None
            }
        }
    }

    /// The CRL at `url`: from the cache when current, else fetched (once, however many
    /// validations ask at the same time) within `conn_timeout`. A fetched CRL is kept only
    /// when it verifies against `issuer` and is current at `now`.
    pub async fn get(
        &self,
        url: &str,
        issuer: &IssuerKey<'_>,
        now: SystemTime,
        conn_timeout: Option<Duration>,
    ) -> Result<(Arc<CachedCrl>, CrlOrigin), CrlUnavailable> {
        if let Some(c) = self.lookup(url, issuer, now) {
            return Ok((c, CrlOrigin::Cache));
        }
        let unavailable = |reason: String, unsupported: bool| CrlUnavailable {
            url: url.to_owned(),
            reason,
            unsupported,
            unverified: None,
        };
        match http::url_scheme(url) {
            Some("http" | "https" | "ldap" | "ldaps") => {}
            _ => {
                return Err(unavailable(
                    format!(
                        "{url}: unsupported: only http://, https:// and ldap:// distribution points are fetched"
                    ),
                    true,
                ));
            }
        }
        let slot = {
            let mut slots = match self.slots.lock() {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
            slots.entry(url.to_owned()).or_default().clone()
        };
        let asked = Instant::now();
        let mut slot = slot.lock().await;
        // Someone else fetched while this request waited: share their outcome.
        if let Some(c) = self.lookup(url, issuer, now) {
            return Ok((c, CrlOrigin::Cache));
        }
        // A failure is remembered briefly: an unreachable distribution point must not cost
        // every validation a connection attempt (or a timeout) of its own.
        if let Some((at, failure)) = &slot.last_failure
            && (*at >= asked || at.elapsed() < FAILURE_MEMORY)
        {
            return Err(failure.clone());
        }
        let outcome = self.fetch(url, issuer, now, conn_timeout).await;
        match outcome {
            Ok(c) => {
                slot.last_failure = None;
                Ok((c, CrlOrigin::Fetched))
            }
            Err((reason, unverified)) => {
                let failure = CrlUnavailable {
                    unverified,
                    ..unavailable(reason, false)
                };
                slot.last_failure = Some((Instant::now(), failure.clone()));
                Err(failure)
            }
        }
    }

    async fn fetch(
        &self,
        url: &str,
        issuer: &IssuerKey<'_>,
        now: SystemTime,
        conn_timeout: Option<Duration>,
    ) -> Result<Arc<CachedCrl>, (String, Option<Arc<Vec<u8>>>)> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        debug!(%url, "fetching a CRL");
        let body = match http::url_scheme(url) {
            Some("ldap" | "ldaps") => {
                super::ldap::get_crl(
                    url,
                    conn_timeout,
                    self.max_bytes,
                    self.client.proxy(),
                    || self.client.tls(),
                )
                .await
            }
            _ => self.client.get(url, conn_timeout, self.max_bytes).await,
        }
        .map_err(|e| match e {
            FetchError::TimedOut(s) | FetchError::Failed(s) | FetchError::TooLarge(s) => s,
            FetchError::Unsupported(s) => s,
        })
        .map_err(|s| (s, None))?;
        // A distribution point may serve PEM.
        let der = if body.starts_with(b"-----BEGIN") {
            pem_to_der(&body)
                .ok_or_else(|| (format!("{url}: the PEM answer holds no CRL"), None))?
        } else {
            body
        };
        let crl = parse(url, der).map_err(|e| (format!("{url}: {e}"), None))?;
        if !crl.is_current(now) {
            let when = crl
                .next_update
                .map(crate::certs::rfc3339)
                .unwrap_or_else(|| "(no nextUpdate)".into());
            return Err((
                format!(
                    "{url}: the CRL is not current (thisUpdate {}, nextUpdate {when})",
                    crate::certs::rfc3339(crl.this_update)
                ),
                None,
            ));
        }
        if let Err(e) = verify(&crl, issuer) {
            return Err((format!("{url}: {e}"), Some(Arc::new(crl.der.clone()))));
        }
        let crl = Arc::new(crl);
        if let Some(path) = self.file_for(url) {
            // On the blocking pool: up to max_crl_bytes written and fsynced.
            let c = crl.clone();
            let written = tokio::task::spawn_blocking(move || write_file(&path, &c)).await;
            if let Err(e) = written
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r)
            {
                warn!(%url, error = %e, "cannot write the CRL cache; the CRL is kept in memory only");
            }
        }
        info!(%url, issuer = %crl.issuer, entries = crl.entries, "CRL fetched");
        self.insert_mem(crl.clone());
        Ok(crl)
    }
}

/// Writes `crl` to `path` through a temporary file beside it, renamed into place, so a
/// reader (or a restart) sees the old file or the new one, never half of one.
fn write_file(path: &Path, crl: &CachedCrl) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!(
        "tmp.{}.{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(CACHE_MAGIC)?;
        f.write_all(crl.url.as_bytes())?;
        f.write_all(b"\n")?;
        f.write_all(&crl.der)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The first PEM block's contents, decoded (text around it is ignored, as CRL servers and
/// files have it; `der::pem` takes only a bare PEM document).
pub fn pem_to_der(pem: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let text = std::str::from_utf8(pem).ok()?;
    let b64: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_in_the_cache_dir_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.crl"), b"not a crl").unwrap();
        let mut bad = CACHE_MAGIC.to_vec();
        bad.extend_from_slice(b"http://x/\n\x30\x03\x02\x01");
        std::fs::write(dir.path().join("b.crl"), bad).unwrap();
        let c = CrlCache::open(
            Some(dir.path().to_owned()),
            1 << 20,
            http::Client::new(super::super::proxy::Proxy::default(), vec![]),
        );
        assert!(c.list().is_empty());
    }

    #[test]
    fn pem_is_decoded() {
        let pem = b"-----BEGIN X509 CRL-----\nAAEC\n-----END X509 CRL-----\n";
        assert_eq!(pem_to_der(pem), Some(vec![0, 1, 2]));
    }
}
