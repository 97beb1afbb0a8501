//! Whom an https:// CRL, OCSP or AIA server must prove to be: a certificate for its name
//! that chains to the system's CA bundle (always, whatever `use_system_roots` says for
//! S/MIME: a web server is the web's trust domain) or to one of the agent's trust anchors (a
//! company PKI serving its CRLs over its own TLS). What is fetched is signed and judged on
//! its own; TLS adds privacy and keeps a wrong server out, it is not what makes a CRL true.
//!
//! Owns: the rustls client configuration for those fetches. Must not touch: connections
//! (`http.rs`).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::SYSTEM_BUNDLES;

/// A client configuration trusting the system bundle and `anchors` (DER). Certificates that
/// rustls cannot use as roots are skipped; none at all is an error naming why.
pub fn client_config(anchors: &[Vec<u8>]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(bundle) = SYSTEM_BUNDLES.iter().map(Path::new).find(|p| p.exists())
        && let Ok(certs) = CertificateDer::pem_file_iter(bundle)
    {
        roots.add_parsable_certificates(certs.filter_map(Result::ok));
    }
    roots.add_parsable_certificates(anchors.iter().map(|d| CertificateDer::from(d.clone())));
    if roots.is_empty() {
        return Err(
            "no CA certificate to check an https:// server with (no system bundle, no trust anchor)"
                .into(),
        );
    }
    crate::net::tls_client_config(roots)
}
