//! The card's key slots: loading keys and certificates from files, and the private-key
//! operations GENERAL AUTHENTICATE asks for.
//!
//! All cryptography is RustCrypto's (`rsa`, `p256`, `p384`); this module only picks the
//! operation and checks sizes. It knows nothing about APDUs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use der::{Decode, Encode};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{BoxedUint, RsaPrivateKey, RsaPublicKey};
use x509_cert::Certificate;

use crate::CardError;

/// The four PIV key slots OpenSC uses (SP 800-73-4 table 4b).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PivSlot {
    /// 9A, PIV Authentication (OpenSC: CKA_ID 01).
    Authentication,
    /// 9C, Digital Signature, PIN-always (OpenSC: CKA_ID 02).
    Signature,
    /// 9D, Key Management: decryption and key agreement (OpenSC: CKA_ID 03).
    KeyManagement,
    /// 9E, Card Authentication, usable without PIN (OpenSC: CKA_ID 04).
    CardAuthentication,
}

impl PivSlot {
    /// All slots, in the order OpenSC reads them.
    pub const ALL: [PivSlot; 4] = [
        PivSlot::Authentication,
        PivSlot::Signature,
        PivSlot::KeyManagement,
        PivSlot::CardAuthentication,
    ];

    /// The key reference in GENERAL AUTHENTICATE's P2.
    pub fn key_ref(self) -> u8 {
        match self {
            PivSlot::Authentication => 0x9A,
            PivSlot::Signature => 0x9C,
            PivSlot::KeyManagement => 0x9D,
            PivSlot::CardAuthentication => 0x9E,
        }
    }

    /// The slot a key reference names, if it is one of the four.
    pub fn from_key_ref(key_ref: u8) -> Option<Self> {
        PivSlot::ALL.into_iter().find(|s| s.key_ref() == key_ref)
    }

    /// The tag of the slot's X.509 certificate data object.
    pub fn cert_object_tag(self) -> [u8; 3] {
        match self {
            PivSlot::Authentication => [0x5F, 0xC1, 0x05],
            PivSlot::Signature => [0x5F, 0xC1, 0x0A],
            PivSlot::KeyManagement => [0x5F, 0xC1, 0x0B],
            PivSlot::CardAuthentication => [0x5F, 0xC1, 0x01],
        }
    }
}

impl fmt::Display for PivSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}", self.key_ref())
    }
}

impl FromStr for PivSlot {
    type Err = CardError;

    /// `9a`, `9c`, `9d` or `9e` (any case).
    fn from_str(s: &str) -> Result<Self, CardError> {
        u8::from_str_radix(s, 16)
            .ok()
            .filter(|_| s.len() == 2)
            .and_then(PivSlot::from_key_ref)
            .ok_or_else(|| CardError::BadSlotSpec {
                spec: s.to_owned(),
                reason: "the slot must be 9a, 9c, 9d or 9e".into(),
            })
    }
}

/// Where a slot's key and certificate come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotSpec {
    pub slot: PivSlot,
    /// Private key: PKCS#8 (PEM or DER), PKCS#1 `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`.
    pub key: PathBuf,
    /// Certificate: PEM or DER.
    pub cert: PathBuf,
}

impl SlotSpec {
    pub fn new(slot: PivSlot, key: impl Into<PathBuf>, cert: impl Into<PathBuf>) -> Self {
        SlotSpec {
            slot,
            key: key.into(),
            cert: cert.into(),
        }
    }
}

impl FromStr for SlotSpec {
    type Err = CardError;

    /// `9c=KEY:CERT`, as on the command line.
    fn from_str(s: &str) -> Result<Self, CardError> {
        let bad = |reason: &str| CardError::BadSlotSpec {
            spec: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (slot, files) = s
            .split_once('=')
            .ok_or_else(|| bad("expected SLOT=KEY:CERT"))?;
        let (key, cert) = files
            .split_once(':')
            .ok_or_else(|| bad("expected SLOT=KEY:CERT"))?;
        if key.is_empty() || cert.is_empty() {
            return Err(bad("both a key file and a certificate file are needed"));
        }
        Ok(SlotSpec::new(slot.parse()?, key, cert))
    }
}

/// A private key in a slot.
pub enum SlotKey {
    Rsa(Box<RsaPrivateKey>),
    P256(p256::SecretKey),
    P384(p384::SecretKey),
}

/// Why a private-key operation was refused (the card answers `6A 80`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpError {
    /// The input has the wrong size or is out of range for the key.
    BadInput,
    /// The key cannot do this operation (e.g. ECDH with an RSA key).
    WrongKeyType,
}

