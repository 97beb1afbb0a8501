//! The signed attributes of a SignerInfo (RFC 5652 section 11, RFC 8551 section 2.5.2,
//! RFC 2634 and RFC 5035): content-type, message-digest, signing-time and the ESS
//! signing-certificate (v1 or v2), each read at most once, and SMIMECapabilities reduced to
//! the content encryption algorithms the agent implements.
//!
//! Owns: reading the attributes. Must not touch: comparing them with the content, the
//! certificate or the signature (`signer`'s).

use std::time::SystemTime;

use der::asn1::{Any, ObjectIdentifier, OctetString};
use der::{Decode, Encode, Sequence};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use x509_cert::time::Time;

use super::ber::MAX_SET_ITEMS;
use super::results::{SignatureCode, SignatureProblem, problem};
use crate::alg::{ContentAlgorithm, Hash};
use crate::oids;
use crate::smime::asn1::ber;

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

/// The signed attributes a verifier looks at, each at most once (RFC 5652 section 11).
#[derive(Default)]
pub(super) struct SignedAttrs {
    pub(super) content_type: Option<ObjectIdentifier>,
    pub(super) message_digest: Option<Vec<u8>>,
    pub(super) signing_time: Option<SystemTime>,
    /// (hash algorithm, certificate hash) of the first ESS certificate identifier.
    pub(super) signing_cert: Option<(Option<Hash>, Vec<u8>)>,
    /// The SMIMECapabilities, or why they could not be read (not fatal to the signature).
    pub(super) capabilities: Option<Result<Option<Vec<ContentAlgorithm>>, String>>,
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

pub(super) fn read_attrs(items: &[Vec<u8>]) -> Result<SignedAttrs, SignatureProblem> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
