//! The strict path checks: what RFC 5280 requires and certval, as the agent calls it, does not
//! check. A mail reader shows "valid" as the truth, so these run on every path before certval
//! is asked (`path.rs`).
//!
//! - `duplicate_extension`: an extension twice in one certificate (RFC 5280 4.2), anywhere in
//!   the path, the anchor included (certval refuses only a duplicated critical extension).
//! - `malformed_extension`: an extension the agent or certval reads that does not decode as
//!   its ASN.1 says, or breaks its SIZE (1..MAX) (an empty subjectAltName, issuerAltName or
//!   extendedKeyUsage); certval reads a malformed non-critical extension as absent.
//! - `unknown_critical_extension` and `anchor_constraints`: the trust anchor's own
//!   certificate, which certval's path validation never looks at: its critical extensions,
//!   and its constraints (basicConstraints pathLenConstraint, name constraints, key usage,
//!   policy constraints) applied to the path as RFC 5937 says, through certval's own
//!   `enforce_trust_anchor_constraints` (which its `validate_path` does not call). A name
//!   outside the anchor's name constraints then fails certval's name check, as one outside an
//!   intermediate's does (`name_constraints`).
//! - CRLs without a CRL number, or with a critical one (RFC 5280 5.2.3): not used.
//!
//! Owns: these rules. Must not touch: building paths (`build.rs`), certval's own checks, the
//! S/MIME profile (`certs::profile`).

use certval::{
    CertificationPathSettings, Error as CvError, PDVCertificate, PathValidationStatus as Pvs,
};
use der::Decode;
use der::asn1::ObjectIdentifier;
use x509_cert::certificate::{CertificateInner, Profile};
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::{
    AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints, CertificatePolicies,
    CrlDistributionPoints, ExtendedKeyUsage, InhibitAnyPolicy, IssuerAltName, KeyUsage,
    NameConstraints, PolicyConstraints, PolicyMappings, SubjectAltName, SubjectKeyIdentifier,
};

use super::Anchor;
use super::validation::{Problem, ProblemCode, subject};

const ID_CE_CRL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.20");

/// The extensions the agent processes on a certificate it takes as its own anchor (the
/// target is itself a trust anchor): the anchor extensions certval knows, and the leaf's.
const SELF_ANCHOR_KNOWN: [ObjectIdentifier; 9] = [
    ObjectIdentifier::new_unwrap("2.5.29.15"), // keyUsage
    ObjectIdentifier::new_unwrap("2.5.29.17"), // subjectAltName
    ObjectIdentifier::new_unwrap("2.5.29.19"), // basicConstraints
    ObjectIdentifier::new_unwrap("2.5.29.30"), // nameConstraints
    ObjectIdentifier::new_unwrap("2.5.29.32"), // certificatePolicies
    ObjectIdentifier::new_unwrap("2.5.29.36"), // policyConstraints
    ObjectIdentifier::new_unwrap("2.5.29.37"), // extKeyUsage
    ObjectIdentifier::new_unwrap("2.5.29.54"), // inhibitAnyPolicy
    ObjectIdentifier::new_unwrap("2.5.29.33"), // policyMappings
];

fn problem(code: ProblemCode, message: String) -> Problem {
    Problem { code, message }
}

/// Why `cert` breaks the strict rules on a certificate's own encoding (duplicate or
/// malformed extensions), if it does.
pub(super) fn certificate_problem(cert: &PDVCertificate) -> Option<Problem> {
    certificate_problem_of(cert.decoded(), &subject(cert))
}

