//! One signer of a layer: its certificate among the message's (issuer and serial, or subject
//! key identifier), its signed attributes against the content (content-type,
//! message-digest, ESS signing-certificate), what its signature covers (the signed
//! attributes exactly as carried, or the content), the refusal of SHA-1, and the
//! signing-time warnings.
//!
//! Owns: the checks of one SignerInfo, and the content's digests (each computed once per
//! layer). Must not touch: the layer and its bounds (`layers`), public-key arithmetic
//! (`signature`), trust in the certificate (the caller's).

use std::time::{Duration, SystemTime};

use cms::signed_data::SignerIdentifier;
use der::Encode;
use der::asn1::ObjectIdentifier;

use super::attrs::{SignedAttrs, read_attrs};
use super::ber::SignerInfoBer;
use super::results::{SignatureCode, SignatureProblem, Signer, problem};
use super::signature::{SigScheme, hash_name, scheme_of, verify_signature};
use crate::alg::Hash;
use crate::certs::{CertFacts, hex};
use crate::oids;
use crate::smime::asn1::ber;

/// A signing time this far ahead of the verifier's clock is reported.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// The content's digest by each algorithm asked for, computed once.
pub(super) struct Digests<'a> {
    content: &'a [u8],
    done: Vec<(Hash, Vec<u8>)>,
}

impl<'a> Digests<'a> {
    pub(super) fn new(content: &'a [u8]) -> Self {
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

pub(super) fn check_signer(
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
    if let Some(t) = signer.signing_time
        && t > now + CLOCK_SKEW
    {
        signer.warnings.push(format!(
            "the signing time {} is in the future",
            crate::certs::rfc3339(t)
        ));
    }
    if let (Some(t), Some(c)) = (signer.signing_time, &signer.cert)
        && (t < c.not_before || t > c.not_after)
    {
        signer.warnings.push(format!(
            "the signing time {} is outside the certificate's validity ({} to {})",
            crate::certs::rfc3339(t),
            crate::certs::rfc3339(c.not_before),
            crate::certs::rfc3339(c.not_after)
        ));
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
