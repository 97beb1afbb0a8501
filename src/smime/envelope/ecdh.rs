//! The key-agreement side of EC recipients (RFC 5753, RFC 8418) once the shared secret `Z`
//! is known: the key-encryption key from the X9.63 KDF over ECC-CMS-SharedInfo, and the
//! content key wrapped or unwrapped under it (AES key wrap, RFC 3394).
//!
//! Owns: the KDF, the key wrap, and finishing an agreement ([`finish_ecdh`]). Must not touch:
//! the ECDH itself (the ephemeral key is `encrypt`'s, the recipient's private key a token's).

use aes_gcm::aead::KeyInit;
use der::Sequence;
use der::asn1::OctetString;
use spki::AlgorithmIdentifierOwned;
use zeroize::Zeroizing;

use super::encoding::{enc, octets};
use crate::alg::Hash;
use crate::oids;
use crate::smime::SmimeError;

/// ```text
/// ECC-CMS-SharedInfo ::= SEQUENCE {
///     keyInfo         AlgorithmIdentifier,
///     entityUInfo [0] EXPLICIT OCTET STRING OPTIONAL,
///     suppPubInfo [2] EXPLICIT OCTET STRING }
/// ```
#[derive(Sequence)]
struct EccCmsSharedInfo {
    key_info: AlgorithmIdentifierOwned,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    entity_u_info: Option<OctetString>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT")]
    supp_pub_info: OctetString,
}

/// What is needed to finish an ECDH key agreement once the shared secret is known.
#[derive(Debug, Clone)]
pub struct EcdhParams {
    /// The originator's public point (SEC1 encoding).
    pub originator_point: Vec<u8>,
    pub(super) kdf: Hash,
    pub(super) wrap: AlgorithmIdentifierOwned,
    pub(super) ukm: Option<Vec<u8>>,
    pub(super) wrapped_key: Vec<u8>,
}

/// KEK = X9.63 KDF(Z, ECC-CMS-SharedInfo) (RFC 5753 7.2, RFC 8418 2.1).
pub(super) fn x963_kek(
    hash: Hash,
    z: &[u8],
    wrap: &AlgorithmIdentifierOwned,
    ukm: Option<&[u8]>,
    kek_len: usize,
) -> Result<Zeroizing<Vec<u8>>, SmimeError> {
    let info = EccCmsSharedInfo {
        key_info: wrap.clone(),
        entity_u_info: ukm.map(|u| octets(u.to_vec())).transpose()?,
        supp_pub_info: octets(((kek_len * 8) as u32).to_be_bytes().to_vec())?,
    };
    let info = enc(&info)?;
    let mut kek = Zeroizing::new(vec![0u8; kek_len]);
    let r = match hash {
        Hash::Sha1 => ansi_x963_kdf::derive_key_into::<sha1::Sha1>(z, &info, &mut kek),
        Hash::Sha256 => ansi_x963_kdf::derive_key_into::<sha2::Sha256>(z, &info, &mut kek),
        Hash::Sha384 => ansi_x963_kdf::derive_key_into::<sha2::Sha384>(z, &info, &mut kek),
        Hash::Sha512 => ansi_x963_kdf::derive_key_into::<sha2::Sha512>(z, &info, &mut kek),
    };
    r.map_err(|e| SmimeError::Internal(format!("X9.63 KDF: {e}")))?;
    Ok(kek)
}

pub(super) fn aes_wrap(kek: &[u8], key: &[u8]) -> Result<Vec<u8>, SmimeError> {
    let mut out = vec![0u8; key.len() + 8];
    let err = |e: aes_kw::Error| SmimeError::Internal(format!("AES key wrap: {e}"));
    match kek.len() {
        16 => aes_kw::KwAes128::new_from_slice(kek)
            .map_err(|_| SmimeError::Internal("KEK length".into()))?
            .wrap_key(key, &mut out)
            .map_err(err)?,
        24 => aes_kw::KwAes192::new_from_slice(kek)
            .map_err(|_| SmimeError::Internal("KEK length".into()))?
            .wrap_key(key, &mut out)
            .map_err(err)?,
        _ => aes_kw::KwAes256::new_from_slice(kek)
            .map_err(|_| SmimeError::Internal("KEK length".into()))?
            .wrap_key(key, &mut out)
            .map_err(err)?,
    };
    Ok(out)
}

/// AES key unwrap; `None` when the integrity check fails (wrong key).
fn aes_unwrap(kek: &[u8], wrapped: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
        return None;
    }
    let mut out = Zeroizing::new(vec![0u8; wrapped.len() - 8]);
    let ok = match kek.len() {
        16 => aes_kw::KwAes128::new_from_slice(kek)
            .ok()?
            .unwrap_key(wrapped, &mut out)
            .is_ok(),
        24 => aes_kw::KwAes192::new_from_slice(kek)
            .ok()?
            .unwrap_key(wrapped, &mut out)
            .is_ok(),
        32 => aes_kw::KwAes256::new_from_slice(kek)
            .ok()?
            .unwrap_key(wrapped, &mut out)
            .is_ok(),
        _ => false,
    };
    ok.then_some(out)
}

/// Finishes an ECDH agreement: KDF over the shared secret `z`, then AES key unwrap. `None`
/// when the wrapped key does not unwrap (the message was not for this key).
pub fn finish_ecdh(z: &[u8], p: &EcdhParams) -> Option<Zeroizing<Vec<u8>>> {
    let kek_len = match p.wrap.oid {
        o if o == oids::ID_AES128_WRAP => 16,
        o if o == oids::ID_AES192_WRAP => 24,
        _ => 32,
    };
    let kek = x963_kek(p.kdf, z, &p.wrap, p.ukm.as_deref(), kek_len).ok()?;
    aes_unwrap(&kek, &p.wrapped_key)
}

/// Unwraps an EC recipient's content key with a given key-encryption key. `finish_ecdh`
/// derives the KEK first; this exists so tests can show that no trivial KEK (all zeros)
/// opens what the agent wrote.
pub fn unwrap_with_kek(p: &EcdhParams, kek: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    aes_unwrap(kek, &p.wrapped_key)
}
