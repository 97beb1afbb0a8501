//! What verifying a layer answers: the [`Layer`], each [`Signer`] in it, and why a signature
//! is not valid ([`SignatureCode`], with its stable word).
//!
//! Owns: the result types. Must not touch: how the answers are found.

use std::time::SystemTime;

use der::asn1::ObjectIdentifier;

use crate::alg::ContentAlgorithm;
use crate::certs::CertFacts;
use crate::smime::fields::MessageFields;

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

pub(super) fn problem(code: SignatureCode, message: impl Into<String>) -> SignatureProblem {
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
    /// The From, Sender and Date of the signed entity's own header section (a whole message
    /// handed over, or an inner entity that carries them); `None` for a bare entity or
    /// bare CMS.
    pub fields: Option<MessageFields>,
}
