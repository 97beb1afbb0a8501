//! Wiring and life cycle: configuration, tokens, store and server, from start to shutdown.
//!
//! Owns: the order of start-up (config, hardening, socket path, modules, first token scan,
//! listening), the wiring of the parts (each gets its own handles: the presence machinery
//! the modules, readers and store; the ops their [`Services`]), signals, and a clean
//! shutdown (stop accepting, finish requests, wipe PINs, log tokens out, remove the socket).
//! Nothing imports it but the command line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Config;
use crate::ops::Services;
use crate::presence::Presence;
use crate::store::SessionStore;
use crate::tokens::Modules;
use crate::tokens::watcher::Readers;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

/// The socket path: `--socket`, else `[agent] socket`, else the default.
pub fn socket_path(cli: Option<&Path>, config: &Config) -> PathBuf {
    cli.map(Path::to_owned)
        .or_else(|| config.agent.socket.clone())
        .unwrap_or_else(|| smime_agent_proto::paths::default_socket_path_for(crate::sys::euid()))
}

/// Sets up logging to stderr: `RUST_LOG` if set, else the configured level.
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(config.agent.log_level.as_str()));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Lines the log cannot take are dropped and counted (see `log`), never reported
        // through a stderr that is failing.
        .with_writer(crate::log::Stderr)
        .log_internal_errors(false)
        .with_ansi(false)
        .try_init();
}

/// Runs the agent in the foreground until SIGINT or SIGTERM. `on_ready` is called once the
/// socket accepts connections.
pub fn run(
    config: Config,
    config_path: Option<PathBuf>,
    socket: PathBuf,
    on_ready: impl FnOnce(&Path) + Send + 'static,
) -> Result<(), AgentError> {
    crate::sys::harden_process();
    crate::sys::raise_nofile_limit();
    // Socket activation (systemd, systemd-socket-activate): the socket is passed, not made.
    let inherited = crate::sys::activation_socket()
        .map_err(|e| AgentError::Runtime(std::io::Error::other(e)))?;
    if inherited.is_none() {
        crate::server::prepare_socket_path(&socket)?;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("smime-agent")
        .build()
        .map_err(AgentError::Runtime)?;
    runtime.block_on(async move {
        let (modules, scanned) = {
            let cfg = config.clone();
            tokio::task::spawn_blocking(move || {
                let modules = Modules::load(&cfg);
                let ttl = std::time::Duration::from_secs(cfg.pin.cache_ttl_secs);
                let mut scanned = vec![];
                for m in modules.modules.iter().filter(|m| m.is_loaded()) {
                    match m.rescan(&Default::default(), ttl) {
                        Ok(c) => scanned.extend(c.inserted),
                        Err(e) => {
                            warn!(module = %m.path().display(), error = %e, "cannot list tokens")
                        }
                    }
                }
                if let Some(soft) = &modules.soft {
                    scanned.extend(soft.rescan().inserted);
                }
                (modules, scanned)
            })
            .await
            .map_err(|e| AgentError::Runtime(std::io::Error::other(e)))?
        };
        if modules.modules.is_empty() && modules.soft.is_none() {
            warn!("no PKCS#11 module is configured ([[tokens.module]]); no keys are available");
        }
        let trust = {
            let (t, r) = (config.trust.clone(), config.revocation.clone());
            tokio::task::spawn_blocking(move || crate::trust::Trust::new(&t, &r))
                .await
                .map_err(|e| AgentError::Runtime(std::io::Error::other(e)))?
        };
        let store = Arc::new(SessionStore::default());
        for t in scanned {
            info!(
                token = %t.token.facts.token.label,
                serial = %t.token.facts.token.serial,
                hardware = t.token.facts.hardware,
                certificates = t.certs.len(),
                "token present"
            );
            store.insert(t.token, t.certs);
        }
        let modules = Arc::new(modules);
        let readers = Arc::new(Readers::default());
        let events = tokio::sync::broadcast::channel(1024).0;
        let presence = Arc::new(Presence::new(
            modules.clone(),
            readers.clone(),
            store.clone(),
            events.clone(),
            std::time::Duration::from_secs(config.pin.cache_ttl_secs),
        ));
        crate::presence::start(&presence);
        let contacts = crate::contacts::Contacts::new(config.contacts.dir.clone());
        let directory = crate::directory::Directory::new(&config.directory).map(Arc::new);
        let services = Arc::new(Services {
            config,
            config_path,
            store: store.clone(),
            modules,
            readers,
            presence,
            trust: Arc::new(trust),
            contacts,
            directory,
            events,
            started: Instant::now(),
            socket_path: socket.clone(),
        });

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        // Installed here, before the socket is announced: a SIGTERM right after the socket
        // line must stop the agent cleanly, not kill it by the default action.
        let signals = install_signals();
        tokio::spawn(async move {
            wait_for_signal(signals).await;
            info!("signal received");
            sd_notify("STOPPING=1");
            let _ = shutdown_tx.send(true);
        });
        let sweeper = tokio::spawn(expire_pins(store.clone()));

        let watched = services
            .config_path
            .clone()
            .or_else(crate::config::default_config_path);
        let current = Arc::new(crate::ops::Current::new(services));
        tokio::spawn(reload_on_hangup(current.clone(), install_hangup()));
        if let Some(path) = watched {
            tokio::spawn(reload_on_change(current.clone(), path));
        }

        let ready_path = socket.clone();
        crate::server::serve(current, socket, inherited, shutdown_rx, move || {
            on_ready(&ready_path);
            sd_notify("READY=1");
        })
        .await?;
        sweeper.abort();
        shutdown_tokens(&store).await;
        info!("stopped");
        Ok(())
    })
}

/// Tells a service manager (systemd, `Type=notify`) how the agent is doing, when it asked
/// (`NOTIFY_SOCKET`); nothing otherwise.
fn sd_notify(state: &str) {
    use std::os::unix::net::UnixDatagram;
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = target.as_encoded_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        // An abstract socket name (systemd's usual choice).
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
        }
        None => sock.send_to(state.as_bytes(), std::path::Path::new(&target)),
    };
    if let Err(e) = sent {
        warn!(error = %e, "cannot notify the service manager");
    }
}

