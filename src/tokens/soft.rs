//! Software keys: PKCS#12 files in `[soft_store] dir`, a fallback when no hardware key fits.
//!
//! Owns: reading a key file's certificate without its passphrase (from a certificate file
//! beside it, or from certificate bags that are not encrypted), unlocking the key with the
//! passphrase (asked through the same PIN sources as a token PIN), keeping the unlocked key
//! only for the PIN cache time, and the raw signature in software. A key file is presented
//! as a token of its own, with `hardware = false`, so selection prefers any hardware key.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use der::Decode;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::facts::TokenCert;
use super::pin::SecretPin;
use crate::certs::{CertFacts, hex};

/// File names the store reads as PKCS#12.
const KEY_EXTENSIONS: [&str; 2] = ["p12", "pfx"];
/// Certificate files looked for beside `NAME.p12`.
const CERT_EXTENSIONS: [&str; 4] = ["pem", "crt", "cer", "der"];
/// Largest key file read.
const MAX_FILE: u64 = 1024 * 1024;

/// An unlocked private key. The key types zeroize themselves when dropped.
pub enum SoftKey {
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

/// A PKCS#12 key file.
pub struct KeyFile {
    pub path: PathBuf,
    /// The file's passphrase is empty: it unlocks without asking anyone.
    pub empty_passphrase: bool,
    /// The unlocked key and when it must be dropped.
    unlocked: Mutex<Option<(std::sync::Arc<SoftKey>, Instant)>>,
    ttl: Duration,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFile").field("path", &self.path).finish()
    }
}

/// Why a key file could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SoftError {
    #[error("the passphrase of {0} is wrong (or the file is damaged)")]
    WrongPassphrase(String),
    #[error("{file}: {why}")]
    Unusable { file: String, why: String },
}

impl KeyFile {
    pub fn new(path: PathBuf, ttl: Duration, empty_passphrase: bool) -> KeyFile {
        KeyFile {
            path,
            empty_passphrase,
            unlocked: Mutex::new(None),
            ttl,
        }
    }

    fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The unlocked key, if it is unlocked and its time has not run out.
    pub fn key(&self) -> Option<std::sync::Arc<SoftKey>> {
        let mut s = self.unlocked.lock().ok()?;
        match &*s {
            Some((k, until)) if Instant::now() < *until => Some(k.clone()),
            Some(_) => {
                *s = None;
                None
            }
            None => None,
        }
    }

    pub fn is_unlocked(&self) -> bool {
        self.key().is_some()
    }

    /// Drops the unlocked key.
    pub fn lock(&self) {
        if let Ok(mut s) = self.unlocked.lock() {
            *s = None;
        }
    }

    /// Drops the key if its time ran out; true when it did.
    pub fn expire(&self) -> bool {
        match self.unlocked.lock() {
            Ok(mut s) => match &*s {
                Some((_, until)) if Instant::now() >= *until => {
                    *s = None;
                    true
                }
                _ => false,
            },
            Err(_) => false,
        }
    }

    /// Decrypts the key with `passphrase` (blocking: PBKDF work). The key is kept for the
    /// cache time; with a zero time it is used once and dropped.
    pub fn unlock(
        &self,
        passphrase: Option<&SecretPin>,
    ) -> Result<std::sync::Arc<SoftKey>, SoftError> {
        let unusable = |why: String| SoftError::Unusable {
            file: self.path.display().to_string(),
            why,
        };
        let data = read_bounded(&self.path).map_err(unusable)?;
        let pass = match passphrase {
            Some(p) => std::str::from_utf8(p.expose())
                .map_err(|_| unusable("the passphrase is not UTF-8".into()))?,
            None => "",
        };
        let key = Box::new(open_pkcs12(&data, pass).map_err(|e| match e {
            Pkcs12Error::Passphrase => SoftError::WrongPassphrase(self.name()),
            Pkcs12Error::Unusable(why) => unusable(why),
        })?);
        let key: std::sync::Arc<SoftKey> = std::sync::Arc::from(key);
        if !self.ttl.is_zero()
            && let Ok(mut s) = self.unlocked.lock()
        {
            *s = Some((key.clone(), Instant::now() + self.ttl));
        }
        Ok(key)
    }
}

/// Why a PKCS#12 file did not give a key.
pub(crate) enum Pkcs12Error {
    /// Not decryptable with the passphrase (or not PKCS#12 at all: the reader cannot tell).
    Passphrase,
    Unusable(String),
}

