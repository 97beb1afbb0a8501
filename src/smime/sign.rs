//! CMS SignedData (RFC 5652) for S/MIME (RFC 8551), with the private-key step outside.
//!
//! Owns: digesting the content, the signed attributes, the bytes the token must sign, and
//! assembling SignedData around the token's raw signature. Signing is split in two
//! ([`prepare`], then [`Prepared::finish`]) so the token step, which may wait for a PIN,
//! happens in between without this module knowing about tokens. `finish` verifies the
//! token's signature against the certificate before it is released: a faulty RSA-CRT
//! signature would otherwise leak the private key (Boneh-DeMillo-Lipton).

use std::time::SystemTime;

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignatureValue, SignedData, SignerIdentifier,
    SignerInfo, SignerInfos,
};
use der::asn1::{Any, ObjectIdentifier, OctetString, SetOfVec};
use der::{Decode, Encode, Sequence};
use sha2::Digest;
use signature::hazmat::PrehashVerifier;
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_cert::attr::{Attribute, AttributeValue};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Time;

use super::SmimeError;
use crate::alg::{ContentAlgorithm, DigestAlgorithm};
use crate::certs::{CertFacts, KeyKind};
use crate::oids;

/// The raw private-key operation the token must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawSign {
    /// PKCS#1 v1.5 signature (CKM_RSA_PKCS) over this DER DigestInfo.
    RsaPkcs1DigestInfo(Vec<u8>),
    /// ECDSA (CKM_ECDSA) over this hash; the token returns r || s.
    EcdsaHash(Vec<u8>),
}

impl RawSign {
    pub fn data(&self) -> &[u8] {
        match self {
            RawSign::RsaPkcs1DigestInfo(d) | RawSign::EcdsaHash(d) => d,
        }
    }
}

/// What to sign and how.
pub struct SignRequest<'a> {
    /// The content exactly as signed (for S/MIME: the canonical MIME entity).
    pub content: &'a [u8],
    pub signer: &'a CertFacts,
    /// Other certificates to carry (the chain without the root), signer's issuer first.
    pub extra_certs: &'a [Certificate],
    pub digest: DigestAlgorithm,
    pub signing_time: SystemTime,
    /// Content encryption algorithms to advertise in SMIMECapabilities, preferred first.
    pub capabilities: &'a [ContentAlgorithm],
    /// Carry the content inside SignedData (opaque) instead of detached (clear-signed).
    pub embed_content: bool,
}

/// SignedData waiting for the token's signature.
pub struct Prepared {
    signer: CertFacts,
    certificates: Vec<Certificate>,
    digest: DigestAlgorithm,
    signed_attrs: SetOfVec<Attribute>,
    /// Digest of the DER signed attributes (what the signature covers).
    attrs_digest: Vec<u8>,
    /// The DER signed attributes themselves (for a verifier that hashes them itself).
    attrs_der: Vec<u8>,
    econtent: Option<Vec<u8>>,
    pub raw: RawSign,
}

/// ESS SigningCertificateV2 (RFC 5035), which binds the signature to the signer's
/// certificate, so a substituted certificate with the same key is detected.
///
/// ```text
/// SigningCertificateV2 ::= SEQUENCE { certs SEQUENCE OF ESSCertIDv2, policies ... OPTIONAL }
/// ESSCertIDv2 ::= SEQUENCE {
///     hashAlgorithm AlgorithmIdentifier DEFAULT {algorithm id-sha256},
///     certHash OCTET STRING, issuerSerial IssuerSerial OPTIONAL }
/// IssuerSerial ::= SEQUENCE { issuer GeneralNames, serialNumber CertificateSerialNumber }
/// ```
#[derive(Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
}

#[derive(Sequence)]
struct EssCertIdV2 {
    // hashAlgorithm is id-sha256, the DEFAULT, so DER leaves it out.
    cert_hash: OctetString,
    issuer_serial: IssuerSerial,
}

#[derive(Sequence)]
struct IssuerSerial {
    issuer: Vec<GeneralName>,
    serial_number: SerialNumber,
}

