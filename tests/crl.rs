//! Revocation through the running agent, with CRLs published by a loopback HTTP server.

mod common;

use std::time::{Duration, Instant};

use common::*;
use smime_agent_proto::{ErrorCode, Purpose, ValidityStatus, WhichParams};

/// A PKI whose certificates point at `server`, alice's signing key on a SoftHSM token, and
/// (unless `revoked`) empty CRLs of both CAs published.
struct Setup {
    dir: tempfile::TempDir,
    pki: std::path::PathBuf,
    hsm: SoftHsm,
}

fn setup(base_url: &str) -> Setup {
    let dir = tempdir();
    let pki = pki_in(
        &dir.path().join("pki"),
        base_url,
        &["alice-sign-rsa", "bob-dual-rsa"],
    );
    let hsm = SoftHsm::new(&dir.path().join("softhsm"));
    hsm.add_token_from(&pki, "alice", PIN, &["alice-sign-rsa"]);
    Setup { dir, pki, hsm }
}

impl Setup {
    fn agent(&self, name: &str, revocation: &str) -> Agent {
        Agent::start(
            &self.dir.path().join(name),
            AgentSpec {
                softhsm: Some(&self.hsm),
                trust: Some(trust_for(&self.pki)),
                revocation: format!(
                    "cache_dir = \"{}\"\n{revocation}",
                    self.dir.path().join("crls").display()
                ),
                ..Default::default()
            },
        )
    }

    /// Validates Alice's signing certificate with an agent of its own (`revocation` lines
    /// added) that starts with an empty CRL cache, which it leaves empty again.
    async fn validate_with_fresh_cache(
        &self,
        name: &str,
        revocation: &str,
    ) -> smime_agent_proto::ValidateResult {
        let agent = self.agent(name, revocation);
        let v = agent
            .client()
            .await
            .validate(validate_params(&self.cert("alice-sign-rsa")))
            .await
            .unwrap();
        drop(agent);
        let _ = std::fs::remove_dir_all(self.dir.path().join("crls"));
        v
    }

    fn cert(&self, name: &str) -> std::path::PathBuf {
        self.pki.join(format!("{name}.pem"))
    }