/// The private key of a PKCS#12 file's key-and-certificate chain (blocking: PBKDF work).
pub(crate) fn open_pkcs12(data: &[u8], passphrase: &str) -> Result<SoftKey, Pkcs12Error> {
    let contents = super::pkcs12::read(data, passphrase).map_err(|e| match e {
        super::pkcs12::Error::Passphrase => Pkcs12Error::Passphrase,
        super::pkcs12::Error::Unusable(why) => Pkcs12Error::Unusable(why),
    })?;
    let key = contents
        .key
        .ok_or_else(|| Pkcs12Error::Unusable("the file holds no private key".into()))?;
    parse_pkcs8(&key).map_err(Pkcs12Error::Unusable)
}

/// Reads an unencrypted PKCS#8 PEM key file (the test PKI's format).
pub fn load_pkcs8_pem(path: &Path) -> Result<SoftKey, String> {
    let pem = read_bounded(path)?;
    let text = std::str::from_utf8(&pem).map_err(|e| e.to_string())?;
    let (label, der) = der::Document::from_pem(text).map_err(|e| e.to_string())?;
    if label != "PRIVATE KEY" {
        return Err(format!(
            "{}: not a PKCS#8 private key ({label})",
            path.display()
        ));
    }
    parse_pkcs8(der.as_bytes())
}

fn parse_pkcs8(der: &[u8]) -> Result<SoftKey, String> {
    use rsa::pkcs8::DecodePrivateKey;
    let info = rsa::pkcs8::PrivateKeyInfoRef::from_der(der)
        .map_err(|e| format!("the private key is not PKCS#8: {e}"))?;
    let oid = info.algorithm.oid;
    if oid == crate::oids::RSA_ENCRYPTION {
        return rsa::RsaPrivateKey::from_pkcs8_der(der)
            .map(|k| SoftKey::Rsa(Box::new(k)))
            .map_err(|e| format!("RSA key: {e}"));
    }
    if oid == crate::oids::ID_EC_PUBLIC_KEY {
        if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
            return Ok(SoftKey::P256(k.into()));
        }
        if let Ok(k) = p384::SecretKey::from_pkcs8_der(der) {
            return Ok(SoftKey::P384(k.into()));
        }
        return Err("EC key on an unsupported curve".into());
    }
    Err(format!("unsupported key algorithm {oid}"))
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut data = vec![];
    f.take(MAX_FILE + 1)
        .read_to_end(&mut data)
        .map_err(|e| e.to_string())?;
    if data.len() as u64 > MAX_FILE {
        return Err(format!("larger than {MAX_FILE} bytes"));
    }
    Ok(data)
}

/// The key files of the store, by path.
pub fn key_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| KEY_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    out.sort();
    out
}

/// The certificate of a key file, read without the passphrase: from `NAME.pem` (or `.crt`,
/// `.cer`, `.der`) beside it, else from the file itself when its passphrase is empty.
/// Also says whether the passphrase is empty.
pub fn read_certificates(key_file: &Path) -> Result<(Vec<CertFacts>, bool), String> {
    let data = read_bounded(key_file)?;
    let open = super::pkcs12::read(&data, "").ok();
    let empty = open.is_some();
    for ext in CERT_EXTENSIONS {
        let p = key_file.with_extension(ext);
        if p.exists() {
            let data = read_bounded(&p)?;
            let certs = crate::trust::certs_from_bytes(&data)
                .iter()
                .map(|d| CertFacts::from_der(d).map_err(|e| format!("{}: {e}", p.display())))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok((certs, empty));
        }
    }
    // A file protected by the empty password gives its certificates away anyway.
    if let Some(store) = open {
        let certs: Vec<CertFacts> = store
            .certs
            .iter()
            .filter_map(|c| CertFacts::from_der(c).ok())
            .collect();
        if !certs.is_empty() {
            return Ok((certs, true));
        }
    }
    Err(format!(
        "no certificate readable without the passphrase; put it beside the key as {} \
         (`openssl pkcs12 -in {} -nokeys -out {}`)",
        key_file.with_extension("pem").display(),
        key_file.display(),
        key_file.with_extension("pem").display()
    ))
}

/// The certificate of the key, chosen among the file's certificates: the one whose public
/// key is not an issuer of another (the leaf), first if unsure.
pub fn key_certificate(certs: Vec<CertFacts>) -> Option<TokenCert> {
    let leaf = certs.iter().position(|c| {
        !certs
            .iter()
            .any(|o| o.issuer == c.subject && o.sha256 != c.sha256)
    });
    let c = certs.into_iter().nth(leaf.unwrap_or(0))?;
    let id = Sha256::digest(&c.der)[..8].to_vec();
    Some(TokenCert {
        facts: c,
        key_id: id,
        has_key: Some(true),
    })
}

