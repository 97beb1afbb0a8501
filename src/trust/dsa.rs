//! DSA signatures on certificates and CRLs, for validation only (RFC 3279 2.2.2 and 2.3.2):
//! certval verifies RSA and ECDSA but not DSA, and old PKIs (NIST PKITS 4.1.4 and 4.1.5
//! among them) sign with it. A DSA key is never one the agent signs or encrypts mail with
//! (`certs/profile.rs` refuses it for mail); this only lets a path that uses one validate.
//!
//! Owns: DSA verification, and the parameter inheritance of RFC 3279 2.3.2 (a DSA key
//! without domain parameters takes those of the nearest issuer key that has them), which
//! needs the path: [`DsaVerifier::for_path`].

use std::collections::HashMap;

use certval::{
    Error as CvError, PathValidationStatus as Pvs, PkiEnvironment, VerifySignatureMessage,
};
use der::asn1::{BitString, ObjectIdentifier, UintRef};
use der::{Decode, Encode};
use dsa::signature::hazmat::PrehashVerifier;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::certificate::{CertificateInner, Raw};

const ID_DSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.1");
const DSA_WITH_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.3");
const DSA_WITH_SHA224: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.3.1");
const DSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.3.2");

/// Verifies DSA signatures; keys without parameters get them from `inherited`.
#[derive(Default, Clone)]
pub struct DsaVerifier {
    /// The DER of a parameterless DSA key's public value -> the DER of the Dss-Parms it
    /// inherits; `None` when the path gives that value two different parameter sets, so
    /// that nothing verifies with it.
    inherited: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl DsaVerifier {
    /// For a path given anchor first, target last: each issuer's DSA key without parameters
    /// inherits those of the nearest key above it that has them. Built before anything in
    /// the path is verified, so a later certificate must not be able to re-parameterize an
    /// earlier key: the first parameters found for a public value stand, a second, different
    /// set makes that value unusable, and the target's key (which signs nothing in the path)
    /// is left out.
    pub(super) fn for_path(anchor_first: &[&CertificateInner<Raw>]) -> DsaVerifier {
        let mut inherited: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
        let mut current: Option<Vec<u8>> = None;
        let issuers = &anchor_first[..anchor_first.len().saturating_sub(1)];
        for cert in issuers {
            let spki = &cert.tbs_certificate().subject_public_key_info();
            if spki.algorithm.oid != ID_DSA {
                current = None;
                continue;
            }
            match spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.to_der().ok())
            {
                Some(params) => current = Some(params),
                None => {
                    let Some(params) = &current else { continue };
                    let y = spki.subject_public_key.raw_bytes().to_vec();
                    match inherited.get(&y) {
                        None => {
                            inherited.insert(y, Some(params.clone()));
                        }
                        Some(Some(known)) if known == params => {}
                        Some(_) => {
                            inherited.insert(y, None);
                        }
                    }
                }
            }
        }
        DsaVerifier { inherited }
    }

    fn key(&self, spki: &SubjectPublicKeyInfoOwned) -> Option<dsa::VerifyingKey> {
        let y_der = spki.subject_public_key.as_bytes()?;
        let params = match &spki.algorithm.parameters {
            Some(p) => p.to_der().ok()?,
            None => self
                .inherited
                .get(spki.subject_public_key.raw_bytes())?
                .clone()?,
        };
        let components = dsa::Components::from_der(&params).ok()?;
        let y = UintRef::from_der(y_der).ok()?;
        let y = dsa::BoxedUint::from_be_slice_vartime(y.as_bytes());
        dsa::VerifyingKey::from_components(components, y).ok()
    }
}

fn digest(alg: &ObjectIdentifier, message: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest;
    Some(match *alg {
        DSA_WITH_SHA1 => sha1::Sha1::digest(message).to_vec(),
        DSA_WITH_SHA224 => sha2::Sha224::digest(message).to_vec(),
        DSA_WITH_SHA256 => sha2::Sha256::digest(message).to_vec(),
        _ => return None,
    })
}

impl VerifySignatureMessage for DsaVerifier {
    fn verify_signature_message(
        &self,
        _pe: &PkiEnvironment,
        message_to_verify: &[u8],
        signature: &BitString,
        signature_alg: &AlgorithmIdentifierOwned,
        spki: &SubjectPublicKeyInfoOwned,
    ) -> certval::Result<()> {
        if spki.algorithm.oid != ID_DSA {
            return Err(CvError::Unrecognized);
        }
        let failed = || CvError::PathValidation(Pvs::SignatureVerificationFailure);
        let hash = digest(&signature_alg.oid, message_to_verify).ok_or_else(failed)?;
        // A key whose parameters are neither present nor inherited cannot verify anything.
        let key = self
            .key(spki)
            .ok_or(CvError::PathValidation(Pvs::EncodingError))?;
        let sig = signature
            .as_bytes()
            .and_then(|b| dsa::Signature::try_from(b).ok())
            .ok_or(CvError::PathValidation(Pvs::EncodingError))?;
        key.verify_prehash(&hash, &sig).map_err(|_| failed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_given_two_parameter_sets_by_the_path_verifies_nothing() {
        let mut v = DsaVerifier::default();
        v.inherited.insert(b"y1".to_vec(), Some(b"params".to_vec()));
        v.inherited.insert(b"y2".to_vec(), None);
        let spki = |y: &[u8]| SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: ID_DSA,
                parameters: None,
            },
            subject_public_key: BitString::from_bytes(y).unwrap(),
        };
        // Poisoned, and unknown: no key at all.
        assert!(v.key(&spki(b"y2")).is_none());
        assert!(v.key(&spki(b"y3")).is_none());
        // A non-DSA key is not this verifier's business.
        let pe = PkiEnvironment::new();
        let rsa = SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1"),
                parameters: None,
            },
            subject_public_key: BitString::from_bytes(b"k").unwrap(),
        };
        let alg = AlgorithmIdentifierOwned {
            oid: DSA_WITH_SHA256,
            parameters: None,
        };
        let sig = BitString::from_bytes(b"s").unwrap();
        assert!(matches!(
            v.verify_signature_message(&pe, b"m", &sig, &alg, &rsa),
            Err(CvError::Unrecognized)
        ));
        // A DSA key without usable parameters fails; it never falls through as unrecognized.
        assert!(matches!(
            v.verify_signature_message(&pe, b"m", &sig, &alg, &spki(b"y2")),
            Err(CvError::PathValidation(_))
        ));
    }
}
