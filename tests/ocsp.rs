//! OCSP (RFC 6960) through the running agent, against OpenSSL's responder (`openssl ocsp
//! -index ... -port`) on loopback: good, revoked and unknown; a delegated responder and
//! signers the issuer never authorised; stale, misdirected and silent answers; the CRL as
//! the fallback and the configured order; the proxy.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::peers::{OcspResponder, OcspSpec, Tinyproxy, ocsp_answer_about};
use common::*;
use smime_agent_proto::{CrlCheckInfo, ValidateResult, ValidityStatus};

/// A PKI whose user certificates name an OCSP responder on a port of the test's own, and
/// whose CRLs are served by `crl` (the root's always; the issuing CA's when a test says).
struct Setup {
    dir: tempfile::TempDir,
    pki: PathBuf,
    port: u16,
    crl: CrlServer,
}

const USERS: &[&str] = &[
    "alice-sign-rsa",
    "bob-dual-rsa",
    "carol-san-rsa",
    "ocsp-responder",
    "ocsp-no-eku",
    "ocsp-rogue",
];

async fn setup() -> Setup {
    let dir = tempdir();
    let crl = CrlServer::start().await;
    let port = dead_port();
    let pki = pki_with_ocsp(
        &dir.path().join("pki"),
        &crl.base_url(),
        &format!("http://127.0.0.1:{port}/"),
        USERS,
    );
    crl.publish("/root-ca.crl", make_crl(&pki, "root", &[], 30 * 86400));
    Setup {
        dir,
        pki,
        port,
        crl,
    }
}

impl Setup {
    fn responder(&self, spec: OcspSpec<'_>) -> OcspResponder {
        OcspResponder::start(&self.pki, self.dir.path(), self.port, spec)
    }

    fn agent(&self, name: &str, revocation: &str) -> Agent {
        Agent::start(
            &self.dir.path().join(name),
            AgentSpec {
                trust: Some(trust_for(&self.pki)),
                revocation: format!(
                    "cache_dir = \"{}\"\n{revocation}",
                    self.dir.path().join(name).join("crls").display()
                ),
                ..Default::default()
            },
        )
    }

