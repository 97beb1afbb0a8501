//! AIA: fetching the issuer of a certificate from its Authority Information Access URL
//! (a DER certificate, a certs-only SignedData, or PEM), within the validation's time and a
//! size bound, keeping only what parses as a certificate.
//!
//! Owns: one fetch and how its answer is read. Must not touch: HTTP itself (`http.rs`), trusting
//! what it fetched (only a candidate intermediate, judged like any other in `path.rs`). The
//! cache of answers is the `Trust`'s (`aia_cached`, `aia_store` in `mod.rs`).

use std::time::Instant;

use der::Decode;

use super::Trust;

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
    let body = trust
        .crls
        .client()
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
