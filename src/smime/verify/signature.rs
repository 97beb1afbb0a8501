//! The signature of one signer, by key kind: the scheme a signature algorithm names (RSA
//! PKCS#1 v1.5, RSASSA-PSS with its parameters, ECDSA) and the hash it implies, and the
//! signature checked over the signed bytes with the certificate's public key (RSA, P-256,
//! P-384).
//!
//! Owns: signature algorithms and public-key verification. Must not touch: what the
//! signature covers, or the refusal of SHA-1 (both `signer`'s, which reports whether a SHA-1
//! signature would otherwise verify).

use der::{Encode, Sequence};
use signature::hazmat::PrehashVerifier;
use spki::AlgorithmIdentifierOwned;

use super::results::{SignatureCode, SignatureProblem, problem};
use crate::alg::Hash;
use crate::certs::{CertFacts, KeyKind};
use crate::oids;

pub fn hash_name(h: Hash) -> &'static str {
    match h {
        Hash::Sha1 => "sha1",
        Hash::Sha256 => "sha256",
        Hash::Sha384 => "sha384",
        Hash::Sha512 => "sha512",
    }
}

/// What the signature algorithm asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SigScheme {
    RsaPkcs1,
    RsaPss { salt_len: usize },
    Ecdsa,
}

impl SigScheme {
    pub(super) fn name(self) -> &'static str {
        match self {
            SigScheme::RsaPkcs1 => "rsa-pkcs1",
            SigScheme::RsaPss { .. } => "rsa-pss",
            SigScheme::Ecdsa => "ecdsa",
        }
    }
}

/// The scheme of a signature algorithm and the hash it implies (when it names one), or
/// why it cannot be used.
pub(super) fn scheme_of(
    alg: &AlgorithmIdentifierOwned,
) -> Result<(SigScheme, Option<Hash>), String> {
    let o = alg.oid;
    let rsa = |h| Ok((SigScheme::RsaPkcs1, h));
    let ecdsa = |h| Ok((SigScheme::Ecdsa, h));
    match o {
        _ if o == oids::RSA_ENCRYPTION => rsa(None),
        _ if o == oids::SHA1_WITH_RSA => rsa(Some(Hash::Sha1)),
        _ if o == oids::SHA256_WITH_RSA => rsa(Some(Hash::Sha256)),
        _ if o == oids::SHA384_WITH_RSA => rsa(Some(Hash::Sha384)),
        _ if o == oids::SHA512_WITH_RSA => rsa(Some(Hash::Sha512)),
        // Some signers name the key type rather than the signature algorithm.
        _ if o == oids::ID_EC_PUBLIC_KEY => ecdsa(None),
        _ if o == oids::ECDSA_WITH_SHA1 => ecdsa(Some(Hash::Sha1)),
        _ if o == oids::ECDSA_WITH_SHA256 => ecdsa(Some(Hash::Sha256)),
        _ if o == oids::ECDSA_WITH_SHA384 => ecdsa(Some(Hash::Sha384)),
        _ if o == oids::ECDSA_WITH_SHA512 => ecdsa(Some(Hash::Sha512)),
        _ if o == oids::RSASSA_PSS => pss_scheme(alg),
        _ => Err(format!("signature algorithm {o}")),
    }
}

/// ```text
/// RSASSA-PSS-params ::= SEQUENCE {
///     hashAlgorithm      [0] HashAlgorithm      DEFAULT sha1,
///     maskGenAlgorithm   [1] MaskGenAlgorithm   DEFAULT mgf1SHA1,
///     saltLength         [2] INTEGER            DEFAULT 20,
///     trailerField       [3] TrailerField       DEFAULT trailerFieldBC }
/// ```
#[derive(Sequence)]
struct PssParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    hash: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    mask_gen: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    salt_len: Option<u32>,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    trailer: Option<u32>,
}

