//! CMS EnvelopedData (RFC 5652 section 6) and AuthEnvelopedData (RFC 5083): encrypting to
//! recipients' certificates, and reading envelopes whose private-key step happens elsewhere.
//!
//! Owns: content encryption (AES-CBC, RFC 3565; AES-GCM, RFC 5084), key transport for RSA
//! recipients (PKCS#1 v1.5 and OAEP, RFC 8017) and key agreement for EC recipients (ECDH with
//! the X9.63 KDF and AES key wrap, RFC 5753 / RFC 8418), and the reverse: listing the
//! recipient infos, finishing an ECDH agreement from the shared secret, and decrypting the
//! content. The private-key operation of decryption is the caller's (a token's): this module
//! only says what it must be.
//!
//! The EC recipient info is built here, not with the `cms` crate's
//! `KeyAgreeRecipientInfoBuilder`: in cms 0.3.0-rc.0 that builder wraps the content key
//! under an all-zero key, so anyone could read the message.

use aes_gcm::aead::{AeadInOut, KeyInit};
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use cms::authenveloped_data::AuthEnvelopedData;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    EncryptedContentInfo, EnvelopedData, KeyAgreeRecipientIdentifier, KeyAgreeRecipientInfo,
    KeyTransRecipientInfo, OriginatorIdentifierOrKey, OriginatorPublicKey, RecipientEncryptedKey,
    RecipientIdentifier, RecipientInfo, RecipientInfos,
};
use der::asn1::{Any, BitString, ObjectIdentifier, OctetString, SetOfVec};
use der::{Decode, Encode, Sequence};
use p256::elliptic_curve::Generate;
use spki::AlgorithmIdentifierOwned;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use zeroize::Zeroizing;

use super::{SmimeError, asn1};
use crate::alg::{ContentAlgorithm, Hash};
use crate::certs::{CertFacts, KeyKind};
use crate::oids;

/// Most recipient infos read from one envelope.
pub const MAX_RECIPIENTS: usize = 1000;

// ---------------------------------------------------------------------------------------
// ASN.1 structures the cms crate does not have
// ---------------------------------------------------------------------------------------

/// ```text
/// RSAES-OAEP-params ::= SEQUENCE {
///     hashAlgorithm      [0] HashAlgorithm     DEFAULT sha1,
///     maskGenAlgorithm   [1] MaskGenAlgorithm  DEFAULT mgf1SHA1,
///     pSourceAlgorithm   [2] PSourceAlgorithm  DEFAULT pSpecifiedEmpty }
/// ```
#[derive(Sequence, Default)]
struct OaepParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    hash: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    mgf: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    p_source: Option<AlgorithmIdentifierOwned>,
}

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

/// ```text
/// GCMParameters ::= SEQUENCE { aes-nonce OCTET STRING, aes-ICVlen AES-GCM-ICVlen DEFAULT 12 }
/// ```
#[derive(Sequence)]
struct GcmParameters {
    nonce: OctetString,
    #[asn1(optional = "true")]
    icv_len: Option<u8>,
}

/// ContentInfo with its content decoded in the same pass, so BER (indefinite lengths,
/// constructed strings, as gpgsm and streaming OpenSSL write) is read all the way down.
#[derive(Sequence)]
struct EnvelopedContentInfo {
    content_type: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    content: EnvelopedData,
}

#[derive(Sequence)]
struct AuthEnvelopedContentInfo {
    content_type: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    content: AuthEnvelopedData,
}

// ---------------------------------------------------------------------------------------
// Algorithms
// ---------------------------------------------------------------------------------------

/// How RSA recipients get the content key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaPadding {
    Pkcs1v15,
    /// OAEP with SHA-256 and MGF1-SHA-256.
    OaepSha256,
}

/// Content encryption parameters read from an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentCipher {
    Cbc { key_len: usize },
    Gcm { key_len: usize },
}

