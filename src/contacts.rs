//! The contacts store: certificates of correspondents, for encrypting to them.
//!
//! Owns: the `[contacts] dir` (default `$XDG_DATA_HOME/smime-agent/contacts`) with one
//! PEM or DER certificate per file, looking certificates up by address, and adding the
//! certificates of valid signers of verified mail (written atomically, one file per
//! certificate, named by its SHA-256). Does not judge certificates: whoever uses one
//! validates it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::certs::{CertFacts, hex};
use crate::store::same_address;

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
    let base = match std::env::var_os("XDG_DATA_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".local/share"),
    };
    Some(base.join("smime-agent").join("contacts"))
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
    fn missing_directory_is_empty_not_an_error() {
        let c = Contacts::new(Some(PathBuf::from("/nonexistent/contacts")));
        assert!(c.find("a@b").is_empty());
    }
}
