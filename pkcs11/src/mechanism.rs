//! The mechanisms the module offers, per key type, and what each asks of the agent: the
//! raw ones (CKM_RSA_PKCS, CKM_RSA_PKCS_PSS, CKM_ECDSA, CKM_RSA_PKCS_OAEP, CKM_ECDH1_DERIVE) go to the agent
//! as they are; the hash-and-sign ones (CKM_SHA256_RSA_PKCS(_PSS), CKM_ECDSA_SHA256, ...) are
//! hashed here and signed raw, since many cards lack them and the hash is no secret.

use cryptoki_sys::*;
use sha2::Digest;
use smime_agent_proto::{KeyDecryptMechanism, KeyOaepHash, KeySignMechanism};

use crate::objects::KeyType;

/// A hash the module computes for the hash-and-sign mechanisms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    pub fn of_mechanism(m: CK_MECHANISM_TYPE) -> Option<HashAlg> {
        match m {
            CKM_SHA_1 => Some(HashAlg::Sha1),
            CKM_SHA256 => Some(HashAlg::Sha256),
            CKM_SHA384 => Some(HashAlg::Sha384),
            CKM_SHA512 => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashAlg::Sha1 => sha1::Sha1::digest(data).to_vec(),
            HashAlg::Sha256 => sha2::Sha256::digest(data).to_vec(),
            HashAlg::Sha384 => sha2::Sha384::digest(data).to_vec(),
            HashAlg::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    /// The DER prefix of a DigestInfo with this hash (RFC 8017 section 9.2, note 1).
    fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            HashAlg::Sha1 => &[
                0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
                0x14,
            ],
            HashAlg::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            HashAlg::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            HashAlg::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }

    /// The MGF1 that goes with this hash (PKCS#11 CKG_MGF1_*).
    pub fn mgf(self) -> CK_RSA_PKCS_MGF_TYPE {
        match self {
            HashAlg::Sha1 => CKG_MGF1_SHA1,
            HashAlg::Sha256 => CKG_MGF1_SHA256,
            HashAlg::Sha384 => CKG_MGF1_SHA384,
            HashAlg::Sha512 => CKG_MGF1_SHA512,
        }
    }

    fn oaep(self) -> KeyOaepHash {
        match self {
            HashAlg::Sha1 => KeyOaepHash::Sha1,
            HashAlg::Sha256 => KeyOaepHash::Sha256,
            HashAlg::Sha384 => KeyOaepHash::Sha384,
            HashAlg::Sha512 => KeyOaepHash::Sha512,
        }
    }
}

/// A signature mechanism: what the caller asked, as the module does it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignMech {
    RsaPkcs,
    RsaPkcsHash(HashAlg),
    /// CKM_RSA_PKCS_PSS over a hash the caller made, or (`hashed` false) over data hashed
    /// here (CKM_SHA256_RSA_PKCS_PSS, ...); MGF1 with the same hash.
    RsaPss {
        hash: HashAlg,
        salt_len: u32,
        hashed: bool,
    },
    Ecdsa,
    EcdsaHash(HashAlg),
}

impl SignMech {
    /// The mechanism `m`, with the PSS parameters (hash, MGF, salt length) when it is a PSS
    /// one; None for what the module does not offer or inconsistent parameters.
    pub fn of(
        m: CK_MECHANISM_TYPE,
        pss: Option<(CK_MECHANISM_TYPE, CK_ULONG, CK_ULONG)>,
    ) -> Option<SignMech> {
        let pss_hashed = |hashed: bool, required: Option<HashAlg>| {
            let (hash_alg, mgf, salt) = pss?;
            let hash = HashAlg::of_mechanism(hash_alg)?;
            if required.is_some_and(|r| r != hash) || mgf != hash.mgf() {
                return None;
            }
            Some(SignMech::RsaPss {
                hash,
                salt_len: u32::try_from(salt).ok()?,
                hashed,
            })
        };
        match m {
            CKM_RSA_PKCS_PSS => return pss_hashed(true, None),
            CKM_SHA1_RSA_PKCS_PSS => return pss_hashed(false, Some(HashAlg::Sha1)),
            CKM_SHA256_RSA_PKCS_PSS => return pss_hashed(false, Some(HashAlg::Sha256)),
            CKM_SHA384_RSA_PKCS_PSS => return pss_hashed(false, Some(HashAlg::Sha384)),
            CKM_SHA512_RSA_PKCS_PSS => return pss_hashed(false, Some(HashAlg::Sha512)),
            _ => {}
        }
        Some(match m {
            CKM_RSA_PKCS => SignMech::RsaPkcs,
            CKM_SHA1_RSA_PKCS => SignMech::RsaPkcsHash(HashAlg::Sha1),
            CKM_SHA256_RSA_PKCS => SignMech::RsaPkcsHash(HashAlg::Sha256),
            CKM_SHA384_RSA_PKCS => SignMech::RsaPkcsHash(HashAlg::Sha384),
            CKM_SHA512_RSA_PKCS => SignMech::RsaPkcsHash(HashAlg::Sha512),
            CKM_ECDSA => SignMech::Ecdsa,
            CKM_ECDSA_SHA1 => SignMech::EcdsaHash(HashAlg::Sha1),
            CKM_ECDSA_SHA256 => SignMech::EcdsaHash(HashAlg::Sha256),
            CKM_ECDSA_SHA384 => SignMech::EcdsaHash(HashAlg::Sha384),
            CKM_ECDSA_SHA512 => SignMech::EcdsaHash(HashAlg::Sha512),
            _ => return None,
        })
    }