fn digest_oid(d: DigestAlgorithm) -> ObjectIdentifier {
    match d {
        DigestAlgorithm::Sha256 => oids::ID_SHA256,
        DigestAlgorithm::Sha384 => oids::ID_SHA384,
        DigestAlgorithm::Sha512 => oids::ID_SHA512,
    }
}

/// The `micalg` parameter of multipart/signed (RFC 8551 section 3.5.3.2).
pub fn micalg(d: DigestAlgorithm) -> &'static str {
    match d {
        DigestAlgorithm::Sha256 => "sha-256",
        DigestAlgorithm::Sha384 => "sha-384",
        DigestAlgorithm::Sha512 => "sha-512",
    }
}

pub fn hash(d: DigestAlgorithm, data: &[u8]) -> Vec<u8> {
    match d {
        DigestAlgorithm::Sha256 => sha2::Sha256::digest(data).to_vec(),
        DigestAlgorithm::Sha384 => sha2::Sha384::digest(data).to_vec(),
        DigestAlgorithm::Sha512 => sha2::Sha512::digest(data).to_vec(),
    }
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, SmimeError> {
    let mut values = SetOfVec::new();
    values.insert(value).map_err(SmimeError::encode)?;
    Ok(Attribute { oid, values })
}

fn any_of<T: Encode>(v: &T) -> Result<AttributeValue, SmimeError> {
    Any::from_der(&v.to_der().map_err(SmimeError::encode)?).map_err(SmimeError::encode)
}

/// Digests the content, builds the signed attributes and says what the token must sign.
pub fn prepare(req: &SignRequest<'_>) -> Result<Prepared, SmimeError> {
    let content_digest = hash(req.digest, req.content);
    let cert = &req.signer.cert;
    let tbs = cert.tbs_certificate();

    let mut attrs = SetOfVec::new();
    let mut add = |a: Attribute| attrs.insert(a).map_err(SmimeError::encode);
    add(attribute(oids::ID_CONTENT_TYPE, any_of(&oids::ID_DATA)?)?)?;
    // RFC 5652 section 11.3: UTCTime through 2049, GeneralizedTime after.
    let when = Time::try_from(req.signing_time).map_err(SmimeError::encode)?;
    add(attribute(oids::ID_SIGNING_TIME, any_of(&when)?)?)?;
    add(attribute(
        oids::ID_MESSAGE_DIGEST,
        any_of(&OctetString::new(content_digest).map_err(SmimeError::encode)?)?,
    )?)?;
    // SMIMECapabilities ::= SEQUENCE OF SEQUENCE { capabilityID, parameters OPTIONAL }:
    // the same shape as a sequence of AlgorithmIdentifiers.
    let caps: Vec<AlgorithmIdentifierOwned> = req
        .capabilities
        .iter()
        .map(|a| AlgorithmIdentifierOwned {
            oid: a.oid(),
            parameters: None,
        })
        .collect();
    add(attribute(oids::SMIME_CAPABILITIES, any_of(&caps)?)?)?;
    let signing_cert = SigningCertificateV2 {
        certs: vec![EssCertIdV2 {
            cert_hash: OctetString::new(req.signer.sha256.to_vec()).map_err(SmimeError::encode)?,
            issuer_serial: IssuerSerial {
                issuer: vec![GeneralName::DirectoryName(tbs.issuer().clone())],
                serial_number: tbs.serial_number().clone(),
            },
        }],
    };
    add(attribute(
        oids::ID_AA_SIGNING_CERTIFICATE_V2,
        any_of(&signing_cert)?,
    )?)?;

    // The signature covers the DER of the attributes as a SET OF (RFC 5652 5.4).
    let attrs_der = attrs.to_der().map_err(SmimeError::encode)?;
    let attrs_digest = hash(req.digest, &attrs_der);
    let raw = match req.signer.key {
        KeyKind::Rsa { .. } => {
            // DigestInfo ::= SEQUENCE { digestAlgorithm AlgorithmIdentifier, digest OCTET
            // STRING }, with NULL parameters as PKCS#1 v1.5 requires.
            let info = DigestInfo {
                algorithm: AlgorithmIdentifierOwned {
                    oid: digest_oid(req.digest),
                    parameters: Some(Any::null()),
                },
                digest: OctetString::new(attrs_digest.clone()).map_err(SmimeError::encode)?,
            };
            RawSign::RsaPkcs1DigestInfo(info.to_der().map_err(SmimeError::encode)?)
        }
        KeyKind::EcP256 | KeyKind::EcP384 => RawSign::EcdsaHash(attrs_digest.clone()),
        KeyKind::EcP521 => {
            return Err(SmimeError::UnsupportedKey(
                "P-521 keys cannot sign yet".into(),
            ));
        }
    };

    let mut certificates = vec![cert.clone()];
    certificates.extend(req.extra_certs.iter().cloned());
    Ok(Prepared {
        signer: req.signer.clone(),
        certificates,
        digest: req.digest,
        signed_attrs: attrs,
        attrs_digest,
        attrs_der,
        econtent: req.embed_content.then(|| req.content.to_vec()),
        raw,
    })
}

#[derive(Sequence)]
struct DigestInfo {
    algorithm: AlgorithmIdentifierOwned,
    digest: OctetString,
}

impl Prepared {
    /// Wraps the token's raw signature into a DER ContentInfo(SignedData), after checking
    /// that the signature verifies with the certificate's public key.
    pub fn finish(self, raw_signature: &[u8]) -> Result<Vec<u8>, SmimeError> {
        let spki = self.signer.cert.tbs_certificate().subject_public_key_info();
        let checked = fast_check(
            self.signer.key,
            self.digest,
            spki,
            &self.attrs_der,
            raw_signature,
        )?;
        let (signature, signature_algorithm) = match self.signer.key {
            KeyKind::Rsa { .. } => {
                if !checked {
                    verify_rsa(spki, self.digest, &self.attrs_digest, raw_signature)?;
                }
                (
                    raw_signature.to_vec(),
                    AlgorithmIdentifierOwned {
                        oid: oids::RSA_ENCRYPTION,
                        parameters: Some(Any::null()),
                    },
                )
            }
            KeyKind::EcP256 if checked => (der_p256(raw_signature)?, ecdsa_alg(self.digest)),
            KeyKind::EcP384 if checked => (der_p384(raw_signature)?, ecdsa_alg(self.digest)),
            KeyKind::EcP256 => {
                let der = verify_p256(spki, &self.attrs_digest, raw_signature)?;
                (der, ecdsa_alg(self.digest))
            }
            KeyKind::EcP384 => {
                let der = verify_p384(spki, &self.attrs_digest, raw_signature)?;
                (der, ecdsa_alg(self.digest))
            }
            KeyKind::EcP521 => {
                return Err(SmimeError::UnsupportedKey("P-521".into()));
            }
        };

        let tbs = self.signer.cert.tbs_certificate();
        let digest_alg = AlgorithmIdentifierOwned {
            oid: digest_oid(self.digest),
            parameters: None,
        };
        let signer_info = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: tbs.issuer().clone(),
                serial_number: tbs.serial_number().clone(),
            }),
            digest_alg: digest_alg.clone(),
            signed_attrs: Some(self.signed_attrs),
            signature_algorithm,
            signature: SignatureValue::new(signature).map_err(SmimeError::encode)?,
            unsigned_attrs: None,
        };
        let mut digest_algorithms = SetOfVec::new();
        digest_algorithms
            .insert(digest_alg)
            .map_err(SmimeError::encode)?;
        let econtent = match self.econtent {
            Some(c) => Some(
                Any::from_der(
                    &OctetString::new(c)
                        .map_err(SmimeError::encode)?
                        .to_der()
                        .map_err(SmimeError::encode)?,
                )
                .map_err(SmimeError::encode)?,
            ),
            None => None,
        };
        let certificates = CertificateSet::try_from(
            self.certificates
                .into_iter()
                .map(CertificateChoices::Certificate)
                .collect::<Vec<_>>(),
        )
        .map_err(SmimeError::encode)?;
        let signed_data = SignedData {
            version: CmsVersion::V1,
            digest_algorithms,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: oids::ID_DATA,
                econtent,
            },
            certificates: Some(certificates),
            crls: None,
            signer_infos: SignerInfos::try_from(vec![signer_info]).map_err(SmimeError::encode)?,
        };
        let ci = ContentInfo {
            content_type: oids::ID_SIGNED_DATA,
            content: Any::from_der(&signed_data.to_der().map_err(SmimeError::encode)?)
                .map_err(SmimeError::encode)?,
        };
        ci.to_der().map_err(SmimeError::encode)
    }
}

