//! The private-key operations the agent asks of a token, and how PINs are handled for them.
//!
//! Plain data shared by the token and its backends (PKCS#11 and key files); owns no state.

/// The raw private-key operations the agent asks of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignMechanism {
    /// CKM_RSA_PKCS over a DER DigestInfo.
    RsaPkcs1,
    /// CKM_ECDSA over the hash; the token returns r || s.
    Ecdsa,
    /// CKM_RSA_PKCS_PSS over the hash, MGF1 with the same hash, `salt_len` bytes of salt.
    RsaPss { hash: OaepHash, salt_len: usize },
}

/// A private-key operation (its data is a hash, a DigestInfo, a ciphertext or a public
/// point: nothing secret, so a copy for a retry is harmless).
#[derive(Debug, Clone)]
pub enum PrivateOp {
    Sign {
        mechanism: SignMechanism,
        data: Vec<u8>,
    },
    /// RSA decryption of an encrypted content key.
    Decrypt { padding: RsaDecrypt, data: Vec<u8> },
    /// ECDH with a peer's public point (SEC1); the result is the shared secret Z.
    DeriveEcdh { point: Vec<u8> },
}

/// How an RSA decryption unpads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaDecrypt {
    /// CKM_RSA_PKCS.
    Pkcs1,
    /// CKM_RSA_PKCS_OAEP with this hash (also for MGF1) and an empty label.
    Oaep(OaepHash),
    /// CKM_RSA_X_509: the raw result, for unpadding outside the token.
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OaepHash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl PrivateOp {
    /// A decryption whose unpadding the token does (PKCS#1 v1.5 or OAEP). How a token fails
    /// one depends on the plaintext, so its failures must all look alike (RFC 3218): one
    /// [`TokenError::Refused`] with no detail, no wait for a removal notice, and the key's
    /// handle kept, so neither the answer nor its time nor the next request's time tells a
    /// bad padding from a good one.
    pub fn is_padded_decrypt(&self) -> bool {
        matches!(
            self,
            PrivateOp::Decrypt {
                padding: RsaDecrypt::Pkcs1 | RsaDecrypt::Oaep(_),
                ..
            }
        )
    }

    pub(super) fn call_name(&self) -> &'static str {
        match self {
            PrivateOp::Sign { .. } => "C_Sign",
            PrivateOp::Decrypt { .. } => "C_Decrypt",
            PrivateOp::DeriveEcdh { .. } => "C_DeriveKey",
        }
    }
}

/// How PINs are handled, from `[pin]`.
#[derive(Debug, Clone, Copy)]
pub struct PinPolicy {
    /// A key that demands the PIN before every use may get the cached one.
    pub always_authenticate_uses_cache: bool,
}
