//! The contacts store: certificates of correspondents, for encrypting to them.
//!
//! Owns: the `[contacts] dir` (default `$XDG_DATA_HOME/smime-agent/contacts`) with one
//! PEM or DER certificate per file, looking certificates up by address, and adding the
//! certificates of valid signers of verified mail (written atomically, one file per
//! certificate, named by its SHA-256), and what the signers said they can decrypt
//! (SMIMECapabilities, RFC 8551 section 2.7.1: the most recently signed list wins). The
//! capabilities belong to the correspondent's address, not to one certificate: people
//! sign with one certificate and are encrypted to with another. They are kept as
//! `<sha256 of the lower-case address>.caps`. Does not judge certificates: whoever uses
//! one validates it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::alg::ContentAlgorithm;
use crate::certs::address::same_address;
use crate::certs::{CertFacts, hex};

/// Largest certificate file read.
const MAX_FILE: u64 = 256 * 1024;
/// Most files read from the directory.
const MAX_FILES: usize = 20_000;

#[derive(Debug, Default)]
struct Loaded {
    certs: Vec<Arc<CertFacts>>,
    /// The directory's modification time when it was read.
    stamp: Option<SystemTime>,
}

/// The contacts store.
#[derive(Debug)]
pub struct Contacts {
    dir: Option<PathBuf>,
    loaded: RwLock<Loaded>,
}

/// Where contacts live when the config does not say.
pub fn default_dir() -> Option<PathBuf> {
    Some(smime_agent_proto::paths::data_dir()?.join("contacts"))
}

