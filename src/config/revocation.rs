//! `[revocation]`: how certificates' revocation is checked (CRLs and OCSP), within what
//! time and size, through which proxy, and what an undetermined status means.
//!
//! Owns: the schema of `[revocation]`, its defaults (the seed's where it gives one) and its
//! value checks. Does not fetch or judge anything: `trust` does.

use std::path::PathBuf;

use serde::Deserialize;

use super::{de_dword_ms, in_range};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationConfig {
    /// [DisableCRLCheck] No revocation checking at all.
    pub disable_crl_check: bool,
    /// What happens when no revocation status can be obtained, from a CRL or OCSP (the
    /// seed's name; `on_revocation_unavailable` says the same).
    #[serde(alias = "on_revocation_unavailable")]
    pub on_crl_unavailable: CrlUnavailable,
    /// The sources asked, in order, when no current answer of either kind is cached:
    /// `ocsp` (the responder a certificate names in its AIA), `crl` (its distribution
    /// points). Default `["ocsp", "crl"]`; `["crl"]` never asks a responder.
    #[serde(deserialize_with = "de_revocation_order")]
    pub order: Vec<RevocationSource>,
    /// Send a nonce with OCSP requests (RFC 8954); a response echoing another one is refused.
    pub ocsp_nonce: bool,
    /// [CheckCRLOnSend] Refuse to sign or encrypt when a CRL of the sender's chain is
    /// unreachable.
    pub check_crl_on_send: bool,
    /// [CRLConnectionTimeout] Per connection; below 5000 means the default (60000).
    #[serde(deserialize_with = "de_dword_ms")]
    pub crl_connection_timeout_ms: u64,
    /// [CRLRetrievalTimeout] All CRLs of one validation.
    #[serde(deserialize_with = "de_dword_ms")]
    pub crl_retrieval_timeout_ms: u64,
    /// CRL cache; default `$XDG_CACHE_HOME/smime-agent/crls`.
    pub cache_dir: Option<PathBuf>,
    /// Largest CRL download accepted.
    #[serde(deserialize_with = "de_crl_bytes")]
    pub max_crl_bytes: u64,
    /// HTTP proxy for CRL and AIA fetches (`http://host:port`); unset: the `http_proxy`
    /// environment variable; empty: none.
    pub http_proxy: Option<String>,
    /// Hosts fetched without the proxy (curl's `no_proxy` syntax); unset: the `no_proxy`
    /// environment variable.
    pub no_proxy: Option<String>,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        RevocationConfig {
            disable_crl_check: false,
            on_crl_unavailable: CrlUnavailable::Allow,
            order: vec![RevocationSource::Ocsp, RevocationSource::Crl],
            ocsp_nonce: true,
            check_crl_on_send: false,
            crl_connection_timeout_ms: 60_000,
            crl_retrieval_timeout_ms: 10_000,
            cache_dir: None,
            max_crl_bytes: 32 * 1024 * 1024,
            http_proxy: None,
            no_proxy: None,
        }
    }
}

impl RevocationConfig {
    /// The seed's rule: a connection timeout below 5000 ms means the default, 60000 ms.
    pub fn effective_connection_timeout_ms(&self) -> u64 {
        if self.crl_connection_timeout_ms < 5000 {
            60_000
        } else {
            self.crl_connection_timeout_ms
        }
    }
}

/// A source of revocation status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationSource {
    /// An OCSP responder (RFC 6960), named by the certificate's AIA.
    Ocsp,
    /// A CRL from the certificate's distribution points.
    Crl,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrlUnavailable {
    /// The certificate is used, silently (the seed's default).
    #[default]
    Allow,
    /// The certificate is used and the failure reported.
    Warn,
    /// The certificate is not used.
    Fail,
}

fn de_crl_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(d, 1024, 1 << 30, "max_crl_bytes")
}

fn de_revocation_order<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<RevocationSource>, D::Error> {
    let v = Vec::<RevocationSource>::deserialize(d)?;
    if v.is_empty() {
        return Err(serde::de::Error::custom(
            "order names no source; use disable_crl_check to check no revocation",
        ));
    }
    if v.iter().enumerate().any(|(i, a)| v[..i].contains(a)) {
        return Err(serde::de::Error::custom("order names a source twice"));
    }
    Ok(v)
}
