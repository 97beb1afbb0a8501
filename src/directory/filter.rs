//! Search filters: the address escaped (RFC 4515), and the filters each kind of directory
//! is asked with for persons, contacts and lists.
//!
//! Owns: the text of every filter. Must not touch: connections, answers.

use crate::config::{DirectoryKind, DirectoryServer};

/// An assertion value as RFC 4515 section 3 writes it: `*`, `(`, `)`, `\` and NUL as `\XX`,
/// and, beyond the RFC's minimum, every byte outside printable ASCII too. The address comes
/// from a message or a client: unescaped, `*)(objectClass=*` would widen the search.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'*' | b'(' | b')' | b'\\' | 0 => out.push_str(&format!("\\{b:02x}")),
            0x21..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:02x}")),
        }
    }
    out
}

/// The attributes that may hold an address of an entry, primary or alias.
fn any_address(kind: DirectoryKind, a: &str) -> String {
    match kind {
        DirectoryKind::OpenLdap => {
            format!("(|(mail={a})(mailLocalAddress={a})(mailAlternateAddress={a}))")
        }
        // proxyAddresses compares case-insensitively (its syntax is a directory string), so
        // `smtp:` also finds `SMTP:` (the primary).
        DirectoryKind::Ad => format!("(|(mail={a})(proxyAddresses=smtp:{a}))"),
    }
}

/// The default person filter of a kind.
fn default_person(kind: DirectoryKind, a: &str) -> String {
    let any = any_address(kind, a);
    match kind {
        DirectoryKind::OpenLdap => format!("(&(objectClass=inetOrgPerson){any})"),
        DirectoryKind::Ad => format!("(&(objectCategory=person)(objectClass=user){any})"),
    }
}

fn default_contact(kind: DirectoryKind, a: &str) -> String {
    let any = any_address(kind, a);
    match kind {
        DirectoryKind::OpenLdap => {
            format!("(&(objectClass=person)(!(objectClass=inetOrgPerson)){any})")
        }
        DirectoryKind::Ad => format!("(&(objectClass=contact){any})"),
    }
}

fn default_list(kind: DirectoryKind, a: &str) -> String {
    let any = any_address(kind, a);
    match kind {
        DirectoryKind::OpenLdap => {
            format!("(&(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)){any})")
        }
        DirectoryKind::Ad => format!("(&(objectClass=group){any})"),
    }
}

/// The one filter a server is asked with for `address`: persons, contacts and lists at once
/// (the answer's entries are told apart by their object classes).
pub fn lookup_filter(server: &DirectoryServer, address: &str) -> String {
    let a = escape(address);
    let custom = |f: &Option<String>| f.as_ref().map(|f| f.replace("{address}", &a));
    let person = custom(&server.person_filter).unwrap_or_else(|| default_person(server.kind, &a));
    let contact =
        custom(&server.contact_filter).unwrap_or_else(|| default_contact(server.kind, &a));
    let list = custom(&server.list_filter).unwrap_or_else(|| default_list(server.kind, &a));
    format!("(|{person}{contact}{list})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Bind;

    fn server(kind: DirectoryKind) -> DirectoryServer {
        DirectoryServer {
            url: "ldap://localhost".into(),
            base_dn: "dc=example,dc=org".into(),
            kind,
            bind: Bind::Anonymous,
            starttls: false,
            ca_file: None,
            person_filter: None,
            contact_filter: None,
            list_filter: None,
        }
    }

    #[test]
    fn filter_metacharacters_are_escaped() {
        assert_eq!(escape("a*b(c)d\\e"), "a\\2ab\\28c\\29d\\5ce");
        assert_eq!(escape("x\0y"), "x\\00y");
        assert_eq!(escape("alice@example.org"), "alice@example.org");
    }

    #[test]
    fn spaces_and_non_ascii_are_escaped_as_octets() {
        assert_eq!(escape("a b"), "a\\20b");
        assert_eq!(escape("é"), "\\c3\\a9");
    }

    #[test]
    fn an_injected_filter_stays_one_assertion_value() {
        let f = lookup_filter(&server(DirectoryKind::OpenLdap), "*)(objectClass=*");
        assert!(!f.contains("(objectClass=*)"), "{f}");
        assert!(ldap3::parse_filter(&f).is_ok(), "{f}");
    }

    #[test]
    fn default_filters_parse_for_both_kinds() {
        for kind in [DirectoryKind::OpenLdap, DirectoryKind::Ad] {
            let f = lookup_filter(&server(kind), "bob@example.org");
            assert!(ldap3::parse_filter(&f).is_ok(), "{f}");
        }
        let ad = lookup_filter(&server(DirectoryKind::Ad), "bob@example.org");
        assert!(ad.contains("(proxyAddresses=smtp:bob@example.org)"), "{ad}");
    }

    #[test]
    fn a_custom_filter_gets_the_escaped_address() {
        let mut s = server(DirectoryKind::OpenLdap);
        s.person_filter = Some("(uid={address})".into());
        let f = lookup_filter(&s, "a*b@example.org");
        assert!(f.starts_with("(|(uid=a\\2ab@example.org)"), "{f}");
    }
}
