//! Network plumbing shared by the directory and revocation: a TCP connection whose incoming
//! bytes are bounded (`relay.rs`), where an LDAP URL connects to, and the rustls client
//! configuration over chosen roots.
//!
//! Owns: sockets only. Must not touch: what is said over them (LDAP in `directory/` and
//! `trust/ldap.rs`, HTTP in `trust/http.rs`).

pub mod relay;

use std::sync::Arc;

/// A rustls client configuration trusting `roots`, on ring (as ldap3's `tls-rustls-ring`
/// uses and the agent already links for signature checks).
pub fn tls_client_config(
    roots: rustls::RootCertStore,
) -> Result<Arc<rustls::ClientConfig>, String> {
    // ring has no post-quantum key exchange, which rustls 0.23.48 marks by deprecating this.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

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
