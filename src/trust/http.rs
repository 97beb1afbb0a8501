//! Plain HTTP for revocation: a GET for CRLs and AIA certificates, a POST for OCSP requests
//! (RFC 6960 A.1), with a size bound and a deadline.
//!
//! Owns: turning an `http://` URL (and a request body) into bytes, or a reason why not. Why hyper's low-level
//! HTTP/1 client rather than a blocking client (ureq) on the blocking pool: a fetch here is an
//! ordinary future, so the validation's deadline (`crl_retrieval_timeout_ms`) cancels it by
//! dropping it, and a server that accepts and never answers leaves no thread blocked behind.
//! CRLs, AIA certificates and OCSP responses are signed objects served over plain HTTP
//! (RFC 5280 4.2.1.13, 4.2.2.1; RFC 6960 A.1), so no TLS stack is needed here. Goes through an HTTP proxy where `proxy.rs` says so.
//! Does not interpret what it fetches.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::Uri;

use super::proxy::{Proxy, Route};

/// How many redirects a distribution point may send before it is given up.
const MAX_REDIRECTS: usize = 3;

/// Why a fetch failed, in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// Not an `http://` URL (LDAP, HTTPS, file, ...).
    Unsupported(String),
    Failed(String),
    TimedOut(String),
    TooLarge(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Unsupported(s)
            | FetchError::Failed(s)
            | FetchError::TimedOut(s)
            | FetchError::TooLarge(s) => f.write_str(s),
        }
    }
}

/// GETs `url` (through `proxy` where it says so), following up to three redirects to
/// other `http://` URLs. The whole fetch (connect, request, body) must finish within
/// `timeout` (`None`: no limit of its own; the caller's deadline still applies), and the
/// body may not exceed `max_bytes`.
pub async fn get(
    url: &str,
    timeout: Option<Duration>,
    max_bytes: u64,
    proxy: &Proxy,
) -> Result<Vec<u8>, FetchError> {
    within(url, timeout, get_following(url, max_bytes, proxy)).await
}

/// POSTs `body` (of `content_type`, asking for `accept`) to `url` and returns the answer's
/// body, at most `max_bytes`. Redirects are not followed (a POST is not repeated
/// elsewhere); the whole exchange must finish within `timeout`.
pub async fn post(
    url: &str,
    content_type: &'static str,
    accept: &'static str,
    body: Vec<u8>,
    timeout: Option<Duration>,
    max_bytes: u64,
    proxy: &Proxy,
) -> Result<Vec<u8>, FetchError> {
    let method = Method::Post {
        content_type,
        accept,
        body: Bytes::from(body),
    };
    let fut = async {
        match exchange_once(url, &method, max_bytes, proxy).await? {
            Answer::Body(b) => Ok(b),
            Answer::Redirect(to) => Err(FetchError::Failed(format!(
                "{url}: redirects a POST to {to}, which the agent does not follow"
            ))),
        }
    };
    within(url, timeout, fut).await
}

async fn within<F>(url: &str, timeout: Option<Duration>, fut: F) -> Result<Vec<u8>, FetchError>
where
    F: std::future::Future<Output = Result<Vec<u8>, FetchError>>,
{
    match timeout {
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::TimedOut(format!(
                "{url}: no answer within {} ms (crl_connection_timeout_ms)",
                t.as_millis()
            ))),
        },
        None => fut.await,
    }
}

async fn get_following(url: &str, max_bytes: u64, proxy: &Proxy) -> Result<Vec<u8>, FetchError> {
    let mut current = url.to_owned();
    for _ in 0..=MAX_REDIRECTS {
        match exchange_once(&current, &Method::Get, max_bytes, proxy).await? {
            Answer::Body(b) => return Ok(b),
            Answer::Redirect(to) => {
                if url_scheme(&to) != Some("http") {
                    return Err(FetchError::Unsupported(format!(
                        "{current} redirects to {to}, which is not an http:// URL"
                    )));
                }
                current = to;
            }
        }
    }
    Err(FetchError::Failed(format!(
        "{url}: more than {MAX_REDIRECTS} redirects"
    )))
}

