//! The S/MIME certificate profile and the strict path checks, one test per rule, through the
//! running agent's `validate` op (and `which` and `verify`, which must judge the same way).
//! The certificates come from make-pki.sh; each breaks one rule (`leaf-good` breaks none).

mod common;

use common::*;
use smime_agent_proto::{
    Purpose, ValidateFor, ValidateParams, ValidateResult, ValidityStatus, WhichParams,
};

/// An agent trusting the test root and the odd roots of make-pki.sh, without CRLs (the
/// rules here are not about revocation).
fn agent(dir: &std::path::Path) -> Agent {
    let roots = ["root-ca.pem", "nc-root.pem", "crit-root.pem"]
        .map(|r| format!("\"{}\"", pki_file(r).display()))
        .join(", ");
    Agent::start(
        dir,
        AgentSpec {
            trust: Some(format!(
                "roots = [{roots}]\nuse_system_roots = false\nintermediates = [\"{}\"]\n",
                pki_file("ca.pem").display()
            )),
            revocation: "disable_crl_check = true\n".into(),
            ..Default::default()
        },
    )
}

async fn validate(agent: &Agent, p: ValidateParams) -> ValidateResult {
    agent.client().await.validate(p).await.expect("validate")
}

fn params(name: &str) -> ValidateParams {
    validate_params(&pki_file(&format!("{name}.pem")))
}

fn codes(r: &ValidateResult) -> Vec<&str> {
    r.reasons.iter().map(|x| x.code.as_str()).collect()
}

