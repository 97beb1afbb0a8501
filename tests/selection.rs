//! The certificate selection rules of behaviour.md section 2, one test per rule, through the
//! running agent's `which` op (and `sign` where the rule must hold for a real signature).

mod common;

use common::*;
use smime_agent_proto::{ErrorCode, Purpose, WhichParams, WhichResult};

async fn which(agent: &Agent, address: &str, purpose: Purpose) -> WhichResult {
    agent
        .client()
        .await
        .which(WhichParams {
            address: address.into(),
            purpose,
        })
        .await
        .expect("which")
}

/// The PKI name of a certificate (its serial identifies it; the test PKI's users.tsv lists
/// names in serial order from 1002).
fn serial_of(name: &str) -> String {
    let pem = std::fs::read(pki_file(&format!("{name}.pem"))).unwrap();
    let der = smime_agent::trust::certs_from_bytes(&pem).remove(0);
    smime_agent::certs::CertFacts::from_der(&der)
        .unwrap()
        .serial_hex
}

fn chosen_serial(r: &WhichResult) -> String {
    r.chosen
        .as_ref()
        .unwrap_or_else(|| panic!("nothing chosen: {:?}", r.rejected))
        .serial
        .clone()
}

fn rejected_code(r: &WhichResult, name: &str) -> String {
    let serial = serial_of(name);
    r.rejected
        .iter()
        .find(|x| x.serial == serial)
        .unwrap_or_else(|| panic!("{name} not among the rejected: {:?}", r.rejected))
        .code
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_usage_signing_certificate_wins_over_a_dual_usage_one() {
    let dir = tempdir();
    let (_h, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &["alice-dual-rsa", "alice-sign-rsa"],
        Default::default(),
    );
    let r = which(&agent, "alice@example.org", Purpose::Sign).await;
    assert_eq!(chosen_serial(&r), serial_of("alice-sign-rsa"));
    let why = &r.chosen.as_ref().unwrap().why;
    assert!(why.contains("single key usage"), "{why}");
    assert_eq!(r.candidates.len(), 2);
    // The dual-usage one is usable but not chosen.
    assert!(r.candidates.iter().any(|c| c.status == "not_considered"));
    // With only the dual-usage certificate, it is chosen.
    let dir = tempdir();
    let (_h, agent) = softhsm_agent(dir.path(), "alice", &["alice-dual-rsa"], Default::default());
    let r = which(&agent, "alice@example.org", Purpose::Sign).await;
    assert_eq!(chosen_serial(&r), serial_of("alice-dual-rsa"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_needs_key_encipherment_for_rsa_and_key_agreement_for_ec() {
    let dir = tempdir();
    let (_h, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &[
            "alice-sign-rsa",
            "alice-sign-ec",
            "alice-enc-rsa",
            "alice-dual-rsa",
        ],
        Default::default(),
    );
    let r = which(&agent, "alice@example.org", Purpose::Encrypt).await;
    // Single-usage keyEncipherment beats the dual-usage one; signing-only keys are refused.
    assert_eq!(chosen_serial(&r), serial_of("alice-enc-rsa"));
    assert_eq!(rejected_code(&r, "alice-sign-rsa"), "key_usage");
    assert_eq!(rejected_code(&r, "alice-sign-ec"), "key_usage");
    let reason = &r
        .rejected
        .iter()
        .find(|x| x.serial == serial_of("alice-sign-ec"))
        .unwrap()
        .reason;
    assert!(reason.contains("key agreement"), "{reason}");
    let r = which(&agent, "alice@example.org", Purpose::Decrypt).await;
    assert_eq!(chosen_serial(&r), serial_of("alice-enc-rsa"));

    let dir = tempdir();
    let (_h, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &["alice-sign-ec", "alice-enc-ec"],
        Default::default(),
    );
    let r = which(&agent, "alice@example.org", Purpose::Encrypt).await;
    assert_eq!(chosen_serial(&r), serial_of("alice-enc-ec"));
    let r = which(&agent, "alice@example.org", Purpose::Sign).await;
    assert_eq!(chosen_serial(&r), serial_of("alice-sign-ec"));
    assert_eq!(rejected_code(&r, "alice-enc-ec"), "key_usage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_match_wins_over_subject_alt_name_match() {
    let dir = tempdir();
    let (_h, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &["alice-san-rsa", "alice-sign-rsa", "carol-san-rsa"],
        Default::default(),
    );
    let r = which(&agent, "alice@example.org", Purpose::Sign).await;
    assert_eq!(chosen_serial(&r), serial_of("alice-sign-rsa"));
    assert!(
        r.chosen
            .as_ref()
            .unwrap()
            .why
            .contains("certificate subject")
    );
    let san = r
        .candidates
        .iter()
        .find(|c| c.certificate.serial == serial_of("alice-san-rsa"))
        .unwrap();
    assert_eq!(san.matched_by, "subject_alt_name");
    assert_eq!(san.status, "not_considered");

    // Carol's address is only in subjectAltName: that match is used.
    let r = which(&agent, "carol@example.org", Purpose::Sign).await;
    assert_eq!(chosen_serial(&r), serial_of("carol-san-rsa"));
    assert!(
        r.chosen.as_ref().unwrap().why.contains("subjectAltName"),
        "{}",
        r.chosen.as_ref().unwrap().why
    );

    // Without the subject match, the subjectAltName one is chosen.
    let dir = tempdir();
    let (_h, agent) = softhsm_agent(dir.path(), "alice", &["alice-san-rsa"], Default::default());
    let r = which(&agent, "Alice@EXAMPLE.org", Purpose::Sign).await;
    assert_eq!(chosen_serial(&r), serial_of("alice-san-rsa"));
}

const ALIAS: &str =
    "[[identity]]\naddress = \"alice@example.org\"\naliases = [\"a.example@example.org\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_matches_only_when_no_direct_match_and_proxies_are_allowed() {
    let dir = tempdir();
    let (_h, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &["alice-alias-rsa"],
        AgentSpec {
            extra_config: ALIAS.into(),
            ..Default::default()
        },
    );
    let r = which(&agent, "alice@example.org", Purpose::Sign).await;
    assert_eq!(chosen_serial(&r), serial_of("alice-alias-rsa"));
    assert!(
        r.chosen.as_ref().unwrap().why.contains("alias"),
        "{}",
        r.chosen.as_ref().unwrap().why
    );
    assert_eq!(r.candidates[0].matched_by, "alias");

    // A direct match wins over the alias.
    let dir = tempdir();
    let (_h, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &["alice-alias-rsa", "alice-sign-rsa"],
        AgentSpec {
            extra_config: ALIAS.into(),
            ..Default::default()
        },
    );
    let r = which(&agent, "alice@example.org", Purpose::Sign).await;
    assert_eq!(chosen_serial(&r), serial_of("alice-sign-rsa"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_secondary_proxies_false_ignores_aliases() {
    let dir = tempdir();
    let (_h, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &["alice-alias-rsa"],
        AgentSpec {
            extra_config: format!("{ALIAS}\n[policy]\nuse_secondary_proxies = false\n"),
            ..Default::default()
        },
    );
    let r = which(&agent, "alice@example.org", Purpose::Sign).await;
    assert!(r.chosen.is_none(), "an alias was used: {:?}", r.chosen);
    assert!(r.candidates.is_empty());
    let err = agent
        .client()
        .await
        .sign(sign_params("alice@example.org", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NoCertificate));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_not_yet_valid_certificates_are_refused_with_their_dates() {
    let dir = tempdir();
    let (_h, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &["alice-expired", "alice-future", "alice-sign-rsa"],
        Default::default(),
    );
    let r = which(&agent, "alice@example.org", Purpose::Sign).await;
    assert_eq!(chosen_serial(&r), serial_of("alice-sign-rsa"));
    assert_eq!(rejected_code(&r, "alice-expired"), "expired");
    assert_eq!(rejected_code(&r, "alice-future"), "not_yet_valid");
    let text = format!("{:?}", r.rejected);
    assert!(text.contains("expired on 2021-01-01T00:00:00Z"), "{text}");
    assert!(
        text.contains("not valid before 2098-01-01T00:00:00Z"),
        "{text}"
    );

    // The CLI says the same, and exits 0 because one is usable.
    let out = agent
        .cli()
        .args(["which", "--address", "alice@example.org", "--for", "sign"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("chosen:") && text.contains("expired on 2021-01-01"),
        "{text}"
    );
    let out = agent
        .cli()
        .args([
            "which",
            "--address",
            "alice@example.org",
            "--for",
            "sign",
            "--json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["chosen"]["serial"], serial_of("alice-sign-rsa"));
    assert!(v["chosen"]["why"].as_str().unwrap().contains("subject"));
    assert_eq!(v["chosen"]["token"]["label"], "alice");
    let rejected = v["rejected"].as_array().unwrap();
    assert!(
        rejected.len() >= 2,
        "the expired and the future one: {rejected:?}"
    );
    assert!(
        rejected
            .iter()
            .all(|x| x["reason"].is_string() && x["subject"].is_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_extended_key_usage_is_refused() {
    let dir = tempdir();
    let (_h, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &["frank-server-rsa"],
        Default::default(),
    );
    let r = which(&agent, "frank@example.org", Purpose::Sign).await;
    assert!(r.chosen.is_none());
    assert_eq!(rejected_code(&r, "frank-server-rsa"), "extended_key_usage");
    assert!(
        r.rejected[0].reason.contains("serverAuth"),
        "{}",
        r.rejected[0].reason
    );
    let out = agent
        .cli()
        .args(["which", "--address", "frank@example.org", "--for", "sign"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "no certificate: exit 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardware_key_wins_over_software_key() {
    let dir = tempdir();
    let hw = softhsm_copy(dir.path());
    let (_h, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &["alice-sign-rsa"],
        AgentSpec {
            extra_config: format!(
                "[[tokens.module]]\npath = \"{}\"\nkind = \"hardware\"\n",
                hw.display()
            ),
            ..Default::default()
        },
    );
    let r = which(&agent, "alice@example.org", Purpose::Sign).await;
    assert_eq!(
        r.candidates.len(),
        2,
        "the token through both modules: {:?}",
        r.candidates
            .iter()
            .map(|c| &c.certificate.token)
            .collect::<Vec<_>>()
    );
    let chosen = r.chosen.as_ref().unwrap();
    assert!(
        chosen.certificate.hardware,
        "a software key was chosen: {}",
        chosen.why
    );
    assert!(chosen.why.contains("hardware token"), "{}", chosen.why);
    // Signing uses it too.
    let client = agent.client().await;
    let (res, _) =
        sign_answering(&client, "alice@example.org", sample_entity("hw"), None, PIN).await;
    assert!(res.expect("sign").certificate.hardware);
}

/// Hardware first, whatever the key usages: a sign-only software key (a PKCS#12 file)
/// loses to a dual-use key on a hardware token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_use_hardware_key_wins_over_a_sign_only_software_key() {
    let dir = tempdir();
    let hsm = SoftHsm::new(&dir.path().join("softhsm"));
    hsm.add_token("card", PIN, &["alice-dual-rsa"]);
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let p12 = keys.join("alice-sign-rsa.p12");
    run(
        "openssl",
        &[
            "pkcs12",
            "-export",
            "-inkey",
            path_str(&pki_file("alice-sign-rsa.key.pem")),
            "-in",
            path_str(&pki_file("alice-sign-rsa.pem")),
            "-passout",
            "pass:soft",
            "-out",
            path_str(&p12),
        ],
    );
    std::fs::copy(
        pki_file("alice-sign-rsa.pem"),
        keys.join("alice-sign-rsa.pem"),
    )
    .unwrap();
    let agent = Agent::start(
        &dir.path().join("agent"),
        AgentSpec {
            extra_config: format!(
                "[[tokens.module]]\npath = \"{SOFTHSM}\"\nkind = \"hardware\"\n\n\
                 [soft_store]\ndir = \"{}\"\n",
                keys.display()
            ),
            env: vec![("SOFTHSM2_CONF".into(), path_str(&hsm.conf()).into())],
            ..Default::default()
        },
    );
    let r = which(&agent, "alice@example.org", Purpose::Sign).await;
    assert_eq!(r.candidates.len(), 2, "{:?}", r.candidates);
    let chosen = r.chosen.as_ref().expect("a certificate");
    assert!(chosen.certificate.hardware, "{}", chosen.why);
    assert_eq!(
        chosen_serial(&r),
        serial_of("alice-dual-rsa"),
        "{}",
        chosen.why
    );
    assert!(
        chosen
            .why
            .contains("hardware token, preferred over a software key"),
        "{}",
        chosen.why
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_with_an_invalid_chain_is_passed_over_for_the_next() {
    let names = ["alice-sign-rsa", "alice-sign-ec"];
    // Which one the rules prefer when both chains are valid...
    let dir = tempdir();
    let (_h, agent) = softhsm_agent(dir.path(), "alice", &names, Default::default());
    let first = chosen_serial(&which(&agent, "alice@example.org", Purpose::Sign).await);
    let (preferred, other) = if first == serial_of(names[0]) {
        (names[0], names[1])
    } else {
        (names[1], names[0])
    };
    drop(agent);
    // ...is passed over once its certificate is distrusted.
    let dir = tempdir();
    let (_h, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &names,
        AgentSpec {
            trust: Some(format!(
                "roots = [\"{}\"]\nuse_system_roots = false\nintermediates = [\"{}\"]\nuntrusted = [\"{}\"]\n",
                pki_file("root-ca.pem").display(),
                pki_file("ca.pem").display(),
                pki_file(&format!("{preferred}.pem")).display()
            )),
            ..Default::default()
        },
    );
    let r = which(&agent, "alice@example.org", Purpose::Sign).await;
    assert_eq!(chosen_serial(&r), serial_of(other));
    assert_eq!(rejected_code(&r, preferred), "untrusted");
    assert!(
        r.chosen.as_ref().unwrap().why.contains("not used"),
        "{}",
        r.chosen.as_ref().unwrap().why
    );
    let client = agent.client().await;
    let (res, _) =
        sign_answering(&client, "alice@example.org", sample_entity("x"), None, PIN).await;
    assert_eq!(res.expect("sign").certificate.serial, serial_of(other));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intermediate_from_the_token_completes_the_chain() {
    let dir = tempdir();
    let ca = pki_file("ca.pem").display().to_string();
    let no_local = format!(
        "roots = [\"{}\"]\nuse_system_roots = false\n",
        pki_file("root-ca.pem").display()
    );
    let (_h, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &["alice-sign-rsa", &format!("cacert:{ca}")],
        AgentSpec {
            trust: Some(no_local.clone()),
            ..Default::default()
        },
    );
    let r = which(&agent, "alice@example.org", Purpose::Sign).await;
    assert_eq!(chosen_serial(&r), serial_of("alice-sign-rsa"));

    // Without it (and no local store), there is no path to the root.
    let dir = tempdir();
    let (_h, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &["alice-sign-rsa"],
        AgentSpec {
            trust: Some(no_local),
            ..Default::default()
        },
    );
    let r = which(&agent, "alice@example.org", Purpose::Sign).await;
    assert!(r.chosen.is_none());
    assert_eq!(rejected_code(&r, "alice-sign-rsa"), "no_trusted_root");
}
