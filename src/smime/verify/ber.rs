//! The SignedData of a message as read (RFC 5652 sections 5.1 to 5.3): its framing leniently
//! (BER, indefinite lengths and constructed strings, as gpgsm and NSS write it), the
//! structures inside it strictly (each digest AlgorithmIdentifier, SignerInfo and CRL must
//! be DER, and the signer's issuer name made of strings, as OpenSSL demands), and without
//! re-encoding what a signature covers.
//!
//! Owns: the ASN.1 types from ContentInfo down to SignerInfo, the encoding rules of each
//! part, and the bound on the elements of any SET read. Must not touch: what the fields mean
//! (`layers` reads the layer, `signer` checks each SignerInfo).

use cms::content_info::CmsVersion;
use cms::signed_data::SignerIdentifier;
use der::asn1::{ObjectIdentifier, OctetString};
use der::{DecodeValue, EncodeValue, FixedTag, Header, Length, Reader, Sequence, Tag, Writer};
use spki::AlgorithmIdentifierOwned;
use x509_cert::crl::CertificateList;

use crate::smime::asn1::{strict_der, strict_name};

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

/// The parts of a SignedData that must be DER whatever its framing: every digest
/// AlgorithmIdentifier, every SignerInfo (whose signer identifier's issuer name must hold
/// strings) and every CRL. What is wrong, in words, for a `bad_message` answer.
pub(super) fn check_inner_der(
    digest_algorithms: &[Vec<u8>],
    signer_infos: &[Vec<u8>],
    crls: &[Vec<u8>],
) -> Result<(), String> {
    for (n, item) in digest_algorithms.iter().enumerate() {
        strict_der::<AlgorithmIdentifierOwned>(item)
            .map_err(|e| format!("digest algorithm {} is not DER: {e}", n + 1))?;
    }
    for (n, item) in signer_infos.iter().enumerate() {
        let si: SignerInfoBer = strict_der(item)
            .map_err(|e| format!("the SignerInfo of signer {} is not DER: {e}", n + 1))?;
        if let SignerIdentifier::IssuerAndSerialNumber(isn) = &si.sid {
            strict_name(&isn.issuer)
                .map_err(|e| format!("the issuer named by signer {}: {e}", n + 1))?;
        }
    }
    for (n, item) in crls.iter().enumerate() {
        // RevocationInfoChoice: a CertificateList, or [1] other (skipped by the reader).
        if item.first() == Some(&0x30) {
            strict_der::<CertificateList>(item)
                .map_err(|e| format!("CRL {} is not DER: {e}", n + 1))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use crate::smime::SmimeError;
    use crate::smime::verify::verify_cms;

    /// `openssl cms -sign -nodetach` with a self-signed P-256 certificate (tests/data/verify).
    const EC_OPAQUE: &[u8] = include_bytes!("../../../tests/data/verify/ec-opaque.der");

    /// A TLV of a DER fixture, to change one part and encode the rest around it again.
    #[derive(Clone)]
    enum Tlv {
        Prim(u8, Vec<u8>),
        Cons(u8, Vec<Tlv>),
        /// Content with its length written in `len_octets` (more than DER's minimum).
        LongLen(u8, Vec<u8>, usize),
    }

    fn parse(data: &[u8]) -> (Tlv, usize) {
        let tag = data[0];
        let (len, hl) = match data[1] {
            n if n < 0x80 => (n as usize, 2),
            n => {
                let k = (n & 0x7f) as usize;
                let len = data[2..2 + k].iter().fold(0, |a, b| a << 8 | *b as usize);
                (len, 2 + k)
            }
        };
        let content = &data[hl..hl + len];
        if tag & 0x20 == 0 {
            return (Tlv::Prim(tag, content.to_vec()), hl + len);
        }
        let mut kids = vec![];
        let mut at = 0;
        while at < content.len() {
            let (kid, used) = parse(&content[at..]);
            kids.push(kid);
            at += used;
        }
        (Tlv::Cons(tag, kids), hl + len)
    }

    fn encode(t: &Tlv) -> Vec<u8> {
        let (tag, content, min_octets) = match t {
            Tlv::Prim(tag, c) => (*tag, c.clone(), 0),
            Tlv::Cons(tag, kids) => (*tag, kids.iter().flat_map(encode).collect(), 0),
            Tlv::LongLen(tag, c, octets) => (*tag, c.clone(), *octets),
        };
        let len = content.len();
        let mut out = vec![tag];
        if len < 0x80 && min_octets == 0 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            let pad = min_octets.saturating_sub(bytes.len());
            out.push(0x80 | (bytes.len() + pad) as u8);
            out.extend(std::iter::repeat_n(0, pad));
            out.extend(bytes);
        }
        out.extend(content);
        out
    }

    /// The node at `path` (child indexes from the root).
    fn at<'t>(t: &'t mut Tlv, path: &[usize]) -> &'t mut Tlv {
        match (t, path) {
            (t, []) => t,
            (Tlv::Cons(_, kids), [i, rest @ ..]) => at(&mut kids[*i], rest),
            _ => panic!("no such node"),
        }
    }

    /// ContentInfo > [0] > SignedData > digestAlgorithms > the first > its OID.
    const DIGEST_ALG_OID: [usize; 6] = [0, 1, 0, 1, 0, 0];
    /// ContentInfo > [0] > SignedData > signerInfos (its 5th part here: no CRLs) > the first
    /// > sid > issuer > the first RDN > its AttributeTypeAndValue > the value.
    const SIGNER_ISSUER_VALUE: [usize; 10] = [0, 1, 0, 4, 0, 1, 0, 0, 0, 1];

    fn changed(path: &[usize], f: impl FnOnce(&mut Tlv)) -> Vec<u8> {
        let mut root = Tlv::Cons(0, vec![parse(EC_OPAQUE).0]);
        f(at(&mut root, path));
        let Tlv::Cons(_, kids) = root else {
            unreachable!()
        };
        encode(&kids[0])
    }

    fn refused(cms: &[u8]) -> String {
        match verify_cms(cms, None, SystemTime::now()) {
            Err(SmimeError::Malformed(m)) => m,
            Err(e) => panic!("refused, but not as malformed: {e}"),
            Ok(l) => panic!("accepted: {:?}", l.signers[0].outcome),
        }
    }

    #[test]
    fn the_fixture_reencoded_unchanged_still_verifies() {
        let same = changed(&[0], |_| {});
        assert_eq!(same, EC_OPAQUE);
        let layer = verify_cms(&same, None, SystemTime::now()).unwrap();
        assert!(layer.signers[0].valid());
    }

    #[test]
    fn a_digest_algorithm_oid_with_a_wrong_tag_is_malformed() {
        let cms = changed(&DIGEST_ALG_OID, |t| {
            let Tlv::Prim(tag, _) = t else { panic!() };
            *tag = 0x07;
        });
        let m = refused(&cms);
        assert!(m.contains("digest algorithm 1 is not DER"), "{m}");
    }

    #[test]
    fn a_digest_algorithm_oid_with_a_long_length_is_malformed() {
        let cms = changed(&DIGEST_ALG_OID, |t| {
            let Tlv::Prim(tag, c) = t.clone() else {
                panic!()
            };
            *t = Tlv::LongLen(tag, c, 1);
        });
        assert_eq!(cms.len(), EC_OPAQUE.len() + 1);
        let m = refused(&cms);
        assert!(m.contains("digest algorithm 1 is not DER"), "{m}");
    }

    #[test]
    fn a_signer_info_with_a_long_length_inside_is_malformed() {
        // The signer's version INTEGER with its length in two octets.
        let cms = changed(&[0, 1, 0, 4, 0, 0], |t| {
            let Tlv::Prim(tag, c) = t.clone() else {
                panic!()
            };
            *t = Tlv::LongLen(tag, c, 1);
        });
        let m = refused(&cms);
        assert!(m.contains("SignerInfo of signer 1 is not DER"), "{m}");
    }

    #[test]
    fn a_signer_issuer_name_with_a_non_string_value_is_malformed() {
        for bad in [0x04, 0x02] {
            let cms = changed(&SIGNER_ISSUER_VALUE, |t| {
                let Tlv::Prim(tag, _) = t else { panic!() };
                *tag = bad;
            });
            let m = refused(&cms);
            assert!(m.contains("the issuer named by signer 1"), "{bad:#x}: {m}");
        }
    }

    #[test]
    fn another_string_type_in_the_signer_issuer_name_is_read_as_openssl_does() {
        // UTF8String for PrintableString (or the other way): still a name of strings; the
        // names compare equal as RFC 5280 says, as OpenSSL compares them.
        let cms = changed(&SIGNER_ISSUER_VALUE, |t| {
            let Tlv::Prim(tag, _) = t else { panic!() };
            *tag = if *tag == 0x0c { 0x13 } else { 0x0c };
        });
        let layer = verify_cms(&cms, None, SystemTime::now()).unwrap();
        assert!(layer.signers[0].cert.is_some());
    }
}
