//! The S/MIME certificate profile: whether a certificate, with the CA certificates of its
//! validated path, is fit for S/MIME signing, encryption or either (RFC 8550 section 4.4, RFC
//! 8551). One function, [`check`], decides it for every judgement the agent makes: `validate`,
//! selection (`which`, `sign`, `encrypt`), `verify`'s signers and the recipient search.
//!
//! The rules, each reported by name ([`Rule::code`]):
//! - `extended_key_usage`: the leaf's EKU, when present, includes emailProtection or
//!   anyExtendedKeyUsage (no EKU at all is fine, as RFC 8550 allows);
//! - `ca_extended_key_usage`: a CA certificate of the path whose EKU is present excludes
//!   both emailProtection and anyExtendedKeyUsage refuses the path (EKU chaining as CAs and
//!   mail clients apply it);
//! - `no_address`: the leaf carries a mail address (subject emailAddress, a subject CN that
//!   is exactly an address, as the selection rules match it (behaviour.md section 2), or
//!   rfc822Name in subjectAltName); `address_mismatch`: it carries the one asked for;
//! - `ca_certificate`: the leaf is not a CA (cA=TRUE in basicConstraints, or keyCertSign);
//! - `key_usage`: its key usage allows the use (digitalSignature or nonRepudiation to sign;
//!   keyEncipherment for RSA or keyAgreement for EC to encrypt; either one for either);
//! - `weak_key`, `key_algorithm`: every key of the path is RSA of at least 2048 bits or EC
//!   on P-256, P-384 or P-521 (no DSA, no P-192, nothing else).
//!
//! Owns only these rules over parsed certificates. Must not touch: building or validating the
//! path (`trust/`), validity periods and revocation.

use der::asn1::{Ia5StringRef, ObjectIdentifier, UintRef};
use der::{Decode, Sequence};
use x509_cert::certificate::{CertificateInner, Profile};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAltName};

use super::address::same_address;
use crate::oids;

/// Smallest RSA modulus accepted anywhere in a path.
pub const MIN_RSA_BITS: usize = 2048;

const ID_DSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.1");
const SECP192R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.1");

/// What the certificate is to be fit for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Fitness {
    Sign,
    Encrypt,
    /// Signing or encryption, whichever its key usage allows (`validate` without `--for`).
    #[default]
    Either,
}

impl Fitness {
    fn gerund(self) -> &'static str {
        match self {
            Fitness::Sign => "signing",
            Fitness::Encrypt => "encryption",
            Fitness::Either => "signing or encryption",
        }
    }
}

/// What a judgement asks of the profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ProfileRequest {
    pub fitness: Fitness,
    /// The leaf must carry this address.
    pub address: Option<String>,
}

/// A rule of the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    ExtKeyUsage,
    CaExtKeyUsage,
    NoAddress,
    AddressMismatch,
    CaCertificate,
    KeyUsage,
    WeakKey,
    KeyAlgorithm,
}

impl Rule {
    /// The rule's stable name, as reason code.
    pub fn code(self) -> &'static str {
        match self {
            Rule::ExtKeyUsage => "extended_key_usage",
            Rule::CaExtKeyUsage => "ca_extended_key_usage",
            Rule::NoAddress => "no_address",
            Rule::AddressMismatch => "address_mismatch",
            Rule::CaCertificate => "ca_certificate",
            Rule::KeyUsage => "key_usage",
            Rule::WeakKey => "weak_key",
            Rule::KeyAlgorithm => "key_algorithm",
        }
    }
}

/// A rule the certificate breaks, in words that name the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: Rule,
    pub message: String,
}

/// Every rule of the profile that `leaf`, issued through `cas` (the CA certificates of its
/// validated path, the anchor included, in any order), breaks for `req`. Empty when fit.
pub fn check<P: Profile>(
    leaf: &CertificateInner<P>,
    cas: &[&CertificateInner<P>],
    req: &ProfileRequest,
) -> Vec<Violation> {
    let mut out = leaf_violations(leaf, req);
    for ca in cas {
        out.extend(ca_violations(ca));
    }
    out
}