    fn publish_good(&self, server: &CrlServer) {
        server.publish("/ca.crl", make_crl(&self.pki, "ca", &[], 30 * 86400));
        server.publish("/root-ca.crl", make_crl(&self.pki, "root", &[], 30 * 86400));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_signer_is_refused() {
    let server = CrlServer::start().await;
    let s = setup(&server.base_url());
    server.publish(
        "/ca.crl",
        make_crl(&s.pki, "ca", &["alice-sign-rsa"], 86400),
    );
    server.publish("/root-ca.crl", make_crl(&s.pki, "root", &[], 86400));
    let agent = s.agent("agent", "");
    let client = agent.client().await;

    let v = client
        .validate(validate_params(&s.cert("alice-sign-rsa")))
        .await
        .unwrap();
    assert_eq!(v.status, ValidityStatus::Invalid);
    assert_eq!(v.reasons[0].code, "revoked", "{:?}", v.reasons);
    assert_eq!(v.revocation.status, "revoked");
    // Bob is not on the CRL.
    let v = client
        .validate(validate_params(&s.cert("bob-dual-rsa")))
        .await
        .unwrap();
    assert_eq!(v.status, ValidityStatus::Valid, "{:?}", v.reasons);
    assert_eq!(v.revocation.status, "good");

    let (res, prompts) =
        sign_answering(&client, "alice@example.org", sample_entity("x"), None, PIN).await;
    let err = res.expect_err("a revoked certificate must not sign");
    assert_eq!(err.code(), Some(ErrorCode::NoCertificate), "{err}");
    assert!(err.to_string().contains("revoked"), "{err}");
    assert_eq!(
        prompts, 0,
        "no PIN is asked for a certificate that is not used"
    );

    let w = client
        .which(WhichParams {
            address: "alice@example.org".into(),
            purpose: Purpose::Sign,
        })
        .await
        .unwrap();
    assert!(w.chosen.is_none());
    assert_eq!(w.rejected[0].code, "revoked");

    // The CLI: exit 1 and the reason.
    let out = agent
        .cli()
        .arg("validate")
        .arg(s.cert("alice-sign-rsa"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked"));
    let out = agent
        .cli()
        .arg("validate")
        .arg(s.cert("bob-dual-rsa"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crl_is_fetched_once_for_twenty_concurrent_validations_and_kept_across_a_restart() {
    let server = CrlServer::start().await;
    let s = setup(&server.base_url());
    s.publish_good(&server);
    server.state.lock().unwrap().delay = Duration::from_millis(300);
    let mut agent = s.agent("agent", "");
    let client = std::sync::Arc::new(agent.client().await);
    let mut tasks = vec![];
    for _ in 0..20 {
        let c = client.clone();
        let p = validate_params(&s.cert("alice-sign-rsa"));
        tasks.push(tokio::spawn(async move { c.validate(p).await }));
    }
    for t in tasks {
        let v = t.await.unwrap().unwrap();
        assert_eq!(v.status, ValidityStatus::Valid, "{:?}", v.reasons);
        assert_eq!(v.revocation.status, "good");
        // Each one needed the CRL itself (none was answered from the validation cache),
        // so one fetch for all of them is the single-flight at work.
        assert!(!v.cached, "a validation came from the cache");
    }
    assert_eq!(
        server.hits("/ca.crl"),
        1,
        "the issuing CA's CRL was fetched more than once"
    );
    assert_eq!(server.hits("/root-ca.crl"), 1);

    // status shows the cache.
    let st = client.status().await.unwrap();
    assert_eq!(st.crl_cache.crls.len(), 2, "{:?}", st.crl_cache);
    let ca = st
        .crl_cache
        .crls
        .iter()
        .find(|c| c.url.ends_with("/ca.crl"))
        .unwrap();
    assert!(ca.issuer.contains("Issuing CA") && ca.current && ca.next_update.is_some());
    assert_eq!(ca.entries, 0);
    let out = agent.cli().arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("CRL cache") && text.contains("nextUpdate"),
        "{text}"
    );

    // After a restart the disk cache answers: nothing is fetched before nextUpdate.
    drop(client);
    agent.stop();
    let agent = s.agent("agent2", "");
    let v = agent
        .client()
        .await
        .validate(validate_params(&s.cert("alice-sign-rsa")))
        .await
        .unwrap();
    assert_eq!(v.status, ValidityStatus::Valid, "{:?}", v.reasons);
    assert_eq!(
        v.revocation
            .checks
            .iter()
            .filter(|c| c.source.as_deref() == Some("cache"))
            .count(),
        2
    );
    assert_eq!(
        server.hits("/ca.crl"),
        1,
        "the CRL was fetched again after the restart"
    );
    assert_eq!(server.hits("/root-ca.crl"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_crl_is_fetched_again() {
    let server = CrlServer::start().await;
    let s = setup(&server.base_url());
    server.publish("/root-ca.crl", make_crl(&s.pki, "root", &[], 86400));
    let agent = s.agent("agent", "");
    let client = agent.client().await;
    // Made once the agent is up, so its 3 s are not spent starting it.
    server.publish("/ca.crl", make_crl(&s.pki, "ca", &[], 3));
    let v = client
        .validate(validate_params(&s.cert("alice-sign-rsa")))
        .await
        .unwrap();
    assert_eq!(v.revocation.status, "good", "{:?}", v.revocation);
    assert_eq!(server.hits("/ca.crl"), 1);
    // The next one is fresh for a day; the cached one expires in 3 s.
    server.publish("/ca.crl", make_crl(&s.pki, "ca", &[], 86400));
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let v = client
        .validate(validate_params(&s.cert("alice-sign-rsa")))
        .await
        .unwrap();
    assert_eq!(v.revocation.status, "good", "{:?}", v.revocation);
    assert_eq!(
        server.hits("/ca.crl"),
        2,
        "the expired CRL was not fetched again"
    );
    let v = client
        .validate(validate_params(&s.cert("bob-dual-rsa")))
        .await
        .unwrap();
    assert_eq!(v.revocation.status, "good");
    assert_eq!(server.hits("/ca.crl"), 2, "a current CRL was fetched again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_crl_allow_warn_fail_and_check_crl_on_send() {
    let s = setup(&format!("http://127.0.0.1:{}", dead_port()));

    // allow (the default): valid, no warning, the failure visible in the details.
    let agent = s.agent("allow", "");
    let v = agent
        .client()
        .await
        .validate(validate_params(&s.cert("alice-sign-rsa")))
        .await
        .unwrap();
    assert_eq!(v.status, ValidityStatus::Valid, "{:?}", v.reasons);
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    assert_eq!(v.revocation.status, "unavailable");
    assert!(
        v.revocation.checks.iter().any(|c| c
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("cannot connect")),
        "{:?}",
        v.revocation
    );
    assert!(!v.cached);
    // Asked again at once: the CRL would not be tried again for a while (failure memory),
    // so the same outcome comes from the validation cache instead of a new path check.
    let again = agent
        .client()
        .await
        .validate(validate_params(&s.cert("alice-sign-rsa")))
        .await
        .unwrap();
    assert!(again.cached, "an unavailable CRL's outcome is not kept");
    assert_eq!(again.revocation.status, "unavailable");
    let client = agent.client().await;
    let (res, _) =
        sign_answering(&client, "alice@example.org", sample_entity("x"), None, PIN).await;
    res.expect("allow signs");
    drop(agent);

    // warn: valid, and the failure reported.
    let agent = s.agent("warn", "on_crl_unavailable = \"warn\"\n");
    let v = agent
        .client()
        .await
        .validate(validate_params(&s.cert("alice-sign-rsa")))
        .await
        .unwrap();
    assert_eq!(v.status, ValidityStatus::Valid);
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("revocation status could not be determined")),
        "{:?}",
        v.warnings
    );
    let client = agent.client().await;
    let (res, _) =
        sign_answering(&client, "alice@example.org", sample_entity("x"), None, PIN).await;
    let res = res.expect("warn signs");
    assert!(
        !res.warnings.is_empty(),
        "the sign result carries the warning"
    );
    drop(agent);

    // fail: invalid, not used.
    let agent = s.agent("fail", "on_crl_unavailable = \"fail\"\n");
    let v = agent
        .client()
        .await
        .validate(validate_params(&s.cert("alice-sign-rsa")))
        .await
        .unwrap();
    assert_eq!(v.status, ValidityStatus::Invalid);
    assert_eq!(v.reasons[0].code, "crl_unavailable");
    let client = agent.client().await;
    let (res, _) =
        sign_answering(&client, "alice@example.org", sample_entity("x"), None, PIN).await;
    assert_eq!(res.unwrap_err().code(), Some(ErrorCode::NoCertificate));
    drop(agent);

    // check_crl_on_send: validation alone still allows, sending is refused by policy.
    let agent = s.agent("send", "check_crl_on_send = true\n");
    let v = agent
        .client()
        .await
        .validate(validate_params(&s.cert("alice-sign-rsa")))
        .await
        .unwrap();
    assert_eq!(v.status, ValidityStatus::Valid);
    let client = agent.client().await;
    let (res, prompts) =
        sign_answering(&client, "alice@example.org", sample_entity("x"), None, PIN).await;
    let err = res.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::PolicyDenied), "{err}");
    assert!(err.to_string().contains("check_crl_on_send"), "{err}");
    assert_eq!(prompts, 0);
    drop(agent);

    // disable_crl_check: nothing is checked.
    let agent = s.agent(
        "off",
        "disable_crl_check = true\ncheck_crl_on_send = true\n",
    );
    let v = agent
        .client()
        .await
        .validate(validate_params(&s.cert("alice-sign-rsa")))
        .await
        .unwrap();
    assert_eq!(v.status, ValidityStatus::Valid);
    assert_eq!(v.revocation.status, "disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_costs_at_most_the_retrieval_timeout() {
    let server = CrlServer::start().await;
    let s = setup(&server.base_url());
    server.state.lock().unwrap().hang = true;
    let agent = s.agent(
        "agent",
        "crl_retrieval_timeout_ms = 1500\ncrl_connection_timeout_ms = 60000\n",
    );
    let client = agent.client().await;
    let started = Instant::now();
    let v = client
        .validate(validate_params(&s.cert("alice-sign-rsa")))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1500 + 1000),
        "the validation took {took:?}"
    );
    assert!(
        took >= Duration::from_millis(1400),
        "it did not wait for the CRL at all: {took:?}"
    );
    assert_eq!(v.status, ValidityStatus::Valid, "allow is the default");
    assert_eq!(v.revocation.status, "unavailable");
    assert!(
        format!("{:?}", v.revocation).contains("crl_retrieval_timeout_ms"),
        "{:?}",
        v.revocation
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_with_a_bad_signature_is_not_believed() {
    let server = CrlServer::start().await;
    let s = setup(&server.base_url());
    // A CRL that says alice is revoked, with its last signature byte changed.
    let mut crl = make_crl(&s.pki, "ca", &["alice-sign-rsa"], 86400);
    let last = crl.len() - 1;
    crl[last] ^= 0x01;
    server.publish("/ca.crl", crl);
    server.publish("/root-ca.crl", make_crl(&s.pki, "root", &[], 86400));
    let agent = s.agent("agent", "on_crl_unavailable = \"fail\"\n");
    let v = agent
        .client()
        .await
        .validate(validate_params(&s.cert("alice-sign-rsa")))
        .await
        .unwrap();
    assert_eq!(v.status, ValidityStatus::Invalid);
    assert_eq!(
        v.reasons[0].code, "crl_unavailable",
        "not believed, so not revoked: {:?}",
        v.reasons
    );
    assert!(
        v.reasons[0].message.contains("signature does not verify"),
        "{}",
        v.reasons[0].message
    );
    // Nor cached, while the root's good CRL, fetched in the same validation, is: the
    // listing shows what the cache holds.
    let st = agent.client().await.status().await.unwrap();
    let urls: Vec<&str> = st.crl_cache.crls.iter().map(|c| c.url.as_str()).collect();
    assert!(urls.iter().any(|u| u.ends_with("/root-ca.crl")), "{urls:?}");
    assert!(urls.iter().all(|u| !u.ends_with("/ca.crl")), "{urls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distrusted_intermediate_makes_its_chain_invalid() {
    let server = CrlServer::start().await;
    let s = setup(&server.base_url());
    s.publish_good(&server);
    let agent = Agent::start(
        &s.dir.path().join("agent"),
        AgentSpec {
            softhsm: Some(&s.hsm),
            trust: Some(format!(
                "{}untrusted = [\"{}\"]\n",
                trust_for(&s.pki),
                s.pki.join("ca.pem").display()
            )),
            ..Default::default()
        },
    );
    let v = agent
        .client()
        .await
        .validate(validate_params(&s.cert("alice-sign-rsa")))
        .await
        .unwrap();
    assert_eq!(v.status, ValidityStatus::Invalid);
    assert_eq!(v.reasons[0].code, "untrusted", "{:?}", v.reasons);
    assert!(
        v.reasons[0].message.contains("Issuing CA"),
        "{}",
        v.reasons[0].message
    );
    let out = agent
        .cli()
        .args(["validate", "--json"])
        .arg(s.cert("alice-sign-rsa"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["status"], "invalid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribution_points_of_other_schemes_are_reported_unsupported() {
    let s = setup("ftp://127.0.0.1/crls");
    let agent = s.agent("agent", "on_crl_unavailable = \"fail\"\n");
    let v = agent
        .client()
        .await
        .validate(validate_params(&s.cert("alice-sign-rsa")))
        .await
        .unwrap();
    assert_eq!(v.status, ValidityStatus::Invalid);
    assert!(
        v.reasons[0].message.contains("unsupported"),
        "{}",
        v.reasons[0].message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_or_forged_crl_in_the_request_does_not_stand_in_for_the_published_one() {
    let server = CrlServer::start().await;
    let s = setup(&server.base_url());
    server.publish(
        "/ca.crl",
        make_crl(&s.pki, "ca", &["alice-sign-rsa"], 86400),
    );
    server.publish("/root-ca.crl", make_crl(&s.pki, "root", &[], 86400));
    // The default policy: a CRL that cannot be had does not fail the certificate.
    let agent = s.agent("agent", "on_crl_unavailable = \"allow\"");
    let client = agent.client().await;

    // An empty CRL of the right CA that expired, and one "of the CA" signed by the root
    // (right name, wrong key): neither may stop the agent from fetching the real one.
    let stale = make_crl(&s.pki, "ca", &[], -3600);
    let mut forged = make_crl(&s.pki, "root", &[], 86400);
    let ca_name = {
        use der::{Decode, DecodePem, Encode};
        let ca = x509_cert::Certificate::from_pem(std::fs::read(s.cert("ca")).unwrap()).unwrap();
        let mut crl =
            x509_cert::crl::CertificateList::<x509_cert::certificate::Raw>::from_der(&forged)
                .unwrap();
        crl.tbs_cert_list.issuer = ca.tbs_certificate().subject().clone();
        forged = crl.to_der().unwrap();
        ca.tbs_certificate().subject().to_string()
    };
    for (what, crl) in [("stale", stale), ("forged", forged)] {
        let mut params = validate_params(&s.cert("alice-sign-rsa"));
        params.crls = vec![crl.into()];
        let v = client.validate(params).await.unwrap();
        assert_eq!(v.status, ValidityStatus::Invalid, "{what}: {:?}", v.reasons);
        assert_eq!(v.reasons[0].code, "revoked", "{what}: {:?}", v.reasons);
        assert!(
            v.revocation
                .checks
                .iter()
                .any(|c| c.crl_issuer.as_deref() == Some(ca_name.as_str())
                    && c.source.as_deref() != Some("request")),
            "{what}: the published CRL was not used: {:?}",
            v.revocation
        );
    }
    assert!(server.hits("/ca.crl") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_intermediate_is_fetched_from_the_aia_url_once() {
    let server = CrlServer::start().await;
    let s = setup(&server.base_url());
    s.publish_good(&server);
    let ca = {
        use der::{DecodePem, Encode};
        x509_cert::Certificate::from_pem(std::fs::read(s.cert("ca")).unwrap())
            .unwrap()
            .to_der()
            .unwrap()
    };
    server.publish("/ca.cer", ca);
    // Only the root is configured: the issuing CA is in no store and no request.
    let agent = Agent::start(
        &s.dir.path().join("aia-agent"),
        AgentSpec {
            softhsm: Some(&s.hsm),
            trust: Some(format!(
                "roots = [\"{}\"]\nuse_system_roots = false\n",
                s.pki.join("root-ca.pem").display()
            )),
            revocation: format!(
                "cache_dir = \"{}\"",
                s.dir.path().join("aia-crls").display()
            ),
            ..Default::default()
        },
    );
    let client = agent.client().await;
    for name in ["alice-sign-rsa", "bob-dual-rsa"] {
        let v = client
            .validate(validate_params(&s.cert(name)))
            .await
            .unwrap();
        assert_eq!(v.status, ValidityStatus::Valid, "{name}: {:?}", v.reasons);
        assert!(!v.cached);
        let sources: Vec<&str> = v.chain.iter().map(|c| c.source.as_str()).collect();
        assert_eq!(sources, ["request", "aia", "anchor"], "{name}");
    }
    assert_eq!(
        server.hits("/ca.cer"),
        1,
        "the issuer's certificate was fetched again for the second user"
    );
}

/// RFC 5280 5.2.3: a CRL without a CRL number is not a conforming CRL; it must not stand for
/// the issuer's revocation list (make-pki.sh's ca.no-number.crl.pem).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_without_a_crl_number_is_not_used() {
    let server = CrlServer::start().await;
    let s = setup(&server.base_url());
    let pem = std::fs::read(s.pki.join("ca.no-number.crl.pem")).unwrap();
    let der = openssl(s.dir.path(), &["crl", "-outform", "DER"], &pem).unwrap();
    server.publish("/ca.crl", der);
    server.publish("/root-ca.crl", make_crl(&s.pki, "root", &[], 86400));
    let agent = s.agent("agent", "on_crl_unavailable = \"fail\"");
    let client = agent.client().await;
    let v = client
        .validate(validate_params(&s.cert("alice-sign-rsa")))
        .await
        .unwrap();
    assert_eq!(v.status, ValidityStatus::Invalid, "{:?}", v.reasons);
    assert_eq!(v.reasons[0].code, "crl_unavailable", "{:?}", v.reasons);
    assert_eq!(v.revocation.status, "unavailable");
    let why = v
        .revocation
        .checks
        .iter()
        .filter_map(|c| c.reason.as_deref())
        .collect::<Vec<_>>()
        .join("; ");
    assert!(why.contains("no CRL number"), "{why}");
}

/// CRLs through a real HTTP proxy (Debian's tinyproxy): the configured proxy carries the
/// fetch (the CRL server sees tinyproxy's Via header, the proxy logs the request), a host on
/// no_proxy is fetched directly, and an unreachable proxy is named in the reason instead of
/// being gone around.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crls_go_through_the_configured_proxy_and_no_proxy_hosts_go_direct() {
    let server = CrlServer::start().await;
    let s = setup(&server.base_url());
    s.publish_good(&server);
    let proxy = peers::Tinyproxy::start(&s.dir.path().join("proxy"));
    let vias = |server: &CrlServer| -> Vec<bool> {
        let st = server.state.lock().unwrap();
        st.heads
            .iter()
            .map(|h| {
                h.to_ascii_lowercase()
                    .lines()
                    .any(|l| l.starts_with("via:") && l.contains("(tinyproxy/"))
            })
            .collect()
    };

    // Through the proxy.
    let v = s
        .validate_with_fresh_cache("proxied", &format!("http_proxy = \"{}\"\n", proxy.url()))
        .await;
    assert_eq!(v.status, ValidityStatus::Valid, "{:?}", v.reasons);
    assert_eq!(v.revocation.status, "good", "{:?}", v.revocation);
    let seen = vias(&server);
    assert!(
        !seen.is_empty() && seen.iter().all(|v| *v),
        "{seen:?} {:?}",
        server.state.lock().unwrap().heads
    );
    assert!(proxy.log().contains("/ca.crl"), "{}", proxy.log());

    // The same proxy, but the CRL host is on no_proxy: straight to the server.
    let before = vias(&server).len();
    let v = s
        .validate_with_fresh_cache(
            "direct",
            &format!(
                "http_proxy = \"{}\"\nno_proxy = \"localhost, 127.0.0.0/8\"\n",
                proxy.url()
            ),
        )
        .await;
    assert_eq!(v.revocation.status, "good", "{:?}", v.revocation);
    let seen = vias(&server);
    assert!(seen.len() > before, "no fetch at all");
    assert!(seen[before..].iter().all(|v| !v), "{seen:?}");

    // A proxy that is not there: the reason names it; nothing is fetched around it.
    let before = vias(&server).len();
    let dead = dead_port();
    let v = s
        .validate_with_fresh_cache(
            "dead-proxy",
            &format!("http_proxy = \"http://127.0.0.1:{dead}\"\n"),
        )
        .await;
    assert_eq!(v.revocation.status, "unavailable", "{:?}", v.revocation);
    let reasons: Vec<String> = v
        .revocation
        .checks
        .iter()
        .filter_map(|c| c.reason.clone())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains(&format!(
            "cannot connect to the proxy http://127.0.0.1:{dead}"
        ))),
        "{reasons:?}"
    );
    assert_eq!(vias(&server).len(), before, "fetched around the proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crls_over_https_from_openssl_s_server_directly_and_through_a_connect_tunnel() {
    let port = dead_port();
    let s = setup(&format!("https://127.0.0.1:{port}"));
    let www = s.dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(
        www.join("ca.crl"),
        make_crl(&s.pki, "ca", &["bob-dual-rsa"], 30 * 86400),
    )
    .unwrap();
    std::fs::write(
        www.join("root-ca.crl"),
        make_crl(&s.pki, "root", &[], 30 * 86400),
    )
    .unwrap();
    let tls = s.dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    // A server certificate from the test root, which the agent trusts.
    let (cert, key) = peers::tls_server_cert(&tls, "www", Some(&s.pki.join("root-ca.pem")));
    {
        let _www = peers::HttpsServer::start(&www, port, &cert, &key);
        let v = s
            .validate_with_fresh_cache("https", "on_crl_unavailable = \"fail\"\n")
            .await;
        assert_eq!(v.status, ValidityStatus::Valid, "{:?}", v.reasons);
        let leaf = v.revocation.checks.last().unwrap();
        assert_eq!(leaf.method.as_deref(), Some("crl"));
        assert_eq!(
            leaf.url.as_deref(),
            Some(format!("https://127.0.0.1:{port}/ca.crl").as_str())
        );
        let agent = s.agent("https-revoked", "");
        let v = agent
            .client()
            .await
            .validate(validate_params(&s.cert("bob-dual-rsa")))
            .await
            .unwrap();
        assert_eq!(v.reasons[0].code, "revoked", "{:?}", v.reasons);
        drop(agent);
        let _ = std::fs::remove_dir_all(s.dir.path().join("crls"));

        // Through tinyproxy: a CONNECT tunnel, TLS inside it.
        let proxy = peers::Tinyproxy::start(&s.dir.path().join("proxy"));
        let v = s
            .validate_with_fresh_cache(
                "https-proxied",
                &format!(
                    "on_crl_unavailable = \"fail\"\nhttp_proxy = \"{}\"\nno_proxy = \"\"\n",
                    proxy.url()
                ),
            )
            .await;
        assert_eq!(v.status, ValidityStatus::Valid, "{:?}", v.reasons);
        assert!(
            proxy.log().contains("CONNECT"),
            "no tunnel through the proxy: {}",
            proxy.log()
        );
    }
    // A server whose certificate nobody vouches for: no CRL from it.
    let (cert, key) = peers::tls_server_cert(&tls, "stranger", None);
    let _www = peers::HttpsServer::start(&www, port, &cert, &key);
    let v = s
        .validate_with_fresh_cache("https-stranger", "on_crl_unavailable = \"fail\"\n")
        .await;
    assert_eq!(v.status, ValidityStatus::Invalid, "{:?}", v.reasons);
    let why = v.revocation.checks.last().unwrap().reason.clone();
    assert!(
        why.as_deref()
            .is_some_and(|r| r.contains("TLS handshake failed")),
        "{why:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_in_slapd_is_read_over_ldap_and_ldap_never_goes_around_the_proxy() {
    use common::slapd::{SUFFIX, Slapd, ldap_url, ldif_entry};
    let server = CrlServer::start().await;
    let port = dead_port();
    let dir = tempdir();
    let dn = format!("cn=smime-agent Test Issuing CA CRL,{SUFFIX}");
    let url = ldap_url(port, &dn, "certificateRevocationList;binary");
    let pki = pki_with_ca_crl(
        &dir.path().join("pki"),
        &server.base_url(),
        &url,
        &["alice-sign-rsa", "bob-dual-rsa"],
    );
    server.publish("/root-ca.crl", make_crl(&pki, "root", &[], 30 * 86400));
    let crl = make_crl(&pki, "ca", &["bob-dual-rsa"], 30 * 86400);
    let ldif = ldif_entry(
        &dn,
        &["cRLDistributionPoint"],
        "smime-agent Test Issuing CA CRL",
        "certificateRevocationList;binary",
        &crl,
    );
    let _slapd = Slapd::start_on(&dir.path().join("slapd"), &ldif, port);
    let agent_in = |name: &str, revocation: &str| {
        Agent::start(
            &dir.path().join(name),
            AgentSpec {
                trust: Some(trust_for(&pki)),
                revocation: format!(
                    "cache_dir = \"{}\"\non_crl_unavailable = \"fail\"\n{revocation}",
                    dir.path().join(name).join("crls").display()
                ),
                ..Default::default()
            },
        )
    };
    let agent = agent_in("ldap", "");
    let client = agent.client().await;
    let v = client
        .validate(validate_params(&pki.join("alice-sign-rsa.pem")))
        .await
        .unwrap();
    assert_eq!(v.status, ValidityStatus::Valid, "{:?}", v.reasons);
    let leaf = v.revocation.checks.last().unwrap();
    assert_eq!(leaf.url.as_deref(), Some(url.as_str()));
    assert_eq!(leaf.source.as_deref(), Some("fetched"));
    let v = client
        .validate(validate_params(&pki.join("bob-dual-rsa.pem")))
        .await
        .unwrap();
    assert_eq!(v.reasons[0].code, "revoked", "{:?}", v.reasons);
    drop(agent);

    // A proxy applies to the host: LDAP is not sent around it.
    let dead = dead_port();
    let agent = agent_in(
        "ldap-proxied",
        &format!("http_proxy = \"http://127.0.0.1:{dead}\"\nno_proxy = \"\"\n"),
    );
    let v = agent
        .client()
        .await
        .validate(validate_params(&pki.join("alice-sign-rsa.pem")))
        .await
        .unwrap();
    assert_eq!(v.status, ValidityStatus::Invalid, "{:?}", v.reasons);
    let why = v.revocation.checks.last().unwrap().reason.clone();
    assert!(
        why.as_deref()
            .is_some_and(|r| r.contains("LDAP does not go through the HTTP proxy")),
        "{why:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_cannot_vouch_for_the_signer_of_a_crl_about_itself() {
    // The root's CRL cannot be had (nothing is published), so the issuing CA's status is
    // open. Whoever holds the issuing CA's key makes a certificate in the root's name,
    // signs a "root CRL" with it that does not list the CA, and sends both with the
    // message: the CA would vouch for its own good standing. RFC 5280 6.3.3 (f) takes a CRL
    // signer's certificate only from the anchor and the CAs above the certificate judged.
    let server = CrlServer::start().await;
    let s = setup(&server.base_url());
    let work = s.dir.path().join("forger");
    std::fs::create_dir_all(&work).unwrap();
    // The forged certificate: the root's name, cRLSign, issued by the issuing CA.
    let (cert, key) = peers::issue_cert(
        &work,
        "x",
        "/CN=smime-agent Test Root CA/O=smime-agent tests",
        b"keyUsage = critical, cRLSign\n",
        Some(&s.pki.join("ca.pem")),
    );
    // A "root CRL" signed by the forged certificate's key, listing nobody (made an hour ago,
    // as a published CRL would have been).
    let an_hour_ago = run("date", &["-u", "-d", "-1 hour", "+%Y%m%d%H%M%SZ"])
        .trim()
        .to_owned();
    let db = work.join("db");
    run(
        "cp",
        &["-r", path_str(&s.pki.join(".ca/root")), path_str(&db)],
    );
    let crl_pem = work.join("root.crl.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "ca",
            "-config",
            path_str(&s.pki.join(".ca/openssl.cnf")),
            "-batch",
            "-gencrl",
            "-crl_lastupdate",
            &an_hour_ago,
            "-out",
            path_str(&crl_pem),
        ])
        .env("CA_DIR", &db)
        .env("CA_KEY", &key)
        .env("CA_CERT", &cert)
        .env("CRL_URL", "unused")
        .output()
        .unwrap();
    ok("openssl ca -gencrl", &out);
    let (crl_der, x_der) = (work.join("root.crl.der"), work.join("x.der"));
    run(
        "openssl",
        &[
            "crl",
            "-in",
            path_str(&crl_pem),
            "-outform",
            "DER",
            "-out",
            path_str(&crl_der),
        ],
    );
    run(
        "openssl",
        &[
            "x509",
            "-in",
            path_str(&cert),
            "-outform",
            "DER",
            "-out",
            path_str(&x_der),
        ],
    );
    let forged_crl = std::fs::read(&crl_der).unwrap();
    let x_der = std::fs::read(&x_der).unwrap();
    let ca_crl = make_crl(&s.pki, "ca", &[], 30 * 86400);

    let agent = s.agent("agent", "on_crl_unavailable = \"fail\"\n");
    let mut params = validate_params(&s.cert("alice-sign-rsa"));
    params.chain = vec![x_der.into()];
    params.crls = vec![forged_crl.into(), ca_crl.into()];
    let v = agent.client().await.validate(params).await.unwrap();
    assert_eq!(v.status, ValidityStatus::Invalid, "{:?}", v.revocation);
    assert_eq!(v.reasons[0].code, "crl_unavailable", "{:?}", v.reasons);
    assert_eq!(v.revocation.status, "unavailable");
    let why = v.revocation.checks[0].reason.clone().unwrap_or_default();
    assert!(
        why.contains("signed by no key the path vouches for"),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_crl_signed_by_a_separate_crl_key_of_the_ca_is_used() {
    // The issuing CA signs its CRLs with a key of their own (RFC 5280 6.3.3 (f)): a
    // certificate in the CA's name with cRLSign only, issued by the root. The CRL at the
    // distribution point is not the issuer's signature, so the cache does not keep it, but
    // the RFC 5280 processing finds its signer among the certificates at hand.
    let server = CrlServer::start().await;
    let s = setup(&server.base_url());
    server.publish("/root-ca.crl", make_crl(&s.pki, "root", &[], 30 * 86400));
    let work = s.dir.path().join("crl-key");
    std::fs::create_dir_all(&work).unwrap();
    let p = path_str;
    let (cert, key) = peers::issue_cert(
        &work,
        "k",
        "/CN=smime-agent Test Issuing CA/O=smime-agent tests",
        b"basicConstraints = critical, CA:FALSE\nkeyUsage = critical, cRLSign\n",
        Some(&s.pki.join("root-ca.pem")),
    );
    // The CA's database with Alice revoked, its CRL signed with the CRL key.
    let db = work.join("db");
    run("cp", &["-r", p(&s.pki.join(".ca/ca")), p(&db)]);
    let cnf = s.pki.join(".ca/openssl.cnf");
    let ca = |args: &[&str], cert_file: &std::path::Path, key_file: &std::path::Path| {
        let out = std::process::Command::new("openssl")
            .args(["ca", "-config", p(&cnf), "-batch"])
            .args(args)
            .env("CA_DIR", &db)
            .env("CA_KEY", key_file)
            .env("CA_CERT", cert_file)
            .env("CRL_URL", "unused")
            .output()
            .unwrap();
        ok("openssl ca", &out);
    };
    ca(
        &[
            "-revoke",
            p(&s.cert("alice-sign-rsa")),
            "-crl_reason",
            "keyCompromise",
        ],
        &s.pki.join("ca.pem"),
        &s.pki.join("ca.key.pem"),
    );
    let an_hour_ago = run("date", &["-u", "-d", "-1 hour", "+%Y%m%d%H%M%SZ"])
        .trim()
        .to_owned();
    let crl_pem = work.join("ca.crl.pem");
    ca(
        &[
            "-gencrl",
            "-crl_lastupdate",
            &an_hour_ago,
            "-out",
            p(&crl_pem),
        ],
        &cert,
        &key,
    );
    let (crl_der, k_der) = (work.join("ca.crl.der"), work.join("k.der"));
    run(
        "openssl",
        &[
            "crl",
            "-in",
            p(&crl_pem),
            "-outform",
            "DER",
            "-out",
            p(&crl_der),
        ],
    );
    run(
        "openssl",
        &[
            "x509",
            "-in",
            p(&cert),
            "-outform",
            "DER",
            "-out",
            p(&k_der),
        ],
    );
    server.publish("/ca.crl", std::fs::read(&crl_der).unwrap());
    let k_der = std::fs::read(&k_der).unwrap();

    let agent = s.agent("agent", "on_crl_unavailable = \"fail\"\n");
    let client = agent.client().await;
    let with_crl_key = |who: &str| {
        let mut params = validate_params(&s.cert(who));
        params.chain = vec![k_der.clone().into()];
        params
    };
    let v = client.validate(with_crl_key("bob-dual-rsa")).await.unwrap();
    assert_eq!(v.status, ValidityStatus::Valid, "{:?}", v.revocation);
    assert_eq!(v.revocation.status, "good");
    let v = client
        .validate(with_crl_key("alice-sign-rsa"))
        .await
        .unwrap();
    assert_eq!(v.status, ValidityStatus::Invalid, "{:?}", v.revocation);
    assert_eq!(v.reasons[0].code, "revoked", "{:?}", v.reasons);
    // Without the CRL key's certificate nobody vouches for that signature.
    let v = client
        .validate(validate_params(&s.cert("bob-dual-rsa")))
        .await
        .unwrap();
    assert_eq!(v.status, ValidityStatus::Invalid, "{:?}", v.revocation);
    assert_eq!(v.reasons[0].code, "crl_unavailable", "{:?}", v.reasons);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_intermediate_is_read_from_an_ldap_aia_url() {
    use common::slapd::{SUFFIX, Slapd, ldap_url, ldif_entry};
    let server = CrlServer::start().await;
    let port = dead_port();
    let dir = tempdir();
    let dn = format!("cn=smime-agent Test Issuing CA,{SUFFIX}");
    let url = ldap_url(port, &dn, "cACertificate;binary");
    let pki = pki_with_aia(
        &dir.path().join("pki"),
        &server.base_url(),
        &url,
        &["alice-sign-rsa"],
    );
    server.publish("/ca.crl", make_crl(&pki, "ca", &[], 30 * 86400));
    server.publish("/root-ca.crl", make_crl(&pki, "root", &[], 30 * 86400));
    let ca = {
        use der::{DecodePem, Encode};
        x509_cert::Certificate::from_pem(std::fs::read(pki.join("ca.pem")).unwrap())
            .unwrap()
            .to_der()
            .unwrap()
    };
    let ldif = ldif_entry(
        &dn,
        &["applicationProcess", "pkiCA"],
        "smime-agent Test Issuing CA",
        "cACertificate;binary",
        &ca,
    );
    let _slapd = Slapd::start_on(&dir.path().join("slapd"), &ldif, port);
    // Only the root is configured: the issuing CA is in no store and no request.
    let agent = Agent::start(
        &dir.path().join("agent"),
        AgentSpec {
            trust: Some(format!(
                "roots = [\"{}\"]\nuse_system_roots = false\n",
                pki.join("root-ca.pem").display()
            )),
            revocation: format!(
                "cache_dir = \"{}\"\non_crl_unavailable = \"fail\"\n",
                dir.path().join("crls").display()
            ),
            ..Default::default()
        },
    );
    let v = agent
        .client()
        .await
        .validate(validate_params(&pki.join("alice-sign-rsa.pem")))
        .await
        .unwrap();
    assert_eq!(v.status, ValidityStatus::Valid, "{:?}", v.reasons);
    let sources: Vec<&str> = v.chain.iter().map(|c| c.source.as_str()).collect();
    assert_eq!(sources, ["request", "aia", "anchor"]);
}
