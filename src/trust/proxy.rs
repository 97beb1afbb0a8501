//! Which HTTP proxy a CRL, OCSP or AIA fetch goes through, as curl decides it: the
//! configured `[revocation] http_proxy` (for every fetch), else the environment: for http://,
//! `http_proxy` (lower case only, as curl reads it, against "httpoxy"); for https://,
//! `https_proxy` or `HTTPS_PROXY` (a CONNECT tunnel). Hosts go direct by `no_proxy`
//! (configured, else `no_proxy` or `NO_PROXY`).
//!
//! Owns: parsing the proxy URL and the no_proxy list, and the choice for one host. Does not
//! connect anywhere (`http.rs` does).

use std::net::IpAddr;

/// A proxy's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "http://{}:{}", self.host, self.port)
        }
    }
}

/// The proxy settings in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxy {
    /// `Err`: the proxy setting could not be read; every fetch fails with it rather than
    /// going around the proxy the user asked for.
    via: Option<Result<Endpoint, String>>,
    /// The same for https:// URLs (through a CONNECT tunnel).
    via_tls: Option<Result<Endpoint, String>>,
    no_proxy: Vec<String>,
}

/// Where a fetch goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    Direct,
    Via(&'a Endpoint),
}

impl Proxy {
    /// From the configuration, falling back to the environment `env` (a lookup, so tests
    /// need not touch the process's environment). An empty configured `http_proxy` means
    /// no proxy, whatever the environment says.
    pub fn resolve(
        http_proxy: Option<&str>,
        no_proxy: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Proxy {
        let read = |setting: Option<String>, source: &str| {
            setting.filter(|s| !s.trim().is_empty()).map(|s| {
                parse_proxy(s.trim()).map_err(|e| format!("{source} {:?}: {e}", redacted(&s)))
            })
        };
        let (via, via_tls) = match http_proxy {
            Some(p) => {
                let v = read(Some(p.to_owned()), "[revocation] http_proxy");
                (v.clone(), v)
            }
            None => (
                read(env("http_proxy"), "the http_proxy environment variable"),
                match env("https_proxy") {
                    Some(v) => read(Some(v), "the https_proxy environment variable"),
                    None => read(env("HTTPS_PROXY"), "the HTTPS_PROXY environment variable"),
                },
            ),
        };
        let list = no_proxy
            .map(str::to_owned)
            .or_else(|| env("no_proxy"))
            .or_else(|| env("NO_PROXY"))
            .unwrap_or_default();
        Proxy {
            via,
            via_tls,
            no_proxy: list
                .split(',')
                .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
                .filter(|e| !e.is_empty())
                .collect(),
        }
    }

    /// The route to `host` (a name or an address, without brackets) for an http:// URL.
    pub fn route(&self, host: &str) -> Result<Route<'_>, String> {
        self.route_of(&self.via, host)
    }

    /// The route to `host` for an https:// URL (a CONNECT tunnel through the proxy).
    pub fn route_tls(&self, host: &str) -> Result<Route<'_>, String> {
        self.route_of(&self.via_tls, host)
    }

    fn route_of<'a>(
        &'a self,
        via: &'a Option<Result<Endpoint, String>>,
        host: &str,
    ) -> Result<Route<'a>, String> {
        match via {
            None => Ok(Route::Direct),
            Some(_) if self.bypassed(host) => Ok(Route::Direct),
            Some(Ok(e)) => Ok(Route::Via(e)),
            Some(Err(e)) => Err(e.clone()),
        }
    }

    /// Whether `host` is on the no_proxy list: `*`, the host itself, a domain it is in
    /// (`example.org` and `.example.org` both cover `crl.example.org`), or an address
    /// range in CIDR form.
    fn bypassed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let ip: Option<IpAddr> = host.parse().ok();
        self.no_proxy.iter().any(|entry| {
            if entry == "*" || *entry == host {
                return true;
            }
            if let (Some(ip), Some((net, bits))) = (ip, entry.split_once('/')) {
                return in_cidr(ip, net, bits);
            }
            ip.is_none() && host.ends_with(&format!(".{entry}"))
        })
    }
}

fn in_cidr(ip: IpAddr, net: &str, bits: &str) -> bool {
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// A proxy setting fit for a log or an error: credentials (`user:password@`) masked.
fn redacted(setting: &str) -> String {
    let (scheme, rest) = match setting.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), setting),
    };
    // Everything before the last '@' may be a credential, slashes included (a proxy
    // setting has no path that could hold an '@' of its own).
    match rest.rfind('@') {
        Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
        None => setting.to_owned(),
    }
}