    async fn validate(&self, agent: &Agent, who: &str) -> ValidateResult {
        agent
            .client()
            .await
            .validate(validate_params(&self.pki.join(format!("{who}.pem"))))
            .await
            .unwrap()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

/// The check of the certificate itself (the last of the path's).
fn leaf(v: &ValidateResult) -> &CrlCheckInfo {
    v.revocation.checks.last().expect("a revocation check")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_revoked_and_unknown_come_from_the_responder_and_good_is_kept_until_next_update() {
    let s = setup().await;
    let responder = s.responder(OcspSpec {
        revoke: &["alice-sign-rsa"],
        forget: &["carol-san-rsa"],
        ..Default::default()
    });
    let agent = s.agent("agent", "on_crl_unavailable = \"fail\"\n");

    let v = s.validate(&agent, "bob-dual-rsa").await;
    assert_eq!(v.status, ValidityStatus::Valid, "{:?}", v.reasons);
    assert_eq!(v.revocation.status, "good");
    let c = leaf(&v);
    assert_eq!(c.method.as_deref(), Some("ocsp"), "{c:?}");
    assert_eq!(c.source.as_deref(), Some("fetched"));
    assert_eq!(c.url.as_deref(), Some(s.url().as_str()));
    assert!(c.next_update.is_some());
    // The issuing CA names no responder: its status comes from the root's CRL.
    assert_eq!(v.revocation.checks[0].method.as_deref(), Some("crl"));
    assert_eq!(s.crl.hits("/ca.crl"), 0, "OCSP answered; no CRL was needed");

    let v = s.validate(&agent, "alice-sign-rsa").await;
    assert_eq!(v.status, ValidityStatus::Invalid);
    assert_eq!(v.reasons[0].code, "revoked", "{:?}", v.reasons);
    assert!(
        v.reasons[0].message.contains("OCSP responder says so"),
        "{:?}",
        v.reasons
    );
    assert_eq!(leaf(&v).status, "revoked");

    // Unknown to the responder and no CRL published: not an answer, and on_crl_unavailable
    // = fail refuses the certificate, saying why for both sources.
    let v = s.validate(&agent, "carol-san-rsa").await;
    assert_eq!(v.status, ValidityStatus::Invalid, "{:?}", v.reasons);
    assert_eq!(v.reasons[0].code, "crl_unavailable", "{:?}", v.reasons);
    let why = leaf(&v).reason.clone().unwrap_or_default();
    assert!(why.contains("does not know the certificate"), "{why}");
    assert!(why.contains("ca.crl"), "the CRL was tried too: {why}");

    // The CLI says where the answer came from.
    let out = agent
        .cli()
        .arg("validate")
        .arg(s.pki.join("bob-dual-rsa.pem"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("OCSP {}", s.url())), "{text}");

    // With the responder gone, Bob's answer is still current: asked at another time (so
    // the validation cache does not answer), it comes from the OCSP cache.
    drop(responder);
    let later = String::from_utf8(
        std::process::Command::new("date")
            .args(["-u", "-d", "+5 minutes", "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let mut params = validate_params(&s.pki.join("bob-dual-rsa.pem"));
    params.time = Some(later.trim().to_owned());
    let v = agent.client().await.validate(params).await.unwrap();
    assert_eq!(v.status, ValidityStatus::Valid, "{:?}", v.reasons);
    assert_eq!(leaf(&v).source.as_deref(), Some("cache"), "{:?}", leaf(&v));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegated_responder_is_believed_and_signers_the_issuer_did_not_authorise_are_not() {
    let s = setup().await;
    {
        let _r = s.responder(OcspSpec {
            signer: "ocsp-responder",
            revoke: &["alice-sign-rsa"],
            ..Default::default()
        });
        let agent = s.agent("delegated", "on_crl_unavailable = \"fail\"\n");
        let v = s.validate(&agent, "bob-dual-rsa").await;
        assert_eq!(v.status, ValidityStatus::Valid, "{:?}", v.reasons);
        assert_eq!(leaf(&v).method.as_deref(), Some("ocsp"));
        let v = s.validate(&agent, "alice-sign-rsa").await;
        assert_eq!(v.reasons[0].code, "revoked", "{:?}", v.reasons);
    }
    // A certificate of the CA without id-kp-OCSPSigning, and a stranger's key under the
    // CA's name: neither answer is believed, whatever it says.
    for signer in ["ocsp-no-eku", "ocsp-rogue"] {
        let _r = s.responder(OcspSpec {
            signer,
            ..Default::default()
        });
        let agent = s.agent(signer, "on_crl_unavailable = \"fail\"\n");
        let v = s.validate(&agent, "bob-dual-rsa").await;
        assert_eq!(
            v.status,
            ValidityStatus::Invalid,
            "{signer}: {:?}",
            v.reasons
        );
        let why = leaf(&v).reason.clone().unwrap_or_default();
        assert!(
            why.contains("not signed by the issuer or by a responder certificate"),
            "{signer}: {why}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_misdirected_and_silent_answers_are_not_answers() {
    let s = setup().await;
    {
        // Made two days ago with a day's validity: nextUpdate has passed.
        let _r = s.responder(OcspSpec {
            clock: Some("-2d"),
            ..Default::default()
        });
        let agent = s.agent("stale", "on_crl_unavailable = \"fail\"\n");
        let v = s.validate(&agent, "bob-dual-rsa").await;
        assert_eq!(v.status, ValidityStatus::Invalid, "{:?}", v.reasons);
        let why = leaf(&v).reason.clone().unwrap_or_default();
        assert!(why.contains("is stale"), "{why}");
    }
    {
        // A good answer about Alice, served to whoever asks about Bob.
        let server = CrlServer::start_on(s.port).await;
        server.publish(
            "/",
            ocsp_answer_about(&s.pki, s.dir.path(), "alice-sign-rsa", false),
        );
        let agent = s.agent("misdirected", "on_crl_unavailable = \"fail\"\n");
        let v = s.validate(&agent, "bob-dual-rsa").await;
        assert_eq!(v.status, ValidityStatus::Invalid, "{:?}", v.reasons);
        let why = leaf(&v).reason.clone().unwrap_or_default();
        assert!(why.contains("speaks of another certificate"), "{why}");
        assert_eq!(server.hits("/"), 1);
        let head = server.state.lock().unwrap().heads[0].clone();
        assert!(head.starts_with("POST / "), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/ocsp-request"),
            "{head}"
        );

        // Bob's own good answer, but to an earlier request: its nonce is not ours.
        server.publish(
            "/",
            ocsp_answer_about(&s.pki, s.dir.path(), "bob-dual-rsa", true),
        );
        drop(agent);
        let agent = s.agent("replayed", "on_crl_unavailable = \"fail\"\n");
        let v = s.validate(&agent, "bob-dual-rsa").await;
        assert_eq!(v.status, ValidityStatus::Invalid, "{:?}", v.reasons);
        let why = leaf(&v).reason.clone().unwrap_or_default();
        assert!(why.contains("echoes another nonce"), "{why}");
        // Without a nonce of the agent's, the same answer is current and about Bob.
        drop(agent);
        let agent = s.agent(
            "no-nonce",
            "on_crl_unavailable = \"fail\"\nocsp_nonce = false\n",
        );
        let v = s.validate(&agent, "bob-dual-rsa").await;
        assert_eq!(v.status, ValidityStatus::Valid, "{:?}", v.reasons);
        assert_eq!(leaf(&v).method.as_deref(), Some("ocsp"));
    }
    {
        // Accepts and never answers: bounded by crl_retrieval_timeout_ms.
        let server = CrlServer::start_on(s.port).await;
        server.state.lock().unwrap().hang = true;
        let agent = s.agent(
            "silent",
            "on_crl_unavailable = \"warn\"\ncrl_retrieval_timeout_ms = 1500\n",
        );
        let t = Instant::now();
        let v = s.validate(&agent, "bob-dual-rsa").await;
        let took = t.elapsed();
        assert!(took < Duration::from_secs(10), "took {took:?}");
        assert_eq!(
            v.status,
            ValidityStatus::Valid,
            "warn uses it: {:?}",
            v.reasons
        );
        assert_eq!(v.revocation.status, "unavailable");
        assert!(!v.warnings.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crl_answers_when_the_responder_is_down_and_the_order_is_followed() {
    let s = setup().await;
    s.crl.publish(
        "/ca.crl",
        make_crl(&s.pki, "ca", &["alice-sign-rsa"], 30 * 86400),
    );
    {
        // Nothing listens on the responder's port.
        let agent = s.agent("down", "on_crl_unavailable = \"fail\"\n");
        let v = s.validate(&agent, "bob-dual-rsa").await;
        assert_eq!(v.status, ValidityStatus::Valid, "{:?}", v.reasons);
        assert_eq!(leaf(&v).method.as_deref(), Some("crl"));
        assert!(leaf(&v).reason.is_none(), "{:?}", leaf(&v));
        let v = s.validate(&agent, "alice-sign-rsa").await;
        assert_eq!(v.reasons[0].code, "revoked", "{:?}", v.reasons);
        assert!(
            v.reasons[0].message.contains("CRL lists it"),
            "{:?}",
            v.reasons
        );
    }
    let _r = s.responder(OcspSpec::default());
    {
        let agent = s.agent("crl-first", "order = [\"crl\", \"ocsp\"]\n");
        let v = s.validate(&agent, "bob-dual-rsa").await;
        assert_eq!(leaf(&v).method.as_deref(), Some("crl"), "{:?}", leaf(&v));
        drop(agent);
        let agent = s.agent("ocsp-first", "");
        let v = s.validate(&agent, "bob-dual-rsa").await;
        assert_eq!(leaf(&v).method.as_deref(), Some("ocsp"), "{:?}", leaf(&v));
        drop(agent);
        // A CRL already cached (by the crl-first agent, in its directory) is a current
        // answer at hand: it comes before asking the responder.
        let agent = s.agent("crl-first", "");
        let v = s.validate(&agent, "bob-dual-rsa").await;
        assert_eq!(leaf(&v).method.as_deref(), Some("crl"), "{:?}", leaf(&v));
        assert_eq!(leaf(&v).source.as_deref(), Some("cache"), "{:?}", leaf(&v));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocsp_requests_go_through_the_proxy() {
    let s = setup().await;
    let _r = s.responder(OcspSpec::default());
    let proxy = Tinyproxy::start(&s.dir.path().join("proxy"));
    let agent = s.agent(
        "proxied",
        &format!(
            "on_crl_unavailable = \"fail\"\nhttp_proxy = \"{}\"\nno_proxy = \"\"\n",
            proxy.url()
        ),
    );
    let v = s.validate(&agent, "bob-dual-rsa").await;
    assert_eq!(v.status, ValidityStatus::Valid, "{:?}", v.reasons);
    assert_eq!(leaf(&v).method.as_deref(), Some("ocsp"));
    let log = proxy.log();
    assert!(
        log.contains(&format!("127.0.0.1:{}", s.port)),
        "the proxy saw no OCSP request: {log}"
    );
}
