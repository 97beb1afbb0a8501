//! The raw key operations: what a PKCS#11 module (or any client that needs a private-key
//! step and does its own formats) asks of the agent. A key is named by its certificate's
//! SHA-256 fingerprint; the agent keeps the key on its token, its policy (the key usage, and
//! `smart_card_only`) and its PIN rules, and logs every use.
//!
//! Owns the shapes of `keys`, `key_login`, `key_sign`, `key_decrypt` and `key_derive`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::wire::{Base64Bytes, TokenRef};

/// `keys` takes no parameters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeysParams {}

/// Result of `keys`: every token whose keys the agent would use (after `smart_card_only`).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct KeysResult {
    pub tokens: Vec<KeyToken>,
    /// False when the administrator turned raw key operations off
    /// (`[policy] raw_key_operations = false`): the keys are listed, no `key_*` op works.
    pub operations_allowed: bool,
}

/// A token and its keys.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct KeyToken {
    pub token: TokenRef,
    pub manufacturer: String,
    pub model: String,
    pub hardware: bool,
    pub removable: bool,
    /// A PIN is cached (or the token is otherwise logged in): operations need no prompt.
    pub logged_in: bool,
    pub keys: Vec<KeyEntry>,
}

/// A certificate on a token, and what its private key may do.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct KeyEntry {
    /// The certificate's SHA-256 fingerprint, lowercase hex: how `key_*` name the key.
    pub key: String,
    /// The token's CKA_ID of the key and certificate.
    pub key_id: Base64Bytes,
    /// The certificate (DER).
    pub certificate: Base64Bytes,
    /// The token holds the certificate's private key.
    pub private_key: bool,
    /// The key usage allows signing (digitalSignature or nonRepudiation).
    pub sign: bool,
    /// The key usage allows RSA decryption (keyEncipherment).
    pub decrypt: bool,
    /// The key usage allows ECDH (keyAgreement).
    pub derive: bool,
}

/// `key_login`: log a token in now, the PIN asked by the agent's own PIN source (a module
/// passes no PIN: the token reports a protected authentication path).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyLoginParams {
    /// The token's `id` (from `keys`).
    pub token: String,
}

/// A raw signature mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeySignMechanism {
    /// CKM_RSA_PKCS: `data` is what goes into the PKCS#1 v1.5 block (a DER DigestInfo).
    RsaPkcs,
    /// CKM_ECDSA: `data` is the hash; the signature is r || s.
    Ecdsa,
    /// CKM_RSA_PKCS_PSS: `data` is the hash; MGF1 with the same hash, a salt of `salt_len`
    /// bytes (at most the modulus bytes less the hash length less 2, else `bad_request`).
    RsaPss { hash: KeyOaepHash, salt_len: u32 },
}

/// `key_sign`: one raw signature.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeySignParams {
    pub key: String,
    pub mechanism: KeySignMechanism,
    pub data: Base64Bytes,
}

/// A hash for RSA-OAEP (used for the label hash and MGF1 alike) and RSA-PSS (the message
/// hash and MGF1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyOaepHash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

/// An RSA decryption mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "padding")]
pub enum KeyDecryptMechanism {
    /// CKM_RSA_PKCS: PKCS#1 v1.5 padding.
    RsaPkcs,
    /// CKM_RSA_PKCS_OAEP with this hash for the label and MGF1, and an empty label.
    RsaOaep { hash: KeyOaepHash },
}

/// `key_decrypt`: one RSA decryption. Every padding failure is the same `decrypt_failed`
/// after the same steps.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyDecryptParams {
    pub key: String,
    pub mechanism: KeyDecryptMechanism,
    pub data: Base64Bytes,
}

/// `key_derive`: ECDH (CKM_ECDH1_DERIVE with no KDF) with a peer's public point.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyDeriveParams {
    pub key: String,
    /// The peer's public point, SEC1 uncompressed.
    pub public_point: Base64Bytes,
}

/// Result of `key_sign`, `key_decrypt` and `key_derive`: the signature, the plaintext, or
/// the shared secret Z.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct KeyOpResult {
    pub data: Base64Bytes,
}
