//! Building envelopes: one random content key, the content encrypted under it
//! (AuthEnvelopedData for AES-GCM, EnvelopedData for AES-CBC), and the key given to every
//! recipient: key transport for RSA (PKCS#1 v1.5 or OAEP-SHA256, RFC 8017) and key
//! agreement for EC (an ephemeral ECDH key on the recipient's curve, RFC 5753 / RFC 8418).
//!
//! Owns: [`encrypt`] and the recipient infos it writes. Must not touch: choosing recipients
//! or algorithms (the caller's), reading envelopes (`read`).
//!
//! The EC recipient info is built here, not with the `cms` crate's
//! `KeyAgreeRecipientInfoBuilder`: in cms 0.3.0-rc.0 that builder wraps the content key
//! under an all-zero key, so anyone could read the message.

use cms::authenveloped_data::AuthEnvelopedData;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    EncryptedContentInfo, EnvelopedData, KeyAgreeRecipientIdentifier, KeyAgreeRecipientInfo,
    KeyTransRecipientInfo, OriginatorIdentifierOrKey, OriginatorPublicKey, RecipientEncryptedKey,
    RecipientIdentifier, RecipientInfo, RecipientInfos,
};
use der::asn1::{Any, BitString, ObjectIdentifier, SetOfVec};
use p256::elliptic_curve::Generate;
use spki::AlgorithmIdentifierOwned;
use zeroize::Zeroizing;

use super::cipher::{GcmParameters, cbc_encrypt, gcm_seal, random};
use super::ecdh::{aes_wrap, x963_kek};
use super::encoding::{OaepParams, any, enc, octets};
use crate::alg::{ContentAlgorithm, Hash};
use crate::certs::{CertFacts, KeyKind};
use crate::oids;
use crate::smime::{SmimeError, asn1};

/// How RSA recipients get the content key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaPadding {
    Pkcs1v15,
    /// OAEP with SHA-256 and MGF1-SHA-256.
    OaepSha256,
}

/// A recipient of an envelope.
pub struct EncryptTo<'a> {
    pub cert: &'a CertFacts,
    pub rsa_padding: RsaPadding,
}

