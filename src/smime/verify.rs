//! Verifying CMS SignedData (RFC 5652 section 5) in S/MIME messages (RFC 8551).
//!
//! Owns: reading a signed entity (clear-signed `multipart/signed`, or opaque
//! `application/pkcs7-mime; smime-type=signed-data`, DER or BER as gpgsm and NSS write it),
//! finding each signer's certificate among the message's certificates, checking the signed
//! attributes and the signature of every signer, and handing back the signed content. One
//! call verifies one layer ([`verify_entity`]); [`is_signed`] says whether the content is
//! itself a signed entity, so callers can peel layers (at most [`MAX_LAYERS`]) and compose
//! them with decryption. Knows nothing of trust: whether a signer's certificate is valid is
//! the `trust` layer's question, asked by the caller with [`Layer::certificates`] and
//! [`Layer::crls`].
//!
//! Signatures: RSA PKCS#1 v1.5 (rsaEncryption or shaNWithRSAEncryption), RSASSA-PSS
//! (MGF1 with the same hash, the salt length its parameters give), ECDSA on P-256 and
//! P-384; digests SHA-1, SHA-256, SHA-384, SHA-512. **SHA-1 is refused**: a signature whose
//! digest is SHA-1 is reported `invalid` with the code `weak_algorithm`, saying whether it
//! would otherwise verify (chosen-prefix collisions on SHA-1 are practical since 2020;
//! Thunderbird refuses such signatures too).
//!
//! The signature over signed attributes is checked against the attributes exactly as the
//! message carries them (re-tagged as a SET OF), not a re-encoding, so a signer whose DER
//! differs from ours in some detail still verifies.

use std::time::{Duration, SystemTime};

use cms::content_info::CmsVersion;
use cms::signed_data::SignerIdentifier;
use der::asn1::{Any, ObjectIdentifier, OctetString};
use der::{
    Decode, DecodeValue, Encode, EncodeValue, FixedTag, Header, Length, Reader, Sequence, Tag,
    Writer,
};
use signature::hazmat::PrehashVerifier;
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use x509_cert::time::Time;

use super::SmimeError;
use super::asn1::{ber, content_type};
use super::mime::{self, Smime};
use crate::alg::ContentAlgorithm;
use crate::alg::Hash;
use crate::certs::{CertFacts, KeyKind, hex};
use crate::oids;

/// Most signers verified in one layer; a message with more is refused (`limit_exceeded`).
pub const MAX_SIGNERS: usize = 16;
/// Most certificates read from one message.
pub const MAX_CERTIFICATES: usize = 64;
/// Most CRLs read from one message.
pub const MAX_CRLS: usize = 32;
/// Most signed layers peeled from one message (a signed entity inside a signed entity...).
pub const MAX_LAYERS: usize = 8;
/// Most elements of any SET read before the bounds above are applied (hostile input).
const MAX_SET_ITEMS: usize = 4096;
/// A signing time this far ahead of the verifier's clock is reported.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------------------
// ASN.1, read leniently (BER) and without re-encoding what a signature covers
// ---------------------------------------------------------------------------------------

/// A SET OF kept as the encodings of its elements, exactly as received.
#[derive(Debug, Clone, Default)]
struct RawSet(Vec<Vec<u8>>);

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
struct SignedContentInfo {
    content_type: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    content: SignedDataBer,
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
struct SignedDataBer {
    version: CmsVersion,
    digest_algorithms: RawSet,
    encap_content_info: EncapContentBer,
    #[asn1(
        context_specific = "0",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    certificates: Option<RawSet>,
    #[asn1(
        context_specific = "1",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    crls: Option<RawSet>,
    signer_infos: RawSet,
}

/// ```text
/// EncapsulatedContentInfo ::= SEQUENCE {
///     eContentType ContentType,
///     eContent [0] EXPLICIT OCTET STRING OPTIONAL }
/// ```
#[derive(Sequence)]
struct EncapContentBer {
    econtent_type: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    econtent: Option<OctetString>,
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
struct SignerInfoBer {
    version: CmsVersion,
    sid: SignerIdentifier,
    digest_alg: AlgorithmIdentifierOwned,
    #[asn1(
        context_specific = "0",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    signed_attrs: Option<RawSet>,
    signature_algorithm: AlgorithmIdentifierOwned,
    signature: OctetString,
    #[asn1(
        context_specific = "1",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    unsigned_attrs: Option<RawSet>,
}

/// ```text
/// RSASSA-PSS-params ::= SEQUENCE {
///     hashAlgorithm      [0] HashAlgorithm      DEFAULT sha1,
///     maskGenAlgorithm   [1] MaskGenAlgorithm   DEFAULT mgf1SHA1,
///     saltLength         [2] INTEGER            DEFAULT 20,
///     trailerField       [3] TrailerField       DEFAULT trailerFieldBC }
/// ```
#[derive(Sequence)]
struct PssParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    hash: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    mask_gen: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    salt_len: Option<u32>,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    trailer: Option<u32>,
}

/// ESS (RFC 2634, RFC 5035): the certificate a signature was made with.
///
/// ```text
/// SigningCertificateV2 ::= SEQUENCE { certs SEQUENCE OF ESSCertIDv2, policies ... OPTIONAL }
/// ESSCertIDv2 ::= SEQUENCE { hashAlgorithm AlgorithmIdentifier DEFAULT {id-sha256},
///                            certHash OCTET STRING, issuerSerial IssuerSerial OPTIONAL }
/// SigningCertificate ::= SEQUENCE { certs SEQUENCE OF ESSCertID, policies ... OPTIONAL }
/// ESSCertID ::= SEQUENCE { certHash OCTET STRING (SHA-1), issuerSerial IssuerSerial OPTIONAL }
/// ```
#[derive(Sequence)]
struct SigningCertificate {
    certs: Vec<EssCertId>,
    #[asn1(optional = "true")]
    policies: Option<Any>,
}

#[derive(Sequence)]
struct EssCertId {
    #[asn1(optional = "true")]
    hash_algorithm: Option<AlgorithmIdentifierOwned>,
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<Any>,
}

// ---------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------

/// How the signed content was carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `multipart/signed`: the content beside a detached signature.
    Clear,
    /// `application/pkcs7-mime`: the content inside SignedData.
    Opaque,
}

