//! `[directory]`: the LDAP servers where other people's certificates are looked up, and how.
//!
//! Owns: the schema of `[directory]` and `[[directory.server]]`, their defaults, and the
//! checks that make a server usable (a URL ldap3 can connect to, a bind method with what it
//! needs, filters that carry the address). Does not connect or search: `directory` does.

use std::path::PathBuf;

use serde::Deserialize;

use super::{de_dword_ms, in_range};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectoryConfig {
    /// [DLExpansionTimeout] Time to expand a distribution list; 0 disables encrypting to
    /// lists.
    #[serde(deserialize_with = "de_dword_ms")]
    pub dl_expansion_timeout_ms: u64,
    /// Connecting to one server (TCP, TLS, StartTLS), ms.
    #[serde(deserialize_with = "de_directory_ms")]
    pub connect_timeout_ms: u64,
    /// Each operation on a server once connected (bind, search), ms.
    #[serde(deserialize_with = "de_directory_ms")]
    pub search_timeout_ms: u64,
    /// How long an answer (found or not found) is reused; 0: never. Failures are not kept.
    #[serde(deserialize_with = "de_directory_cache_ttl")]
    pub cache_ttl_secs: u64,
    /// The servers, asked in order until one knows the address.
    pub server: Vec<DirectoryServer>,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        DirectoryConfig {
            dl_expansion_timeout_ms: 60_000,
            connect_timeout_ms: 5_000,
            search_timeout_ms: 10_000,
            cache_ttl_secs: 600,
            server: vec![],
        }
    }
}

/// One `[[directory.server]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawServer")]
pub struct DirectoryServer {
    /// `ldap://host[:port]`, `ldaps://host[:port]` or `ldapi://<percent-encoded socket path>`.
    pub url: String,
    pub base_dn: String,
    /// Which default filters apply.
    pub kind: DirectoryKind,
    pub bind: Bind,
    /// StartTLS on an `ldap://` URL.
    pub starttls: bool,
    /// CA certificates (PEM) for the server's TLS certificate; default: the system's.
    pub ca_file: Option<PathBuf>,
    /// Replace the kind's filters; `{address}` stands for the escaped address.
    pub person_filter: Option<String>,
    pub contact_filter: Option<String>,
    pub list_filter: Option<String>,
}

/// Which directory software the defaults are written for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectoryKind {
    /// OpenLDAP and other RFC 4519/2798 directories: inetOrgPerson, `mail`.
    #[default]
    OpenLdap,
    /// Active Directory: `user`, `contact`, `group`, `proxyAddresses` (`smtp:`/`SMTP:`).
    Ad,
}

/// How the agent authenticates to a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Anonymous,
    /// A simple bind; the password is read from the file at each connection.
    Simple {
        dn: String,
        password_file: PathBuf,
    },
    /// SASL EXTERNAL over `ldapi://`: the server knows the agent's user by the socket.
    SaslExternal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    url: String,
    base_dn: String,
    #[serde(default)]
    kind: DirectoryKind,
    #[serde(default)]
    bind: BindKind,
    bind_dn: Option<String>,
    password_file: Option<PathBuf>,
    #[serde(default)]
    starttls: bool,
    #[serde(default)]
    allow_plaintext_bind: bool,
    ca_file: Option<PathBuf>,
    person_filter: Option<String>,
    contact_filter: Option<String>,
    list_filter: Option<String>,
}

#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "snake_case")]
enum BindKind {
    #[default]
    Anonymous,
    Simple,
    SaslExternal,
}

impl TryFrom<RawServer> for DirectoryServer {
    type Error = String;

    fn try_from(r: RawServer) -> Result<Self, String> {
        let scheme = r.url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        let rest = r.url.split_once("://").map(|(_, rest)| rest).unwrap_or("");
        match scheme.as_deref() {
            Some("ldap" | "ldaps") => {
                let host = rest.split(['/', '?']).next().unwrap_or("");
                if host.is_empty() || host.starts_with(':') {
                    return Err(format!("directory url {:?} names no host", r.url));
                }
            }
            Some("ldapi") if !rest.is_empty() => {}
            Some("ldapi") => {
                return Err(format!(
                    "directory url {:?} names no socket (ldapi://%2Fpath%2Fto%2Fsocket)",
                    r.url
                ));
            }
            _ => {
                return Err(format!(
                    "directory url {:?} must start with ldap://, ldaps:// or ldapi://",
                    r.url
                ));
            }
        }
        if r.starttls && scheme.as_deref() != Some("ldap") {
            return Err(format!(
                "starttls applies to ldap:// URLs only, not {:?}",
                r.url
            ));
        }
        if r.base_dn.trim().is_empty() {
            return Err("base_dn must not be empty".into());
        }
        let bind = match r.bind {
            BindKind::Anonymous => {
                if r.bind_dn.is_some() || r.password_file.is_some() {
                    return Err(
                        "bind_dn and password_file need bind = \"simple\" (the bind is anonymous)"
                            .into(),
                    );
                }
                Bind::Anonymous
            }
            BindKind::Simple => match (r.bind_dn, r.password_file) {
                (Some(dn), Some(password_file)) if !dn.trim().is_empty() => {
                    Bind::Simple { dn, password_file }
                }
                _ => {
                    return Err(
                        "bind = \"simple\" needs bind_dn and password_file (a file holding the password)"
                            .into(),
                    );
                }
            },
            BindKind::SaslExternal => {
                if scheme.as_deref() != Some("ldapi") {
                    return Err(
                        "bind = \"sasl_external\" works over ldapi:// only (the agent presents no \
                         TLS client certificate)"
                            .into(),
                    );
                }
                Bind::SaslExternal
            }
        };
        // A password never crosses the network in the clear unless the user says so, and a
        // CA file on a connection without TLS would be silently useless.
        let plain = scheme.as_deref() == Some("ldap") && !r.starttls;
        if plain && matches!(bind, Bind::Simple { .. }) && !r.allow_plaintext_bind {
            return Err(format!(
                "bind = \"simple\" on {:?} would send the password unencrypted: use ldaps://, \
                 starttls = true, or (on a network you trust) allow_plaintext_bind = true",
                r.url
            ));
        }
        if plain && r.ca_file.is_some() {
            return Err(format!(
                "ca_file has no use on {:?} without TLS: use ldaps:// or starttls = true",
                r.url
            ));
        }
        for (key, f) in [
            ("person_filter", &r.person_filter),
            ("contact_filter", &r.contact_filter),
            ("list_filter", &r.list_filter),
        ] {
            if let Some(f) = f {
                check_filter(f).map_err(|e| format!("{key}: {e}"))?;
            }
        }
        Ok(DirectoryServer {
            url: r.url,
            base_dn: r.base_dn,
            kind: r.kind,
            bind,
            starttls: r.starttls,
            ca_file: r.ca_file,
            person_filter: r.person_filter,
            contact_filter: r.contact_filter,
            list_filter: r.list_filter,
        })
    }
}