/// A stable token id for a key file.
pub fn file_token_id(path: &Path) -> String {
    let mut h = Sha256::new();
    h.update(b"soft\0");
    h.update(path.as_os_str().as_encoded_bytes());
    hex(&h.finalize()[..8])
}

/// Runs a private-key operation with an unlocked key: PKCS#1 v1.5 signature over a
/// DigestInfo, ECDSA over a hash (r || s), RSA decryption, or ECDH (the shared x coordinate).
pub fn private_op(key: &SoftKey, op: super::op::PrivateOp) -> Result<Zeroizing<Vec<u8>>, String> {
    use super::op::{OaepHash, PrivateOp, RsaDecrypt};
    use signature::hazmat::PrehashSigner;
    let mut rng = rand_core_rng();
    match (key, op) {
        (
            SoftKey::Rsa(k),
            PrivateOp::Sign {
                mechanism: super::SignMechanism::RsaPkcs1,
                data,
            },
        ) => k
            .sign_with_rng(&mut rng, rsa::Pkcs1v15Sign::new_unprefixed(), &data)
            .map(Zeroizing::new)
            .map_err(|e| format!("RSA signature: {e}")),
        (
            SoftKey::Rsa(k),
            PrivateOp::Sign {
                mechanism: super::SignMechanism::RsaPss { hash, salt_len },
                data,
            },
        ) => {
            let r = match hash {
                OaepHash::Sha1 => k.sign_with_rng(
                    &mut rng,
                    rsa::Pss::<sha1::Sha1>::new_with_salt(salt_len),
                    &data,
                ),
                OaepHash::Sha256 => k.sign_with_rng(
                    &mut rng,
                    rsa::Pss::<sha2::Sha256>::new_with_salt(salt_len),
                    &data,
                ),
                OaepHash::Sha384 => k.sign_with_rng(
                    &mut rng,
                    rsa::Pss::<sha2::Sha384>::new_with_salt(salt_len),
                    &data,
                ),
                OaepHash::Sha512 => k.sign_with_rng(
                    &mut rng,
                    rsa::Pss::<sha2::Sha512>::new_with_salt(salt_len),
                    &data,
                ),
            };
            r.map(Zeroizing::new)
                .map_err(|e| format!("RSA-PSS signature: {e}"))
        }
        (
            SoftKey::P256(k),
            PrivateOp::Sign {
                mechanism: super::SignMechanism::Ecdsa,
                data,
            },
        ) => {
            let s: p256::ecdsa::Signature =
                k.sign_prehash(&data).map_err(|e| format!("ECDSA: {e}"))?;
            Ok(Zeroizing::new(s.to_bytes().to_vec()))
        }
        (
            SoftKey::P384(k),
            PrivateOp::Sign {
                mechanism: super::SignMechanism::Ecdsa,
                data,
            },
        ) => {
            let s: p384::ecdsa::Signature =
                k.sign_prehash(&data).map_err(|e| format!("ECDSA: {e}"))?;
            Ok(Zeroizing::new(s.to_bytes().to_vec()))
        }
        (SoftKey::Rsa(k), PrivateOp::Decrypt { padding, data }) => {
            let r = match padding {
                RsaDecrypt::Pkcs1 => k.decrypt(rsa::Pkcs1v15Encrypt, &data),
                RsaDecrypt::Oaep(OaepHash::Sha1) => {
                    k.decrypt(rsa::Oaep::<sha1::Sha1>::new(), &data)
                }
                RsaDecrypt::Oaep(OaepHash::Sha256) => {
                    k.decrypt(rsa::Oaep::<sha2::Sha256>::new(), &data)
                }
                RsaDecrypt::Oaep(OaepHash::Sha384) => {
                    k.decrypt(rsa::Oaep::<sha2::Sha384>::new(), &data)
                }
                RsaDecrypt::Oaep(OaepHash::Sha512) => {
                    k.decrypt(rsa::Oaep::<sha2::Sha512>::new(), &data)
                }
                RsaDecrypt::Raw => return raw_rsa(k, &data),
            };
            r.map(Zeroizing::new)
                .map_err(|e| format!("RSA decryption: {e}"))
        }
        (SoftKey::P256(k), PrivateOp::DeriveEcdh { point }) => {
            let peer = p256::PublicKey::from_sec1_bytes(&point).map_err(|e| e.to_string())?;
            let secret: p256::SecretKey = k.into();
            let z = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
            Ok(Zeroizing::new(z.raw_secret_bytes().to_vec()))
        }
        (SoftKey::P384(k), PrivateOp::DeriveEcdh { point }) => {
            let peer = p384::PublicKey::from_sec1_bytes(&point).map_err(|e| e.to_string())?;
            let secret: p384::SecretKey = k.into();
            let z = p384::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
            Ok(Zeroizing::new(z.raw_secret_bytes().to_vec()))
        }
        _ => Err("the key does not do this kind of operation".into()),
    }
}