/// Why a signature is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureCode {
    /// The signature does not verify with the signer certificate's key.
    BadSignature,
    /// The content's digest differs from the signed message-digest: the content changed.
    DigestMismatch,
    /// The signer's certificate is not in the message.
    NoSignerCertificate,
    /// The signed ESS signing-certificate attribute names another certificate.
    CertificateMismatch,
    /// SHA-1 (refused).
    WeakAlgorithm,
    /// An algorithm or key this agent does not verify.
    UnsupportedAlgorithm,
    /// The SignerInfo or its signed attributes are malformed or inconsistent.
    Malformed,
}

impl SignatureCode {
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureCode::BadSignature => "bad_signature",
            SignatureCode::DigestMismatch => "digest_mismatch",
            SignatureCode::NoSignerCertificate => "no_signer_certificate",
            SignatureCode::CertificateMismatch => "certificate_mismatch",
            SignatureCode::WeakAlgorithm => "weak_algorithm",
            SignatureCode::UnsupportedAlgorithm => "unsupported_algorithm",
            SignatureCode::Malformed => "malformed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureProblem {
    pub code: SignatureCode,
    pub message: String,
}

fn problem(code: SignatureCode, message: impl Into<String>) -> SignatureProblem {
    SignatureProblem {
        code,
        message: message.into(),
    }
}

/// One signer of a layer, checked.
#[derive(Debug, Clone)]
pub struct Signer {
    /// Position among the layer's SignerInfos, from 0.
    pub index: usize,
    /// How the SignerInfo names its certificate, in words.
    pub signer_id: String,
    /// The signer's certificate, when the message carries it.
    pub cert: Option<CertFacts>,
    /// `sha256`, ... (or the dotted OID of an unknown one).
    pub digest_algorithm: String,
    /// `rsa-pkcs1`, `rsa-pss`, `ecdsa` (or the dotted OID of an unknown one).
    pub signature_algorithm: String,
    pub signing_time: Option<SystemTime>,
    /// The content encryption algorithms the signer's SMIMECapabilities name and the agent
    /// implements, the signer's preferred first; `None` when the attribute is absent or
    /// says nothing about content encryption.
    pub capabilities: Option<Vec<ContentAlgorithm>>,
    /// `Ok` when the signature is valid.
    pub outcome: Result<(), SignatureProblem>,
    /// Reported but not fatal (a signing time in the future, outside the certificate's
    /// validity).
    pub warnings: Vec<String>,
}

impl Signer {
    pub fn valid(&self) -> bool {
        self.outcome.is_ok()
    }
}

