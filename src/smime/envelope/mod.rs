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
//! One concern per file; each imports only the files below it in this list:
//! - `encrypt`: building: the content encrypted and the content key given to each
//!   recipient ([`encrypt`], [`EncryptTo`], [`RsaPadding`]).
//! - `read`: reading an envelope in DER or BER ([`parse`]) and decrypting its content
//!   ([`Envelope`]).
//! - `recipients`: reading the recipient infos: who each is for and the private-key step it
//!   needs ([`Recipient`], [`RecipientId`], [`KeyUnwrap`]).
//! - `ecdh`: the X9.63 KDF and AES key wrap, and finishing an agreement ([`finish_ecdh`]).
//! - `cipher`: the content ciphers (AES-CBC, AES-GCM) and their parameters.
//! - the content key out of a raw RSA result ([`pkcs1_v15_content_key`], [`oaep_decode`])
//!   is `smime::unpad`'s, shared with the raw key operations, and re-exported here.
//! - `encoding`: DER helpers and RSAES-OAEP-params, shared by building and reading.

mod cipher;
mod ecdh;
mod encoding;
mod encrypt;
mod read;
mod recipients;

pub use super::unpad::{oaep_decode, pkcs1_v15_content_key};
pub use ecdh::{EcdhParams, finish_ecdh, unwrap_with_kek};
pub use encrypt::{EncryptTo, RsaPadding, encrypt};
pub use read::{Envelope, parse};
pub use recipients::{KeyUnwrap, MAX_RECIPIENTS, Recipient, RecipientId, serial_hex};