/// `name` is refused, with `code` among the reasons.
async fn refused(agent: &Agent, p: ValidateParams, name: &str, code: &str) {
    let r = validate(agent, p).await;
    assert_eq!(r.status, ValidityStatus::Invalid, "{name}: {:?}", r.reasons);
    assert!(codes(&r).contains(&code), "{name}: {:?}", r.reasons);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_certificate_is_valid_for_its_address_and_use() {
    let dir = tempdir();
    let agent = agent(dir.path());
    let r = validate(&agent, params("leaf-good")).await;
    assert_eq!(r.status, ValidityStatus::Valid, "{:?}", r.reasons);
    let r = validate(
        &agent,
        ValidateParams {
            address: Some("Mallory@Example.org".into()),
            fitness: Some(ValidateFor::Sign),
            ..params("leaf-good")
        },
    )
    .await;
    assert_eq!(r.status, ValidityStatus::Valid, "{:?}", r.reasons);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_for_tls_servers_or_clients_only_is_refused_with_extended_key_usage() {
    let dir = tempdir();
    let agent = agent(dir.path());
    for name in ["leaf-eku-server", "leaf-eku-client"] {
        refused(&agent, params(name), name, "extended_key_usage").await;
    }
}

/// A legacy certificate naming the address only in its CN is one the selection rules match
/// (behaviour.md section 2), so the profile counts that address too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_only_in_the_common_name_counts() {
    let dir = tempdir();
    let agent = agent(dir.path());
    let r = validate(
        &agent,
        ValidateParams {
            address: Some("dave@example.org".into()),
            fitness: Some(ValidateFor::Sign),
            ..params("dave-cn-rsa")
        },
    )
    .await;
    assert_eq!(r.status, ValidityStatus::Valid, "{:?}", r.reasons);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_without_a_mail_address_is_refused_with_no_address() {
    let dir = tempdir();
    let agent = agent(dir.path());
    refused(
        &agent,
        params("leaf-no-address"),
        "leaf-no-address",
        "no_address",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_the_certificate_does_not_carry_is_refused_with_address_mismatch() {
    let dir = tempdir();
    let agent = agent(dir.path());
    let p = ValidateParams {
        address: Some("alice@example.org".into()),
        ..params("leaf-good")
    };
    refused(&agent, p, "leaf-good for alice", "address_mismatch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_only_certificate_is_refused_for_encryption_with_key_usage() {
    let dir = tempdir();
    let agent = agent(dir.path());
    let p = ValidateParams {
        fitness: Some(ValidateFor::Encrypt),
        ..params("leaf-good")
    };
    refused(&agent, p, "leaf-good for encrypt", "key_usage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_certificate_as_leaf_is_refused_with_ca_certificate() {
    let dir = tempdir();
    let agent = agent(dir.path());
    for name in ["leaf-ca-true", "leaf-keycertsign"] {
        refused(&agent, params(name), name, "ca_certificate").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_below_the_floor_are_refused() {
    let dir = tempdir();
    let agent = agent(dir.path());
    refused(&agent, params("leaf-rsa1024"), "leaf-rsa1024", "weak_key").await;
    refused(&agent, params("leaf-p192"), "leaf-p192", "weak_key").await;
    refused(&agent, params("leaf-dsa"), "leaf-dsa", "key_algorithm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_takes_address_and_for_and_names_the_rule() {
    let dir = tempdir();
    let agent = agent(dir.path());
    let run = |args: &[&str]| {
        let out = agent.cli().arg("validate").args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let good = pki_file("leaf-good.pem");
    let good = path_str(&good);
    let (code, out) = run(&[good, "--address", "mallory@example.org", "--for", "sign"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(&[good, "--address", "alice@example.org"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("address_mismatch"), "{out}");
    let (code, out) = run(&[good, "--for", "encrypt"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("key_usage"), "{out}");
    let server = pki_file("leaf-eku-server.pem");
    let (code, out) = run(&[path_str(&server)]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("extended_key_usage"), "{out}");
}

/// Selection judges with the same profile: a CA certificate on the user's token is never
/// chosen, though its key usage and EKU are fine for signing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_refuses_a_ca_certificate_on_the_token() {
    let dir = tempdir();
    let (_h, agent) = softhsm_agent(
        dir.path(),
        "mallory",
        &["leaf-ca-true"],
        AgentSpec {
            revocation: "disable_crl_check = true\n".into(),
            ..Default::default()
        },
    );
    let r = agent
        .client()
        .await
        .which(WhichParams {
            address: "mallory@example.org".into(),
            purpose: Purpose::Sign,
        })
        .await
        .unwrap();
    assert!(r.chosen.is_none(), "{:?}", r.chosen);
    assert_eq!(r.rejected[0].code, "ca_certificate", "{:?}", r.rejected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intermediate_restricted_to_tls_refuses_the_path_with_ca_extended_key_usage() {
    let dir = tempdir();
    let agent = agent(dir.path());
    let p = ValidateParams {
        chain: vec![std::fs::read(pki_file("tls-ca.pem")).unwrap().into()],
        ..params("tls-ca-leaf")
    };
    refused(&agent, p, "tls-ca-leaf", "ca_extended_key_usage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trust_anchors_name_constraints_hold_for_mail_addresses() {
    let dir = tempdir();
    let agent = agent(dir.path());
    let r = validate(&agent, params("nc-inside")).await;
    assert_eq!(r.status, ValidityStatus::Valid, "{:?}", r.reasons);
    refused(
        &agent,
        params("nc-outside"),
        "nc-outside",
        "name_constraints",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trust_anchor_with_an_unknown_critical_extension_anchors_nothing() {
    let dir = tempdir();
    let agent = agent(dir.path());
    refused(
        &agent,
        params("crit-root-leaf"),
        "crit-root-leaf",
        "unknown_critical_extension",
    )
    .await;
    // Nor is it valid as itself.
    refused(
        &agent,
        ValidateParams {
            fitness: Some(ValidateFor::Path),
            ..params("crit-root")
        },
        "crit-root",
        "unknown_critical_extension",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_with_an_extension_twice_is_refused_with_duplicate_extension() {
    let dir = tempdir();
    let agent = agent(dir.path());
    refused(
        &agent,
        params("leaf-dup-ext"),
        "leaf-dup-ext",
        "duplicate_extension",
    )
    .await;
    // The path alone is judged by the same strict rules.
    let p = ValidateParams {
        fitness: Some(ValidateFor::Path),
        ..params("leaf-dup-ext")
    };
    refused(&agent, p, "leaf-dup-ext for path", "duplicate_extension").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_subject_alt_name_is_refused_with_malformed_extension() {
    let dir = tempdir();
    let agent = agent(dir.path());
    refused(
        &agent,
        params("leaf-bad-san"),
        "leaf-bad-san",
        "malformed_extension",
    )
    .await;
}