fn content_cipher(alg: &AlgorithmIdentifierOwned) -> Result<(ContentCipher, Vec<u8>), SmimeError> {
    let unsupported = || SmimeError::Unsupported(format!("content encryption {}", alg.oid));
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
        _ => Err(unsupported()),
    }
}

fn random(len: usize) -> Result<Zeroizing<Vec<u8>>, SmimeError> {
    let mut v = Zeroizing::new(vec![0u8; len]);
    getrandom::fill(&mut v).map_err(|e| SmimeError::Internal(format!("getrandom: {e}")))?;
    Ok(v)
}

fn enc<T: Encode>(v: &T) -> Result<Vec<u8>, SmimeError> {
    v.to_der().map_err(SmimeError::encode)
}

fn any<T: Encode>(v: &T) -> Result<Any, SmimeError> {
    Any::from_der(&enc(v)?).map_err(SmimeError::encode)
}

fn octets(v: Vec<u8>) -> Result<OctetString, SmimeError> {
    OctetString::new(v).map_err(SmimeError::encode)
}

// ---------------------------------------------------------------------------------------
// Encrypt
// ---------------------------------------------------------------------------------------

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

/// KEK = X9.63 KDF(Z, ECC-CMS-SharedInfo) (RFC 5753 7.2, RFC 8418 2.1).
fn x963_kek(
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

fn aes_wrap(kek: &[u8], key: &[u8]) -> Result<Vec<u8>, SmimeError> {
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

fn cbc_encrypt(key: &[u8], iv: &[u8], data: &[u8]) -> Result<Vec<u8>, SmimeError> {
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

fn cbc_decrypt(key: &[u8], iv: &[u8], data: &[u8]) -> Option<Vec<u8>> {
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

fn gcm_seal(key: &[u8], nonce: &[u8], data: &[u8]) -> Result<(Vec<u8>, Vec<u8>), SmimeError> {
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

fn gcm_open(key: &[u8], nonce: &[u8], aad: &[u8], data: &[u8], tag: &[u8]) -> Option<Vec<u8>> {
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

// ---------------------------------------------------------------------------------------
// Decrypt
// ---------------------------------------------------------------------------------------

/// Who a recipient info is addressed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientId {
    IssuerSerial { issuer: Name, serial: SerialNumber },
    SubjectKeyId(Vec<u8>),
}

impl RecipientId {
    /// Whether `cert` is the one this recipient info names.
    pub fn matches(&self, cert: &CertFacts) -> bool {
        let tbs = cert.cert.tbs_certificate();
        match self {
            RecipientId::IssuerSerial { issuer, serial } => {
                tbs.serial_number() == serial && crate::certs::same_name(tbs.issuer(), issuer)
            }
            RecipientId::SubjectKeyId(id) => cert.subject_key_id.as_deref() == Some(id.as_slice()),
        }
    }
}

/// The private-key step a recipient info needs.
#[derive(Debug, Clone)]
pub enum KeyUnwrap {
    /// RSA PKCS#1 v1.5 decryption of `encrypted_key`.
    RsaPkcs1 { encrypted_key: Vec<u8> },
    /// RSA OAEP decryption.
    RsaOaep {
        encrypted_key: Vec<u8>,
        hash: Hash,
        mgf_hash: Hash,
        label: Vec<u8>,
    },
    /// ECDH with the originator's ephemeral point, then [`finish_ecdh`].
    Ecdh(EcdhParams),
}

/// What is needed to finish an ECDH key agreement once the shared secret is known.
#[derive(Debug, Clone)]
pub struct EcdhParams {
    /// The originator's public point (SEC1 encoding).
    pub originator_point: Vec<u8>,
    kdf: Hash,
    wrap: AlgorithmIdentifierOwned,
    ukm: Option<Vec<u8>>,
    wrapped_key: Vec<u8>,
}

/// One recipient of an envelope.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub id: RecipientId,
    pub unwrap: KeyUnwrap,
}

/// A parsed envelope, waiting for its content key.
pub struct Envelope {
    pub recipients: Vec<Recipient>,
    cipher: ContentCipher,
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
    /// AuthEnvelopedData: the tag, and the DER of the authenticated attributes (AAD).
    tag: Option<Vec<u8>>,
    aad: Vec<u8>,
    /// Some recipient infos could not be read (listed for errors).
    pub skipped: Vec<String>,
}

/// Reads a DER or BER encoded ContentInfo that holds EnvelopedData or AuthEnvelopedData.
pub fn parse(data: &[u8]) -> Result<Envelope, SmimeError> {
    let reader = || asn1::ber_reader(data).map_err(|e| SmimeError::Malformed(e.to_string()));
    // The content type first, so only the matching structure is decoded (an
    // AuthEnvelopedData tried as EnvelopedData would be read, ciphertext and all, in vain),
    // and a damaged EnvelopedData reports its own error.
    if asn1::content_type(data) == Some(oids::ID_ENVELOPED_DATA) {
        let ci = EnvelopedContentInfo::decode(&mut reader()?)
            .map_err(|e| SmimeError::Malformed(format!("not a CMS EnvelopedData: {e}")))?;
        let ed = ci.content;
        let (cipher, iv) = content_cipher(&ed.encrypted_content.content_enc_alg)?;
        let ciphertext = ed
            .encrypted_content
            .encrypted_content
            .ok_or_else(|| SmimeError::Malformed("the envelope carries no content".into()))?;
        let (recipients, skipped) = read_recipients(&ed.recip_infos)?;
        return Ok(Envelope {
            recipients,
            cipher,
            iv,
            ciphertext: ciphertext.into_bytes().into_vec(),
            tag: None,
            aad: vec![],
            skipped,
        });
    }
    let ci = AuthEnvelopedContentInfo::decode(&mut reader()?).map_err(|e| {
        SmimeError::Malformed(format!("not a CMS EnvelopedData or AuthEnvelopedData: {e}"))
    })?;
    if ci.content_type != oids::ID_CT_AUTH_ENVELOPED_DATA {
        return Err(SmimeError::Malformed(format!(
            "content type {} is not an envelope",
            ci.content_type
        )));
    }
    let aed = ci.content;
    let (cipher, iv) = content_cipher(&aed.auth_encrypted_content_info.content_enc_alg)?;
    if !matches!(cipher, ContentCipher::Gcm { .. }) {
        return Err(SmimeError::Unsupported(
            "AuthEnvelopedData with a cipher that does not authenticate".into(),
        ));
    }
    let ciphertext = aed
        .auth_encrypted_content_info
        .encrypted_content
        .ok_or_else(|| SmimeError::Malformed("the envelope carries no content".into()))?;
    // RFC 5083 2.1: the AAD is the DER of the authenticated attributes as a SET OF.
    let aad = match &aed.auth_attrs {
        Some(a) => enc(a)?,
        None => vec![],
    };
    let (recipients, skipped) = read_recipients(&aed.recip_infos)?;
    Ok(Envelope {
        recipients,
        cipher,
        iv,
        ciphertext: ciphertext.into_bytes().into_vec(),
        tag: Some(aed.mac.into_bytes().into_vec()),
        aad,
        skipped,
    })
}

fn read_recipients(infos: &RecipientInfos) -> Result<(Vec<Recipient>, Vec<String>), SmimeError> {
    if infos.0.len() > MAX_RECIPIENTS {
        return Err(SmimeError::Limit(format!(
            "the envelope has {} recipient infos; at most {MAX_RECIPIENTS} are read",
            infos.0.len()
        )));
    }
    let mut out = vec![];
    let mut skipped = vec![];
    for info in infos.0.iter() {
        match info {
            RecipientInfo::Ktri(k) => match ktri_unwrap(k) {
                Ok(u) => out.push(Recipient {
                    id: match &k.rid {
                        RecipientIdentifier::IssuerAndSerialNumber(i) => {
                            RecipientId::IssuerSerial {
                                issuer: i.issuer.clone(),
                                serial: i.serial_number.clone(),
                            }
                        }
                        RecipientIdentifier::SubjectKeyIdentifier(s) => {
                            RecipientId::SubjectKeyId(s.0.as_bytes().to_vec())
                        }
                    },
                    unwrap: u,
                }),
                Err(e) => skipped.push(e),
            },
            RecipientInfo::Kari(k) => match kari_params(k) {
                Ok((point, kdf, wrap)) => {
                    for rek in &k.recipient_enc_keys {
                        let id = match &rek.rid {
                            KeyAgreeRecipientIdentifier::IssuerAndSerialNumber(i) => {
                                RecipientId::IssuerSerial {
                                    issuer: i.issuer.clone(),
                                    serial: i.serial_number.clone(),
                                }
                            }
                            KeyAgreeRecipientIdentifier::RKeyId(r) => RecipientId::SubjectKeyId(
                                r.subject_key_identifier.0.as_bytes().to_vec(),
                            ),
                        };
                        out.push(Recipient {
                            id,
                            unwrap: KeyUnwrap::Ecdh(EcdhParams {
                                originator_point: point.clone(),
                                kdf,
                                wrap: wrap.clone(),
                                ukm: k.ukm.as_ref().map(|u| u.as_bytes().to_vec()),
                                wrapped_key: rek.enc_key.as_bytes().to_vec(),
                            }),
                        });
                    }
                }
                Err(e) => skipped.push(e),
            },
            RecipientInfo::Kekri(_) => skipped.push("a KEK recipient (shared key)".into()),
            RecipientInfo::Pwri(_) => skipped.push("a password recipient".into()),
            RecipientInfo::Ori(_) => skipped.push("an other-type recipient".into()),
        }
    }
    Ok((out, skipped))
}

fn ktri_unwrap(k: &KeyTransRecipientInfo) -> Result<KeyUnwrap, String> {
    let encrypted_key = k.enc_key.as_bytes().to_vec();
    let alg = &k.key_enc_alg;
    if alg.oid == oids::RSA_ENCRYPTION {
        return Ok(KeyUnwrap::RsaPkcs1 { encrypted_key });
    }
    if alg.oid != oids::ID_RSAES_OAEP {
        return Err(format!("key transport algorithm {}", alg.oid));
    }
    let params = match &alg.parameters {
        Some(p) => p
            .decode_as::<OaepParams>()
            .map_err(|e| format!("OAEP parameters: {e}"))?,
        None => OaepParams::default(),
    };
    let hash = match &params.hash {
        Some(h) => Hash::from_oid(&h.oid).ok_or_else(|| format!("OAEP hash {}", h.oid))?,
        None => Hash::Sha1,
    };
    let mgf_hash = match &params.mgf {
        Some(m) if m.oid == oids::ID_MGF1 => {
            let inner = m
                .parameters
                .as_ref()
                .ok_or("MGF1 without a hash")?
                .decode_as::<AlgorithmIdentifierOwned>()
                .map_err(|e| format!("MGF1 hash: {e}"))?;
            Hash::from_oid(&inner.oid).ok_or_else(|| format!("MGF1 hash {}", inner.oid))?
        }
        Some(m) => return Err(format!("mask generation {}", m.oid)),
        None => Hash::Sha1,
    };
    let label = match &params.p_source {
        Some(p) if p.oid == oids::ID_P_SPECIFIED => match &p.parameters {
            Some(l) => l
                .decode_as::<OctetString>()
                .map_err(|e| format!("OAEP label: {e}"))?
                .into_bytes()
                .into_vec(),
            None => vec![],
        },
        Some(p) => return Err(format!("OAEP label source {}", p.oid)),
        None => vec![],
    };
    Ok(KeyUnwrap::RsaOaep {
        encrypted_key,
        hash,
        mgf_hash,
        label,
    })
}

fn kari_params(
    k: &KeyAgreeRecipientInfo,
) -> Result<(Vec<u8>, Hash, AlgorithmIdentifierOwned), String> {
    let OriginatorIdentifierOrKey::OriginatorKey(key) = &k.originator else {
        return Err("key agreement with a static originator key".into());
    };
    let point = key
        .public_key
        .as_bytes()
        .ok_or("originator key with unused bits")?
        .to_vec();
    let kdf = match k.key_enc_alg.oid {
        o if o == oids::DH_SINGLE_PASS_STD_DH_SHA1KDF => Hash::Sha1,
        o if o == oids::DH_SINGLE_PASS_STD_DH_SHA256KDF => Hash::Sha256,
        o if o == oids::DH_SINGLE_PASS_STD_DH_SHA384KDF => Hash::Sha384,
        o if o == oids::DH_SINGLE_PASS_STD_DH_SHA512KDF => Hash::Sha512,
        o => return Err(format!("key agreement algorithm {o}")),
    };
    let wrap = k
        .key_enc_alg
        .parameters
        .as_ref()
        .ok_or("key agreement without a key wrap algorithm")?
        .decode_as::<AlgorithmIdentifierOwned>()
        .map_err(|e| format!("key wrap algorithm: {e}"))?;
    if ![
        oids::ID_AES128_WRAP,
        oids::ID_AES192_WRAP,
        oids::ID_AES256_WRAP,
    ]
    .contains(&wrap.oid)
    {
        return Err(format!("key wrap algorithm {}", wrap.oid));
    }
    Ok((point, kdf, wrap))
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

impl Envelope {
    /// The size of the encrypted content.
    pub fn content_len(&self) -> usize {
        self.ciphertext.len()
    }

    /// AuthEnvelopedData: the content is integrity-protected.
    pub fn is_authenticated(&self) -> bool {
        self.tag.is_some()
    }

    /// The content key length this envelope needs.
    pub fn key_len(&self) -> usize {
        match self.cipher {
            ContentCipher::Cbc { key_len } | ContentCipher::Gcm { key_len, .. } => key_len,
        }
    }

    /// Decrypts the content with the content key. Every failure (wrong key length, bad
    /// padding, bad tag) is the same error, so a failed RSA v1.5 unwrap that went on with a
    /// random key cannot be told apart from a wrong key (RFC 3218 section 2.3).
    /// A key of the wrong length (a well-padded RSA v1.5 block holding another length) is
    /// not refused at once: the content is decrypted with a decoy key all the same, so it
    /// takes as long as a failed unwrap (the decoy path) or a wrong key.
    pub fn decrypt(&self, cek: &[u8]) -> Result<Vec<u8>, SmimeError> {
        let decoy;
        let (key, right_len) = if cek.len() == self.key_len() {
            (cek, true)
        } else {
            decoy = self.decoy_key()?;
            (&decoy[..], false)
        };
        let out = match (self.cipher, &self.tag) {
            (ContentCipher::Cbc { .. }, _) => cbc_decrypt(key, &self.iv, &self.ciphertext),
            (ContentCipher::Gcm { .. }, Some(tag)) => {
                gcm_open(key, &self.iv, &self.aad, &self.ciphertext, tag)
            }
            (ContentCipher::Gcm { .. }, None) => None,
        };
        out.filter(|_| right_len).ok_or(SmimeError::DecryptFailed)
    }

    /// A random key of the right length, to go on with when an RSA v1.5 unwrap failed.
    pub fn decoy_key(&self) -> Result<Zeroizing<Vec<u8>>, SmimeError> {
        random(self.key_len())
    }
}

/// The content key in a raw RSA result under PKCS#1 v1.5 (RFC 8017 section 7.2.2):
/// `EM = 0x00 || 0x02 || PS || 0x00 || K`, PS at least 8 non-zero bytes. It is checked in
/// constant time for a key exactly as long as `decoy` (a random key of the length the
/// content cipher needs), and `decoy` comes back instead of anything malformed or of
/// another length. So a bad padding, a key of the wrong length and a good key take the same
/// steps and the same time, and the content decryption that follows fails alike (RFC 3218
/// section 2.3.2; the fixed-length check is what closes Bleichenbacher's and the Marvin
/// oracle). `em` must be as long as the modulus (left-pad a token's shorter answer).
/// Written by hand: the rsa crate's unpadding is private and answers with an error, not a
/// decoy.
pub fn pkcs1_v15_content_key(em: &[u8], decoy: Zeroizing<Vec<u8>>) -> Zeroizing<Vec<u8>> {
    use subtle::{ConditionallySelectable, ConstantTimeEq};
    let key_len = decoy.len();
    let k = em.len();
    // Lengths are public (the modulus and the content cipher).
    if k < key_len + 11 {
        return decoy;
    }
    let sep = k - key_len - 1;
    let mut good = em[0].ct_eq(&0) & em[1].ct_eq(&2) & em[sep].ct_eq(&0);
    for b in &em[2..sep] {
        good &= !b.ct_eq(&0);
    }
    let mut key = decoy;
    for (out, m) in key.iter_mut().zip(&em[sep + 1..]) {
        out.conditional_assign(m, good);
    }
    key
}

/// OAEP decoding (RFC 8017 section 7.1.2 steps 3) of a raw RSA result, for tokens that do
/// only raw RSA (CKM_RSA_X_509) or lack the OAEP parameters asked for (SoftHSM has no
/// SHA-256 OAEP). Written by hand because the rsa crate keeps its OAEP decoding private.
/// Every failure is the same error and the checks run to the end (no early return on the
/// first mismatch).
pub fn oaep_decode(
    em: &[u8],
    hash: Hash,
    mgf_hash: Hash,
    label: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let h_len = hash.output_len();
    let k = em.len();
    if k < 2 * h_len + 2 {
        return None;
    }
    let l_hash = hash.digest(label);
    let y = em[0];
    let (masked_seed, masked_db) = em[1..].split_at(h_len);
    let seed_mask = mgf1(mgf_hash, masked_db, h_len);
    let seed: Vec<u8> = masked_seed
        .iter()
        .zip(&seed_mask)
        .map(|(a, b)| a ^ b)
        .collect();
    let db_mask = mgf1(mgf_hash, &seed, k - h_len - 1);
    let db = Zeroizing::new(
        masked_db
            .iter()
            .zip(&db_mask)
            .map(|(a, b)| a ^ b)
            .collect::<Vec<u8>>(),
    );
    let mut bad = (y != 0) as u8;
    for (a, b) in db[..h_len].iter().zip(&l_hash) {
        bad |= a ^ b;
    }
    // Find the 0x01 separator after the zero padding, looking at every byte.
    let mut index = 0usize;
    let mut looking = 1u8;
    for (i, &b) in db[h_len..].iter().enumerate() {
        let is_one = (b == 1) as u8;
        let is_zero = (b == 0) as u8;
        index |= (looking & is_one) as usize * (i + 1);
        bad |= looking & (1 - is_one) & (1 - is_zero);
        looking &= 1 - is_one;
    }
    bad |= looking;
    if bad != 0 {
        return None;
    }
    Some(Zeroizing::new(db[h_len + index..].to_vec()))
}

fn mgf1(hash: Hash, seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + hash.output_len());
    let mut counter = 0u32;
    while out.len() < len {
        let mut input = seed.to_vec();
        input.extend_from_slice(&counter.to_be_bytes());
        out.extend_from_slice(&hash.digest(&input));
        counter += 1;
    }
    out.truncate(len);
    out
}

/// The integer value of a serial number, for messages.
pub fn serial_hex(serial: &SerialNumber) -> String {
    crate::certs::hex(serial.as_bytes())
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

    /// A PKCS#1 v1.5 block of `k` bytes around `key`, with a non-zero padding string.
    fn em(k: usize, key: &[u8]) -> Vec<u8> {
        let mut em = vec![0u8, 2];
        em.resize(k - key.len() - 1, 0x5a);
        em.push(0);
        em.extend_from_slice(key);
        em
    }

    #[test]
    fn a_well_formed_pkcs1_block_gives_its_key_and_anything_else_the_decoy() {
        let decoy = || Zeroizing::new(vec![0xd0u8; 32]);
        let key = [0x11u8; 32];
        let good = em(256, &key);
        assert_eq!(&pkcs1_v15_content_key(&good, decoy())[..], &key);
        let mut cases: Vec<(&str, Vec<u8>)> = vec![];
        let mut b = good.clone();
        b[0] = 1;
        cases.push(("first byte not zero", b));
        let mut b = good.clone();
        b[1] = 1;
        cases.push(("block type 1", b));
        let mut b = good.clone();
        b[256 - 33] = 0x5a;
        cases.push(("no zero before the key", b));
        let mut b = good.clone();
        b[5] = 0;
        cases.push(("a zero inside the padding (a longer key)", b));
        cases.push(("a 16-byte key", em(256, &[0x11u8; 16])));
        cases.push(("a 48-byte key", em(256, &[0x11u8; 48])));
        cases.push(("a modulus too short for the key", em(40, &key)));
        for (what, block) in cases {
            assert_eq!(
                &pkcs1_v15_content_key(&block, decoy())[..],
                &[0xd0u8; 32],
                "{what}"
            );
        }
    }

    #[test]
    fn a_content_key_of_the_wrong_length_fails_like_a_wrong_key() {
        let env = Envelope {
            cipher: ContentCipher::Cbc { key_len: 32 },
            iv: vec![0; 16],
            ciphertext: vec![0; 32],
            aad: vec![],
            tag: None,
            recipients: vec![],
            skipped: vec![],
        };
        assert!(matches!(
            env.decrypt(&[1u8; 16]),
            Err(SmimeError::DecryptFailed)
        ));
    }

    #[test]
    fn oaep_decode_round_trips_with_the_rsa_crate() {
        use rsa::traits::PublicKeyParts;
        let mut rng = rsa::rand_core::UnwrapErr(getrandom::SysRng);
        let key = rsa::RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let public = key.to_public_key();
        let ct = public
            .encrypt(
                &mut rng,
                rsa::Oaep::<sha2::Sha256>::new(),
                b"content key 32 bytes long.......",
            )
            .unwrap();
        // Raw RSA as a token's CKM_RSA_X_509 would give it.
        let c = rsa::BoxedUint::from_be_slice(&ct, key.n().bits()).unwrap();
        let m = rsa::hazmat::rsa_decrypt_and_check(
            &key,
            None::<&mut rsa::rand_core::UnwrapErr<getrandom::SysRng>>,
            &c,
        )
        .unwrap();
        let mut em = m.to_be_bytes().to_vec();
        while em.len() < public.size() {
            em.insert(0, 0);
        }
        let k = em.len() - public.size();
        let em = &em[k..];
        let out = oaep_decode(em, Hash::Sha256, Hash::Sha256, b"").unwrap();
        assert_eq!(&out[..], b"content key 32 bytes long.......");
        let mut tampered = em.to_vec();
        tampered[5] ^= 1;
        assert!(oaep_decode(&tampered, Hash::Sha256, Hash::Sha256, b"").is_none());
        assert!(oaep_decode(em, Hash::Sha1, Hash::Sha1, b"").is_none());
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for bad in [
            &b""[..],
            b"\x30\x80\x00\x00",
            b"\x30\x03\x06\x01\x00",
            &[0xa0; 64],
        ] {
            assert!(parse(bad).is_err());
        }
    }
}