/// SIGHUP, handled from now on (before the socket is announced, like the others).
fn install_hangup() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

/// Reads the configuration again on every SIGHUP.
async fn reload_on_hangup(
    current: Arc<crate::ops::Current>,
    hangup: Option<tokio::signal::unix::Signal>,
) {
    let Some(mut hangup) = hangup else { return };
    while hangup.recv().await.is_some() {
        info!("SIGHUP: reading the configuration again");
        // The outcome is logged by the reload itself.
        let _ = crate::ops::reload(&current).await;
    }
}

/// How often the configuration file is looked at for changes.
const CONFIG_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads the configuration again when its file changes (modification time, size, or its
/// coming or going): "changes take effect immediately". Polled, every two seconds: one
/// `stat` needs no watcher crate and sees a file replaced by an editor's rename as well.
async fn reload_on_change(current: Arc<crate::ops::Current>, path: std::path::PathBuf) {
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    let mut seen = stamp(&path);
    let mut tick = tokio::time::interval(CONFIG_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = stamp(&path);
        if now != seen {
            // An editor or a script may be half-way through writing it: read it only once
            // it has stood still for a moment (an empty file would mean the defaults).
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            if stamp(&path) != now {
                continue;
            }
            seen = now;
            info!(config = %path.display(), "the configuration file changed: reading it again");
            let _ = crate::ops::reload(&current).await;
        }
    }
}

type Signals = Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>;

/// SIGTERM and SIGINT, handled from now on.
fn install_signals() -> Signals {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => Some((term, int)),
        _ => None,
    }
}

async fn wait_for_signal(signals: Signals) {
    let Some((mut term, mut int)) = signals else {
        // Without signal handlers the agent still stops when killed; nothing to wait for.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

/// Wipes PINs whose time to live ran out, and logs their tokens out (a logged-in token is
/// as good as a cached PIN).
async fn expire_pins(store: Arc<SessionStore>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        for entry in &store.snapshot().tokens {
            if entry.token.expire_pin() {
                info!(token = %entry.token.token_ref().label, "cached PIN (or PIN-pad login) expired");
                // Waits for the token's operations to finish; other tokens must not wait.
                tokio::spawn(entry.token.clone().logout());
            }
        }
    }
}

async fn shutdown_tokens(store: &SessionStore) {
    for entry in &store.snapshot().tokens {
        entry.token.clone().logout().await;
    }
}

/// Prints the line a shell evaluates to find the agent, as ssh-agent does.
pub fn print_socket_env(out: &mut impl Write, socket: &Path) -> std::io::Result<()> {
    let quoted = shell_quote(&socket.display().to_string());
    writeln!(
        out,
        "{}={quoted}; export {};",
        smime_agent_proto::SOCKET_ENV,
        smime_agent_proto::SOCKET_ENV
    )?;
    writeln!(out, "echo Agent pid {};", std::process::id())?;
    out.flush()
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_env_line_is_shell_safe() {
        let mut out = vec![];
        print_socket_env(&mut out, Path::new("/tmp/a b'c/agent.sock")).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.starts_with("SMIME_AGENT_SOCK='/tmp/a b'\\''c/agent.sock'; export SMIME_AGENT_SOCK;"),
            "{s}"
        );
    }
}
