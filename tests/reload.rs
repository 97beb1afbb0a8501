//! Changes take effect at once: the configuration read again on SIGHUP, on `smime-agent
//! reload` and when the file changes, with the tokens and a cached PIN kept, and a broken
//! file refused while the old settings stay.

mod common;

use std::time::Duration;

use common::*;
use smime_agent_proto::client::{Client, ClientError};
use smime_agent_proto::{ComposeParams, ComposeResult, Op, Purpose, WhichParams};

const MAIL: &str =
    "From: Alice <alice@example.org>\nTo: Bob <bob@example.org>\nSubject: lunch\n\nAt noon.\n";

async fn compose_unasked(client: &Client) -> Result<ComposeResult, ClientError> {
    let op = Op::Compose(ComposeParams {
        content: MAIL.as_bytes().to_vec().into(),
        sign: false,
        encrypt: false,
        allow_unencrypted: false,
        certificates: vec![],
    });
    op_answering(client, op, PIN).await
}

/// Waits until the agent's log says `text` at least `n` times.
fn wait_log(agent: &Agent, text: &str, n: usize) {
    let seen = time_until(Duration::from_secs(20), || {
        agent.log_text().matches(text).count() >= n
    });
    assert!(
        seen.is_some(),
        "the log never said {text:?} {n} times:\n{}",
        agent.log_text()
    );
}

fn rewrite(agent: &Agent, from: &str, to: &str) {
    let text = std::fs::read_to_string(&agent.config).unwrap();
    assert!(text.contains(from), "{from:?} not in the configuration");
    std::fs::write(&agent.config, text.replace(from, to)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_and_a_changed_file_apply_new_settings_and_keep_the_pin() {
    let dir = tempdir();
    let (_hsm, agent) = agent_with_contacts(
        dir.path(),
        &["alice-sign-rsa"],
        &[],
        "[policy]\nalways_sign = false\n",
    );
    let reloaded = "configuration reloaded";
    let original = std::fs::read_to_string(&agent.config).unwrap();

    // The PIN, once: cached from now on.
    let (res, prompts) = sign_answering(
        &agent.client().await,
        "alice@example.org",
        sample_entity("one"),
        None,
        PIN,
    )
    .await;
    res.expect("sign");
    assert_eq!(prompts, 1);
    let r = compose_unasked(&agent.client().await).await.unwrap();
    assert!(!r.signed, "always_sign is off");

    // SIGHUP after always_sign is switched on: the next request signs, without a prompt.
    // The file keeps its length and modification time, so only the signal can tell.
    let stamp = std::fs::metadata(&agent.config)
        .unwrap()
        .modified()
        .unwrap();
    rewrite(&agent, "always_sign = false", "always_sign = true ");
    std::fs::File::options()
        .write(true)
        .open(&agent.config)
        .unwrap()
        .set_modified(stamp)
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        agent.log_text().matches(reloaded).count(),
        0,
        "nothing but SIGHUP reloads it"
    );
    run("kill", &["-HUP", &agent.pid().to_string()]);
    wait_log(&agent, "SIGHUP: reading the configuration again", 1);
    wait_log(&agent, reloaded, 1);
    assert!(!agent.log_text().contains("the configuration file changed"));
    let r = compose_unasked(&agent.client().await).await.unwrap();
    assert!(r.signed, "always_sign is on now");
    let (res, prompts) = sign_answering(
        &agent.client().await,
        "alice@example.org",
        sample_entity("two"),
        None,
        PIN,
    )
    .await;
    res.expect("sign after the reload");
    assert_eq!(prompts, 0, "the cached PIN survived the reload");

    // Other trust roots, applied by `smime-agent reload`: Alice's chain no longer holds.
    let before = agent.log_text().matches(reloaded).count();
    rewrite(
        &agent,
        path_str(&pki_file("root-ca.pem")),
        path_str(&pki_file("nc-root.pem")),
    );
    let out = agent.cli().arg("reload").output().unwrap();
    let said = ok("smime-agent reload", &out);
    assert!(said.contains("reloaded"), "{said}");
    wait_log(&agent, reloaded, before + 1);
    let which = |c: Client| async move {
        c.which(WhichParams {
            address: "alice@example.org".into(),
            purpose: Purpose::Sign,
        })
        .await
        .expect("which")
    };
    let w = which(agent.client().await).await;
    assert!(
        w.chosen.is_none(),
        "no chain to the new root: {:?}",
        w.candidates
    );

    // A broken file is refused with its error; the settings in force stay.
    std::fs::write(&agent.config, "[policy\nalways_sign = \n").unwrap();
    let out = agent.cli().arg("reload").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config_invalid") && err.contains(path_str(&agent.config)),
        "{err}"
    );
    assert!(err.contains("keeps its previous settings"), "{err}");
    let r = compose_unasked(&agent.client().await).await;
    assert!(
        r.is_err_and(|e| e.to_string().contains("no_certificate")
            || e.to_string().contains("no certificate")
            || e.to_string().contains("trusted")),
        "still the new roots and always_sign"
    );

    // The first file back, nothing else done: the agent sees the change by itself.
    let before = agent.log_text().matches(reloaded).count();
    std::fs::write(&agent.config, &original).unwrap();
    wait_log(&agent, reloaded, before + 1);
    let r = compose_unasked(&agent.client().await).await.unwrap();
    assert!(!r.signed, "always_sign is off again");
    assert!(which(agent.client().await).await.chosen.is_some());
}
