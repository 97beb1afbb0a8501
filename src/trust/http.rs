//! HTTP for revocation: a GET for CRLs and AIA certificates, a POST for OCSP requests
//! (RFC 6960 A.1), over http:// or https://, with a size bound and a deadline.
//!
//! Owns: turning a URL (and a request body) into bytes, or a reason why not. Why hyper's
//! low-level HTTP/1 client rather than a blocking client (ureq) on the blocking pool: a fetch
//! here is an ordinary future, so the validation's deadline (`crl_retrieval_timeout_ms`)
//! cancels it by dropping it, and a server that accepts and never answers leaves no thread
//! blocked behind. CRLs, AIA certificates and OCSP responses are signed objects, usually
//! served over plain HTTP (RFC 5280 4.2.1.13, 4.2.2.1; RFC 6960 A.1); https:// runs over
//! rustls (`tls.rs` says whom it trusts), through a CONNECT tunnel where a proxy is used. Goes
//! through an HTTP proxy where `proxy.rs` says so. Does not interpret what it fetches.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::proxy::{Endpoint, Proxy, Route};

/// How many redirects a distribution point may send before it is given up.
const MAX_REDIRECTS: usize = 3;

/// Why a fetch failed, in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// Not an `http://` or `https://` URL (LDAP, file, ...).
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

/// What every fetch goes through: the proxy settings and, for https://, the TLS client
/// configuration (built on the first https:// fetch).
pub struct Client {
    proxy: Proxy,
    /// The trust anchors (DER) that, with the system's, authenticate https:// servers.
    anchors: Vec<Vec<u8>>,
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("proxy", &self.proxy)
            .finish()
    }
}

impl Client {
    pub fn new(proxy: Proxy, anchors: Vec<Vec<u8>>) -> Client {
        Client {
            proxy,
            anchors,
            tls: OnceLock::new(),
        }
    }

    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// The TLS configuration of https:// (and ldaps://) fetches.
    pub fn tls(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        self.tls
            .get_or_init(|| super::tls::client_config(&self.anchors))
            .clone()
    }

    /// GETs `url`, following up to three redirects to other http:// or https:// URLs. The
    /// whole fetch (connect, request, body) must finish within `timeout` (`None`: no limit
    /// of its own; the caller's deadline still applies), and the body may not exceed
    /// `max_bytes`.
    pub async fn get(
        &self,
        url: &str,
        timeout: Option<Duration>,
        max_bytes: u64,
    ) -> Result<Vec<u8>, FetchError> {
        within(url, timeout, self.get_following(url, max_bytes)).await
    }

    /// POSTs `body` (of `content_type`, asking for `accept`) to `url` and returns the
    /// answer's body, at most `max_bytes`. Redirects are not followed (a POST is not
    /// repeated elsewhere); the whole exchange must finish within `timeout`.
    pub async fn post(
        &self,
        url: &str,
        content_type: &'static str,
        accept: &'static str,
        body: Vec<u8>,
        timeout: Option<Duration>,
        max_bytes: u64,
    ) -> Result<Vec<u8>, FetchError> {
        let method = Method::Post {
            content_type,
            accept,
            body: Bytes::from(body),
        };
        let fut = async {
            match self.exchange_once(url, &method, max_bytes).await? {
                Answer::Body(b) => Ok(b),
                Answer::Redirect(to) => Err(FetchError::Failed(format!(
                    "{url}: redirects a POST to {to}, which the agent does not follow"
                ))),
            }
        };
        within(url, timeout, fut).await
    }