impl SlotKey {
    /// Loads a private key from a file: PKCS#8 PEM or DER, PKCS#1 `RSA PRIVATE KEY`
    /// PEM/DER, SEC1 `EC PRIVATE KEY` PEM/DER. RSA (1024-4096), P-256 and P-384.
    pub fn load(path: &Path) -> Result<Self, CardError> {
        let bytes = std::fs::read(path).map_err(|e| CardError::KeyFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let bad = |reason: String| CardError::KeyFile {
            path: path.to_owned(),
            reason,
        };
        let key = if bytes.starts_with(b"-----BEGIN") {
            let (label, der) =
                der::pem::decode_vec(&bytes).map_err(|e| bad(format!("not valid PEM: {e}")))?;
            match label {
                "PRIVATE KEY" => Self::from_pkcs8(&der),
                "RSA PRIVATE KEY" => Self::from_pkcs1(&der),
                "EC PRIVATE KEY" => Self::from_sec1(&der),
                "ENCRYPTED PRIVATE KEY" => {
                    return Err(bad(
                        "encrypted keys are not supported; decrypt it first with \
                         `openssl pkey -in KEY -out PLAIN.pem`"
                            .into(),
                    ));
                }
                other => return Err(bad(format!("PEM label {other:?} is not a private key"))),
            }
        } else {
            Self::from_pkcs8(&bytes)
                .or_else(|| Self::from_pkcs1(&bytes))
                .or_else(|| Self::from_sec1(&bytes))
        };
        let key = key.ok_or_else(|| {
            bad("not an RSA, P-256 or P-384 private key in PKCS#8, PKCS#1 or SEC1 form".into())
        })?;
        if key.algorithm_id().is_none() {
            return Err(bad(format!(
                "RSA keys must have 1024, 2048, 3072 or 4096 bits; this one has {}",
                key.bits()
            )));
        }
        Ok(key)
    }

    fn from_pkcs8(der: &[u8]) -> Option<Self> {
        if let Ok(k) = RsaPrivateKey::from_pkcs8_der(der) {
            return Some(SlotKey::Rsa(Box::new(k)));
        }
        if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
            return Some(SlotKey::P256(k));
        }
        p384::SecretKey::from_pkcs8_der(der).ok().map(SlotKey::P384)
    }

    fn from_pkcs1(der: &[u8]) -> Option<Self> {
        RsaPrivateKey::from_pkcs1_der(der)
            .ok()
            .map(|k| SlotKey::Rsa(Box::new(k)))
    }

    fn from_sec1(der: &[u8]) -> Option<Self> {
        if let Ok(k) = p256::SecretKey::from_sec1_der(der) {
            return Some(SlotKey::P256(k));
        }
        p384::SecretKey::from_sec1_der(der).ok().map(SlotKey::P384)
    }

    /// Key size in bits.
    pub fn bits(&self) -> usize {
        match self {
            SlotKey::Rsa(k) => k.size() * 8,
            SlotKey::P256(_) => 256,
            SlotKey::P384(_) => 384,
        }
    }

    /// The PIV cryptographic algorithm identifier (SP 800-78-4 table 6-2) GENERAL
    /// AUTHENTICATE must name in P1 for this key; `None` for unsupported RSA sizes.
    pub fn algorithm_id(&self) -> Option<u8> {
        match self {
            SlotKey::Rsa(_) => match self.bits() {
                1024 => Some(0x06),
                2048 => Some(0x07),
                3072 => Some(0x05),
                4096 => Some(0x16),
                _ => None,
            },
            SlotKey::P256(_) => Some(0x11),
            SlotKey::P384(_) => Some(0x14),
        }
    }

    /// Whether `spki_der` (a SubjectPublicKeyInfo) is this key's public key.
    fn matches_public_key(&self, spki_der: &[u8]) -> bool {
        match self {
            SlotKey::Rsa(k) => {
                RsaPublicKey::from_public_key_der(spki_der).is_ok_and(|p| p == k.to_public_key())
            }
            SlotKey::P256(k) => {
                p256::PublicKey::from_public_key_der(spki_der).is_ok_and(|p| p == k.public_key())
            }
            SlotKey::P384(k) => {
                p384::PublicKey::from_public_key_der(spki_der).is_ok_and(|p| p == k.public_key())
            }
        }
    }

    /// The raw RSA private operation `input^d mod n`, for OpenSC to pad and unpad. `input`
    /// must be exactly the modulus size and smaller than the modulus.
    pub fn rsa_raw(&self, input: &[u8]) -> Result<Vec<u8>, OpError> {
        let SlotKey::Rsa(key) = self else {
            return Err(OpError::WrongKeyType);
        };
        let k = key.size();
        if input.len() != k {
            return Err(OpError::BadInput);
        }
        let precision = key.n().as_ref().bits_precision();
        let c = BoxedUint::from_be_slice(input, precision).map_err(|_| OpError::BadInput)?;
        // Blinded (system RNG) and checked against the public operation, like a card's
        // fault-attack countermeasure; an input >= n is refused here too.
        let m = rsa::hazmat::rsa_decrypt_and_check(key.as_ref(), Some(&mut getrandom::SysRng), &c)
            .map_err(|_| OpError::BadInput)?;
        let bytes = m.to_be_bytes();
        let mut out = vec![0u8; k];
        let skip = bytes.len().saturating_sub(k);
        let significant = &bytes[skip..];
        out[k - significant.len()..].copy_from_slice(significant);
        Ok(out)
    }

