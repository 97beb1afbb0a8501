//! CMS reading helpers that the signed and the enveloped side share: a reader that accepts
//! BER (RFC 5652 allows it for every CMS structure), the content type of a ContentInfo, and
//! a certificate's IssuerAndSerialNumber.
//!
//! Owns nothing of either structure; [`super::verify`] and [`super::envelope`] build on it
//! and never on each other.

use cms::cert::IssuerAndSerialNumber;
use const_oid::ObjectIdentifier;
use der::{Decode, EncodingRules, Header, SliceReader, Tag};

use crate::certs::CertFacts;

/// A reader of `data` that takes BER as well as DER.
pub fn ber_reader(data: &[u8]) -> der::Result<SliceReader<'_>> {
    SliceReader::new_with_encoding_rules(data, EncodingRules::Ber)
}

/// Decodes a `T` from DER or BER.
pub fn ber<'a, T: Decode<'a, Error = der::Error>>(data: &'a [u8]) -> der::Result<T> {
    T::decode(&mut ber_reader(data)?)
}

/// The content type of a CMS ContentInfo (DER or BER), without decoding the rest.
pub fn content_type(cms: &[u8]) -> Option<ObjectIdentifier> {
    let mut r = ber_reader(cms).ok()?;
    let header = Header::decode(&mut r).ok()?;
    if header.tag() != Tag::Sequence {
        return None;
    }
    ObjectIdentifier::decode(&mut r).ok()
}

/// The certificate's issuer and serial number, as CMS names a signer or a recipient.
pub fn issuer_serial(cert: &CertFacts) -> IssuerAndSerialNumber {
    let tbs = cert.cert.tbs_certificate();
    IssuerAndSerialNumber {
        issuer: tbs.issuer().clone(),
        serial_number: tbs.serial_number().clone(),
    }
}
