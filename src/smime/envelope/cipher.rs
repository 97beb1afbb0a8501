//! The content ciphers: AES-CBC (RFC 3565) and AES-GCM (RFC 5084), their parameters read
//! from an envelope's content-encryption algorithm, and the random keys, IVs and nonces.
//! Triple DES (des-ede3-cbc, RFC 3370 section 5.1) decrypts legacy mail only: nothing here
//! encrypts with it, and the configuration cannot name it.
//!
//! Owns: encrypting and decrypting the content with a content key. Must not touch: where
//! the key comes from (the recipient infos); a decryption failure says nothing of its cause.

use aes_gcm::aead::{AeadInOut, KeyInit};
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use der::Sequence;
use der::asn1::OctetString;
use spki::AlgorithmIdentifierOwned;
use zeroize::Zeroizing;

use crate::oids;
use crate::smime::SmimeError;

/// ```text
/// GCMParameters ::= SEQUENCE { aes-nonce OCTET STRING, aes-ICVlen AES-GCM-ICVlen DEFAULT 12 }
/// ```
#[derive(Sequence)]
pub(super) struct GcmParameters {
    pub(super) nonce: OctetString,
    #[asn1(optional = "true")]
    pub(super) icv_len: Option<u8>,
}

/// Content encryption parameters read from an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ContentCipher {
    Cbc {
        key_len: usize,
    },
    Gcm {
        key_len: usize,
    },
    /// des-ede3-cbc: a 24-byte key, an 8-byte IV.
    TdesCbc,
}

impl ContentCipher {
    pub(super) fn key_len(self) -> usize {
        match self {
            ContentCipher::Cbc { key_len } | ContentCipher::Gcm { key_len } => key_len,
            ContentCipher::TdesCbc => 24,
        }
    }
}

pub(super) fn content_cipher(
    alg: &AlgorithmIdentifierOwned,
) -> Result<(ContentCipher, Vec<u8>), SmimeError> {
    let unsupported = || {
        SmimeError::Unsupported(format!(
            "the content encryption algorithm {} is not one the agent reads",
            alg.oid
        ))
    };
    let params = alg.parameters.as_ref().ok_or_else(unsupported)?;
    let cbc = |key_len| -> Result<(ContentCipher, Vec<u8>), SmimeError> {
        let iv = params
            .decode_as::<OctetString>()
            .map_err(|e| SmimeError::Malformed(format!("CBC IV: {e}")))?;
        if iv.as_bytes().len() != 16 {
            return Err(SmimeError::Malformed("the CBC IV is not 16 bytes".into()));
        }
        Ok((ContentCipher::Cbc { key_len }, iv.as_bytes().to_vec()))
    };
    let gcm = |key_len| -> Result<(ContentCipher, Vec<u8>), SmimeError> {
        let p = params
            .decode_as::<GcmParameters>()
            .map_err(|e| SmimeError::Malformed(format!("GCM parameters: {e}")))?;
        // Only the full 16-byte tag (shorter ones weaken GCM and nobody writes them), said
        // here, before anyone is asked for a PIN.
        let tag_len = p.icv_len.unwrap_or(12);
        if p.nonce.as_bytes().len() != 12 || tag_len != 16 {
            return Err(SmimeError::Unsupported(
                "GCM with a nonce other than 12 bytes or a tag shorter than 16 bytes".into(),
            ));
        }
        Ok((ContentCipher::Gcm { key_len }, p.nonce.as_bytes().to_vec()))
    };
    match alg.oid {
        o if o == oids::ID_AES128_CBC => cbc(16),
        o if o == oids::ID_AES192_CBC => cbc(24),
        o if o == oids::ID_AES256_CBC => cbc(32),
        o if o == oids::ID_AES128_GCM => gcm(16),
        o if o == oids::ID_AES192_GCM => gcm(24),
        o if o == oids::ID_AES256_GCM => gcm(32),
        o if o == oids::ID_DES_EDE3_CBC => {
            let iv = params
                .decode_as::<OctetString>()
                .map_err(|e| SmimeError::Malformed(format!("Triple-DES IV: {e}")))?;
            if iv.as_bytes().len() != 8 {
                return Err(SmimeError::Malformed(
                    "the Triple-DES IV is not 8 bytes".into(),
                ));
            }
            Ok((ContentCipher::TdesCbc, iv.as_bytes().to_vec()))
        }
        _ => Err(unsupported()),
    }
}

pub(super) fn random(len: usize) -> Result<Zeroizing<Vec<u8>>, SmimeError> {
    let mut v = Zeroizing::new(vec![0u8; len]);
    getrandom::fill(&mut v).map_err(|e| SmimeError::Internal(format!("getrandom: {e}")))?;
    Ok(v)
}

