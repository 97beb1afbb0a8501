//! CMS reading helpers that the signed and the enveloped side share: a reader that accepts
//! BER for a message's outer framing (streaming producers such as gpgsm write indefinite
//! lengths and constructed OCTET STRINGs there), the strict DER reading of the structures
//! inside it (algorithm identifiers, SignerInfo, names), the content type of a ContentInfo,
//! and a certificate's IssuerAndSerialNumber.
//!
//! Owns nothing of either structure; [`super::verify`] and [`super::envelope`] build on it
//! and never on each other.

use cms::cert::IssuerAndSerialNumber;
use const_oid::ObjectIdentifier;
use der::asn1::{BmpString, Ia5StringRef, PrintableStringRef, TeletexStringRef, Utf8StringRef};
use der::{Decode, EncodingRules, Header, SliceReader, Tag, Tagged};
use x509_cert::name::Name;

use crate::certs::CertFacts;

/// A reader of `data` that takes BER as well as DER.
pub fn ber_reader(data: &[u8]) -> der::Result<SliceReader<'_>> {
    SliceReader::new_with_encoding_rules(data, EncodingRules::Ber)
}

/// Decodes a `T` from DER or BER.
pub fn ber<'a, T: Decode<'a, Error = der::Error>>(data: &'a [u8]) -> der::Result<T> {
    T::decode(&mut ber_reader(data)?)
}

/// Decodes a `T` that must be DER: definite, minimal lengths, primitive strings, no bytes
/// after it. OpenSSL refuses a message whose inner structures are not; so does the agent,
/// whatever BER the framing around them used.
pub fn strict_der<'a, T: Decode<'a, Error = der::Error>>(data: &'a [u8]) -> der::Result<T> {
    T::from_der(data)
}

/// Checks that every attribute value of `name` is a string of a type that names use
/// (RFC 5280's DirectoryString, IA5String, NumericString), whose content fits its type.
/// The decoder takes any value (`ANY`), so a name with an INTEGER or an OCTET STRING in it
/// would otherwise be read, and compared by its text, though OpenSSL refuses it.
pub fn strict_name(name: &Name) -> Result<(), String> {
    for (n, atv) in name.iter().enumerate() {
        let v = &atv.value;
        let fits = match v.tag() {
            Tag::Utf8String => v.decode_as::<Utf8StringRef<'_>>().is_ok(),
            Tag::PrintableString => v.decode_as::<PrintableStringRef<'_>>().is_ok(),
            Tag::Ia5String => v.decode_as::<Ia5StringRef<'_>>().is_ok(),
            Tag::TeletexString => v.decode_as::<TeletexStringRef<'_>>().is_ok(),
            Tag::BmpString => v.decode_as::<BmpString>().is_ok(),
            Tag::NumericString => v.value().iter().all(|b| b.is_ascii_digit() || *b == b' '),
            _ => false,
        };
        if !fits {
            return Err(format!(
                "attribute {} ({}) of the name holds a value tagged {} where a string belongs",
                n + 1,
                atv.oid,
                v.tag()
            ));
        }
    }
    Ok(())
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
