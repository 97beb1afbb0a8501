//! Signature checks at the platform's speed: ring's verifiers, for the combinations ring
//! has. Shared by `sign` (the token's signature, checked before it is released) and
//! `verify` (signers' signatures); each keeps its own fallback to the RustCrypto crates for
//! what ring lacks, and its own reading of a refusal.
//!
//! Owns: which ring algorithm fits a key, scheme and hash, and the call. Must not touch:
//! what a refusal means to the caller.

use ring::signature as rs;
use spki::SubjectPublicKeyInfoOwned;

use crate::alg::Hash;
use crate::certs::KeyKind;

/// A signature scheme as ring names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    RsaPkcs1,
    /// ring verifies PSS only with a salt as long as the hash.
    RsaPss {
        salt_len: usize,
    },
    /// ECDSA with the DER Ecdsa-Sig-Value, as CMS carries it.
    EcdsaDer,
    /// ECDSA with r || s, as a PKCS#11 token returns it.
    EcdsaFixed,
}

fn algorithm(
    key: KeyKind,
    scheme: Scheme,
    hash: Hash,
) -> Option<&'static dyn rs::VerificationAlgorithm> {
    use Hash::{Sha256, Sha384, Sha512};
    use Scheme::*;
    Some(match (key, scheme, hash) {
        (KeyKind::Rsa { bits }, _, _) if !(2048..=8192).contains(&bits) => return None,
        (KeyKind::Rsa { .. }, RsaPkcs1, Sha256) => &rs::RSA_PKCS1_2048_8192_SHA256,
        (KeyKind::Rsa { .. }, RsaPkcs1, Sha384) => &rs::RSA_PKCS1_2048_8192_SHA384,
        (KeyKind::Rsa { .. }, RsaPkcs1, Sha512) => &rs::RSA_PKCS1_2048_8192_SHA512,
        (KeyKind::Rsa { .. }, RsaPss { salt_len: 32 }, Sha256) => &rs::RSA_PSS_2048_8192_SHA256,
        (KeyKind::Rsa { .. }, RsaPss { salt_len: 48 }, Sha384) => &rs::RSA_PSS_2048_8192_SHA384,
        (KeyKind::Rsa { .. }, RsaPss { salt_len: 64 }, Sha512) => &rs::RSA_PSS_2048_8192_SHA512,
        (KeyKind::EcP256, EcdsaDer, Sha256) => &rs::ECDSA_P256_SHA256_ASN1,
        (KeyKind::EcP256, EcdsaDer, Sha384) => &rs::ECDSA_P256_SHA384_ASN1,
        (KeyKind::EcP384, EcdsaDer, Sha256) => &rs::ECDSA_P384_SHA256_ASN1,
        (KeyKind::EcP384, EcdsaDer, Sha384) => &rs::ECDSA_P384_SHA384_ASN1,
        (KeyKind::EcP256, EcdsaFixed, Sha256) => &rs::ECDSA_P256_SHA256_FIXED,
        (KeyKind::EcP384, EcdsaFixed, Sha384) => &rs::ECDSA_P384_SHA384_FIXED,
        _ => return None,
    })
}

/// Whether `sig` over `signed` verifies with the key of `spki`: `None` where ring lacks the
/// combination (SHA-1, RSA outside 2048..8192 bits, another PSS salt, P-521, ...). ring's
/// refusal does not say whether the key or the signature is at fault.
pub fn check(
    key: KeyKind,
    scheme: Scheme,
    hash: Hash,
    spki: &SubjectPublicKeyInfoOwned,
    signed: &[u8],
    sig: &[u8],
) -> Option<bool> {
    let alg = algorithm(key, scheme, hash)?;
    // RSAPublicKey DER for RSA, the uncompressed point for EC: the subjectPublicKey bits.
    let public = spki.subject_public_key.as_bytes()?;
    Some(
        rs::UnparsedPublicKey::new(alg, public)
            .verify(signed, sig)
            .is_ok(),
    )
}
