//! One connection to a `[[directory.server]]`: TCP, TLS (ldaps:// or StartTLS, with the
//! server's `ca_file` or the system's CAs) or a Unix socket (ldapi://), then the bind, each
//! within its timeout.
//!
//! Owns: ldap3's connection settings and the bind. Must not touch: what is searched.

use std::sync::Arc;
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, StdStream};

use super::DirectoryError;
use crate::config::{Bind, DirectoryServer};
use crate::net::relay::Overrun;

/// Largest password file read.
const MAX_PASSWORD_BYTES: u64 = 4096;

/// Connects to `server` and binds; `budget` bounds the bytes the server may send on the
/// connection (`relay.rs`; not for ldapi://, a local socket). The connection's driver runs in
/// a task of its own that ends when the returned handle is dropped (or unbinds).
pub async fn open(
    server: &DirectoryServer,
    connect_timeout: Duration,
    op_timeout: Duration,
    budget: u64,
) -> Result<(Ldap, Overrun), DirectoryError> {
    let url = server.url.as_str();
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(connect_timeout)
        .set_starttls(server.starttls);
    if let Some(ca) = &server.ca_file {
        settings = settings.set_config(tls_config(ca).map_err(|why| DirectoryError::Config {
            server: url.to_owned(),
            why,
        })?);
    }
    let connecting = async {
        let mut overrun = Overrun::default();
        if let Some((host, port)) = crate::net::ldap_endpoint(url) {
            let (stream, o) = crate::net::relay::connect(&host, port, budget).await?;
            settings = settings.set_std_stream(StdStream::Tcp(stream));
            overrun = o;
        }
        let pair = LdapConnAsync::with_settings(settings, url)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok::<_, std::io::Error>((pair, overrun))
    };
    // TCP, TLS and StartTLS, all within the connect timeout.
    let ((conn, mut ldap), overrun) = match tokio::time::timeout(connect_timeout, connecting).await
    {
        Err(_) => {
            return Err(DirectoryError::Timeout {
                server: url.to_owned(),
                what: "connecting",
                ms: connect_timeout.as_millis() as u64,
            });
        }
        Ok(Err(e)) => {
            return Err(DirectoryError::Connect {
                server: url.to_owned(),
                why: e.to_string(),
            });
        }
        Ok(Ok(done)) => done,
    };
    ldap3::drive!(conn);
    ldap.with_timeout(op_timeout);
    let bound = match &server.bind {
        Bind::Anonymous => return Ok((ldap, overrun)),
        Bind::Simple { dn, password_file } => {
            let password = read_password(password_file).map_err(|why| DirectoryError::Config {
                server: url.to_owned(),
                why,
            })?;
            ldap.simple_bind(dn, &password).await
        }
        Bind::SaslExternal => ldap.sasl_external_bind().await,
    };
    let who = match &server.bind {
        Bind::Simple { dn, .. } => format!("as {dn}"),
        _ => "by SASL EXTERNAL".to_owned(),
    };
    match bound {
        Ok(r) if r.rc == 0 => Ok((ldap, overrun)),
        Ok(r) => Err(DirectoryError::Bind {
            server: url.to_owned(),
            why: format!(
                "cannot bind {who}: {}",
                match r.rc {
                    49 => "invalid credentials (check bind_dn and the password file)".to_owned(),
                    _ => r.to_string(),
                }
            ),
        }),
        Err(e) => Err(super::op_error(url, "binding", op_timeout, e)),
    }
}

/// The password of a simple bind: the file's first line.
fn read_password(path: &std::path::Path) -> Result<zeroize::Zeroizing<String>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path)
        .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
    let mut text = zeroize::Zeroizing::new(String::new());
    f.take(MAX_PASSWORD_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or("");
    // An empty password makes a simple bind an unauthenticated one (RFC 4513 5.1.2), which
    // servers may take as anonymous: never silently.
    if line.is_empty() {
        return Err(format!(
            "the password file {} is empty (its first line is the password)",
            path.display()
        ));
    }
    Ok(zeroize::Zeroizing::new(line.to_owned()))
}

/// A rustls client configuration trusting the CA certificates of a PEM file only.
fn tls_config(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| format!("cannot read ca_file {}: {e}", ca_file.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("ca_file {}: {e}", ca_file.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("ca_file {}: {e}", ca_file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "ca_file {} holds no certificate",
            ca_file.display()
        ));
    }
    crate::net::tls_client_config(roots)
}