impl Contacts {
    pub fn new(dir: Option<PathBuf>) -> Contacts {
        Contacts {
            dir: dir.or_else(default_dir),
            loaded: RwLock::new(Loaded::default()),
        }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Re-reads the directory if it changed since the last read.
    fn refresh(&self) {
        let Some(dir) = &self.dir else { return };
        let stamp = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
        if self
            .loaded
            .read()
            .map(|l| l.stamp == stamp && stamp.is_some())
            .unwrap_or(false)
        {
            return;
        }
        let certs = read_dir(dir);
        if let Ok(mut l) = self.loaded.write() {
            *l = Loaded { certs, stamp };
        }
    }

    /// Certificates whose subject or subjectAltName carries `address`.
    pub fn find(&self, address: &str) -> Vec<Arc<CertFacts>> {
        self.refresh();
        match self.loaded.read() {
            Ok(l) => l
                .certs
                .iter()
                .filter(|c| c.all_emails().any(|e| same_address(e, address)))
                .cloned()
                .collect(),
            Err(_) => vec![],
        }
    }

    /// Every address the stored certificates carry, lower-case, sorted, once each (for a
    /// mail client's key index).
    pub fn addresses(&self) -> Vec<String> {
        self.refresh();
        let mut all: Vec<String> = match self.loaded.read() {
            Ok(l) => l
                .certs
                .iter()
                .flat_map(|c| c.all_emails().map(str::to_lowercase).collect::<Vec<_>>())
                .collect(),
            Err(_) => vec![],
        };
        all.sort();
        all.dedup();
        all
    }

    /// Keeps a certificate (DER). Returns false when it was there already.
    pub fn add(&self, cert: &CertFacts) -> std::io::Result<bool> {
        let Some(dir) = &self.dir else {
            return Ok(false);
        };
        let path = dir.join(format!("{}.der", hex(&cert.sha256)));
        if path.exists() {
            return Ok(false);
        }
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{}.tmp", hex(&cert.sha256)));
        std::fs::write(&tmp, &cert.der)?;
        std::fs::rename(&tmp, &path)?;
        if let Ok(mut l) = self.loaded.write() {
            // Next lookup re-reads the directory (its mtime changed).
            l.stamp = None;
        }
        Ok(true)
    }

    fn caps_path(&self, address: &str) -> Option<PathBuf> {
        use sha2::Digest;
        let key = sha2::Sha256::digest(address.to_lowercase().as_bytes());
        Some(self.dir.as_ref()?.join(format!("{}.caps", hex(&key))))
    }

    /// The content encryption algorithms the owner of `address` said they take (their
    /// preferred first; possibly none of the agent's), or `None` when unknown.
    pub fn capabilities(&self, address: &str) -> Option<Vec<ContentAlgorithm>> {
        let text = read_small(&self.caps_path(address)?)?;
        Some(parse_caps(&text)?.1)
    }

    /// Keeps what a verified signer said they can decrypt, for each address of their
    /// certificate, unless a later signed message said otherwise.
    pub fn remember_capabilities(
        &self,
        cert: &CertFacts,
        signed_at: Option<SystemTime>,
        caps: &[ContentAlgorithm],
    ) -> std::io::Result<()> {
        let at = signed_at
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut done: Vec<String> = vec![];
        for address in cert.all_emails() {
            let address = address.to_lowercase();
            if done.contains(&address) {
                continue;
            }
            let Some(path) = self.caps_path(&address) else {
                return Ok(());
            };
            if let Some((stored_at, stored)) = read_small(&path).and_then(|t| parse_caps(&t))
                && (stored_at > at || (stored_at == at && stored == caps))
            {
                done.push(address);
                continue;
            }
            let mut text = format!(
                "# SMIMECapabilities of {address}, from a message signed by {} (serial {}).\n\
                 # First line: its signing time (Unix seconds); then the algorithms.\n{at}\n",
                cert.subject, cert.serial_hex
            );
            for c in caps {
                text.push_str(c.as_str());
                text.push('\n');
            }
            let dir = path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            let mut tmp = path.clone().into_os_string();
            tmp.push(".tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, &path)?;
            done.push(address);
        }
        Ok(())
    }
}

fn read_small(path: &Path) -> Option<String> {
    if std::fs::metadata(path).ok()?.len() > MAX_FILE {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// `(signing time in Unix seconds, algorithms)` from a `.caps` file; names the agent does
/// not know are skipped.
fn parse_caps(text: &str) -> Option<(u64, Vec<ContentAlgorithm>)> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let at = lines.next()?.parse().ok()?;
    Some((at, lines.filter_map(ContentAlgorithm::from_name).collect()))
}

fn read_dir(dir: &Path) -> Vec<Arc<CertFacts>> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out = vec![];
    for entry in rd.filter_map(Result::ok).take(MAX_FILES) {
        let path = entry.path();
        let ok_ext = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            ["pem", "crt", "cer", "der"].contains(&e.to_ascii_lowercase().as_str())
        });
        if !ok_ext || entry.metadata().map(|m| m.len() > MAX_FILE).unwrap_or(true) {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        for der in crate::trust::certs_from_bytes(&bytes) {
            match CertFacts::from_der(&der) {
                Ok(c) => out.push(Arc::new(c)),
                Err(e) => tracing::debug!(file = %path.display(), error = %e, "not a certificate"),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_file_round_trips_and_skips_unknown_names() {
        let (at, caps) =
            parse_caps("# comment\n1700000000\naes256-gcm\ndes-ede3\naes128-cbc\n").unwrap();
        assert_eq!(at, 1_700_000_000);
        assert_eq!(
            caps,
            [ContentAlgorithm::Aes256Gcm, ContentAlgorithm::Aes128Cbc]
        );
        assert!(parse_caps("# nothing\n").is_none());
        assert!(parse_caps("not a number\naes256-gcm\n").is_none());
    }

    #[test]
    fn the_most_recently_signed_capabilities_win_for_every_address() {
        use ContentAlgorithm as A;
        use std::time::Duration;
        let der = include_bytes!("../tests/data/verify/ec-opaque.der");
        let layer = crate::smime::verify::verify_cms(der, None, SystemTime::now()).unwrap();
        let cert = CertFacts::from_der(&layer.certificates[0]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let c = Contacts::new(Some(dir.path().to_owned()));
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(c.capabilities("fixture@example.org"), None);
        c.remember_capabilities(&cert, Some(t(2000)), &[A::Aes256Gcm])
            .unwrap();
        assert_eq!(
            c.capabilities("Fixture@Example.org"),
            Some(vec![A::Aes256Gcm])
        );
        // An older message does not undo what a newer one said.
        c.remember_capabilities(&cert, Some(t(1000)), &[A::Aes128Cbc])
            .unwrap();
        assert_eq!(
            c.capabilities("fixture@example.org"),
            Some(vec![A::Aes256Gcm])
        );
        c.remember_capabilities(&cert, Some(t(3000)), &[]).unwrap();
        assert_eq!(c.capabilities("fixture@example.org"), Some(vec![]));
        // The capabilities files are not taken for certificates.
        assert!(c.find("fixture@example.org").is_empty());
    }

    #[test]
    fn missing_directory_is_empty_not_an_error() {
        let c = Contacts::new(Some(PathBuf::from("/nonexistent/contacts")));
        assert!(c.find("a@b").is_empty());
    }
}