/// One verified layer.
#[derive(Debug, Clone)]
pub struct Layer {
    pub format: Format,
    /// The encapsulated content type (id-data for S/MIME).
    pub content_type: ObjectIdentifier,
    /// The signed content: for clear-signed, the signed part as signed (canonical CRLF);
    /// for opaque, the encapsulated content.
    pub content: Vec<u8>,
    pub signers: Vec<Signer>,
    /// The message's certificates (DER), for path building.
    pub certificates: Vec<Vec<u8>>,
    /// The message's CRLs (DER), for revocation checking.
    pub crls: Vec<Vec<u8>>,
    /// Certificates of the message that could not be read, and why.
    pub certificate_problems: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------

/// Whether `entity` is itself a signed S/MIME entity (another layer to verify).
pub fn is_signed(entity: &[u8]) -> bool {
    match mime::read(entity) {
        Ok(Smime::ClearSigned { .. } | Smime::SignedData(_)) => true,
        Ok(Smime::Pkcs7(der)) => content_type(&der) == Some(oids::ID_SIGNED_DATA),
        _ => false,
    }
}

/// Verifies one signed layer: a `multipart/signed` or `application/pkcs7-mime` entity (or
/// bare CMS, DER or PEM). `now` is the verifier's clock, for signing-time warnings.
pub fn verify_entity(entity: &[u8], now: SystemTime) -> Result<Layer, SmimeError> {
    if entity.iter().all(u8::is_ascii_whitespace) {
        return Err(SmimeError::Malformed("the message is empty".into()));
    }
    let read = mime::read(entity).map_err(|e| match e {
        SmimeError::NotMime(m) => SmimeError::Malformed(format!("not a MIME entity: {m}")),
        other => other,
    })?;
    match read {
        Smime::ClearSigned { signed, signature } => verify_cms(&signature, Some(&signed), now),
        Smime::SignedData(der) => verify_cms(&der, None, now),
        Smime::Pkcs7(der) => verify_cms(&der, None, now),
        Smime::Enveloped(_) => Err(SmimeError::NotSigned(
            "it is encrypted (enveloped-data): decrypt it first".into(),
        )),
        Smime::Plain => Err(SmimeError::NotSigned(
            "it is neither multipart/signed with an application/pkcs7-signature part nor \
             application/pkcs7-mime"
                .into(),
        )),
    }
}

/// Verifies every signed layer of `entity`, outermost first: while a layer's content is
/// itself a signed entity, it is verified too, up to [`MAX_LAYERS`] layers.
pub fn verify_layers(entity: &[u8], now: SystemTime) -> Result<Vec<Layer>, SmimeError> {
    let mut layers = vec![verify_entity(entity, now)?];
    while let Some(inner) = layers.last().map(|l| &l.content)
        && is_signed(inner)
    {
        if layers.len() >= MAX_LAYERS {
            return Err(SmimeError::Limit(format!(
                "the message nests more than {MAX_LAYERS} signed layers"
            )));
        }
        let n = layers.len() + 1;
        let layer = verify_entity(inner, now).map_err(|e| in_layer(n, e))?;
        layers.push(layer);
    }
    Ok(layers)
}

/// Says which layer an error is about.
fn in_layer(n: usize, e: SmimeError) -> SmimeError {
    match e {
        SmimeError::Malformed(m) => SmimeError::Malformed(format!("signed layer {n}: {m}")),
        SmimeError::Unsupported(m) => SmimeError::Unsupported(format!("signed layer {n}: {m}")),
        SmimeError::Limit(m) => SmimeError::Limit(format!("signed layer {n}: {m}")),
        SmimeError::NotSigned(m) => SmimeError::NotSigned(format!("signed layer {n}: {m}")),
        other => other,
    }
}

/// Verifies a CMS ContentInfo(SignedData), DER or BER. `detached` is the content of a
/// detached signature (the signed part of a `multipart/signed`).
pub fn verify_cms(
    cms: &[u8],
    detached: Option<&[u8]>,
    now: SystemTime,
) -> Result<Layer, SmimeError> {
    let ci: SignedContentInfo = match ber(cms) {
        Ok(ci) => ci,
        Err(e) => {
            return Err(match content_type(cms) {
                Some(ct)
                    if ct == oids::ID_ENVELOPED_DATA || ct == oids::ID_CT_AUTH_ENVELOPED_DATA =>
                {
                    SmimeError::NotSigned(
                        "the CMS object is encrypted (enveloped-data): decrypt it first".into(),
                    )
                }
                Some(ct) if ct != oids::ID_SIGNED_DATA => {
                    SmimeError::Unsupported(format!("CMS content type {ct} (not SignedData)"))
                }
                _ => SmimeError::Malformed(format!(
                    "the signature is not a readable CMS SignedData (damaged or truncated?): {e}"
                )),
            });
        }
    };
    if ci.content_type != oids::ID_SIGNED_DATA {
        return Err(SmimeError::Unsupported(format!(
            "CMS content type {} (not SignedData)",
            ci.content_type
        )));
    }
    let sd = ci.content;
    let econtent = sd
        .encap_content_info
        .econtent
        .map(|o| o.into_bytes().into_vec());
    let (content, format) = match (detached, econtent) {
        (Some(d), None) => (d.to_vec(), Format::Clear),
        (Some(_), Some(_)) => {
            return Err(SmimeError::Malformed(
                "the detached signature of a multipart/signed carries content of its own".into(),
            ));
        }
        (None, Some(c)) => (c, Format::Opaque),
        (None, None) => {
            return Err(SmimeError::Malformed(
                "the SignedData carries no content: it is a detached signature without the \
                 signed part (or a certificates-only message)"
                    .into(),
            ));
        }
    };

    let cert_items = sd.certificates.map(|s| s.0).unwrap_or_default();
    if cert_items.len() > MAX_CERTIFICATES {
        return Err(SmimeError::Limit(format!(
            "the message carries {} certificates; at most {MAX_CERTIFICATES} are read",
            cert_items.len()
        )));
    }
    let crl_items = sd.crls.map(|s| s.0).unwrap_or_default();
    if crl_items.len() > MAX_CRLS {
        return Err(SmimeError::Limit(format!(
            "the message carries {} CRLs; at most {MAX_CRLS} are read",
            crl_items.len()
        )));
    }
    let signer_items = sd.signer_infos.0;
    if signer_items.is_empty() {
        return Err(SmimeError::Malformed(
            "the SignedData has no signer (nothing is signed)".into(),
        ));
    }
    if signer_items.len() > MAX_SIGNERS {
        return Err(SmimeError::Limit(format!(
            "the message has {} signers; at most {MAX_SIGNERS} are verified",
            signer_items.len()
        )));
    }

    // CertificateChoices: only the plain certificate (a SEQUENCE) is used; attribute and
    // other certificates ([1], [2], [3]) are skipped. Likewise CRLs (not [1] other).
    let mut certificates = vec![];
    let mut certs = vec![];
    let mut certificate_problems = vec![];
    for (n, der) in cert_items.into_iter().enumerate() {
        if der.first() != Some(&0x30) {
            continue;
        }
        match CertFacts::from_der(&der) {
            Ok(c) => certs.push(c),
            Err(e) => certificate_problems.push(format!("certificate {}: {e}", n + 1)),
        }
        certificates.push(der);
    }
    let crls = crl_items
        .into_iter()
        .filter(|c| c.first() == Some(&0x30))
        .collect();

    let mut digests = Digests::new(&content);
    let signers = signer_items
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            check_signer(
                index,
                raw,
                &sd.encap_content_info.econtent_type,
                &mut digests,
                &certs,
                &certificate_problems,
                now,
            )
        })
        .collect();
    Ok(Layer {
        format,
        content_type: sd.encap_content_info.econtent_type,
        content,
        signers,
        certificates,
        crls,
        certificate_problems,
    })
}

// ---------------------------------------------------------------------------------------
// One signer
// ---------------------------------------------------------------------------------------