fn pss_scheme(alg: &AlgorithmIdentifierOwned) -> Result<(SigScheme, Option<Hash>), String> {
    let params = match &alg.parameters {
        Some(p) => p
            .decode_as::<PssParams>()
            .map_err(|e| format!("RSASSA-PSS parameters do not decode: {e}"))?,
        None => PssParams {
            hash: None,
            mask_gen: None,
            salt_len: None,
            trailer: None,
        },
    };
    let hash = match &params.hash {
        Some(a) => {
            Hash::from_oid(&a.oid).ok_or_else(|| format!("RSASSA-PSS with hash {}", a.oid))?
        }
        None => Hash::Sha1,
    };
    // The rsa crate's PSS uses MGF1 with the message hash, which is also what every
    // signer we know of uses.
    let mgf_hash = match &params.mask_gen {
        Some(m) if m.oid == oids::ID_MGF1 => {
            let inner = m
                .parameters
                .as_ref()
                .ok_or("RSASSA-PSS MGF1 without its hash")?
                .decode_as::<AlgorithmIdentifierOwned>()
                .map_err(|e| format!("RSASSA-PSS MGF1 parameters: {e}"))?;
            Hash::from_oid(&inner.oid)
                .ok_or_else(|| format!("RSASSA-PSS MGF1 with hash {}", inner.oid))?
        }
        Some(m) => return Err(format!("RSASSA-PSS with mask generation {}", m.oid)),
        None => Hash::Sha1,
    };
    if mgf_hash != hash {
        return Err(format!(
            "RSASSA-PSS with MGF1-{} but hash {}",
            hash_name(mgf_hash),
            hash_name(hash)
        ));
    }
    if params.trailer.unwrap_or(1) != 1 {
        return Err("RSASSA-PSS with a trailer field other than 1".into());
    }
    let salt_len = params.salt_len.unwrap_or(20) as usize;
    Ok((SigScheme::RsaPss { salt_len }, Some(hash)))
}

pub(super) fn verify_signature(
    cert: &CertFacts,
    scheme: SigScheme,
    hash: Hash,
    signed: &[u8],
    sig: &[u8],
) -> Result<(), SignatureProblem> {
    use SignatureCode as C;
    let spki = cert.cert.tbs_certificate().subject_public_key_info();
    let mismatch = || {
        problem(
            C::BadSignature,
            format!(
                "a {} signature cannot come from the certificate's {} key",
                scheme.name(),
                cert.key.name()
            ),
        )
    };
    let bad = || {
        problem(
            C::BadSignature,
            format!(
                "the signature does not verify with the public key of {}",
                cert.subject
            ),
        )
    };
    // ring first, where it has the combination: it checks at OpenSSL's speed (issue 18).
    // Its error does not say whether the signature or the key is at fault, so a refusal
    // goes to the RustCrypto check below, whose answer stands.
    if ring_verifies(cert, scheme, hash, signed, sig) {
        return Ok(());
    }
    let digest = hash.digest(signed);
    match (cert.key, scheme) {
        (KeyKind::Rsa { .. }, SigScheme::RsaPkcs1 | SigScheme::RsaPss { .. }) => {
            use rsa::pkcs8::DecodePublicKey;
            let der = spki
                .to_der()
                .map_err(|e| problem(C::UnsupportedAlgorithm, format!("RSA public key: {e}")))?;
            let key = rsa::RsaPublicKey::from_public_key_der(&der)
                .map_err(|e| problem(C::UnsupportedAlgorithm, format!("RSA public key: {e}")))?;
            let result = match scheme {
                SigScheme::RsaPss { salt_len } => match hash {
                    Hash::Sha1 => key.verify(
                        rsa::Pss::<sha1::Sha1>::new_with_salt(salt_len),
                        &digest,
                        sig,
                    ),
                    Hash::Sha256 => key.verify(
                        rsa::Pss::<sha2::Sha256>::new_with_salt(salt_len),
                        &digest,
                        sig,
                    ),
                    Hash::Sha384 => key.verify(
                        rsa::Pss::<sha2::Sha384>::new_with_salt(salt_len),
                        &digest,
                        sig,
                    ),
                    Hash::Sha512 => key.verify(
                        rsa::Pss::<sha2::Sha512>::new_with_salt(salt_len),
                        &digest,
                        sig,
                    ),
                },
                _ => {
                    let pkcs1 = match hash {
                        Hash::Sha1 => rsa::Pkcs1v15Sign::new::<sha1::Sha1>(),
                        Hash::Sha256 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                        Hash::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                        Hash::Sha512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
                    };
                    key.verify(pkcs1, &digest, sig)
                }
            };
            result.map_err(|_| bad())
        }
        (KeyKind::EcP256, SigScheme::Ecdsa) => {
            let vk = ec_point(spki)
                .and_then(|p| p256::ecdsa::VerifyingKey::from_sec1_bytes(p).ok())
                .ok_or_else(|| {
                    problem(C::UnsupportedAlgorithm, "the EC public key does not decode")
                })?;
            let s = p256::ecdsa::Signature::from_der(sig).map_err(|_| bad())?;
            vk.verify_prehash(&digest, &s).map_err(|_| bad())
        }
        (KeyKind::EcP384, SigScheme::Ecdsa) => {
            let vk = ec_point(spki)
                .and_then(|p| p384::ecdsa::VerifyingKey::from_sec1_bytes(p).ok())
                .ok_or_else(|| {
                    problem(C::UnsupportedAlgorithm, "the EC public key does not decode")
                })?;
            let s = p384::ecdsa::Signature::from_der(sig).map_err(|_| bad())?;
            vk.verify_prehash(&digest, &s).map_err(|_| bad())
        }
        (KeyKind::EcP521, SigScheme::Ecdsa) => Err(problem(
            C::UnsupportedAlgorithm,
            "ECDSA on P-521 is not verified by this agent",
        )),
        _ => Err(mismatch()),
    }
}