fn ecdsa_alg(d: DigestAlgorithm) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: match d {
            DigestAlgorithm::Sha256 => oids::ECDSA_WITH_SHA256,
            DigestAlgorithm::Sha384 => oids::ECDSA_WITH_SHA384,
            DigestAlgorithm::Sha512 => oids::ECDSA_WITH_SHA512,
        },
        parameters: None,
    }
}

/// The token's signature over the DER signed attributes, checked with ring where ring has
/// the combination: `Ok(true)` when it holds, `Ok(false)` when ring cannot tell (the
/// RustCrypto check then decides), `Err` when it does not hold.
fn fast_check(
    key: KeyKind,
    digest: DigestAlgorithm,
    spki: &spki::SubjectPublicKeyInfoOwned,
    attrs_der: &[u8],
    raw: &[u8],
) -> Result<bool, SmimeError> {
    use super::ring_check::{Scheme, check};
    let scheme = match key {
        KeyKind::Rsa { .. } => Scheme::RsaPkcs1,
        _ => Scheme::EcdsaFixed,
    };
    let hash = match digest {
        DigestAlgorithm::Sha256 => crate::alg::Hash::Sha256,
        DigestAlgorithm::Sha384 => crate::alg::Hash::Sha384,
        DigestAlgorithm::Sha512 => crate::alg::Hash::Sha512,
    };
    match check(key, scheme, hash, spki, attrs_der, raw) {
        None => Ok(false),
        Some(true) => Ok(true),
        Some(false) => Err(SmimeError::BadTokenSignature),
    }
}

