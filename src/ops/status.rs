//! `status` and `list_certs`: what the services has, without touching a token's keys.

use smime_agent_proto::{
    AgentInfo, CrlCacheEntry, CrlCacheStatus, ListCertsResult, ModuleStatus, PROTOCOL_VERSION,
    PinStatus, StatusResult, TokenStatus, TrustStatus,
};

use super::{OpContext, cert_info};
use crate::certs::rfc3339;

pub async fn status(ctx: &OpContext<'_>) -> StatusResult {
    let services = ctx.services;
    let modules = services
        .modules
        .modules
        .iter()
        .map(|m| ModuleStatus {
            path: m.path().display().to_string(),
            kind: m.config.kind.as_str().to_owned(),
            library: m.library.clone(),
            error: m.error.clone().or_else(|| m.down_reason()),
        })
        .collect();
    let snapshot = services.store.snapshot();
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
            socket: services.socket_path.display().to_string(),
            uptime_secs: services.started.elapsed().as_secs(),
            log_lines_dropped: crate::log::DROPS.dropped(),
        },
        modules,
        readers: services.readers.status(),
        tokens,
        trust: TrustStatus {
            anchors: services.trust.store.anchors.len(),
            untrusted: services.trust.store.distrusted_count(),
            intermediates: services.trust.store.intermediates.len(),
            problems: services.trust.store.problems.clone(),
        },
        crl_cache: crl_cache(&services.trust),
    }
}

fn crl_cache(trust: &crate::trust::Trust) -> CrlCacheStatus {
    let now = std::time::SystemTime::now();
    CrlCacheStatus {
        dir: trust.crls.dir().map(|d| d.display().to_string()),
        fetches: trust.crls.fetches(),
        crls: trust
            .crls
            .list()
            .iter()
            .map(|c| CrlCacheEntry {
                issuer: c.issuer.clone(),
                url: c.url.clone(),
                this_update: rfc3339(c.this_update),
                next_update: c.next_update.map(rfc3339),
                entries: c.entries,
                current: c.is_current(now),
            })
            .collect(),
    }
}

pub fn list_certs(ctx: &OpContext<'_>, include_der: bool) -> ListCertsResult {
    let snapshot = ctx.services.store.snapshot();
    ListCertsResult {
        certificates: snapshot
            .certs()
            .map(|c| cert_info(c, include_der))
            .collect(),
    }
}