/// Whether ring verifies the signature (false also when ring lacks the combination).
fn ring_verifies(
    cert: &CertFacts,
    scheme: SigScheme,
    hash: Hash,
    signed: &[u8],
    sig: &[u8],
) -> bool {
    use crate::smime::ring_check::{Scheme, check};
    let scheme = match scheme {
        SigScheme::RsaPkcs1 => Scheme::RsaPkcs1,
        SigScheme::RsaPss { salt_len } => Scheme::RsaPss { salt_len },
        SigScheme::Ecdsa => Scheme::EcdsaDer,
    };
    let spki = cert.cert.tbs_certificate().subject_public_key_info();
    check(cert.key, scheme, hash, spki, signed, sig) == Some(true)
}

fn ec_point(spki: &spki::SubjectPublicKeyInfoOwned) -> Option<&[u8]> {
    spki.subject_public_key.as_bytes()
}

#[cfg(test)]
mod tests {
    //! ring's part of the check (the RustCrypto part is what every verify test exercises).
    use super::*;
    use der::{DecodePem, Encode};
    use signature::hazmat::PrehashSigner;

    fn facts(pem: &str) -> CertFacts {
        let der = x509_cert::Certificate::from_pem(pem)
            .unwrap()
            .to_der()
            .unwrap();
        CertFacts::from_der(&der).unwrap()
    }

    #[test]
    fn ring_takes_what_it_can_and_refuses_a_bad_signature() {
        use p256::pkcs8::DecodePrivateKey as _;
        let signed = b"the signed attributes";
        let digest = Hash::Sha256.digest(signed);

        let ec = facts(include_str!("../../../tests/data/signing/p256.pem"));
        let key = p256::ecdsa::SigningKey::from_pkcs8_pem(include_str!(
            "../../../tests/data/signing/p256.pk8.pem"
        ))
        .unwrap();
        let sig: p256::ecdsa::Signature = key.sign_prehash(&digest).unwrap();
        let der = sig.to_der();
        assert!(ring_verifies(
            &ec,
            SigScheme::Ecdsa,
            Hash::Sha256,
            signed,
            der.as_bytes()
        ));
        assert!(!ring_verifies(
            &ec,
            SigScheme::Ecdsa,
            Hash::Sha256,
            b"other",
            der.as_bytes()
        ));
        // SHA-512 with P-256 is not ring's: the other path decides.
        assert!(!ring_verifies(
            &ec,
            SigScheme::Ecdsa,
            Hash::Sha512,
            signed,
            der.as_bytes()
        ));

        let rsa_cert = facts(include_str!("../../../tests/data/signing/rsa.pem"));
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(include_str!(
            "../../../tests/data/signing/rsa.pk8.pem"
        ))
        .unwrap();
        let sig = key
            .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest)
            .unwrap();
        assert!(ring_verifies(
            &rsa_cert,
            SigScheme::RsaPkcs1,
            Hash::Sha256,
            signed,
            &sig
        ));
        let mut bad = sig.clone();
        bad[0] ^= 1;
        assert!(!ring_verifies(
            &rsa_cert,
            SigScheme::RsaPkcs1,
            Hash::Sha256,
            signed,
            &bad
        ));
        assert!(
            verify_signature(&rsa_cert, SigScheme::RsaPkcs1, Hash::Sha256, signed, &bad).is_err()
        );
        assert!(
            verify_signature(&rsa_cert, SigScheme::RsaPkcs1, Hash::Sha256, signed, &sig).is_ok()
        );
    }
}