/// The rules on the leaf alone (selection applies them before any path is built).
pub fn leaf_violations<P: Profile>(
    leaf: &CertificateInner<P>,
    req: &ProfileRequest,
) -> Vec<Violation> {
    let who = leaf.tbs_certificate().subject().to_string();
    let mut out = vec![];
    let v = |rule, message| Violation { rule, message };
    if let Some(u) = usage_violation(leaf, req.fitness) {
        out.push(u);
    }
    let (is_ca, ku) = (basic_ca(leaf), key_usage(leaf));
    if is_ca || ku.is_some_and(|k| k.key_cert_sign()) {
        out.push(v(
            Rule::CaCertificate,
            format!(
                "{who} is a CA certificate ({}); a CA's key does not sign or receive mail",
                if is_ca {
                    "basicConstraints cA=TRUE"
                } else {
                    "keyUsage keyCertSign"
                }
            ),
        ));
    }
    let addresses = addresses(leaf);
    match &req.address {
        _ if addresses.is_empty() => out.push(v(
            Rule::NoAddress,
            format!(
                "{who} carries no mail address (no subject emailAddress, no CN that is an address, no rfc822Name in subjectAltName)"
            ),
        )),
        Some(a) if !addresses.iter().any(|c| same_address(c, a)) => out.push(v(
            Rule::AddressMismatch,
            format!("{who} is not for {a} (it carries {})", addresses.join(", ")),
        )),
        _ => {}
    }
    if let Some(k) = key_violation(leaf) {
        out.push(k);
    }
    out
}

/// The key usage and extended key usage of the leaf for `fitness`, with the words selection
/// has always used.
pub fn usage_violation<P: Profile>(
    leaf: &CertificateInner<P>,
    fitness: Fitness,
) -> Option<Violation> {
    let ku = key_usage(leaf);
    if let Some(ku) = ku {
        let ec = is_ec(leaf);
        let sign = ku.digital_signature() || ku.non_repudiation();
        let encrypt = if ec {
            ku.key_agreement()
        } else {
            ku.key_encipherment()
        };
        let ok = match fitness {
            Fitness::Sign => sign,
            Fitness::Encrypt => encrypt,
            Fitness::Either => sign || encrypt,
        };
        if !ok {
            let needs = match fitness {
                Fitness::Sign => "signing",
                Fitness::Encrypt if ec => "key agreement (EC encryption)",
                Fitness::Encrypt => "key encipherment (RSA encryption)",
                Fitness::Either => fitness.gerund(),
            };
            return Some(Violation {
                rule: Rule::KeyUsage,
                message: format!(
                    "its key usage ({}) does not allow {needs}",
                    key_usage_names(&ku).join(", ")
                ),
            });
        }
    }
    match ext_key_usage(leaf) {
        Some(list) if !eku_allows_email(&list) => Some(Violation {
            rule: Rule::ExtKeyUsage,
            message: format!(
                "its extended key usage ({}) does not include emailProtection",
                list.iter().map(eku_name).collect::<Vec<_>>().join(", ")
            ),
        }),
        _ => None,
    }
}

