//! The SignedData of a message as read (RFC 5652 sections 5.1 to 5.3): leniently (BER,
//! indefinite lengths and constructed strings, as gpgsm and NSS write it) and without
//! re-encoding what a signature covers.
//!
//! Owns: the ASN.1 types from ContentInfo down to SignerInfo, and the bound on the elements
//! of any SET read. Must not touch: what the fields mean (`layers` reads the layer, `signer`
//! checks each SignerInfo).

use cms::content_info::CmsVersion;
use cms::signed_data::SignerIdentifier;
use der::asn1::{ObjectIdentifier, OctetString};
use der::{DecodeValue, EncodeValue, FixedTag, Header, Length, Reader, Sequence, Tag, Writer};
use spki::AlgorithmIdentifierOwned;

/// Most elements of any SET read before the bounds of `layers` are applied (hostile input).
pub(super) const MAX_SET_ITEMS: usize = 4096;

/// A SET OF kept as the encodings of its elements, exactly as received.
#[derive(Debug, Clone, Default)]
pub(super) struct RawSet(pub(super) Vec<Vec<u8>>);

impl FixedTag for RawSet {
    const TAG: Tag = Tag::Set;
}

impl<'a> DecodeValue<'a> for RawSet {
    type Error = der::Error;

    fn decode_value<R: Reader<'a>>(reader: &mut R, _header: Header) -> der::Result<Self> {
        let mut items = vec![];
        while !reader.is_finished() {
            if items.len() >= MAX_SET_ITEMS {
                return Err(reader.error(der::ErrorKind::Overlength));
            }
            items.push(reader.tlv_bytes()?.to_vec());
        }
        Ok(RawSet(items))
    }
}

impl EncodeValue for RawSet {
    fn value_len(&self) -> der::Result<Length> {
        self.0.iter().try_fold(Length::ZERO, |len, item| {
            len + Length::try_from(item.len())?
        })
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        for item in &self.0 {
            writer.write(item)?;
        }
        Ok(())
    }
}

/// ```text
/// ContentInfo ::= SEQUENCE { contentType ContentType, content [0] EXPLICIT ANY }
/// ```
/// with the content decoded as SignedData in the same pass, so BER (indefinite lengths,
/// constructed strings) is read all the way down.
#[derive(Sequence)]
pub(super) struct SignedContentInfo {
    pub(super) content_type: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    pub(super) content: SignedDataBer,
}

/// ```text
/// SignedData ::= SEQUENCE {
///     version CMSVersion,
///     digestAlgorithms SET OF DigestAlgorithmIdentifier,
///     encapContentInfo EncapsulatedContentInfo,
///     certificates [0] IMPLICIT CertificateSet OPTIONAL,
///     crls [1] IMPLICIT RevocationInfoChoices OPTIONAL,
///     signerInfos SET OF SignerInfo }
/// ```
#[derive(Sequence)]
pub(super) struct SignedDataBer {
    pub(super) version: CmsVersion,
    pub(super) digest_algorithms: RawSet,
    pub(super) encap_content_info: EncapContentBer,
    #[asn1(
        context_specific = "0",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    pub(super) certificates: Option<RawSet>,
    #[asn1(
        context_specific = "1",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    pub(super) crls: Option<RawSet>,
    pub(super) signer_infos: RawSet,
}

/// ```text
/// EncapsulatedContentInfo ::= SEQUENCE {
///     eContentType ContentType,
///     eContent [0] EXPLICIT OCTET STRING OPTIONAL }
/// ```
#[derive(Sequence)]
pub(super) struct EncapContentBer {
    pub(super) econtent_type: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub(super) econtent: Option<OctetString>,
}

/// ```text
/// SignerInfo ::= SEQUENCE {
///     version CMSVersion,
///     sid SignerIdentifier,
///     digestAlgorithm DigestAlgorithmIdentifier,
///     signedAttrs [0] IMPLICIT SignedAttributes OPTIONAL,
///     signatureAlgorithm SignatureAlgorithmIdentifier,
///     signature SignatureValue,
///     unsignedAttrs [1] IMPLICIT UnsignedAttributes OPTIONAL }
/// ```
#[derive(Sequence)]
pub(super) struct SignerInfoBer {
    pub(super) version: CmsVersion,
    pub(super) sid: SignerIdentifier,
    pub(super) digest_alg: AlgorithmIdentifierOwned,
    #[asn1(
        context_specific = "0",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    pub(super) signed_attrs: Option<RawSet>,
    pub(super) signature_algorithm: AlgorithmIdentifierOwned,
    pub(super) signature: OctetString,
    #[asn1(
        context_specific = "1",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    pub(super) unsigned_attrs: Option<RawSet>,
}
