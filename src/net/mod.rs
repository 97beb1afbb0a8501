//! Network plumbing shared by the directory and revocation: a TCP connection whose incoming
//! bytes are bounded (`relay.rs`), and where an LDAP URL connects to.
//!
//! Owns: sockets only. Must not touch: what is said over them (LDAP in `directory/` and
//! `trust/ldap.rs`, HTTP in `trust/http.rs`).

pub mod relay;

/// The host and port of an ldap:// or ldaps:// URL (defaults 389 and 636); `None` for
/// ldapi:// (and anything ldap3 would refuse anyway).
pub fn ldap_endpoint(url: &str) -> Option<(String, u16)> {
    let u = url::Url::parse(url).ok()?;
    let default = match u.scheme() {
        "ldap" => 389,
        "ldaps" => 636,
        _ => return None,
    };
    let host = match u.host()? {
        url::Host::Domain(d) => d.to_owned(),
        url::Host::Ipv4(a) => a.to_string(),
        url::Host::Ipv6(a) => a.to_string(),
    };
    Some((host, u.port().unwrap_or(default)))
}