    pub fn fits(self, k: KeyType) -> bool {
        matches!(
            (self, k),
            (
                SignMech::RsaPkcs | SignMech::RsaPkcsHash(_) | SignMech::RsaPss { .. },
                KeyType::Rsa { .. }
            ) | (SignMech::Ecdsa | SignMech::EcdsaHash(_), KeyType::Ec { .. })
        )
    }

    /// What the agent signs for `data`, and how.
    pub fn to_agent(self, data: &[u8]) -> (KeySignMechanism, Vec<u8>) {
        match self {
            SignMech::RsaPkcs => (KeySignMechanism::RsaPkcs, data.to_vec()),
            SignMech::RsaPkcsHash(h) => {
                let mut di = h.digest_info_prefix().to_vec();
                di.extend(h.digest(data));
                (KeySignMechanism::RsaPkcs, di)
            }
            SignMech::RsaPss {
                hash,
                salt_len,
                hashed,
            } => (
                KeySignMechanism::RsaPss {
                    hash: hash.oaep(),
                    salt_len,
                },
                if hashed {
                    data.to_vec()
                } else {
                    hash.digest(data)
                },
            ),
            SignMech::Ecdsa => (KeySignMechanism::Ecdsa, data.to_vec()),
            SignMech::EcdsaHash(h) => (KeySignMechanism::Ecdsa, h.digest(data)),
        }
    }
}

/// The signature length of a key.
pub fn signature_len(k: KeyType) -> usize {
    match k {
        KeyType::Rsa { modulus_bytes } => modulus_bytes,
        KeyType::Ec { field_bytes } => 2 * field_bytes,
    }
}

/// An RSA decryption mechanism with its checked parameters.
pub fn decrypt_mech(
    m: CK_MECHANISM_TYPE,
    oaep_hash: Option<HashAlg>,
) -> Option<KeyDecryptMechanism> {
    match (m, oaep_hash) {
        (CKM_RSA_PKCS, None) => Some(KeyDecryptMechanism::RsaPkcs),
        (CKM_RSA_PKCS_OAEP, Some(h)) => Some(KeyDecryptMechanism::RsaOaep { hash: h.oaep() }),
        _ => None,
    }
}

/// The mechanisms a token with keys of these types offers, with their flags.
pub fn offered(types: &[KeyType]) -> Vec<(CK_MECHANISM_TYPE, CK_MECHANISM_INFO)> {
    let mut out = vec![];
    let rsa: Vec<usize> = types
        .iter()
        .filter_map(|t| match t {
            KeyType::Rsa { modulus_bytes } => Some(modulus_bytes * 8),
            _ => None,
        })
        .collect();
    let ec: Vec<usize> = types
        .iter()
        .filter_map(|t| match t {
            KeyType::Ec { field_bytes } => Some(if *field_bytes == 66 {
                521
            } else {
                field_bytes * 8
            }),
            _ => None,
        })
        .collect();
    let info = |bits: &[usize], flags: CK_FLAGS| CK_MECHANISM_INFO {
        ulMinKeySize: bits.iter().copied().min().unwrap_or(0) as CK_ULONG,
        ulMaxKeySize: bits.iter().copied().max().unwrap_or(0) as CK_ULONG,
        flags,
    };
    if !rsa.is_empty() {
        out.push((CKM_RSA_PKCS, info(&rsa, CKF_SIGN | CKF_DECRYPT)));
        out.push((CKM_RSA_PKCS_OAEP, info(&rsa, CKF_DECRYPT)));
        for m in [
            CKM_RSA_PKCS_PSS,
            CKM_SHA1_RSA_PKCS_PSS,
            CKM_SHA256_RSA_PKCS_PSS,
            CKM_SHA384_RSA_PKCS_PSS,
            CKM_SHA512_RSA_PKCS_PSS,
        ] {
            out.push((m, info(&rsa, CKF_SIGN)));
        }
        for m in [
            CKM_SHA1_RSA_PKCS,
            CKM_SHA256_RSA_PKCS,
            CKM_SHA384_RSA_PKCS,
            CKM_SHA512_RSA_PKCS,
        ] {
            out.push((m, info(&rsa, CKF_SIGN)));
        }
    }
    if !ec.is_empty() {
        let curve = CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS;
        out.push((CKM_ECDSA, info(&ec, CKF_SIGN | curve)));
        for m in [
            CKM_ECDSA_SHA1,
            CKM_ECDSA_SHA256,
            CKM_ECDSA_SHA384,
            CKM_ECDSA_SHA512,
        ] {
            out.push((m, info(&ec, CKF_SIGN | curve)));
        }
        out.push((CKM_ECDH1_DERIVE, info(&ec, CKF_DERIVE | curve)));
    }
    out
}
