//! Reading a directory's answer: a search result entry into its attributes (without
//! ldap3's `SearchEntry`, which panics on a malformed entry), and the attributes into
//! certificates and addresses, each bounded.
//!
//! Owns: what an entry says. `userCertificate` (`;binary`) values are DER certificates,
//! `userSMIMECertificate` values a degenerate CMS SignedData carrying certificates. A value
//! that is too large or does not parse is skipped with a problem in words; the caller
//! decides what that means. Must not touch: judging the certificates (the recipient rules).

use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use der::{Decode, Encode};
use ldap3::asn1::{PL, StructureTag};

/// Largest single attribute value read (a certificate, or a SignedData of a few).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most certificates taken from one entry.
pub const MAX_CERTS_PER_ENTRY: usize = 32;
/// Most values of one attribute read.
const MAX_VALUES: usize = 1000;

/// An entry as the server sent it: its DN and its attributes, names as sent.
#[derive(Debug, Default, Clone)]
pub struct RawEntry {
    pub dn: String,
    pub attrs: Vec<(String, Vec<Vec<u8>>)>,
}

impl RawEntry {
    /// Values of `name` and of `name;options...`, compared without case.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.attrs
            .iter()
            .filter(move |(n, _)| {
                let base = n.split(';').next().unwrap_or(n);
                base.eq_ignore_ascii_case(name)
            })
            .flat_map(|(_, v)| v.iter().map(Vec::as_slice))
    }

    /// Values of `name` that are UTF-8 text.
    pub fn texts<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.values(name)
            .filter_map(|v| std::str::from_utf8(v).ok())
    }

    pub fn has_class(&self, class: &str) -> bool {
        self.texts("objectClass")
            .any(|c| c.trim().eq_ignore_ascii_case(class))
    }
}

/// A SearchResultEntry (RFC 4511 section 4.5.2):
/// ```text
/// SearchResultEntry ::= [APPLICATION 4] SEQUENCE {
///      objectName      LDAPDN,
///      attributes      PartialAttributeList }
/// PartialAttribute ::= SEQUENCE { type AttributeDescription, vals SET OF value AttributeValue }
/// ```
pub fn entry_from_tag(tag: StructureTag) -> Result<RawEntry, String> {
    let bad = |what: &str| format!("a malformed search result entry ({what})");
    if tag.id != 4 {
        return Err(bad("not an entry"));
    }
    let (dn, list) = name_and_list(tag.payload, ["the entry", "its name", "its attributes"])
        .map_err(|what| bad(&what))?;
    let mut out = RawEntry {
        dn,
        attrs: Vec::with_capacity(list.len().min(64)),
    };
    for a in list {
        let (name, vals) = name_and_list(a.payload, ["an attribute", "its type", "its values"])
            .map_err(|what| bad(&what))?;
        let mut values = Vec::with_capacity(vals.len().min(MAX_VALUES));
        for v in vals.into_iter().take(MAX_VALUES) {
            let PL::P(v) = v.payload else {
                return Err(bad("an attribute value is not a string"));
            };
            values.push(v);
        }
        out.attrs.push((name, values));
    }
    Ok(out)
}

/// The shape both an entry (objectName, attributes) and an attribute (type, vals) have: a
/// sequence of a UTF-8 string and a constructed list. `what` names the three for errors.
fn name_and_list(payload: PL, what: [&str; 3]) -> Result<(String, Vec<StructureTag>), String> {
    let [whole, name, list] = what;
    let PL::C(mut parts) = payload else {
        return Err(format!("{whole} is not constructed"));
    };
    if parts.len() != 2 {
        return Err(format!("{whole} does not have two parts"));
    }
    let (Some(items), Some(first)) = (parts.pop(), parts.pop()) else {
        return Err(format!("{whole} does not have two parts"));
    };
    let PL::P(first) = first.payload else {
        return Err(format!("{name} is not a string"));
    };
    let first = String::from_utf8(first).map_err(|_| format!("{name} is not UTF-8"))?;
    let PL::C(items) = items.payload else {
        return Err(format!("{list} are not a list"));
    };
    Ok((first, items))
}

