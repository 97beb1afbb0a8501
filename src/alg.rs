//! The algorithms the agent names: digests for signatures, content ciphers for envelopes,
//! and the hashes OAEP and the X9.63 KDF may use, with their names in the configuration and
//! the protocol and their OIDs.
//!
//! Owns only the names and identities of algorithms; the S/MIME layer does the work and the
//! configuration chooses among them. Imports nothing of the agent but [`crate::oids`].

use std::fmt;

use const_oid::ObjectIdentifier;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestAlgorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl DigestAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "sha256",
            DigestAlgorithm::Sha384 => "sha384",
            DigestAlgorithm::Sha512 => "sha512",
        }
    }

    /// The algorithm a configuration or protocol name means: `sha256`, also as OpenSSL and
    /// micalg spell it (`SHA256`, `sha-256`).
    pub fn from_name(name: &str) -> Option<DigestAlgorithm> {
        match name.to_ascii_lowercase().replace('-', "").as_str() {
            "sha256" => Some(DigestAlgorithm::Sha256),
            "sha384" => Some(DigestAlgorithm::Sha384),
            "sha512" => Some(DigestAlgorithm::Sha512),
            _ => None,
        }
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum ContentAlgorithm {
    #[serde(rename = "aes128-cbc")]
    Aes128Cbc,
    #[serde(rename = "aes256-cbc")]
    Aes256Cbc,
    #[serde(rename = "aes128-gcm")]
    Aes128Gcm,
    #[serde(rename = "aes256-gcm")]
    Aes256Gcm,
}

impl ContentAlgorithm {
    pub const ALL: [ContentAlgorithm; 4] = [
        ContentAlgorithm::Aes128Cbc,
        ContentAlgorithm::Aes256Cbc,
        ContentAlgorithm::Aes128Gcm,
        ContentAlgorithm::Aes256Gcm,
    ];

    /// The name used in the config and the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentAlgorithm::Aes128Cbc => "aes128-cbc",
            ContentAlgorithm::Aes256Cbc => "aes256-cbc",
            ContentAlgorithm::Aes128Gcm => "aes128-gcm",
            ContentAlgorithm::Aes256Gcm => "aes256-gcm",
        }
    }

    pub fn from_name(name: &str) -> Option<ContentAlgorithm> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    pub fn oid(self) -> const_oid::ObjectIdentifier {
        use crate::oids;
        match self {
            ContentAlgorithm::Aes128Cbc => oids::ID_AES128_CBC,
            ContentAlgorithm::Aes256Cbc => oids::ID_AES256_CBC,
            ContentAlgorithm::Aes128Gcm => oids::ID_AES128_GCM,
            ContentAlgorithm::Aes256Gcm => oids::ID_AES256_GCM,
        }
    }

    pub fn from_oid(oid: &const_oid::ObjectIdentifier) -> Option<ContentAlgorithm> {
        Self::ALL.into_iter().find(|a| a.oid() == *oid)
    }
}

/// Hashes that OAEP, the X9.63 KDF and a PKCS#12 file's MAC and key derivation may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    pub fn from_oid(oid: &ObjectIdentifier) -> Option<Hash> {
        match *oid {
            o if o == crate::oids::ID_SHA1 => Some(Hash::Sha1),
            o if o == crate::oids::ID_SHA256 => Some(Hash::Sha256),
            o if o == crate::oids::ID_SHA384 => Some(Hash::Sha384),
            o if o == crate::oids::ID_SHA512 => Some(Hash::Sha512),
            _ => None,
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            Hash::Sha1 => sha1::Sha1::digest(data).to_vec(),
            Hash::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    pub fn output_len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }
}