fn certificate_problem_of<P: Profile>(c: &CertificateInner<P>, who: &str) -> Option<Problem> {
    let tbs = c.tbs_certificate();
    let exts = tbs.extensions().map(|e| e.as_slice()).unwrap_or_default();
    for (i, e) in exts.iter().enumerate() {
        if exts[..i].iter().any(|x| x.extn_id == e.extn_id) {
            return Some(problem(
                ProblemCode::DuplicateExtension,
                format!(
                    "{who} carries extension {} more than once (RFC 5280 4.2 forbids it)",
                    e.extn_id
                ),
            ));
        }
    }
    let malformed = |name: &str, why: String| {
        Some(problem(
            ProblemCode::MalformedExtension,
            format!("{who}: its {name} extension is malformed ({why})"),
        ))
    };
    macro_rules! decodes {
        ($t:ty, $name:literal) => {
            if let Err(e) = tbs.get_extension::<$t>() {
                return malformed($name, e.to_string());
            }
        };
    }
    decodes!(SubjectKeyIdentifier, "subjectKeyIdentifier");
    decodes!(AuthorityKeyIdentifier, "authorityKeyIdentifier");
    decodes!(KeyUsage, "keyUsage");
    decodes!(BasicConstraints, "basicConstraints");
    decodes!(NameConstraints, "nameConstraints");
    decodes!(CertificatePolicies, "certificatePolicies");
    decodes!(PolicyMappings, "policyMappings");
    decodes!(PolicyConstraints, "policyConstraints");
    decodes!(InhibitAnyPolicy, "inhibitAnyPolicy");
    decodes!(CrlDistributionPoints, "cRLDistributionPoints");
    decodes!(AuthorityInfoAccessSyntax, "authorityInfoAccess");
    // GeneralNames and KeyPurposeIds are SIZE (1..MAX): an empty one is no list at all.
    match tbs.get_extension::<SubjectAltName>() {
        Err(e) => return malformed("subjectAltName", e.to_string()),
        Ok(Some((_, san))) if san.0.is_empty() => {
            return malformed("subjectAltName", "it names nothing".into());
        }
        Ok(_) => {}
    }
    match tbs.get_extension::<IssuerAltName>() {
        Err(e) => return malformed("issuerAltName", e.to_string()),
        Ok(Some((_, ian))) if ian.0.is_empty() => {
            return malformed("issuerAltName", "it names nothing".into());
        }
        Ok(_) => {}
    }
    match tbs.get_extension::<ExtendedKeyUsage>() {
        Err(e) => return malformed("extendedKeyUsage", e.to_string()),
        Ok(Some((_, eku))) if eku.0.is_empty() => {
            return malformed("extendedKeyUsage", "it lists no purpose".into());
        }
        Ok(_) => {}
    }
    None
}

/// The strict rules on a certificate validated as its own trust anchor (no path, so certval
/// never sees it): its encoding, and no critical extension the agent does not process.
pub(super) fn self_anchor_problem(cert: &PDVCertificate) -> Option<Problem> {
    if let Some(p) = certificate_problem(cert) {
        return Some(p);
    }
    let exts = cert.decoded().tbs_certificate().extensions();
    let unknown = exts
        .iter()
        .flat_map(|e| e.iter())
        .find(|e| e.critical && !SELF_ANCHOR_KNOWN.contains(&e.extn_id))?;
    Some(problem(
        ProblemCode::UnknownCriticalExtension,
        format!(
            "{} carries critical extension {}, which the agent does not process",
            subject(cert),
            unknown.extn_id
        ),
    ))
}