/// The certificates of an entry, `userCertificate` first, then `userSMIMECertificate`, each
/// DER; and a problem in words for every value that could not be used.
pub fn certificates(entry: &RawEntry) -> (Vec<Vec<u8>>, Vec<String>) {
    let mut certs: Vec<Vec<u8>> = vec![];
    let mut problems = vec![];
    let push = |der: Vec<u8>, certs: &mut Vec<Vec<u8>>, problems: &mut Vec<String>| {
        if certs.len() >= MAX_CERTS_PER_ENTRY {
            if problems.iter().all(|p: &String| !p.contains("more than")) {
                problems.push(format!(
                    "more than {MAX_CERTS_PER_ENTRY} certificates; the rest are ignored"
                ));
            }
        } else if !certs.contains(&der) {
            certs.push(der);
        }
    };
    for (i, v) in entry.values("userCertificate").enumerate() {
        if v.len() > MAX_VALUE_BYTES {
            problems.push(too_large("userCertificate", i, v.len()));
            continue;
        }
        match x509_cert::Certificate::from_der(v) {
            Ok(_) => push(v.to_vec(), &mut certs, &mut problems),
            Err(e) => problems.push(format!(
                "userCertificate value {} is not a DER certificate ({e})",
                i + 1
            )),
        }
    }
    for (i, v) in entry.values("userSMIMECertificate").enumerate() {
        if v.len() > MAX_VALUE_BYTES {
            problems.push(too_large("userSMIMECertificate", i, v.len()));
            continue;
        }
        match signed_data_certificates(v) {
            Ok(found) if found.is_empty() => problems.push(format!(
                "userSMIMECertificate value {} carries no certificate",
                i + 1
            )),
            Ok(found) => found
                .into_iter()
                .for_each(|c| push(c, &mut certs, &mut problems)),
            Err(e) => problems.push(format!(
                "userSMIMECertificate value {} is not a PKCS#7 SignedData with certificates ({e})",
                i + 1
            )),
        }
    }
    (certs, problems)
}

fn too_large(attr: &str, i: usize, len: usize) -> String {
    format!(
        "{attr} value {} has {len} bytes, more than the {MAX_VALUE_BYTES} read",
        i + 1
    )
}

/// The certificates a (degenerate) SignedData carries, each re-encoded as DER.
fn signed_data_certificates(der: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let ci = ContentInfo::from_der(der).map_err(|e| e.to_string())?;
    if ci.content_type != const_oid::db::rfc5911::ID_SIGNED_DATA {
        return Err(format!("its content type is {}", ci.content_type));
    }
    let sd = ci
        .content
        .decode_as::<SignedData>()
        .map_err(|e| e.to_string())?;
    let mut out = vec![];
    for choice in sd.certificates.iter().flat_map(|set| set.0.iter()) {
        if let CertificateChoices::Certificate(c) = choice {
            out.push(c.to_der().map_err(|e| e.to_string())?);
        }
    }
    Ok(out)
}