/// Raw RSA (the counterpart of CKM_RSA_X_509): the result is as long as the modulus, and
/// the agent removes the padding itself in constant time, as it does for a token.
fn raw_rsa(k: &rsa::RsaPrivateKey, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    use rsa::traits::PublicKeyParts;
    let c = rsa::BoxedUint::from_be_slice(data, k.n_bits_precision())
        .map_err(|_| "RSA decryption: the encrypted key is longer than the modulus".to_owned())?;
    let m = rsa::hazmat::rsa_decrypt_and_check(k, Some(&mut rand_core_rng()), &c)
        .map_err(|e| format!("RSA decryption: {e}"))?;
    let m = Zeroizing::new(m);
    let bytes = Zeroizing::new(m.to_be_bytes());
    // `m` is below the modulus: the bytes before its last `size()` are zero.
    let k_len = k.size();
    let cut = bytes.len().saturating_sub(k_len);
    let mut out = Zeroizing::new(vec![0u8; k_len.saturating_sub(bytes.len())]);
    out.extend_from_slice(&bytes[cut..]);
    Ok(out)
}

/// The OS random generator, for RSA blinding.
fn rand_core_rng() -> impl rsa::rand_core::CryptoRng {
    rsa::rand_core::UnwrapErr(getrandom::SysRng)
}

/// The key files of `[soft_store] dir`, each presented as a token.
#[derive(Debug)]
pub struct SoftStore {
    pub dir: PathBuf,
    ttl: Duration,
    /// Files that are tokens now, by token id.
    known: Mutex<std::collections::HashMap<String, PathBuf>>,
    /// Files already reported unusable, so the log says it once.
    reported: Mutex<std::collections::HashSet<PathBuf>>,
}

impl SoftStore {
    pub fn new(dir: PathBuf, ttl: Duration) -> SoftStore {
        SoftStore {
            dir,
            ttl,
            known: Mutex::default(),
            reported: Mutex::default(),
        }
    }

    /// Compares the key files present with the known ones (blocking: reads files).
    pub fn rescan(&self) -> super::Changes {
        let files = key_files(&self.dir);
        let mut changes = super::Changes::default();
        let Ok(mut known) = self.known.lock() else {
            return changes;
        };
        for path in &files {
            let id = file_token_id(path);
            if known.contains_key(&id) {
                continue;
            }
            match self.open(path, &id) {
                Ok(t) => {
                    known.insert(id, path.clone());
                    changes.inserted.push(t);
                }
                Err(e) => {
                    let first = self
                        .reported
                        .lock()
                        .map(|mut r| r.insert(path.clone()))
                        .unwrap_or(false);
                    if first {
                        tracing::warn!(file = %path.display(), error = %e, "key file not usable");
                    }
                }
            }
        }
        known.retain(|id, path| {
            let keep = files.contains(path);
            if !keep {
                changes.removed.push(id.clone());
            }
            keep
        });
        changes
    }

    fn open(&self, path: &Path, id: &str) -> Result<super::ScannedToken, String> {
        let (certs, empty) = read_certificates(path)?;
        let cert = key_certificate(certs).ok_or_else(|| "no certificate".to_owned())?;
        let label = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let facts = super::facts::TokenFacts {
            token: smime_agent_proto::TokenRef {
                id: id.to_owned(),
                label,
                serial: hex(&cert.facts.sha256[..8]),
            },
            slot_description: path.display().to_string(),
            manufacturer: "smime-agent".into(),
            model: "PKCS#12 key file".into(),
            module_path: path.to_owned(),
            hardware: false,
            removable: false,
            protected_path: false,
            raw_rsa: true,
            login_required: true,
        };
        let token = super::Token::new_soft(facts, KeyFile::new(path.to_owned(), self.ttl, empty));
        Ok(super::ScannedToken {
            token: std::sync::Arc::new(token),
            certs: vec![cert],
        })
    }
}
