//! `status` and `list_certs`: what the agent has, without touching a token's keys.

use smime_agent_proto::{
    AgentInfo, ListCertsResult, ModuleStatus, PROTOCOL_VERSION, PinStatus, StatusResult,
    TokenStatus,
};

use super::{OpContext, cert_info};

pub async fn status(ctx: &OpContext<'_>) -> StatusResult {
    let agent = ctx.agent;
    let modules = agent
        .modules
        .modules
        .iter()
        .map(|m| ModuleStatus {
            path: m.path().display().to_string(),
            kind: m.config.kind.as_str().to_owned(),
            library: m.library.clone(),
            error: m.error.clone(),
        })
        .collect();
    let snapshot = agent.store.snapshot();
    let mut tokens = vec![];
    for entry in &snapshot.tokens {
        let t = &entry.token;
        // As last read from the token (at insertion and at every login): status never
        // calls into a module.
        let retries = t.known_retries();
        tokens.push(TokenStatus {
            token: t.token_ref().clone(),
            manufacturer: t.facts.manufacturer.clone(),
            model: t.facts.model.clone(),
            module: t.facts.module_path.display().to_string(),
            hardware: t.facts.hardware,
            removable: t.facts.removable,
            slot: t.facts.slot_description.clone(),
            pin: PinStatus {
                cached: t.pin_cached(),
                protected_path: t.facts.protected_path,
                retries,
            },
            certificates: entry.certs.iter().map(|c| cert_info(c, false)).collect(),
        });
    }
    StatusResult {
        agent: AgentInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol_version: PROTOCOL_VERSION,
            pid: std::process::id(),
            socket: agent.socket_path.display().to_string(),
            uptime_secs: agent.started.elapsed().as_secs(),
        },
        modules,
        readers: agent.readers.status(),
        tokens,
    }
}

pub fn list_certs(ctx: &OpContext<'_>, include_der: bool) -> ListCertsResult {
    let snapshot = ctx.agent.store.snapshot();
    ListCertsResult {
        certificates: snapshot
            .certs()
            .map(|c| cert_info(c, include_der))
            .collect(),
    }
}