    async fn get_following(&self, url: &str, max_bytes: u64) -> Result<Vec<u8>, FetchError> {
        let mut current = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            match self
                .exchange_once(&current, &Method::Get, max_bytes)
                .await?
            {
                Answer::Body(b) => return Ok(b),
                Answer::Redirect(to) => {
                    if !matches!(url_scheme(&to), Some("http" | "https")) {
                        return Err(FetchError::Unsupported(format!(
                            "{current} redirects to {to}, which is not an http:// or https:// URL"
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

    async fn exchange_once(
        &self,
        url: &str,
        method: &Method,
        max_bytes: u64,
    ) -> Result<Answer, FetchError> {
        let failed = |what: String| FetchError::Failed(format!("{url}: {what}"));
        let tls = match url_scheme(url) {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(FetchError::Unsupported(format!(
                    "{url}: only http:// and https:// URLs are supported"
                )));
            }
        };
        let uri: Uri = url
            .parse()
            .map_err(|e| failed(format!("not a valid URL ({e})")))?;
        let host = uri
            .host()
            .ok_or_else(|| failed("the URL has no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        // Host and port only: credentials a URL may carry go nowhere (not to the server's
        // Host header, not to a proxy).
        let authority = match (host.contains(':'), uri.port_u16()) {
            (true, Some(p)) => format!("[{host}]:{p}"),
            (true, None) => format!("[{host}]"),
            (false, Some(p)) => format!("{host}:{p}"),
            (false, None) => host.clone(),
        };

        let route = if tls {
            self.proxy.route_tls(&host)
        } else {
            self.proxy.route(&host)
        }
        .map_err(FetchError::Failed)?;
        let stream = match route {
            Route::Direct => tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| failed(format!("cannot connect ({e})")))?,
            Route::Via(p) => tokio::net::TcpStream::connect((p.host.as_str(), p.port))
                .await
                .map_err(|e| failed(format!("cannot connect to the proxy {p} ({e})")))?,
        };
        let _ = stream.set_nodelay(true);
        let proxy = match route {
            Route::Via(p) => Some(p),
            Route::Direct => None,
        };
        if !tls {
            // Through the proxy: the request names the whole URL (absolute form, RFC 9112
            // 3.2.2).
            let target = match proxy {
                Some(_) => format!("http://{authority}{path}"),
                None => path,
            };
            let req = request(method, &target, &authority).map_err(failed)?;
            return exchange(TokioIo::new(stream), req, url, proxy.is_some(), max_bytes).await;
        }

        let config = self.tls().map_err(failed)?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| failed(format!("not a TLS server name ({e})")))?;
        let io: Box<dyn Io> = match proxy {
            None => Box::new(stream),
            Some(p) => {
                let tunnel = format!("{}:{port}", authority_host(&host));
                Box::new(connect_tunnel(stream, &tunnel, p).await.map_err(failed)?)
            }
        };
        let tls_stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, io)
            .await
            .map_err(|e| failed(format!("TLS handshake failed ({e})")))?;
        let req = request(method, &path, &authority).map_err(failed)?;
        exchange(TokioIo::new(tls_stream), req, url, false, max_bytes).await
    }
}

/// A byte stream TLS can run over: a TCP connection or a tunnel through a proxy.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

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

/// A host as the authority of a request names it (IPv6 in brackets).
fn authority_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Aborts the connection task when the fetch ends or is dropped (a deadline passed).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn request(
    method: &Method,
    target: &str,
    authority: &str,
) -> Result<hyper::Request<http_body_util::Full<Bytes>>, String> {
    let builder = hyper::Request::builder()
        .uri(target)
        .header("host", authority)
        .header(
            "user-agent",
            concat!("smime-agent/", env!("CARGO_PKG_VERSION")),
        )
        .header("connection", "close");
    match method {
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
    .map_err(|e| format!("cannot build the request ({e})"))
}

/// Opens a CONNECT tunnel to `target` (host:port) through the proxy at the other end of
/// `stream` (RFC 9110 9.3.6).
async fn connect_tunnel(
    stream: tokio::net::TcpStream,
    target: &str,
    proxy: &Endpoint,
) -> Result<TokioIo<hyper::upgrade::Upgraded>, String> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with the proxy {proxy} failed ({e})"))?;
    let conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    }));
    let req = hyper::Request::builder()
        .method("CONNECT")
        .uri(target)
        .header("host", target)
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the CONNECT request ({e})"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("the proxy {proxy} gave no valid answer to CONNECT ({e})"))?;
    if resp.status() == hyper::StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        return Err(format!(
            "the proxy {proxy} wants credentials (HTTP 407), which the agent does not send"
        ));
    }
    if !resp.status().is_success() {
        return Err(format!(
            "the proxy {proxy} refused the tunnel (HTTP {})",
            resp.status()
        ));
    }
    let upgraded = hyper::upgrade::on(resp)
        .await
        .map_err(|e| format!("the proxy {proxy} did not open the tunnel ({e})"))?;
    // The tunnel lives on in `upgraded`; the connection task has handed it over.
    drop(conn);
    Ok(TokioIo::new(upgraded))
}

/// Sends `req` over `io` and reads the answer: a body of at most `max_bytes`, or a redirect.
async fn exchange<T>(
    io: T,
    req: hyper::Request<http_body_util::Full<Bytes>>,
    url: &str,
    proxied: bool,
    max_bytes: u64,
) -> Result<Answer, FetchError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let failed = |what: String| FetchError::Failed(format!("{url}: {what}"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| failed(format!("HTTP handshake failed ({e})")))?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
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