/// Encrypts `content` (a MIME entity) to every recipient. AES-GCM gives AuthEnvelopedData,
/// AES-CBC EnvelopedData. Returns a DER ContentInfo.
pub fn encrypt(
    content: &[u8],
    recipients: &[EncryptTo<'_>],
    alg: ContentAlgorithm,
) -> Result<Vec<u8>, SmimeError> {
    if recipients.is_empty() {
        return Err(SmimeError::Internal("no recipient".into()));
    }
    let (key_len, gcm) = match alg {
        ContentAlgorithm::Aes128Cbc => (16, false),
        ContentAlgorithm::Aes256Cbc => (32, false),
        ContentAlgorithm::Aes128Gcm => (16, true),
        ContentAlgorithm::Aes256Gcm => (32, true),
    };
    let cek = random(key_len)?;
    let mut infos = SetOfVec::new();
    for r in recipients {
        infos
            .insert(recipient_info(r, &cek)?)
            .map_err(SmimeError::encode)?;
    }
    let recip_infos = RecipientInfos(infos);

    if gcm {
        let nonce = random(12)?;
        let (ciphertext, tag) = gcm_seal(&cek, &nonce, content)?;
        let params = GcmParameters {
            nonce: octets(nonce.to_vec())?,
            icv_len: Some(16),
        };
        let oid = if key_len == 16 {
            oids::ID_AES128_GCM
        } else {
            oids::ID_AES256_GCM
        };
        let aed = AuthEnvelopedData {
            version: CmsVersion::V0,
            originator_info: None,
            recip_infos,
            auth_encrypted_content_info: EncryptedContentInfo {
                content_type: oids::ID_DATA,
                content_enc_alg: AlgorithmIdentifierOwned {
                    oid,
                    parameters: Some(any(&params)?),
                },
                encrypted_content: Some(octets(ciphertext)?),
            },
            auth_attrs: None,
            mac: octets(tag)?,
            unauth_attrs: None,
        };
        return enc(&ContentInfo {
            content_type: oids::ID_CT_AUTH_ENVELOPED_DATA,
            content: any(&aed)?,
        });
    }

    let iv = random(16)?;
    let ciphertext = cbc_encrypt(&cek, &iv, content)?;
    let oid = if key_len == 16 {
        oids::ID_AES128_CBC
    } else {
        oids::ID_AES256_CBC
    };
    // RFC 5652 6.1: version 2 when any recipient info is not version 0 (key agreement is 3).
    let version = if recipients.iter().any(|r| r.cert.key.is_ec()) {
        CmsVersion::V2
    } else {
        CmsVersion::V0
    };
    let ed = EnvelopedData {
        version,
        originator_info: None,
        recip_infos,
        encrypted_content: EncryptedContentInfo {
            content_type: oids::ID_DATA,
            content_enc_alg: AlgorithmIdentifierOwned {
                oid,
                parameters: Some(any(&octets(iv.to_vec())?)?),
            },
            encrypted_content: Some(octets(ciphertext)?),
        },
        unprotected_attrs: None,
    };
    enc(&ContentInfo {
        content_type: oids::ID_ENVELOPED_DATA,
        content: any(&ed)?,
    })
}

fn recipient_info(r: &EncryptTo<'_>, cek: &[u8]) -> Result<RecipientInfo, SmimeError> {
    match r.cert.key {
        KeyKind::Rsa { .. } => ktri(r, cek),
        KeyKind::EcP256 | KeyKind::EcP384 => kari(r.cert, cek),
        KeyKind::EcP521 => Err(SmimeError::UnsupportedKey(format!(
            "{}: P-521 recipients are not supported",
            r.cert.subject
        ))),
    }
}

fn ktri(r: &EncryptTo<'_>, cek: &[u8]) -> Result<RecipientInfo, SmimeError> {
    use rsa::pkcs8::DecodePublicKey;
    let spki = enc(r.cert.cert.tbs_certificate().subject_public_key_info())?;
    let key = rsa::RsaPublicKey::from_public_key_der(&spki)
        .map_err(|e| SmimeError::UnsupportedKey(format!("{}: {e}", r.cert.subject)))?;
    let mut rng = rsa::rand_core::UnwrapErr(getrandom::SysRng);
    let (alg, encrypted) = match r.rsa_padding {
        RsaPadding::Pkcs1v15 => (
            AlgorithmIdentifierOwned {
                oid: oids::RSA_ENCRYPTION,
                parameters: Some(Any::null()),
            },
            key.encrypt(&mut rng, rsa::Pkcs1v15Encrypt, cek),
        ),
        RsaPadding::OaepSha256 => {
            let sha256 = AlgorithmIdentifierOwned {
                oid: oids::ID_SHA256,
                parameters: Some(Any::null()),
            };
            let params = OaepParams {
                hash: Some(sha256.clone()),
                mgf: Some(AlgorithmIdentifierOwned {
                    oid: oids::ID_MGF1,
                    parameters: Some(any(&sha256)?),
                }),
                p_source: None,
            };
            (
                AlgorithmIdentifierOwned {
                    oid: oids::ID_RSAES_OAEP,
                    parameters: Some(any(&params)?),
                },
                key.encrypt(&mut rng, rsa::Oaep::<sha2::Sha256>::new(), cek),
            )
        }
    };
    let encrypted = encrypted.map_err(|e| SmimeError::Internal(format!("RSA encryption: {e}")))?;
    Ok(RecipientInfo::Ktri(KeyTransRecipientInfo {
        version: CmsVersion::V0,
        rid: RecipientIdentifier::IssuerAndSerialNumber(asn1::issuer_serial(r.cert)),
        key_enc_alg: alg,
        enc_key: octets(encrypted)?,
    }))
}

/// The key-wrap algorithm for a content key of `len` bytes.
fn wrap_alg(len: usize) -> ObjectIdentifier {
    match len {
        16 => oids::ID_AES128_WRAP,
        24 => oids::ID_AES192_WRAP,
        _ => oids::ID_AES256_WRAP,
    }
}

fn kari(cert: &CertFacts, cek: &[u8]) -> Result<RecipientInfo, SmimeError> {
    let point = cert
        .cert
        .tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| SmimeError::UnsupportedKey("EC point with unused bits".into()))?;
    let bad_key = |e: String| SmimeError::UnsupportedKey(format!("{}: {e}", cert.subject));
    // An ephemeral key on the recipient's curve; Z is the x coordinate of the shared point.
    let (ephemeral_point, z, kdf_hash, kdf_oid): (Vec<u8>, Zeroizing<Vec<u8>>, Hash, _) =
        match cert.key {
            KeyKind::EcP256 => {
                let peer =
                    p256::PublicKey::from_sec1_bytes(point).map_err(|e| bad_key(e.to_string()))?;
                let eph = p256::ecdh::EphemeralSecret::generate_from_rng(
                    &mut rsa::rand_core::UnwrapErr(getrandom::SysRng),
                );
                let z = eph.diffie_hellman(&peer);
                (
                    uncompressed_p256(&eph.public_key()),
                    Zeroizing::new(z.raw_secret_bytes().to_vec()),
                    Hash::Sha256,
                    oids::DH_SINGLE_PASS_STD_DH_SHA256KDF,
                )
            }
            KeyKind::EcP384 => {
                let peer =
                    p384::PublicKey::from_sec1_bytes(point).map_err(|e| bad_key(e.to_string()))?;
                let eph = p384::ecdh::EphemeralSecret::generate_from_rng(
                    &mut rsa::rand_core::UnwrapErr(getrandom::SysRng),
                );
                let z = eph.diffie_hellman(&peer);
                (
                    uncompressed_p384(&eph.public_key()),
                    Zeroizing::new(z.raw_secret_bytes().to_vec()),
                    Hash::Sha384,
                    oids::DH_SINGLE_PASS_STD_DH_SHA384KDF,
                )
            }
            _ => return Err(bad_key("not an EC key".into())),
        };
    let wrap = AlgorithmIdentifierOwned {
        oid: wrap_alg(cek.len()),
        parameters: None,
    };
    let kek = x963_kek(kdf_hash, &z, &wrap, None, cek.len())?;
    let wrapped = aes_wrap(&kek, cek)?;
    Ok(RecipientInfo::Kari(KeyAgreeRecipientInfo {
        version: CmsVersion::V3,
        originator: OriginatorIdentifierOrKey::OriginatorKey(OriginatorPublicKey {
            // RFC 5753 7.1.1: id-ecPublicKey, parameters absent (the recipient's curve).
            algorithm: AlgorithmIdentifierOwned {
                oid: oids::ID_EC_PUBLIC_KEY,
                parameters: None,
            },
            public_key: BitString::from_bytes(&ephemeral_point).map_err(SmimeError::encode)?,
        }),
        ukm: None,
        key_enc_alg: AlgorithmIdentifierOwned {
            oid: kdf_oid,
            parameters: Some(any(&wrap)?),
        },
        recipient_enc_keys: vec![RecipientEncryptedKey {
            rid: KeyAgreeRecipientIdentifier::IssuerAndSerialNumber(asn1::issuer_serial(cert)),
            enc_key: octets(wrapped)?,
        }],
    }))
}

fn uncompressed_p256(k: &p256::PublicKey) -> Vec<u8> {
    use p256::elliptic_curve::sec1::ToSec1Point;
    k.as_affine().to_sec1_point(false).as_bytes().to_vec()
}

fn uncompressed_p384(k: &p384::PublicKey) -> Vec<u8> {
    use p384::elliptic_curve::sec1::ToSec1Point;
    k.as_affine().to_sec1_point(false).as_bytes().to_vec()
}