/// r || s from the token as the DER Ecdsa-Sig-Value CMS carries (already checked).
fn der_p256(raw: &[u8]) -> Result<Vec<u8>, SmimeError> {
    let sig = p256::ecdsa::Signature::from_slice(raw).map_err(|_| SmimeError::BadTokenSignature)?;
    Ok(sig.to_der().as_bytes().to_vec())
}

fn der_p384(raw: &[u8]) -> Result<Vec<u8>, SmimeError> {
    let sig = p384::ecdsa::Signature::from_slice(raw).map_err(|_| SmimeError::BadTokenSignature)?;
    Ok(sig.to_der().as_bytes().to_vec())
}

fn verify_rsa(
    spki: &spki::SubjectPublicKeyInfoOwned,
    digest: DigestAlgorithm,
    hashed: &[u8],
    sig: &[u8],
) -> Result<(), SmimeError> {
    use rsa::pkcs8::DecodePublicKey;
    let der = spki.to_der().map_err(SmimeError::encode)?;
    let key = rsa::RsaPublicKey::from_public_key_der(&der)
        .map_err(|e| SmimeError::UnsupportedKey(format!("RSA public key: {e}")))?;
    let scheme = match digest {
        DigestAlgorithm::Sha256 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
        DigestAlgorithm::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
        DigestAlgorithm::Sha512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
    };
    key.verify(scheme, hashed, sig)
        .map_err(|_| SmimeError::BadTokenSignature)
}