/// The path settings with the anchor's own constraints applied (RFC 5937), or why the anchor
/// cannot anchor a path at all.
pub(super) fn anchor_settings(
    cps: &CertificationPathSettings,
    anchor: &Anchor,
) -> Result<CertificationPathSettings, Problem> {
    let who = format!("trust anchor {}", subject(&anchor.cert));
    if let Some(p) = certificate_problem_of(anchor.cert.decoded(), &who) {
        return Err(p);
    }
    let mut with = cps.clone();
    with.set_enforce_trust_anchor_constraints(true);
    match certval::enforce_trust_anchor_constraints(&with, &anchor.ta) {
        Ok(mut out) => {
            // Applied once, here; certval's other uses of the flag (a second anchor store
            // to compare with) do not concern the agent.
            out.set_enforce_trust_anchor_constraints(false);
            Ok(out)
        }
        Err(CvError::Unrecognized) => {
            let ext = anchor
                .cert
                .decoded()
                .tbs_certificate()
                .extensions()
                .iter()
                .flat_map(|e| e.iter())
                .filter(|e| e.critical)
                .map(|e| e.extn_id.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            Err(problem(
                ProblemCode::UnknownCriticalExtension,
                format!(
                    "{who} carries a critical extension the agent does not process (critical: {ext}); it anchors no path"
                ),
            ))
        }
        Err(CvError::PathValidation(Pvs::InvalidKeyUsage)) => Err(problem(
            ProblemCode::AnchorConstraints,
            format!("{who}: its key usage does not allow certificate signing (keyCertSign)"),
        )),
        Err(e) => Err(problem(
            ProblemCode::AnchorConstraints,
            format!("{who}: its constraints cannot be applied ({e})"),
        )),
    }
}

/// Why a CRL must not be used, by its own content: no CRL number, or a critical one
/// (RFC 5280 5.2.3: conforming CRL issuers include it, marked non-critical).
pub(crate) fn crl_problem(der: &[u8]) -> Option<String> {
    let crl = match CertificateList::<x509_cert::certificate::Raw>::from_der(der) {
        Ok(c) => c,
        Err(e) => return Some(format!("not a DER CRL ({e})")),
    };
    let exts = crl.tbs_cert_list.crl_extensions.unwrap_or_default();
    let mut numbers = exts.iter().filter(|e| e.extn_id == ID_CE_CRL_NUMBER);
    match (numbers.next(), numbers.next()) {
        (None, _) => Some(format!(
            "the CRL of {} has no CRL number (RFC 5280 5.2.3 requires one); it is not used",
            crl.tbs_cert_list.issuer
        )),
        (Some(_), Some(_)) => Some(format!(
            "the CRL of {} carries its CRL number twice; it is not used",
            crl.tbs_cert_list.issuer
        )),
        (Some(n), None) if n.critical => Some(format!(
            "the CRL of {} marks its CRL number critical (RFC 5280 5.2.3: non-critical); it is not used",
            crl.tbs_cert_list.issuer
        )),
        (Some(n), None)
            if der::asn1::Int::from_der(n.extn_value.as_bytes()).is_err()
                || n.extn_value
                    .as_bytes()
                    .get(2)
                    .is_some_and(|b| *b & 0x80 != 0) =>
        {
            Some(format!(
                "the CRL of {} has a malformed or negative CRL number; it is not used",
                crl.tbs_cert_list.issuer
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CRL's DER with the given crlExtensions (unsigned: the rule reads the content only).
    fn crl_with(exts: &[u8]) -> Vec<u8> {
        fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
            assert!(body.len() < 0x80);
            let mut v = vec![tag, body.len() as u8];
            v.extend_from_slice(body);
            v
        }
        let alg = tlv(
            0x30,
            &[
                0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b,
            ],
        );
        let name = tlv(0x30, &[]);
        let time = tlv(0x17, b"250101000000Z");
        let mut tbs = vec![0x02, 0x01, 0x01];
        tbs.extend(&alg);
        tbs.extend(&name);
        tbs.extend(&time);
        if !exts.is_empty() {
            tbs.extend(tlv(0xa0, &tlv(0x30, exts)));
        }
        let mut body = tlv(0x30, &tbs);
        body.extend(&alg);
        body.extend(tlv(0x03, &[0x00, 0x00]));
        tlv(0x30, &body)
    }

    fn crl_number(critical: bool) -> Vec<u8> {
        let mut e = vec![0x06, 0x03, 0x55, 0x1d, 0x14];
        if critical {
            e.extend([0x01, 0x01, 0xff]);
        }
        e.extend([0x04, 0x03, 0x02, 0x01, 0x05]);
        let mut v = vec![0x30, e.len() as u8];
        v.extend(e);
        v
    }

    #[test]
    fn a_crl_with_a_non_critical_number_is_used() {
        assert_eq!(crl_problem(&crl_with(&crl_number(false))), None);
    }

    #[test]
    fn a_crl_without_a_number_is_not_used() {
        let why = crl_problem(&crl_with(&[])).expect("refused");
        assert!(why.contains("no CRL number"), "{why}");
    }

    #[test]
    fn a_crl_with_a_critical_number_is_not_used() {
        let why = crl_problem(&crl_with(&crl_number(true))).expect("refused");
        assert!(why.contains("critical"), "{why}");
    }
}