/// A custom filter must carry the address and parse once it is put in.
fn check_filter(f: &str) -> Result<(), String> {
    if !f.contains("{address}") {
        return Err(format!("{f:?} has no {{address}} for the address"));
    }
    let sample = f.replace("{address}", "someone@example.org");
    if ldap3::parse_filter(&sample).is_err() {
        return Err(format!("{f:?} is not an LDAP filter (RFC 4515)"));
    }
    Ok(())
}

impl DirectoryServer {
    pub(super) fn resolve_paths(&mut self, fix: impl Fn(&mut PathBuf)) {
        if let Some(p) = &mut self.ca_file {
            fix(p);
        }
        if let Bind::Simple { password_file, .. } = &mut self.bind {
            fix(password_file);
        }
    }
}

fn de_directory_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(d, 100, 600_000, "the directory timeout")
}

fn de_directory_cache_ttl<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(d, 0, 86_400, "cache_ttl_secs")
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("test.toml"), Path::new("/base")).map_err(|e| e.to_string())
    }

    #[test]
    fn directory_servers_parse_with_their_bind() {
        let c = parse(
            r#"
[directory]
cache_ttl_secs = 0

[[directory.server]]
url = "ldap://ldap.example.org"
base_dn = "dc=example,dc=org"
bind = "simple"
bind_dn = "cn=agent,dc=example,dc=org"
password_file = "ldap-password"
starttls = true

[[directory.server]]
url = "ldaps://dc1.example.org"
base_dn = "dc=example,dc=org"
kind = "ad"
person_filter = "(&(objectClass=user)(mail={address}))"
"#,
        )
        .unwrap();
        let s = &c.directory.server;
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0].bind,
            Bind::Simple {
                dn: "cn=agent,dc=example,dc=org".into(),
                password_file: PathBuf::from("/base/ldap-password"),
            }
        );
        assert_eq!(s[1].kind, DirectoryKind::Ad);
        assert_eq!(c.directory.cache_ttl_secs, 0);
    }

    #[test]
    fn unusable_directory_servers_are_refused() {
        let server =
            |body: &str| format!("[[directory.server]]\nbase_dn = \"dc=example,dc=org\"\n{body}");
        for (body, says) in [
            ("url = \"http://x\"\n", "must start with ldap://"),
            ("url = \"ldap://\"\n", "names no host"),
            (
                "url = \"ldap://x\"\nbind = \"simple\"\n",
                "needs bind_dn and password_file",
            ),
            (
                "url = \"ldap://x\"\nbind = \"sasl_external\"\n",
                "ldapi:// only",
            ),
            (
                "url = \"ldaps://x\"\nstarttls = true\n",
                "ldap:// URLs only",
            ),
            (
                "url = \"ldap://x\"\nperson_filter = \"(mail=x)\"\n",
                "no {address}",
            ),
            (
                "url = \"ldap://x\"\nperson_filter = \"(mail={address}\"\n",
                "not an LDAP filter",
            ),
            ("url = \"ldap://x\"\npasword_file = \"p\"\n", "pasword_file"),
            (
                "url = \"ldap://x\"\nbind = \"simple\"\nbind_dn = \"cn=a\"\npassword_file = \"p\"\n",
                "would send the password unencrypted",
            ),
            (
                "url = \"ldap://x\"\nca_file = \"ca.pem\"\n",
                "ca_file has no use",
            ),
        ] {
            let e = parse(&server(body)).unwrap_err();
            assert!(e.contains(says), "{body:?} gave {e}");
        }
        // Said on purpose, a clear-text bind is accepted.
        parse(&server(
            "url = \"ldap://x\"\nbind = \"simple\"\nbind_dn = \"cn=a\"\npassword_file = \"p\"\n\
             allow_plaintext_bind = true\n",
        ))
        .unwrap();
    }
}