/// The rules on a CA certificate of the path (the anchor included).
fn ca_violations<P: Profile>(ca: &CertificateInner<P>) -> Vec<Violation> {
    let who = ca.tbs_certificate().subject().to_string();
    let mut out = vec![];
    if let Some(list) = ext_key_usage(ca)
        && !eku_allows_email(&list)
    {
        out.push(Violation {
            rule: Rule::CaExtKeyUsage,
            message: format!(
                "the CA {who} is restricted to {} by its extended key usage; it cannot vouch for mail certificates",
                list.iter().map(eku_name).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    if let Some(k) = key_violation(ca) {
        out.push(k);
    }
    out
}

fn eku_allows_email(list: &[ObjectIdentifier]) -> bool {
    list.iter()
        .any(|o| *o == oids::ID_KP_EMAIL_PROTECTION || *o == oids::ANY_EXTENDED_KEY_USAGE)
}

fn eku_name(o: &ObjectIdentifier) -> String {
    [
        (oids::ID_KP_EMAIL_PROTECTION, "emailProtection"),
        (oids::ID_KP_SERVER_AUTH, "serverAuth"),
        (oids::ID_KP_CLIENT_AUTH, "clientAuth"),
        (oids::ID_KP_CODE_SIGNING, "codeSigning"),
        (oids::ID_KP_TIME_STAMPING, "timeStamping"),
        (oids::ID_KP_OCSP_SIGNING, "OCSPSigning"),
        (oids::ANY_EXTENDED_KEY_USAGE, "anyExtendedKeyUsage"),
    ]
    .iter()
    .find(|(k, _)| k == o)
    .map(|(_, n)| (*n).to_owned())
    .unwrap_or_else(|| o.to_string())
}

fn key_usage_names(ku: &KeyUsage) -> Vec<&'static str> {
    [
        (ku.digital_signature(), "digitalSignature"),
        (ku.non_repudiation(), "nonRepudiation"),
        (ku.key_encipherment(), "keyEncipherment"),
        (ku.data_encipherment(), "dataEncipherment"),
        (ku.key_agreement(), "keyAgreement"),
        (ku.key_cert_sign(), "keyCertSign"),
        (ku.crl_sign(), "cRLSign"),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| n)
    .collect()
}

// A malformed extension reads as absent here: `trust::strict` refuses the certificate for it.
fn key_usage<P: Profile>(c: &CertificateInner<P>) -> Option<KeyUsage> {
    c.tbs_certificate()
        .get_extension::<KeyUsage>()
        .ok()
        .flatten()
        .map(|(_, k)| k)
}

fn ext_key_usage<P: Profile>(c: &CertificateInner<P>) -> Option<Vec<ObjectIdentifier>> {
    c.tbs_certificate()
        .get_extension::<ExtendedKeyUsage>()
        .ok()
        .flatten()
        .map(|(_, e)| e.0)
}

fn basic_ca<P: Profile>(c: &CertificateInner<P>) -> bool {
    c.tbs_certificate()
        .get_extension::<BasicConstraints>()
        .ok()
        .flatten()
        .is_some_and(|(_, b)| b.ca)
}

/// The leaf's mail addresses: subject emailAddress attributes and subjectAltName rfc822Names.
pub fn addresses<P: Profile>(c: &CertificateInner<P>) -> Vec<String> {
    let tbs = c.tbs_certificate();
    let mut out: Vec<String> = tbs
        .subject()
        .iter()
        .filter_map(|atv| {
            if atv.oid == oids::EMAIL_ADDRESS {
                Ia5StringRef::try_from(&atv.value)
                    .ok()
                    .map(|s| s.as_str().to_owned())
            } else if atv.oid == oids::COMMON_NAME {
                // Legacy certificates name the address in the CN only; the selection rules
                // match it there, so the profile counts it.
                super::any_string(&atv.value).filter(|cn| super::address::check_address(cn).is_ok())
            } else {
                None
            }
        })
        .collect();
    if let Ok(Some((_, san))) = tbs.get_extension::<SubjectAltName>() {
        for n in san.0 {
            if let GeneralName::Rfc822Name(s) = n {
                out.push(s.to_string());
            }
        }
    }
    out
}

fn is_ec<P: Profile>(c: &CertificateInner<P>) -> bool {
    c.tbs_certificate()
        .subject_public_key_info()
        .algorithm
        .oid
        .eq(&oids::ID_EC_PUBLIC_KEY)
}

#[derive(Sequence)]
struct RsaPublicKey<'a> {
    modulus: UintRef<'a>,
    _exponent: UintRef<'a>,
}

/// The key floor, the same for every certificate of a path.
fn key_violation<P: Profile>(c: &CertificateInner<P>) -> Option<Violation> {
    let who = c.tbs_certificate().subject().to_string();
    let spki = c.tbs_certificate().subject_public_key_info();
    let alg = &spki.algorithm;
    let weak = |what: String| {
        Some(Violation {
            rule: Rule::WeakKey,
            message: format!("{who} has {what}"),
        })
    };
    let refused = |what: String| {
        Some(Violation {
            rule: Rule::KeyAlgorithm,
            message: format!(
                "{who} has {what}; S/MIME keys are RSA ({MIN_RSA_BITS} bits or more) or EC on P-256, P-384 or P-521"
            ),
        })
    };
    if alg.oid == oids::RSA_ENCRYPTION {
        let bits = spki
            .subject_public_key
            .as_bytes()
            .and_then(|b| RsaPublicKey::from_der(b).ok())
            .map(|k| {
                let m = k.modulus.as_bytes();
                m.first()
                    .map_or(0, |b| m.len() * 8 - b.leading_zeros() as usize)
            });
        return match bits {
            Some(b) if b >= MIN_RSA_BITS => None,
            Some(b) => weak(format!(
                "an RSA key of {b} bits, fewer than the {MIN_RSA_BITS} required"
            )),
            None => refused("a malformed RSA key".into()),
        };
    }
    if alg.oid == oids::ID_EC_PUBLIC_KEY {
        let curve = alg
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        return match curve {
            Some(c) if c == oids::SECP256R1 || c == oids::SECP384R1 || c == oids::SECP521R1 => None,
            Some(c) if c == SECP192R1 => weak("an EC key on P-192, too small a curve".into()),
            Some(c) => refused(format!("an EC key on curve {c}")),
            None => refused("an EC key without a named curve".into()),
        };
    }
    if alg.oid == ID_DSA {
        return refused("a DSA key".into());
    }
    refused(format!("a key of algorithm {}", alg.oid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        assert_eq!(Rule::ExtKeyUsage.code(), "extended_key_usage");
        assert_eq!(Rule::CaExtKeyUsage.code(), "ca_extended_key_usage");
        assert_eq!(Rule::CaCertificate.code(), "ca_certificate");
        assert_eq!(Rule::WeakKey.code(), "weak_key");
    }
}
