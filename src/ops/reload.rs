//! `reload` (also SIGHUP and a change of the file): the configuration read again and the
//! services that depend on it built anew (policy, identities, trust anchors and CRL
//! settings, contacts, the directory and its cache, PIN source), around the same tokens, session store, modules, readers
//! and subscribers, so cached PINs and open sessions survive. A file that cannot be read or
//! parsed is refused with its error and the old settings stay.
//!
//! Owns: building the new services and swapping them in. Must not touch: what the settings
//! mean (their owners read them from the services of each request).

use std::sync::Arc;

use smime_agent_proto::ReloadResult;
use tracing::{info, warn};

use super::{Current, OpError, Services};
use crate::config::Config;

/// Reads the configuration file again and swaps in services built from it. Requests under
/// way finish with the services they started with.
pub async fn reload(current: &Current) -> Result<ReloadResult, OpError> {
    let old = current.get();
    let path = old.config_path.clone();
    let (config, path) = match Config::load(path.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            warn!(error = %e, "configuration not reloaded; the old settings stay");
            return Err(OpError::ConfigInvalid(format!(
                "{e}\n(the agent keeps its previous settings)"
            )));
        }
    };
    let trust = {
        let (t, r) = (config.trust.clone(), config.revocation.clone());
        tokio::task::spawn_blocking(move || crate::trust::Trust::new(&t, &r))
            .await
            .map_err(|e| OpError::Internal(format!("loading the trust settings failed: {e}")))?
    };
    let restart_needed = restart_needed(&old.config, &config);
    let services = Arc::new(Services {
        contacts: crate::contacts::Contacts::new(config.contacts.dir.clone()),
        trust: Arc::new(trust),
        directory: crate::directory::Directory::new(&config.directory).map(Arc::new),
        config,
        config_path: path.clone().or(old.config_path.clone()),
        store: old.store.clone(),
        modules: old.modules.clone(),
        readers: old.readers.clone(),
        presence: old.presence.clone(),
        events: old.events.clone(),
        started: old.started,
        socket_path: old.socket_path.clone(),
    });
    current.set(services);
    info!(
        config = %path.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "(none: defaults)".into()),
        restart_needed = %restart_needed.join(", "),
        "configuration reloaded"
    );
    Ok(ReloadResult {
        config: path.map(|p| p.display().to_string()),
        restart_needed,
    })
}

/// The changed settings that only a restart applies: the socket and limits (`[agent]`), the
/// modules and key files loaded at start, and the PIN cache time of tokens present.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut out = vec![];
    if old.agent != new.agent {
        out.push("[agent]".to_owned());
    }
    if old.tokens != new.tokens {
        out.push("[tokens]".to_owned());
    }
    if old.soft_store != new.soft_store {
        out.push("[soft_store]".to_owned());
    }
    if old.pin.cache_ttl_secs != new.pin.cache_ttl_secs {
        out.push("[pin] cache_ttl_secs".to_owned());
    }
    out
}