/// The content's digest by each algorithm asked for, computed once.
struct Digests<'a> {
    content: &'a [u8],
    done: Vec<(Hash, Vec<u8>)>,
}

impl<'a> Digests<'a> {
    fn new(content: &'a [u8]) -> Self {
        Digests {
            content,
            done: vec![],
        }
    }

    fn get(&mut self, h: Hash) -> &[u8] {
        let pos = match self.done.iter().position(|(k, _)| *k == h) {
            Some(p) => p,
            None => {
                self.done.push((h, h.digest(self.content)));
                self.done.len() - 1
            }
        };
        &self.done[pos].1
    }
}

pub fn hash_name(h: Hash) -> &'static str {
    match h {
        Hash::Sha1 => "sha1",
        Hash::Sha256 => "sha256",
        Hash::Sha384 => "sha384",
        Hash::Sha512 => "sha512",
    }
}

/// What the signature algorithm asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SigScheme {
    RsaPkcs1,
    RsaPss { salt_len: usize },
    Ecdsa,
}

impl SigScheme {
    fn name(self) -> &'static str {
        match self {
            SigScheme::RsaPkcs1 => "rsa-pkcs1",
            SigScheme::RsaPss { .. } => "rsa-pss",
            SigScheme::Ecdsa => "ecdsa",
        }
    }
}

/// The scheme of a signature algorithm and the hash it implies (when it names one), or
/// why it cannot be used.
fn scheme_of(alg: &AlgorithmIdentifierOwned) -> Result<(SigScheme, Option<Hash>), String> {
    let o = alg.oid;
    let rsa = |h| Ok((SigScheme::RsaPkcs1, h));
    let ecdsa = |h| Ok((SigScheme::Ecdsa, h));
    match o {
        _ if o == oids::RSA_ENCRYPTION => rsa(None),
        _ if o == oids::SHA1_WITH_RSA => rsa(Some(Hash::Sha1)),
        _ if o == oids::SHA256_WITH_RSA => rsa(Some(Hash::Sha256)),
        _ if o == oids::SHA384_WITH_RSA => rsa(Some(Hash::Sha384)),
        _ if o == oids::SHA512_WITH_RSA => rsa(Some(Hash::Sha512)),
        // Some signers name the key type rather than the signature algorithm.
        _ if o == oids::ID_EC_PUBLIC_KEY => ecdsa(None),
        _ if o == oids::ECDSA_WITH_SHA1 => ecdsa(Some(Hash::Sha1)),
        _ if o == oids::ECDSA_WITH_SHA256 => ecdsa(Some(Hash::Sha256)),
        _ if o == oids::ECDSA_WITH_SHA384 => ecdsa(Some(Hash::Sha384)),
        _ if o == oids::ECDSA_WITH_SHA512 => ecdsa(Some(Hash::Sha512)),
        _ if o == oids::RSASSA_PSS => pss_scheme(alg),
        _ => Err(format!("signature algorithm {o}")),
    }
}

fn pss_scheme(alg: &AlgorithmIdentifierOwned) -> Result<(SigScheme, Option<Hash>), String> {
    let params = match &alg.parameters {
        Some(p) => p
            .decode_as::<PssParams>()
            .map_err(|e| format!("RSASSA-PSS parameters do not decode: {e}"))?,
        None => PssParams {
            hash: None,
            mask_gen: None,
            salt_len: None,
            trailer: None,
        },
    };
    let hash = match &params.hash {
        Some(a) => {
            Hash::from_oid(&a.oid).ok_or_else(|| format!("RSASSA-PSS with hash {}", a.oid))?
        }
        None => Hash::Sha1,
    };
    // The rsa crate's PSS uses MGF1 with the message hash, which is also what every
    // signer we know of uses.
    let mgf_hash = match &params.mask_gen {
        Some(m) if m.oid == oids::ID_MGF1 => {
            let inner = m
                .parameters
                .as_ref()
                .ok_or("RSASSA-PSS MGF1 without its hash")?
                .decode_as::<AlgorithmIdentifierOwned>()
                .map_err(|e| format!("RSASSA-PSS MGF1 parameters: {e}"))?;
            Hash::from_oid(&inner.oid)
                .ok_or_else(|| format!("RSASSA-PSS MGF1 with hash {}", inner.oid))?
        }
        Some(m) => return Err(format!("RSASSA-PSS with mask generation {}", m.oid)),
        None => Hash::Sha1,
    };
    if mgf_hash != hash {
        return Err(format!(
            "RSASSA-PSS with MGF1-{} but hash {}",
            hash_name(mgf_hash),
            hash_name(hash)
        ));
    }
    if params.trailer.unwrap_or(1) != 1 {
        return Err("RSASSA-PSS with a trailer field other than 1".into());
    }
    let salt_len = params.salt_len.unwrap_or(20) as usize;
    Ok((SigScheme::RsaPss { salt_len }, Some(hash)))
}

fn describe_sid(sid: &SignerIdentifier) -> String {
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(isn) => format!(
            "issuer {}, serial {}",
            isn.issuer,
            hex(isn.serial_number.as_bytes())
        ),
        SignerIdentifier::SubjectKeyIdentifier(ski) => {
            format!("subject key identifier {}", hex(ski.0.as_bytes()))
        }
    }
}

fn find_cert<'c>(sid: &SignerIdentifier, certs: &'c [CertFacts]) -> Option<&'c CertFacts> {
    certs.iter().find(|c| match sid {
        SignerIdentifier::IssuerAndSerialNumber(isn) => {
            let tbs = c.cert.tbs_certificate();
            tbs.serial_number() == &isn.serial_number
                && crate::certs::same_name(tbs.issuer(), &isn.issuer)
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => {
            c.subject_key_id.as_deref() == Some(ski.0.as_bytes())
        }
    })
}

