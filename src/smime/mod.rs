//! S/MIME: building and reading CMS messages and their MIME framing.
//!
//! Owns the formats (RFC 5652 CMS, RFC 8551 S/MIME). Knows nothing of sockets or tokens:
//! the private-key step is handed out as bytes to sign and handed back as a signature.
//!
//! - [`asn1`]: CMS reading helpers both sides share (BER, content type, issuer and serial).
//! - [`sign`]: SignedData around a token's raw signature.
//! - [`envelope`]: EnvelopedData and AuthEnvelopedData, RSA and EC recipients.
//! - [`fields`]: a message's From, Sender and Date, which verdicts hold signatures against.
//! - [`mime`]: canonical form, multipart/signed, application/pkcs7-mime.
//! - [`ring_check`]: signature checks with ring, for `sign` and `verify` alike.
//! - [`unpad`]: RSA padding removed from raw RSA results (envelopes and raw key operations).
//! - [`verify`]: reading SignedData back: every signer's signature, one layer at a time.

pub mod asn1;
pub mod envelope;
pub mod fields;
pub mod mime;
pub mod ring_check;
pub mod sign;
pub mod unpad;
pub mod verify;

/// Errors of the S/MIME layer.
#[derive(Debug, thiserror::Error)]
pub enum SmimeError {
    #[error("the content is not a MIME entity: {0}")]
    NotMime(String),
    #[error("unsupported key: {0}")]
    UnsupportedKey(String),
    #[error(
        "the token returned a signature that does not verify with the certificate's public key; it was not used (the card may be faulty, or the certificate does not belong to this key)"
    )]
    BadTokenSignature,
    #[error("cannot encode the CMS structure: {0}")]
    Encode(String),
    #[error("malformed CMS: {0}")]
    Malformed(String),
    /// Given to verify, but not a signed message (plain, or encrypted).
    #[error("not a signed message: {0}")]
    NotSigned(String),
    /// The message says what is not supported (the error code says "unsupported").
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Limit(String),
    /// Deliberately vague: the same for a wrong key, bad padding and a bad tag.
    #[error("the message cannot be decrypted with this key")]
    DecryptFailed,
    #[error("{0}")]
    Internal(String),
}

impl SmimeError {
    pub(crate) fn encode(e: der::Error) -> SmimeError {
        SmimeError::Encode(e.to_string())
    }
}