pub(super) fn cbc_encrypt(key: &[u8], iv: &[u8], data: &[u8]) -> Result<Vec<u8>, SmimeError> {
    let bad = |_| SmimeError::Internal("AES-CBC key or IV length".into());
    Ok(match key.len() {
        16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(key, iv)
            .map_err(bad)?
            .encrypt_padded_vec::<Pkcs7>(data),
        24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(key, iv)
            .map_err(bad)?
            .encrypt_padded_vec::<Pkcs7>(data),
        _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(key, iv)
            .map_err(bad)?
            .encrypt_padded_vec::<Pkcs7>(data),
    })
}

pub(super) fn cbc_decrypt(key: &[u8], iv: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    match key.len() {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
            .ok()?
            .decrypt_padded_vec::<Pkcs7>(data)
            .ok(),
        24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(key, iv)
            .ok()?
            .decrypt_padded_vec::<Pkcs7>(data)
            .ok(),
        32 => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv)
            .ok()?
            .decrypt_padded_vec::<Pkcs7>(data)
            .ok(),
        _ => None,
    }
}

/// Decrypts legacy des-ede3-cbc content (the key's parity bits are ignored, as everyone
/// does). `None` on a wrong key length, IV or padding.
pub(super) fn tdes_cbc_decrypt(key: &[u8], iv: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    cbc::Decryptor::<des::TdesEde3>::new_from_slices(key, iv)
        .ok()?
        .decrypt_padded_vec::<Pkcs7>(data)
        .ok()
}

pub(super) fn gcm_seal(
    key: &[u8],
    nonce: &[u8],
    data: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), SmimeError> {
    let mut buf = data.to_vec();
    let bad = |_| SmimeError::Internal("AES-GCM key length".into());
    let nonce = aes_gcm::Nonce::<aes_gcm::aes::cipher::consts::U12>::try_from(nonce)
        .map_err(|_| SmimeError::Internal("GCM nonce length".into()))?;
    let tag = match key.len() {
        16 => aes_gcm::Aes128Gcm::new_from_slice(key)
            .map_err(bad)?
            .encrypt_inout_detached(&nonce, &[], buf.as_mut_slice().into()),
        _ => aes_gcm::Aes256Gcm::new_from_slice(key)
            .map_err(bad)?
            .encrypt_inout_detached(&nonce, &[], buf.as_mut_slice().into()),
    }
    .map_err(|_| SmimeError::Internal("AES-GCM encryption".into()))?;
    Ok((buf, tag.to_vec()))
}

pub(super) fn gcm_open(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    data: &[u8],
    tag: &[u8],
) -> Option<Vec<u8>> {
    // Only the full 16-byte tag: shorter tags weaken GCM, and nobody writes them.
    if tag.len() != 16 {
        return None;
    }
    let mut buf = data.to_vec();
    let nonce = aes_gcm::Nonce::<aes_gcm::aes::cipher::consts::U12>::try_from(nonce).ok()?;
    let tag = aes_gcm::Tag::<aes_gcm::aes::cipher::consts::U16>::try_from(tag).ok()?;
    let ok = match key.len() {
        16 => aes_gcm::Aes128Gcm::new_from_slice(key)
            .ok()?
            .decrypt_inout_detached(&nonce, aad, buf.as_mut_slice().into(), &tag)
            .is_ok(),
        24 => {
            aes_gcm::AesGcm::<aes::Aes192, aes_gcm::aes::cipher::consts::U12>::new_from_slice(key)
                .ok()?
                .decrypt_inout_detached(&nonce, aad, buf.as_mut_slice().into(), &tag)
                .is_ok()
        }
        32 => aes_gcm::Aes256Gcm::new_from_slice(key)
            .ok()?
            .decrypt_inout_detached(&nonce, aad, buf.as_mut_slice().into(), &tag)
            .is_ok(),
        _ => false,
    };
    ok.then_some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_192_gcm_opens_as_its_parameters_promise() {
        let (key, nonce) = ([7u8; 24], [1u8; 12]);
        let mut buf = b"content".to_vec();
        let tag =
            aes_gcm::AesGcm::<aes::Aes192, aes_gcm::aes::cipher::consts::U12>::new_from_slice(&key)
                .unwrap()
                .encrypt_inout_detached(&nonce.into(), &[], buf.as_mut_slice().into())
                .unwrap();
        assert_eq!(gcm_open(&key, &nonce, &[], &buf, &tag).unwrap(), b"content");
        assert!(gcm_open(&[8u8; 24], &nonce, &[], &buf, &tag).is_none());
    }
}