/// The addresses of an entry: its primary ones (`mail`) and its aliases (AD
/// `proxyAddresses` of type `smtp:`, either case; `mailLocalAddress`,
/// `mailAlternateAddress`), each list without duplicates or the primary ones.
pub fn addresses(entry: &RawEntry) -> (Vec<String>, Vec<String>) {
    let mut primary: Vec<String> = vec![];
    for m in entry.texts("mail").map(str::trim) {
        if !m.is_empty() && !primary.iter().any(|p| p.eq_ignore_ascii_case(m)) {
            primary.push(m.to_owned());
        }
    }
    let mut aliases: Vec<String> = vec![];
    let proxies = entry.texts("proxyAddresses").filter_map(|p| {
        let (kind, addr) = p.trim().split_once(':')?;
        kind.eq_ignore_ascii_case("smtp").then_some(addr)
    });
    let others = entry
        .texts("mailLocalAddress")
        .chain(entry.texts("mailAlternateAddress"));
    for a in proxies.chain(others).map(str::trim) {
        let known = |l: &[String]| l.iter().any(|p| p.eq_ignore_ascii_case(a));
        if !a.is_empty() && !known(&primary) && !known(&aliases) {
            aliases.push(a.to_owned());
        }
    }
    (primary, aliases)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::asn1::TagClass;

    fn prim(id: u64, v: &[u8]) -> StructureTag {
        StructureTag {
            class: TagClass::Universal,
            id,
            payload: PL::P(v.to_vec()),
        }
    }

    fn cons(class: TagClass, id: u64, v: Vec<StructureTag>) -> StructureTag {
        StructureTag {
            class,
            id,
            payload: PL::C(v),
        }
    }

    fn entry(dn: &str, attrs: &[(&str, &[&[u8]])]) -> StructureTag {
        let list = attrs
            .iter()
            .map(|(n, vals)| {
                cons(
                    TagClass::Universal,
                    16,
                    vec![
                        prim(4, n.as_bytes()),
                        cons(
                            TagClass::Universal,
                            17,
                            vals.iter().map(|v| prim(4, v)).collect(),
                        ),
                    ],
                )
            })
            .collect();
        cons(
            TagClass::Application,
            4,
            vec![prim(4, dn.as_bytes()), cons(TagClass::Universal, 16, list)],
        )
    }

    fn test_cert() -> Vec<u8> {
        let pem = include_str!("../../tests/data/signing/p256.pem");
        let (_, der) = der::pem::decode_vec(pem.as_bytes()).unwrap();
        der
    }

    #[test]
    fn an_entry_is_read_with_its_attributes() {
        let e = entry_from_tag(entry(
            "cn=Bob,dc=example,dc=org",
            &[
                ("mail", &[b"bob@example.org"]),
                ("objectClass", &[b"inetOrgPerson"]),
            ],
        ))
        .unwrap();
        assert_eq!(e.dn, "cn=Bob,dc=example,dc=org");
        assert!(e.has_class("INETORGPERSON"));
        assert_eq!(e.texts("MAIL").collect::<Vec<_>>(), ["bob@example.org"]);
    }

    #[test]
    fn a_malformed_entry_is_an_error_not_a_panic() {
        let flat = prim(4, b"x");
        assert!(entry_from_tag(flat).is_err());
        let mut e = entry("cn=x", &[]);
        if let PL::C(parts) = &mut e.payload {
            parts.pop();
        }
        assert!(entry_from_tag(e).is_err());
        let odd = cons(
            TagClass::Application,
            4,
            vec![
                prim(4, b"cn=x"),
                cons(TagClass::Universal, 16, vec![prim(4, b"y")]),
            ],
        );
        assert!(entry_from_tag(odd).is_err());
    }

    #[test]
    fn user_certificate_binary_is_read_and_garbage_named() {
        let cert = test_cert();
        let e = entry_from_tag(entry(
            "cn=Bob",
            &[("userCertificate;binary", &[&cert, b"garbage"])],
        ))
        .unwrap();
        let (certs, problems) = certificates(&e);
        assert_eq!(certs, vec![cert]);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("not a DER certificate"),
            "{problems:?}"
        );
    }

    #[test]
    fn user_smime_certificate_signed_data_yields_its_certificates() {
        use cms::signed_data::{CertificateSet, EncapsulatedContentInfo, SignerInfos};
        let cert = test_cert();
        let sd = SignedData {
            version: cms::content_info::CmsVersion::V1,
            digest_algorithms: Default::default(),
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: const_oid::db::rfc5911::ID_DATA,
                econtent: None,
            },
            certificates: Some(CertificateSet(
                der::asn1::SetOfVec::try_from(vec![CertificateChoices::Certificate(
                    x509_cert::Certificate::from_der(&cert).unwrap(),
                )])
                .unwrap(),
            )),
            crls: None,
            signer_infos: SignerInfos(Default::default()),
        };
        let ci = ContentInfo {
            content_type: const_oid::db::rfc5911::ID_SIGNED_DATA,
            content: der::Any::encode_from(&sd).unwrap(),
        };
        let p7 = ci.to_der().unwrap();
        let e = entry_from_tag(entry(
            "cn=Bob",
            &[("userSMIMECertificate", &[&p7, b"\x30\x03garbage"])],
        ))
        .unwrap();
        let (certs, problems) = certificates(&e);
        assert_eq!(certs, vec![cert]);
        assert!(
            problems[0].contains("not a PKCS#7 SignedData"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_huge_value_is_skipped_with_its_size() {
        let huge = vec![0x30u8; MAX_VALUE_BYTES + 1];
        let e = entry_from_tag(entry("cn=Bob", &[("userSMIMECertificate", &[&huge])])).unwrap();
        let (certs, problems) = certificates(&e);
        assert!(certs.is_empty());
        assert!(problems[0].contains("more than the"), "{problems:?}");
    }

    #[test]
    fn proxy_addresses_give_smtp_aliases_in_either_case() {
        let e = entry_from_tag(entry(
            "cn=Bob",
            &[
                ("mail", &[b"bob@example.org"]),
                (
                    "proxyAddresses",
                    &[
                        b"SMTP:bob@example.org",
                        b"smtp:robert@example.org",
                        b"X500:/o=Example/cn=bob",
                    ],
                ),
                ("mailLocalAddress", &[b"bobby@example.org"]),
            ],
        ))
        .unwrap();
        let (primary, aliases) = addresses(&e);
        assert_eq!(primary, ["bob@example.org"]);
        assert_eq!(aliases, ["robert@example.org", "bobby@example.org"]);
    }
}