    /// ECDSA over a hash the host computed; the answer is a DER `ECDSA-Sig-Value`.
    pub fn ecdsa_sign_prehash(&self, hash: &[u8]) -> Result<Vec<u8>, OpError> {
        // RustCrypto truncates long hashes as ECDSA requires and rejects very short ones.
        match self {
            SlotKey::P256(k) => {
                let signer = p256::ecdsa::SigningKey::from(k);
                let sig: p256::ecdsa::DerSignature =
                    signer.sign_prehash(hash).map_err(|_| OpError::BadInput)?;
                Ok(sig.to_bytes().to_vec())
            }
            SlotKey::P384(k) => {
                let signer = p384::ecdsa::SigningKey::from(k);
                let sig: p384::ecdsa::DerSignature =
                    signer.sign_prehash(hash).map_err(|_| OpError::BadInput)?;
                Ok(sig.to_bytes().to_vec())
            }
            SlotKey::Rsa(_) => Err(OpError::WrongKeyType),
        }
    }

    /// ECDH with the peer's uncompressed point `04 || X || Y`: the shared X coordinate.
    pub fn ecdh(&self, peer_point: &[u8]) -> Result<Vec<u8>, OpError> {
        match self {
            SlotKey::P256(k) => {
                let peer =
                    p256::PublicKey::from_sec1_bytes(peer_point).map_err(|_| OpError::BadInput)?;
                let shared = p256::ecdh::diffie_hellman(k.to_nonzero_scalar(), peer.as_affine());
                Ok(shared.raw_secret_bytes().to_vec())
            }
            SlotKey::P384(k) => {
                let peer =
                    p384::PublicKey::from_sec1_bytes(peer_point).map_err(|_| OpError::BadInput)?;
                let shared = p384::ecdh::diffie_hellman(k.to_nonzero_scalar(), peer.as_affine());
                Ok(shared.raw_secret_bytes().to_vec())
            }
            SlotKey::Rsa(_) => Err(OpError::WrongKeyType),
        }
    }
}

impl fmt::Debug for SlotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        match self {
            SlotKey::Rsa(_) => write!(f, "SlotKey::Rsa({} bits)", self.bits()),
            SlotKey::P256(_) => f.write_str("SlotKey::P256"),
            SlotKey::P384(_) => f.write_str("SlotKey::P384"),
        }
    }
}

/// A slot's private key with its certificate (DER).
#[derive(Debug)]
pub struct LoadedSlot {
    pub slot: PivSlot,
    pub key: SlotKey,
    pub cert_der: Vec<u8>,
    /// The certificate subject, for logs.
    pub subject: String,
}

impl LoadedSlot {
    /// Loads both files of `spec` and checks that the certificate is the key's.
    pub fn load(spec: &SlotSpec) -> Result<Self, CardError> {
        let key = SlotKey::load(&spec.key)?;
        let cert_der = load_cert_der(&spec.cert)?;
        let bad_cert = |reason: String| CardError::CertFile {
            path: spec.cert.clone(),
            reason,
        };
        let cert = Certificate::from_der(&cert_der)
            .map_err(|e| bad_cert(format!("not an X.509 certificate: {e}")))?;
        let spki = cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| bad_cert(format!("cannot re-encode its public key: {e}")))?;
        if !key.matches_public_key(&spki) {
            return Err(CardError::KeyMismatch {
                slot: spec.slot,
                key: spec.key.clone(),
                cert: spec.cert.clone(),
            });
        }
        Ok(LoadedSlot {
            slot: spec.slot,
            key,
            cert_der,
            subject: cert.tbs_certificate().subject().to_string(),
        })
    }
}

/// Reads a certificate file, PEM (`CERTIFICATE`) or DER, and returns its DER bytes.
fn load_cert_der(path: &Path) -> Result<Vec<u8>, CardError> {
    let bad = |reason: String| CardError::CertFile {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    if !bytes.starts_with(b"-----BEGIN") {
        return Ok(bytes);
    }
    let (label, der) =
        der::pem::decode_vec(&bytes).map_err(|e| bad(format!("not valid PEM: {e}")))?;
    if label != "CERTIFICATE" {
        return Err(bad(format!("PEM label {label:?} is not CERTIFICATE")));
    }
    Ok(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_specs_parse_like_the_command_line() {
        let s: SlotSpec = "9c=/k/a.key.pem:/k/a.pem".parse().unwrap();
        assert_eq!(
            s,
            SlotSpec::new(PivSlot::Signature, "/k/a.key.pem", "/k/a.pem")
        );
        assert!("9b=a:b".parse::<SlotSpec>().is_err());
        assert!("9c=a".parse::<SlotSpec>().is_err());
        assert!("9c=:b".parse::<SlotSpec>().is_err());
        assert!("09c=a:b".parse::<SlotSpec>().is_err());
        assert_eq!(
            "9E".parse::<PivSlot>().unwrap(),
            PivSlot::CardAuthentication
        );
    }
}
