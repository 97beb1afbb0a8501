//! AIA: fetching the issuer of a certificate from its Authority Information Access URL
//! (over http:// or https://: a DER certificate, a certs-only SignedData, or PEM; over
//! ldap://: the entry's cACertificate values), within the validation's time and a size
//! bound, keeping only what parses as a certificate.
//!
//! Owns: one fetch and how its answer is read. Must not touch: HTTP itself (`http.rs`), trusting
//! what it fetched (only a candidate intermediate, judged like any other in `path.rs`). The
//! cache of answers is the `Trust`'s (`aia_cached`, `aia_store` in `mod.rs`).

use std::time::Instant;

use der::Decode;

use super::Trust;

/// The caIssuers URLs of a certificate's Authority Information Access (RFC 5280 4.2.2.1)
/// that the agent fetches: http://, https://, ldap:// and ldaps://. (certval's collector
/// keeps http(s) only.)
pub(super) fn ca_issuer_urls(cert: &certval::PDVCertificate) -> Vec<String> {
    use const_oid::db::rfc5280::{ID_AD_CA_ISSUERS, ID_PE_AUTHORITY_INFO_ACCESS};
    use x509_cert::ext::pkix::AuthorityInfoAccessSyntax;
    use x509_cert::ext::pkix::name::GeneralName;
    let Some(ext) = cert
        .decoded()
        .tbs_certificate()
        .extensions()
        .and_then(|e| e.iter().find(|e| e.extn_id == ID_PE_AUTHORITY_INFO_ACCESS))
    else {
        return vec![];
    };
    let Ok(aia) = AuthorityInfoAccessSyntax::from_der(ext.extn_value.as_bytes()) else {
        return vec![];
    };
    let mut urls: Vec<String> = vec![];
    for ad in aia
        .0
        .iter()
        .filter(|ad| ad.access_method == ID_AD_CA_ISSUERS)
    {
        if let GeneralName::UniformResourceIdentifier(uri) = &ad.access_location {
            let u = uri.to_string();
            if matches!(
                super::http::url_scheme(&u),
                Some("http" | "https" | "ldap" | "ldaps")
            ) && !urls.contains(&u)
            {
                urls.push(u);
            }
        }
    }
    urls
}

/// Largest AIA answer accepted.
const MAX_AIA_BYTES: u64 = 1 << 20;

pub(super) async fn fetch_aia(
    trust: &Trust,
    url: &str,
    deadline: Option<Instant>,
) -> Result<Vec<Vec<u8>>, String> {
    if let Some(c) = trust.aia_cached(url) {
        return Ok(c);
    }
    let mut timeout = trust.connection_timeout();
    if let Some(d) = deadline {
        let left = d.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "{url}: not fetched, crl_retrieval_timeout_ms is used up"
            ));
        }
        timeout = Some(timeout.map_or(left, |t| t.min(left)));
    }
    let client = trust.crls.client();
    if matches!(super::http::url_scheme(url), Some("ldap" | "ldaps")) {
        let values = super::ldap::get(
            url,
            super::ldap::Wanted::CaCertificates,
            timeout,
            MAX_AIA_BYTES,
            client.proxy(),
            || client.tls(),
        )
        .await
        .map_err(|e| format!("AIA {e}"))?;
        let certs: Vec<Vec<u8>> = values
            .into_iter()
            .filter(|d| x509_cert::Certificate::from_der(d).is_ok())
            .collect();
        if certs.is_empty() {
            return Err(format!("AIA {url}: the entry holds no certificate"));
        }
        trust.aia_store(url, certs.clone());
        return Ok(certs);
    }
    let body = client
        .get(url, timeout, MAX_AIA_BYTES)
        .await
        .map_err(|e| format!("AIA {e}"))?;
    let certs = if x509_cert::Certificate::from_der(&body).is_ok() {
        vec![body]
    } else if let Some(certs) = certval::certs_from_signed_data(&body) {
        // Only what parses as a certificate is kept (and cached).
        certs
            .into_iter()
            .filter(|d| x509_cert::Certificate::from_der(d).is_ok())
            .collect()
    } else {
        super::certs_from_bytes(&body)
            .into_iter()
            .filter(|d| x509_cert::Certificate::from_der(d).is_ok())
            .collect()
    };
    if certs.is_empty() {
        return Err(format!("AIA {url}: the answer holds no certificate"));
    }
    trust.aia_store(url, certs.clone());
    Ok(certs)
}