/// The signed attributes a verifier looks at, each at most once (RFC 5652 section 11).
#[derive(Default)]
struct SignedAttrs {
    content_type: Option<ObjectIdentifier>,
    message_digest: Option<Vec<u8>>,
    signing_time: Option<SystemTime>,
    /// (hash algorithm, certificate hash) of the first ESS certificate identifier.
    signing_cert: Option<(Option<Hash>, Vec<u8>)>,
    /// The SMIMECapabilities, or why they could not be read (not fatal to the signature).
    capabilities: Option<Result<Option<Vec<ContentAlgorithm>>, String>>,
}

fn single_value<'a>(a: &'a Attribute, name: &str) -> Result<&'a Any, SignatureProblem> {
    let mut it = a.values.iter();
    match (it.next(), it.next()) {
        (Some(v), None) => Ok(v),
        _ => Err(problem(
            SignatureCode::Malformed,
            format!("the {name} attribute must have exactly one value"),
        )),
    }
}

fn read_attrs(items: &[Vec<u8>]) -> Result<SignedAttrs, SignatureProblem> {
    let malformed = |m: String| problem(SignatureCode::Malformed, m);
    let mut out = SignedAttrs::default();
    let mut seen_ct = false;
    let mut seen_md = false;
    let mut seen_st = false;
    for item in items {
        let a: Attribute = ber(item).map_err(|e| malformed(format!("a signed attribute: {e}")))?;
        let twice = |name: &str| malformed(format!("the {name} attribute appears twice"));
        match a.oid {
            o if o == oids::ID_CONTENT_TYPE => {
                if std::mem::replace(&mut seen_ct, true) {
                    return Err(twice("content-type"));
                }
                let v = single_value(&a, "content-type")?;
                out.content_type = Some(
                    v.decode_as::<ObjectIdentifier>()
                        .map_err(|e| malformed(format!("the content-type attribute: {e}")))?,
                );
            }
            o if o == oids::ID_MESSAGE_DIGEST => {
                if std::mem::replace(&mut seen_md, true) {
                    return Err(twice("message-digest"));
                }
                let v = single_value(&a, "message-digest")?;
                let d = v
                    .decode_as::<OctetString>()
                    .map_err(|e| malformed(format!("the message-digest attribute: {e}")))?;
                out.message_digest = Some(d.into_bytes().into_vec());
            }
            o if o == oids::ID_SIGNING_TIME => {
                if std::mem::replace(&mut seen_st, true) {
                    return Err(twice("signing-time"));
                }
                let v = single_value(&a, "signing-time")?;
                let t = v
                    .to_der()
                    .and_then(|d| Time::from_der(&d))
                    .map_err(|e| malformed(format!("the signing-time attribute: {e}")))?;
                out.signing_time = Some(t.to_system_time());
            }
            o if o == oids::SMIME_CAPABILITIES => {
                out.capabilities = Some(
                    single_value(&a, "SMIMECapabilities")
                        .map_err(|p| p.message)
                        .and_then(capabilities),
                );
            }
            o if o == oids::ID_AA_SIGNING_CERTIFICATE_V2
                || o == oids::ID_AA_SIGNING_CERTIFICATE =>
            {
                let v2 = o == oids::ID_AA_SIGNING_CERTIFICATE_V2;
                let v = single_value(&a, "ESS signing-certificate")?;
                let sc = v.decode_as::<SigningCertificate>().map_err(|e| {
                    malformed(format!("the ESS signing-certificate attribute: {e}"))
                })?;
                if let Some(first) = sc.certs.first() {
                    let hash = match (&first.hash_algorithm, v2) {
                        (Some(alg), true) => Hash::from_oid(&alg.oid),
                        (None, true) => Some(Hash::Sha256),
                        // Version 1 is always SHA-1 and carries no algorithm.
                        (_, false) => Some(Hash::Sha1),
                    };
                    out.signing_cert = Some((hash, first.cert_hash.as_bytes().to_vec()));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Content encryption algorithms (RFC 8551 section 2.7, and the legacy ones): a
/// capabilities list naming one of these speaks about content encryption.
const CONTENT_ENCRYPTION: [&str; 13] = [
    "2.16.840.1.101.3.4.1.2",     // aes128-CBC
    "2.16.840.1.101.3.4.1.22",    // aes192-CBC
    "2.16.840.1.101.3.4.1.42",    // aes256-CBC
    "2.16.840.1.101.3.4.1.6",     // aes128-GCM
    "2.16.840.1.101.3.4.1.26",    // aes192-GCM
    "2.16.840.1.101.3.4.1.46",    // aes256-GCM
    "2.16.840.1.101.3.4.1.7",     // aes128-CCM
    "2.16.840.1.101.3.4.1.27",    // aes192-CCM
    "2.16.840.1.101.3.4.1.47",    // aes256-CCM
    "1.2.840.113549.3.7",         // des-ede3-cbc
    "1.2.840.113549.3.2",         // rc2-cbc
    "1.3.14.3.2.7",               // des-cbc
    "1.2.840.113549.1.9.16.3.18", // chacha20-poly1305
];

/// Reads SMIMECapabilities (RFC 8551 section 2.5.2): `SEQUENCE OF SEQUENCE { capabilityID,
/// parameters OPTIONAL }`, the shape of a list of AlgorithmIdentifiers. Returns the content
/// encryption algorithms the agent implements, in the signer's order (possibly none:
/// the signer takes only algorithms the agent lacks), or `None` when the list names no
/// content encryption algorithm at all.
fn capabilities(v: &Any) -> Result<Option<Vec<ContentAlgorithm>>, String> {
    let caps: Vec<AlgorithmIdentifierOwned> = v
        .decode_as()
        .map_err(|e| format!("the SMIMECapabilities attribute does not decode: {e}"))?;
    if caps.len() > MAX_SET_ITEMS {
        return Err("the SMIMECapabilities attribute is too long".into());
    }
    let speaks = caps
        .iter()
        .any(|c| CONTENT_ENCRYPTION.contains(&c.oid.to_string().as_str()));
    if !speaks {
        return Ok(None);
    }
    let mut out: Vec<ContentAlgorithm> = vec![];
    for c in &caps {
        if let Some(a) = ContentAlgorithm::from_oid(&c.oid)
            && !out.contains(&a)
        {
            out.push(a);
        }
    }
    Ok(Some(out))
}

fn check_signer(
    index: usize,
    raw: &[u8],
    econtent_type: &ObjectIdentifier,
    digests: &mut Digests<'_>,
    certs: &[CertFacts],
    cert_problems: &[String],
    now: SystemTime,
) -> Signer {
    let si: SignerInfoBer = match ber(raw) {
        Ok(si) => si,
        Err(e) => {
            return Signer {
                index,
                signer_id: "(unreadable)".into(),
                cert: None,
                digest_algorithm: String::new(),
                signature_algorithm: String::new(),
                signing_time: None,
                capabilities: None,
                outcome: Err(problem(
                    SignatureCode::Malformed,
                    format!("the SignerInfo does not decode: {e}"),
                )),
                warnings: vec![],
            };
        }
    };
    let hash = Hash::from_oid(&si.digest_alg.oid);
    let scheme = scheme_of(&si.signature_algorithm);
    let mut signer = Signer {
        index,
        signer_id: describe_sid(&si.sid),
        cert: find_cert(&si.sid, certs).cloned(),
        digest_algorithm: hash
            .map(|h| hash_name(h).to_owned())
            .unwrap_or_else(|| si.digest_alg.oid.to_string()),
        signature_algorithm: match &scheme {
            Ok((s, _)) => s.name().to_owned(),
            Err(_) => si.signature_algorithm.oid.to_string(),
        },
        signing_time: None,
        capabilities: None,
        outcome: Ok(()),
        warnings: vec![],
    };
    // What the signed attributes say is reported even when the signature is not valid.
    let attrs = si.signed_attrs.as_ref().map(|s| read_attrs(&s.0));
    if let Some(Ok(a)) = &attrs {
        signer.signing_time = a.signing_time;
        match &a.capabilities {
            Some(Ok(c)) => signer.capabilities = c.clone(),
            Some(Err(e)) => signer.warnings.push(format!("{e}; ignored")),
            None => {}
        }
    }
    signer.outcome = check(
        &si,
        attrs,
        hash,
        scheme,
        econtent_type,
        digests,
        signer.cert.as_ref(),
        cert_problems,
    );
    if let (Some(t), Some(c)) = (signer.signing_time, &signer.cert) {
        if t > now + CLOCK_SKEW {
            signer.warnings.push(format!(
                "the signing time {} is in the future",
                crate::certs::rfc3339(t)
            ));
        }
        if t < c.not_before || t > c.not_after {
            signer.warnings.push(format!(
                "the signing time {} is outside the certificate's validity ({} to {})",
                crate::certs::rfc3339(t),
                crate::certs::rfc3339(c.not_before),
                crate::certs::rfc3339(c.not_after)
            ));
        }
    }
    signer
}

#[allow(clippy::too_many_arguments)]
fn check(
    si: &SignerInfoBer,
    attrs: Option<Result<SignedAttrs, SignatureProblem>>,
    hash: Option<Hash>,
    scheme: Result<(SigScheme, Option<Hash>), String>,
    econtent_type: &ObjectIdentifier,
    digests: &mut Digests<'_>,
    cert: Option<&CertFacts>,
    cert_problems: &[String],
) -> Result<(), SignatureProblem> {
    use SignatureCode as C;
    let Some(cert) = cert else {
        let mut m = format!(
            "the signer's certificate ({}) is not in the message",
            describe_sid(&si.sid)
        );
        if !cert_problems.is_empty() {
            m.push_str(&format!(
                "; some of its certificates could not be read: {}",
                cert_problems.join("; ")
            ));
        }
        return Err(problem(C::NoSignerCertificate, m));
    };
    let hash = hash.ok_or_else(|| {
        problem(
            C::UnsupportedAlgorithm,
            format!("digest algorithm {}", si.digest_alg.oid),
        )
    })?;
    let (scheme, implied) = scheme.map_err(|m| problem(C::UnsupportedAlgorithm, m))?;
    if let Some(h) = implied
        && h != hash
    {
        return Err(problem(
            C::Malformed,
            format!(
                "the digest algorithm is {} but the signature algorithm uses {}",
                hash_name(hash),
                hash_name(h)
            ),
        ));
    }

    // What the signature covers: the DER SET OF signed attributes, or the content itself.
    let signed_bytes = match (&si.signed_attrs, attrs) {
        (Some(raw), Some(attrs)) => {
            let attrs = attrs?;
            if raw.0.is_empty() {
                return Err(problem(C::Malformed, "the signed attributes are empty"));
            }
            match attrs.content_type {
                Some(ct) if ct == *econtent_type => {}
                Some(ct) => {
                    return Err(problem(
                        C::Malformed,
                        format!(
                            "the signed content-type {ct} differs from the content's type {econtent_type}"
                        ),
                    ));
                }
                None => {
                    return Err(problem(
                        C::Malformed,
                        "the signed attributes lack the content-type attribute",
                    ));
                }
            }
            let Some(md) = attrs.message_digest else {
                return Err(problem(
                    C::Malformed,
                    "the signed attributes lack the message-digest attribute",
                ));
            };
            if md != digests.get(hash) {
                return Err(problem(
                    C::DigestMismatch,
                    "the content does not match the signed digest: it was changed after signing",
                ));
            }
            if let Some((h, cert_hash)) = &attrs.signing_cert
                && let Some(h) = h
                && h.digest(&cert.der) != *cert_hash
            {
                return Err(problem(
                    C::CertificateMismatch,
                    format!(
                        "the signature names another certificate than {} (ESS signing-certificate)",
                        cert.subject
                    ),
                ));
            }
            raw.to_der()
                .map_err(|e| problem(C::Malformed, format!("the signed attributes: {e}")))?
        }
        _ => {
            if *econtent_type != oids::ID_DATA {
                return Err(problem(
                    C::Malformed,
                    "signed attributes are required for content other than data (RFC 5652 5.3)",
                ));
            }
            digests.content.to_vec()
        }
    };
    let verified = verify_signature(cert, scheme, hash, &signed_bytes, si.signature.as_bytes());
    if hash == Hash::Sha1 {
        let would = match &verified {
            Ok(()) => "it verifies, but",
            Err(_) => "it does not verify either, and",
        };
        return Err(problem(
            C::WeakAlgorithm,
            format!(
                "the signature uses SHA-1: {would} SHA-1 signatures are refused (SHA-1 collisions are practical)"
            ),
        ));
    }
    verified
}

fn verify_signature(
    cert: &CertFacts,
    scheme: SigScheme,
    hash: Hash,
    signed: &[u8],
    sig: &[u8],
) -> Result<(), SignatureProblem> {
    use SignatureCode as C;
    let spki = cert.cert.tbs_certificate().subject_public_key_info();
    let mismatch = || {
        problem(
            C::BadSignature,
            format!(
                "a {} signature cannot come from the certificate's {} key",
                scheme.name(),
                cert.key.name()
            ),
        )
    };
    let bad = || {
        problem(
            C::BadSignature,
            format!(
                "the signature does not verify with the public key of {}",
                cert.subject
            ),
        )
    };
    let digest = hash.digest(signed);
    match (cert.key, scheme) {
        (KeyKind::Rsa { .. }, SigScheme::RsaPkcs1 | SigScheme::RsaPss { .. }) => {
            use rsa::pkcs8::DecodePublicKey;
            let der = spki
                .to_der()
                .map_err(|e| problem(C::UnsupportedAlgorithm, format!("RSA public key: {e}")))?;
            let key = rsa::RsaPublicKey::from_public_key_der(&der)
                .map_err(|e| problem(C::UnsupportedAlgorithm, format!("RSA public key: {e}")))?;
            let result = match scheme {
                SigScheme::RsaPss { salt_len } => match hash {
                    Hash::Sha1 => key.verify(
                        rsa::Pss::<sha1::Sha1>::new_with_salt(salt_len),
                        &digest,
                        sig,
                    ),
                    Hash::Sha256 => key.verify(
                        rsa::Pss::<sha2::Sha256>::new_with_salt(salt_len),
                        &digest,
                        sig,
                    ),
                    Hash::Sha384 => key.verify(
                        rsa::Pss::<sha2::Sha384>::new_with_salt(salt_len),
                        &digest,
                        sig,
                    ),
                    Hash::Sha512 => key.verify(
                        rsa::Pss::<sha2::Sha512>::new_with_salt(salt_len),
                        &digest,
                        sig,
                    ),
                },
                _ => {
                    let pkcs1 = match hash {
                        Hash::Sha1 => rsa::Pkcs1v15Sign::new::<sha1::Sha1>(),
                        Hash::Sha256 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                        Hash::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                        Hash::Sha512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
                    };
                    key.verify(pkcs1, &digest, sig)
                }
            };
            result.map_err(|_| bad())
        }
        (KeyKind::EcP256, SigScheme::Ecdsa) => {
            let vk = ec_point(spki)
                .and_then(|p| p256::ecdsa::VerifyingKey::from_sec1_bytes(p).ok())
                .ok_or_else(|| {
                    problem(C::UnsupportedAlgorithm, "the EC public key does not decode")
                })?;
            let s = p256::ecdsa::Signature::from_der(sig).map_err(|_| bad())?;
            vk.verify_prehash(&digest, &s).map_err(|_| bad())
        }
        (KeyKind::EcP384, SigScheme::Ecdsa) => {
            let vk = ec_point(spki)
                .and_then(|p| p384::ecdsa::VerifyingKey::from_sec1_bytes(p).ok())
                .ok_or_else(|| {
                    problem(C::UnsupportedAlgorithm, "the EC public key does not decode")
                })?;
            let s = p384::ecdsa::Signature::from_der(sig).map_err(|_| bad())?;
            vk.verify_prehash(&digest, &s).map_err(|_| bad())
        }
        (KeyKind::EcP521, SigScheme::Ecdsa) => Err(problem(
            C::UnsupportedAlgorithm,
            "ECDSA on P-521 is not verified by this agent",
        )),
        _ => Err(mismatch()),
    }
}

fn ec_point(spki: &spki::SubjectPublicKeyInfoOwned) -> Option<&[u8]> {
    spki.subject_public_key.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl cms -sign -nodetach` with a self-signed P-256 certificate (tests/data/verify).
    const EC_OPAQUE: &[u8] = include_bytes!("../../tests/data/verify/ec-opaque.der");

    fn now() -> SystemTime {
        SystemTime::now()
    }

    #[test]
    fn an_openssl_opaque_signature_verifies_and_gives_the_content() {
        let layer = verify_cms(EC_OPAQUE, None, now()).unwrap();
        assert_eq!(layer.format, Format::Opaque);
        assert_eq!(layer.signers.len(), 1);
        let s = &layer.signers[0];
        assert!(s.valid(), "{:?}", s.outcome);
        assert_eq!(s.signature_algorithm, "ecdsa");
        assert_eq!(s.digest_algorithm, "sha256");
        assert!(s.signing_time.is_some());
        // OpenSSL's list: aes-256-cbc, aes-192-cbc, aes-128-cbc, des-ede3-cbc, rc2, des.
        assert_eq!(
            s.capabilities,
            Some(vec![
                ContentAlgorithm::Aes256Cbc,
                ContentAlgorithm::Aes128Cbc
            ])
        );
        assert_eq!(
            s.cert.as_ref().map(|c| c.subject_emails.clone()),
            Some(vec!["fixture@example.org".to_owned()])
        );
        assert!(String::from_utf8_lossy(&layer.content).contains("A fixture for the verifier."));
        assert_eq!(layer.certificates.len(), 1);
        // The same, framed as MIME.
        let entity = mime::pkcs7_mime("signed-data", EC_OPAQUE);
        assert!(is_signed(&entity));
        assert!(verify_entity(&entity, now()).unwrap().signers[0].valid());
    }

    #[test]
    fn capabilities_keep_the_agents_algorithms_in_the_signers_order() {
        let caps = |oids: &[ObjectIdentifier]| {
            let list: Vec<AlgorithmIdentifierOwned> = oids
                .iter()
                .map(|o| AlgorithmIdentifierOwned {
                    oid: *o,
                    parameters: None,
                })
                .collect();
            capabilities(&Any::encode_from(&list).unwrap())
        };
        use ContentAlgorithm as A;
        assert_eq!(
            caps(&[
                oids::ID_AES128_GCM,
                oids::ID_AES256_CBC,
                oids::ID_AES128_GCM
            ]),
            Ok(Some(vec![A::Aes128Gcm, A::Aes256Cbc]))
        );
        // Only 3DES: the signer takes none of the agent's algorithms.
        let des3 = ObjectIdentifier::new_unwrap("1.2.840.113549.3.7");
        assert_eq!(caps(&[des3]), Ok(Some(vec![])));
        // Only signature algorithms: says nothing about content encryption.
        assert_eq!(caps(&[oids::ECDSA_WITH_SHA256]), Ok(None));
        assert!(capabilities(&Any::encode_from(&oids::ID_DATA).unwrap()).is_err());
    }

    #[test]
    fn changed_content_is_a_digest_mismatch() {
        let pos = EC_OPAQUE.windows(7).position(|w| w == b"fixture").unwrap();
        let mut m = EC_OPAQUE.to_vec();
        m[pos] = b'F';
        let layer = verify_cms(&m, None, now()).unwrap();
        let err = layer.signers[0].outcome.clone().unwrap_err();
        assert_eq!(err.code, SignatureCode::DigestMismatch, "{}", err.message);
    }

    #[test]
    fn a_changed_signature_is_a_bad_signature() {
        // The signature is the last OCTET STRING of the SignerInfo: flip its last byte
        // (the s of ECDSA) - the DER stays well-formed.
        let mut m = EC_OPAQUE.to_vec();
        let last = m.len() - 1;
        m[last] ^= 0x01;
        let layer = verify_cms(&m, None, now()).unwrap();
        let err = layer.signers[0].outcome.clone().unwrap_err();
        assert_eq!(err.code, SignatureCode::BadSignature, "{}", err.message);
    }

    #[test]
    fn truncations_and_garbage_are_errors_never_panics() {
        for n in 0..EC_OPAQUE.len() {
            let cut = &EC_OPAQUE[..n];
            assert!(
                verify_cms(cut, None, now()).is_err(),
                "a cut at {n} was accepted"
            );
            let _ = verify_entity(cut, now());
        }
        // Bit flips anywhere (sampled): an error or a result, never a panic.
        for pos in (0..EC_OPAQUE.len()).step_by(13) {
            let mut m = EC_OPAQUE.to_vec();
            m[pos] ^= 0x5a;
            if let Ok(layer) = verify_cms(&m, None, now()) {
                assert_eq!(layer.signers.len(), 1);
            }
        }
        for junk in [
            &b""[..],
            b"\x30",
            b"\x30\x80",
            b"\x30\x80\x00\x00",
            b"hello world",
            b"Content-Type: text/plain\r\n\r\nnot signed",
            b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=x\r\n\r\n--x\r\n\r\nbody\r\n--x--\r\n",
            b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\r\n",
        ] {
            assert!(verify_entity(junk, now()).is_err(), "{junk:?} was accepted");
        }
    }

    #[test]
    fn the_layer_is_read_from_pem_and_from_bare_der() {
        use base64::Engine as _;
        let pem = format!(
            "-----BEGIN SIGNED MESSAGE-----\n{}\n-----END SIGNED MESSAGE-----\n",
            base64::engine::general_purpose::STANDARD.encode(EC_OPAQUE)
        );
        assert!(verify_entity(pem.as_bytes(), now()).unwrap().signers[0].valid());
        assert!(verify_entity(EC_OPAQUE, now()).unwrap().signers[0].valid());
    }
}