enum Method {
    Get,
    Post {
        content_type: &'static str,
        accept: &'static str,
        body: Bytes,
    },
}

enum Answer {
    Body(Vec<u8>),
    Redirect(String),
}

/// The scheme of a URL, lowercased, when it has one.
pub fn url_scheme(url: &str) -> Option<&'static str> {
    let (scheme, _) = url.split_once("://")?;
    match scheme.to_ascii_lowercase().as_str() {
        "http" => Some("http"),
        "https" => Some("https"),
        "ldap" => Some("ldap"),
        "ldaps" => Some("ldaps"),
        "file" => Some("file"),
        "ftp" => Some("ftp"),
        _ => Some("other"),
    }
}

/// Aborts the connection task when the fetch ends or is dropped (a deadline passed).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn exchange_once(
    url: &str,
    method: &Method,
    max_bytes: u64,
    proxy: &Proxy,
) -> Result<Answer, FetchError> {
    let failed = |what: String| FetchError::Failed(format!("{url}: {what}"));
    if url_scheme(url) != Some("http") {
        return Err(FetchError::Unsupported(format!(
            "{url}: only http:// URLs are supported"
        )));
    }
    let uri: Uri = url
        .parse()
        .map_err(|e| failed(format!("not a valid URL ({e})")))?;
    let host = uri
        .host()
        .ok_or_else(|| failed("the URL has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    // Host and port only: credentials a URL may carry go nowhere (not to the server's Host
    // header, not to a proxy).
    let authority = match (host.contains(':'), uri.port_u16()) {
        (true, Some(p)) => format!("[{host}]:{p}"),
        (true, None) => format!("[{host}]"),
        (false, Some(p)) => format!("{host}:{p}"),
        (false, None) => host.clone(),
    };

    let route = proxy.route(&host).map_err(FetchError::Failed)?;
    let (stream, target) = match route {
        Route::Direct => (
            tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| failed(format!("cannot connect ({e})")))?,
            path,
        ),
        // Through the proxy: the request names the whole URL (absolute form, RFC 9112 3.2.2).
        Route::Via(p) => (
            tokio::net::TcpStream::connect((p.host.as_str(), p.port))
                .await
                .map_err(|e| failed(format!("cannot connect to the proxy {p} ({e})")))?,
            format!("http://{authority}{path}"),
        ),
    };
    let proxied = matches!(route, Route::Via(_));
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| failed(format!("HTTP handshake failed ({e})")))?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let builder = hyper::Request::builder()
        .uri(target)
        .header("host", authority)
        .header(
            "user-agent",
            concat!("smime-agent/", env!("CARGO_PKG_VERSION")),
        )
        .header("connection", "close");
    let req = match method {
        Method::Get => builder
            .method("GET")
            .body(http_body_util::Full::new(Bytes::new())),
        Method::Post {
            content_type,
            accept,
            body,
        } => builder
            .method("POST")
            .header("content-type", *content_type)
            .header("accept", *accept)
            .body(http_body_util::Full::new(body.clone())),
    }
    .map_err(|e| failed(format!("cannot build the request ({e})")))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| failed(format!("no valid HTTP answer ({e})")))?;
    let status = resp.status();
    if status.is_redirection() {
        let to = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| failed(format!("HTTP {status} without a Location")))?;
        return Ok(Answer::Redirect(to.to_owned()));
    }
    if proxied && status == hyper::StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        return Err(failed(
            "the proxy wants credentials (HTTP 407), which the agent does not send".into(),
        ));
    }
    if !status.is_success() {
        let by = if proxied {
            " (from the proxy or through it)"
        } else {
            ""
        };
        return Err(failed(format!("HTTP {status}{by}")));
    }
    let too_large = || {
        FetchError::TooLarge(format!(
            "{url}: the answer is larger than {max_bytes} bytes (max_crl_bytes)"
        ))
    };
    if let Some(len) = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max_bytes
    {
        return Err(too_large());
    }
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| failed(format!("the answer broke off ({e})")))?;
        if let Ok(data) = frame.into_data() {
            if out.len() as u64 + data.len() as u64 > max_bytes {
                return Err(too_large());
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Answer::Body(out))
}
