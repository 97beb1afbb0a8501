//! The agent on the virtual card rig: Alice's and Bob's cards, an agent that uses OpenSC on
//! the rig's readers, and waiting for what its `status` shows.

use std::path::Path;
use std::time::{Duration, Instant};

use smime_agent_proto::client::Client;
use virtual_piv_card::{CardRig, OPENSC_PKCS11, PivSlot, SlotSpec};

use super::card::slot;
use super::*;

/// Alice's card: her signing key in 9C, her decryption key in 9D.
pub fn alice_slots() -> Vec<SlotSpec> {
    vec![
        slot(PivSlot::Signature, "alice-sign-rsa"),
        slot(PivSlot::KeyManagement, "alice-enc-rsa"),
    ]
}

pub fn bob_slots() -> Vec<SlotSpec> {
    vec![slot(PivSlot::Signature, "bob-dual-rsa")]
}

/// The environment that points a process at the rig's pcscd.
pub fn rig_env(rig: &CardRig) -> impl Iterator<Item = (String, String)> {
    rig.env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.display().to_string()))
}

/// An agent that uses OpenSC on the rig's readers (plus whatever `extra` configures).
pub fn card_agent(dir: &Path, rig: &CardRig, hsm: Option<&SoftHsm>, extra: &str) -> Agent {
    card_agent_with(dir, rig, hsm, extra, "")
}

/// Same, with extra lines in `[pin]`.
pub fn card_agent_with(
    dir: &Path,
    rig: &CardRig,
    hsm: Option<&SoftHsm>,
    extra: &str,
    pin_extra: &str,
) -> Agent {
    let mut cfg =
        format!("[[tokens.module]]\npath = \"{OPENSC_PKCS11}\"\npoll_interval_ms = 500\n\n{extra}");
    if hsm.is_some() {
        cfg.push_str("\n[[tokens.module]]\npath = \"/usr/lib/softhsm/libsofthsm2.so\"\nkind = \"software\"\n");
    }
    Agent::start(
        dir,
        AgentSpec {
            softhsm: None,
            extra_config: cfg,
            pin_extra,
            env: rig_env(rig)
                .chain(hsm.map(|h| ("SOFTHSM2_CONF".to_string(), h.conf().display().to_string())))
                .collect(),
            ..Default::default()
        },
    )
}

/// An agent that uses OpenSC on the rig's readers and asks for PINs with `pinentry-tty`.
pub fn pinentry_card_agent(dir: &Path, rig: &CardRig) -> Agent {
    Agent::start(
        dir,
        AgentSpec {
            extra_config: format!("[[tokens.module]]\npath = \"{OPENSC_PKCS11}\"\n"),
            pin_source: "pinentry",
            pin_extra: "pinentry = \"pinentry-tty\"",
            env: rig_env(rig).collect(),
            ..Default::default()
        },
    )
}

/// Polls `status` until `pred` holds; returns how long it took.
pub async fn wait_status(
    client: &Client,
    what: &str,
    pred: impl Fn(&smime_agent_proto::StatusResult) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let st = client.status().await.expect("status");
        if pred(&st) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what} did not happen within 10 s; status: {st:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn card_certs(st: &smime_agent_proto::StatusResult, label_part: &str) -> usize {
    st.tokens
        .iter()
        .filter(|t| t.hardware && t.token.label.contains(label_part))
        .map(|t| t.certificates.len())
        .sum()
}