/// `http://host[:port][/]`, or `host[:port]` as curl takes it (default port 1080, as
/// curl's).
fn parse_proxy(s: &str) -> Result<Endpoint, String> {
    let rest = match s.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "only http:// proxies are supported, not {scheme}://"
            ));
        }
        None => s,
    };
    let authority = rest.trim_end_matches('/');
    if authority.contains('/') || authority.contains('?') {
        return Err("a proxy URL names a host and a port, not a path".into());
    }
    if authority.contains('@') {
        return Err("proxy credentials are not supported; use a proxy that needs none".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| "an unclosed [ in the address".to_owned())?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{p:?} is not a port"))?,
        None => 1080,
    };
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn via(p: &Proxy, host: &str) -> Option<String> {
        match p.route(host).unwrap() {
            Route::Direct => None,
            Route::Via(e) => Some(e.to_string()),
        }
    }

    #[test]
    fn the_configured_proxy_wins_over_the_environment_and_empty_means_none() {
        let e = [("http_proxy", "http://env-proxy:3128")];
        let p = Proxy::resolve(Some("http://cfg-proxy:8080/"), None, env(&e));
        assert_eq!(
            via(&p, "crl.example.org").as_deref(),
            Some("http://cfg-proxy:8080")
        );
        let p = Proxy::resolve(None, None, env(&e));
        assert_eq!(
            via(&p, "crl.example.org").as_deref(),
            Some("http://env-proxy:3128")
        );
        let p = Proxy::resolve(Some(""), None, env(&e));
        assert_eq!(via(&p, "crl.example.org"), None);
        // Upper-case HTTP_PROXY is not read for http://, as curl does not.
        let p = Proxy::resolve(None, None, env(&[("HTTP_PROXY", "http://x:1")]));
        assert_eq!(via(&p, "crl.example.org"), None);
        // curl's forms: no scheme, no port (1080), IPv6.
        let p = Proxy::resolve(Some("proxy.corp"), None, env(&[]));
        assert_eq!(via(&p, "a.b").as_deref(), Some("http://proxy.corp:1080"));
        let p = Proxy::resolve(Some("http://[::1]:3128"), None, env(&[]));
        assert_eq!(via(&p, "a.b").as_deref(), Some("http://[::1]:3128"));
    }

    #[test]
    fn https_urls_take_https_proxy_from_the_environment_and_the_configured_proxy_too() {
        let tls = |p: &Proxy, host: &str| match p.route_tls(host).unwrap() {
            Route::Direct => None,
            Route::Via(e) => Some(e.to_string()),
        };
        let e = [
            ("http_proxy", "http://plain:3128"),
            ("https_proxy", "http://tunnel:3129"),
        ];
        let p = Proxy::resolve(None, None, env(&e));
        assert_eq!(via(&p, "a.b").as_deref(), Some("http://plain:3128"));
        assert_eq!(tls(&p, "a.b").as_deref(), Some("http://tunnel:3129"));
        // Upper case is read for https:// (curl does), lower case first.
        let p = Proxy::resolve(None, None, env(&[("HTTPS_PROXY", "http://up:1")]));
        assert_eq!(tls(&p, "a.b").as_deref(), Some("http://up:1"));
        assert_eq!(via(&p, "a.b"), None);
        // The configured proxy serves both; no_proxy both.
        let p = Proxy::resolve(Some("http://cfg:8080"), Some("direct.test"), env(&e));
        assert_eq!(tls(&p, "a.b").as_deref(), Some("http://cfg:8080"));
        assert_eq!(tls(&p, "direct.test"), None);
    }

    #[test]
    fn no_proxy_matches_as_curl_does() {
        let p = Proxy::resolve(
            Some("http://proxy:3128"),
            Some(" example.org, .corp.test ,10.0.0.0/8, ::1, fd00::/8, localhost"),
            env(&[]),
        );
        for direct in [
            "example.org",
            "crl.example.org",
            "CRL.Example.ORG",
            "pki.corp.test",
            "10.1.2.3",
            "::1",
            "fd00::5",
            "localhost",
        ] {
            assert_eq!(via(&p, direct), None, "{direct}");
        }
        for proxied in [
            "notexample.org",
            "example.org.evil.test",
            "corp.test.evil",
            "11.0.0.1",
            "::2",
            "127.0.0.1",
        ] {
            assert!(via(&p, proxied).is_some(), "{proxied}");
        }
        let all = Proxy::resolve(Some("http://proxy:3128"), Some("*"), env(&[]));
        assert_eq!(via(&all, "anything.example"), None);
        // From the environment, lower case first.
        let p = Proxy::resolve(
            Some("http://proxy:3128"),
            None,
            env(&[("no_proxy", "a.test"), ("NO_PROXY", "b.test")]),
        );
        assert_eq!(via(&p, "a.test"), None);
        assert!(via(&p, "b.test").is_some());
    }

    #[test]
    fn a_proxy_setting_that_cannot_be_read_fails_every_fetch_instead_of_going_around_it() {
        for bad in [
            "https://proxy:3128",
            "socks5://proxy:1080",
            "http://user:pw@proxy:3128",
            "http://proxy:99999",
            "http://proxy:3128/path",
            "http://:3128",
            "http://[::1:3128",
        ] {
            let p = Proxy::resolve(Some(bad), None, env(&[]));
            let e = p.route("crl.example.org").expect_err(bad);
            assert!(e.contains("[revocation] http_proxy"), "{bad}: {e}");
            // A password never reaches an error (they go to clients and the log).
            assert!(!e.contains("pw"), "{bad}: {e}");
        }
        let p = Proxy::resolve(
            None,
            None,
            env(&[("http_proxy", "http://me:secret@p:3128")]),
        );
        let e = p.route("crl.example.org").unwrap_err();
        assert!(!e.contains("secret") && e.contains("***@p:3128"), "{e}");
        // A password with a slash in it is masked whole.
        let p = Proxy::resolve(Some("http://me:se/cr@et@p:3128"), None, env(&[]));
        let e = p.route("crl.example.org").unwrap_err();
        assert!(!e.contains("se/cr") && !e.contains("et@p"), "{e}");
        // A host on no_proxy still goes direct.
        let p = Proxy::resolve(Some("socks5://p:1"), Some("crl.example.org"), env(&[]));
        assert_eq!(p.route("crl.example.org"), Ok(Route::Direct));
    }
}
