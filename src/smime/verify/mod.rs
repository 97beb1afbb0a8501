//! Verifying CMS SignedData (RFC 5652 section 5) in S/MIME messages (RFC 8551).
//!
//! Owns: reading a signed entity (clear-signed `multipart/signed`, or opaque
//! `application/pkcs7-mime; smime-type=signed-data`, DER or BER as gpgsm and NSS write it),
//! finding each signer's certificate among the message's certificates, checking the signed
//! attributes and the signature of every signer, and handing back the signed content. One
//! call verifies one layer ([`verify_entity`]); [`is_signed`] says whether the content is
//! itself a signed entity, so callers can peel layers (at most [`MAX_LAYERS`]) and compose
//! them with decryption. Knows nothing of trust: whether a signer's certificate is valid is
//! the `trust` layer's question, asked by the caller with [`Layer::certificates`] and
//! [`Layer::crls`].
//!
//! Signatures: RSA PKCS#1 v1.5 (rsaEncryption or shaNWithRSAEncryption), RSASSA-PSS
//! (MGF1 with the same hash, the salt length its parameters give), ECDSA on P-256 and
//! P-384; digests SHA-1, SHA-256, SHA-384, SHA-512. Checked with ring where it has the
//! combination (at OpenSSL's speed), else, and whenever ring refuses, with the RustCrypto
//! crates, whose answer stands. **SHA-1 is refused**: a signature whose
//! digest is SHA-1 is reported `invalid` with the code `weak_algorithm`, saying whether it
//! would otherwise verify (chosen-prefix collisions on SHA-1 are practical since 2020;
//! Thunderbird refuses such signatures too).
//!
//! The signature over signed attributes is checked against the attributes exactly as the
//! message carries them (re-tagged as a SET OF), not a re-encoding, so a signer whose DER
//! differs from ours in some detail still verifies.
//!
//! One concern per file; each imports only the files below it in this list:
//! - `layers`: the entry points ([`verify_entity`], [`verify_layers`], [`verify_detached`],
//!   [`verify_cms`], [`is_signed`], [`carried_certificates`]) and the bounds on signers, certificates, CRLs and layers.
//! - `signer`: one SignerInfo: its certificate, its signed attributes against the content,
//!   what the signature covers, the SHA-1 refusal, signing-time warnings.
//! - `attrs`: reading the signed attributes, SMIMECapabilities included.
//! - `signature`: signature algorithms and the public-key check per key kind.
//! - `ber`: the SignedData structures as read (BER, nothing re-encoded).
//! - `results`: what a verification answers ([`Layer`], [`Signer`], [`SignatureCode`]).

mod attrs;
mod ber;
mod layers;
mod results;
mod signature;
mod signer;

pub use layers::{
    MAX_CERTIFICATES, MAX_CRLS, MAX_LAYERS, MAX_SIGNERS, carried_certificates, is_signed,
    verify_cms, verify_detached, verify_entity, verify_layers,
};
pub use results::{Format, Layer, SignatureCode, SignatureProblem, Signer};
pub use signature::hash_name;
