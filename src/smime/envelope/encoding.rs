//! DER that building and reading envelopes share: the encoding helpers, and
//! RSAES-OAEP-params (RFC 8017 appendix A.2.1), which the cms crate does not have.
//!
//! Owns: those. Must not touch: what is encoded (the other files' concern).

use der::asn1::{Any, OctetString};
use der::{Decode, Encode, Sequence};
use spki::AlgorithmIdentifierOwned;

use crate::smime::SmimeError;

/// ```text
/// RSAES-OAEP-params ::= SEQUENCE {
///     hashAlgorithm      [0] HashAlgorithm     DEFAULT sha1,
///     maskGenAlgorithm   [1] MaskGenAlgorithm  DEFAULT mgf1SHA1,
///     pSourceAlgorithm   [2] PSourceAlgorithm  DEFAULT pSpecifiedEmpty }
/// ```
#[derive(Sequence, Default)]
pub(super) struct OaepParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub(super) hash: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub(super) mgf: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    pub(super) p_source: Option<AlgorithmIdentifierOwned>,
}

pub(super) fn enc<T: Encode>(v: &T) -> Result<Vec<u8>, SmimeError> {
    v.to_der().map_err(SmimeError::encode)
}

pub(super) fn any<T: Encode>(v: &T) -> Result<Any, SmimeError> {
    Any::from_der(&enc(v)?).map_err(SmimeError::encode)
}

pub(super) fn octets(v: Vec<u8>) -> Result<OctetString, SmimeError> {
    OctetString::new(v).map_err(SmimeError::encode)
}
