//! A CRL from an ldap:// or ldaps:// distribution point, or CA certificates from an ldap://
//! AIA caIssuers URL (RFC 4516 URL: the entry's DN and the attribute, as company PKIs publish
//! them): an anonymous base-object search, read within the time and byte bounds of any fetch.
//!
//! Written on ldap3 directly, as the directory is (the directory sits above `trust` and
//! serves other people's certificates, not CRLs); the bytes a server may send are bounded by
//! `net::relay` before ldap3 reads them, and an ldap3 panic on a malformed answer is caught.
//! LDAP does not go through the HTTP proxy: a host the proxy applies to is not reached
//! around it (it must be on `no_proxy`).
//!
//! Owns: one LDAP fetch. Must not touch: what the CRL says (`crl.rs`, `revocation.rs`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, StdStream};

use super::http::FetchError;
use super::proxy::{Proxy, Route};

/// What is read from an entry when the URL names no attribute (RFC 4523): a CRL, or the
/// CA certificates of an AIA caIssuers entry.
#[derive(Debug, Clone, Copy)]
pub enum Wanted {
    Crl,
    CaCertificates,
}

/// The CA certificate attributes asked for when the URL names none.
const CA_ATTRIBUTES: &[&str] = &["cACertificate;binary", "cACertificate"];

/// The attributes asked for when the URL names none (RFC 4523).
const CRL_ATTRIBUTES: &[&str] = &[
    "certificateRevocationList;binary",
    "certificateRevocationList",
    "authorityRevocationList;binary",
    "authorityRevocationList",
];
/// What an LDAP answer may carry beyond the CRL itself (the envelope of the entry).
const OVERHEAD: u64 = 64 * 1024;

/// Reads the CRL at `url` (ldap:// or ldaps://) within `timeout` (connect and search), at
/// most `max_bytes`.
pub async fn get_crl(
    url: &str,
    timeout: Option<Duration>,
    max_bytes: u64,
    proxy: &Proxy,
    tls: impl FnOnce() -> Result<Arc<rustls::ClientConfig>, String>,
) -> Result<Vec<u8>, FetchError> {
    let mut values = get(url, Wanted::Crl, timeout, max_bytes, proxy, tls).await?;
    Ok(values.swap_remove(0))
}

/// Reads the values of the first attribute the entry at `url` holds, of those the URL names
/// (or, naming none, those `wanted` stands for): at least one, at most `max_bytes` in all.
pub async fn get(
    url: &str,
    wanted: Wanted,
    timeout: Option<Duration>,
    max_bytes: u64,
    proxy: &Proxy,
    tls: impl FnOnce() -> Result<Arc<rustls::ClientConfig>, String>,
) -> Result<Vec<Vec<u8>>, FetchError> {
    let failed = |what: String| FetchError::Failed(format!("{url}: {what}"));
    let parsed = url::Url::parse(url).map_err(|e| failed(format!("not a valid URL ({e})")))?;
    let params =
        ldap3::get_url_params(&parsed).map_err(|e| failed(format!("not an LDAP URL ({e})")))?;
    let (host, port) = crate::net::ldap_endpoint(url)
        .ok_or_else(|| failed("the URL names no host to connect to".into()))?;
    let via = match proxy.route(&host).map_err(FetchError::Failed)? {
        Route::Via(p) => Some(p),
        Route::Direct => match proxy.route_tls(&host).map_err(FetchError::Failed)? {
            Route::Via(p) => Some(p),
            Route::Direct => None,
        },
    };
    if let Some(p) = via {
        return Err(failed(format!(
            "not fetched: LDAP does not go through the HTTP proxy {p}; put {host} on no_proxy to reach it directly"
        )));
    }
    let defaults = match wanted {
        Wanted::Crl => CRL_ATTRIBUTES,
        Wanted::CaCertificates => CA_ATTRIBUTES,
    };
    let attrs: Vec<String> = if params.attrs.iter().all(|a| *a == "*") {
        defaults.iter().map(|a| (*a).to_owned()).collect()
    } else {
        params.attrs.iter().map(|a| (*a).to_owned()).collect()
    };
    let base = params.base.to_string();
    let budget = max_bytes.saturating_add(OVERHEAD);
    let mut settings = LdapConnSettings::new();
    if let Some(t) = timeout {
        settings = settings.set_conn_timeout(t);
    }
    if parsed.scheme() == "ldaps" {
        settings = settings.set_config(tls().map_err(failed)?);
    }
    let fetch = async {
        let (stream, overrun) = crate::net::relay::connect(&host, port, budget)
            .await
            .map_err(|e| failed(format!("cannot connect ({e})")))?;
        let settings = settings.set_std_stream(StdStream::Tcp(stream));
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, url)
            .await
            .map_err(|e| failed(format!("cannot open the LDAP connection ({e})")))?;
        ldap3::drive!(conn);
        if let Some(t) = timeout {
            ldap.with_timeout(t);
        }
        let found = ldap
            .search(&base, Scope::Base, "(objectClass=*)", attrs.clone())
            .await
            .and_then(|r| r.success());
        let _ = ldap.unbind().await;
        let (entries, _) = found.map_err(|e| {
            if overrun.happened() {
                FetchError::TooLarge(format!(
                    "{url}: the answer is larger than {max_bytes} bytes"
                ))
            } else {
                failed(format!("the search for {base} failed ({e})"))
            }
        })?;
        let entry = entries
            .into_iter()
            .next()
            .map(SearchEntry::construct)
            .ok_or_else(|| failed(format!("no entry {base}")))?;
        let values: Vec<Vec<u8>> = attrs
            .iter()
            .find_map(|a| {
                entry
                    .bin_attrs
                    .get(a)
                    .filter(|v| !v.is_empty())
                    .cloned()
                    .or_else(|| {
                        entry
                            .attrs
                            .get(a)
                            .filter(|v| !v.is_empty())
                            .map(|v| v.iter().map(|s| s.as_bytes().to_vec()).collect())
                    })
            })
            .ok_or_else(|| failed(format!("the entry {base} holds no {}", attrs.join(" or "))))?;
        if values.iter().map(|v| v.len() as u64).sum::<u64>() > max_bytes {
            return Err(FetchError::TooLarge(format!(
                "{url}: the answer is larger than {max_bytes} bytes"
            )));
        }
        Ok(values)
    };
    let guarded = std::panic::AssertUnwindSafe(fetch).catch_unwind();
    let outcome = match timeout {
        Some(t) => tokio::time::timeout(t, guarded).await.map_err(|_| {
            FetchError::TimedOut(format!(
                "{url}: no answer within {} ms (crl_connection_timeout_ms)",
                t.as_millis()
            ))
        })?,
        None => guarded.await,
    };
    outcome.unwrap_or_else(|_| Err(failed("the LDAP answer could not be read".into())))
}