/// Checks r || s from the token and returns the DER Ecdsa-Sig-Value CMS carries.
macro_rules! verify_ecdsa_on {
    ($name:ident, $curve:ident) => {
        fn $name(
            spki: &spki::SubjectPublicKeyInfoOwned,
            hashed: &[u8],
            raw: &[u8],
        ) -> Result<Vec<u8>, SmimeError> {
            let point = spki
                .subject_public_key
                .as_bytes()
                .ok_or_else(|| SmimeError::UnsupportedKey("EC point with unused bits".into()))?;
            let vk = $curve::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|_| {
                SmimeError::UnsupportedKey("EC public key is not on its curve".into())
            })?;
            let sig = $curve::ecdsa::Signature::from_slice(raw)
                .map_err(|_| SmimeError::BadTokenSignature)?;
            vk.verify_prehash(hashed, &sig)
                .map_err(|_| SmimeError::BadTokenSignature)?;
            Ok(sig.to_der().as_bytes().to_vec())
        }
    };
}
verify_ecdsa_on!(verify_p256, p256);
verify_ecdsa_on!(verify_p384, p384);

#[cfg(test)]
mod tests {
    //! The check of the token's signature, on both paths (ring, and the RustCrypto crates for
    //! what ring lacks), with keys whose private half the test holds (tests/data/signing).
    use super::*;
    use der::DecodePem;
    use signature::hazmat::PrehashSigner;

    fn facts(pem: &str) -> CertFacts {
        let der = Certificate::from_pem(pem).unwrap().to_der().unwrap();
        CertFacts::from_der(&der).unwrap()
    }

    fn prepared(signer: &CertFacts, digest: DigestAlgorithm) -> Prepared {
        prepare(&SignRequest {
            content: b"Content-Type: text/plain\r\n\r\nhello\r\n",
            signer,
            extra_certs: &[],
            digest,
            // Fixed, so two preparations ask the token for the same bytes.
            signing_time: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
            capabilities: &[],
            embed_content: false,
        })
        .unwrap()
    }

    fn p256_sign(key: &p256::ecdsa::SigningKey, p: &Prepared) -> Vec<u8> {
        let sig: p256::ecdsa::Signature = key.sign_prehash(p.raw.data()).unwrap();
        sig.to_bytes().to_vec()
    }

    #[test]
    fn a_p256_signature_is_checked_on_both_paths() {
        use p256::pkcs8::DecodePrivateKey;
        let cert = facts(include_str!("../../tests/data/signing/p256.pem"));
        let key = p256::ecdsa::SigningKey::from_pkcs8_pem(include_str!(
            "../../tests/data/signing/p256.pk8.pem"
        ))
        .unwrap();
        let other = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        // SHA-256 goes through ring, SHA-512 through the p256 crate.
        for digest in [DigestAlgorithm::Sha256, DigestAlgorithm::Sha512] {
            let p = prepared(&cert, digest);
            let good = p256_sign(&key, &p);
            assert!(p.finish(&good).is_ok(), "{digest}");
            let mut flipped = good.clone();
            flipped[5] ^= 1;
            assert!(matches!(
                prepared(&cert, digest).finish(&flipped),
                Err(SmimeError::BadTokenSignature)
            ));
            let p = prepared(&cert, digest);
            let wrong_key = p256_sign(&other, &p);
            assert!(
                matches!(p.finish(&wrong_key), Err(SmimeError::BadTokenSignature)),
                "{digest}: a signature by another key"
            );
        }
    }

    #[test]
    fn an_rsa_signature_is_checked_and_a_faulty_one_refused() {
        use rsa::pkcs8::DecodePrivateKey;
        let cert = facts(include_str!("../../tests/data/signing/rsa.pem"));
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(include_str!(
            "../../tests/data/signing/rsa.pk8.pem"
        ))
        .unwrap();
        for digest in [DigestAlgorithm::Sha256, DigestAlgorithm::Sha384] {
            let p = prepared(&cert, digest);
            let sig = key
                .sign(rsa::Pkcs1v15Sign::new_unprefixed(), p.raw.data())
                .unwrap();
            assert!(p.finish(&sig).is_ok(), "{digest}");
            let mut faulty = sig.clone();
            faulty[100] ^= 0x10;
            assert!(
                matches!(
                    prepared(&cert, digest).finish(&faulty),
                    Err(SmimeError::BadTokenSignature)
                ),
                "{digest}: a faulty signature"
            );
        }
    }
}
