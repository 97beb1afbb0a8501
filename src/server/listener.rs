//! The listener: binds the socket, accepts connections, admits only the agent's own user
//! (SO_PEERCRED), bounds how many connections are served at once, and on shutdown lets
//! the connections finish their requests.
//!
//! Owns the accept loop; hands each admitted stream to [`super::connection`].

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::traits::StreamCommon as _;
use interprocess::local_socket::traits::tokio::Listener as _;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use smime_agent_proto::codec::encode_frame;
use smime_agent_proto::{ErrorBody, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, watch};
use tracing::{error, info, warn};

use super::ServerError;
use super::budget::Budget;
use super::connection;
use super::handler::error_response;
use crate::ops::{Current, Peer};

/// Binds the socket (mode 0600), or takes the one a service manager passed (`inherited`,
/// socket activation: it stays the manager's, and is not removed at the end), and serves
/// until `shutdown` turns true.
pub async fn serve(
    current: Arc<Current>,
    path: PathBuf,
    inherited: Option<std::os::fd::OwnedFd>,
    mut shutdown: watch::Receiver<bool>,
    ready: impl FnOnce(),
) -> Result<(), ServerError> {
    let io = |source| ServerError::Io {
        path: path.clone(),
        source,
    };
    let listener: interprocess::local_socket::tokio::Listener = match inherited {
        Some(fd) => {
            let l = interprocess::os::unix::uds_local_socket::tokio::Listener::try_from(fd)
                .map_err(|e| io(std::io::Error::other(e.to_string())))?;
            info!(socket = %path.display(), "listening on the socket passed by socket activation");
            l.into()
        }
        None => {
            let name = path.as_path().to_fs_name::<GenericFilePath>().map_err(io)?;
            let l = ListenerOptions::new()
                .name(name)
                .reclaim_name(true)
                .create_tokio()
                .map_err(io)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
            info!(socket = %path.display(), "listening");
            l
        }
    };
    ready();

    // [agent] settings are read once: changing them needs a restart (see `reload`).
    let services = current.get();
    let limit = Arc::new(Semaphore::new(services.config.agent.max_connections));
    let budget = Arc::new(Budget::new(services.config.agent.max_unfinished_bytes));
    let mut handlers = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Some(peer) = check_peer(&stream) else {
            handlers.spawn(refuse(
                stream,
                ErrorCode::PermissionDenied,
                "this agent serves only the user it runs as".into(),
            ));
            continue;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            warn!(
                max = services.config.agent.max_connections,
                "connection refused: too many connections"
            );
            handlers.spawn(refuse(
                stream,
                ErrorCode::TooManyConnections,
                format!(
                    "the agent already serves {} connections (max_connections)",
                    services.config.agent.max_connections
                ),
            ));
            continue;
        };
        let current = current.clone();
        let shutdown = shutdown.clone();
        let budget = budget.clone();
        handlers.spawn(async move {
            connection::handle(current, stream, peer, &budget, shutdown).await;
            drop(permit);
        });
        // Reap finished handlers so the set does not grow with every connection.
        while handlers.try_join_next().is_some() {}
    }
    info!("shutting down: finishing requests in flight");
    let drain = async { while handlers.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        warn!("requests still running after 10 s; abandoning them");
        handlers.abort_all();
    }
    drop(listener);
    Ok(())
}

/// Admits only processes of the agent's own user.
fn check_peer(stream: &Stream) -> Option<Peer> {
    let creds = match stream.peer_creds() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "connection refused: cannot read the peer's credentials");
            return None;
        }
    };
    let pid = creds.pid().and_then(|p| u32::try_from(p).ok());
    let uid = creds.euid();
    if uid != Some(crate::sys::euid()) {
        warn!(peer_uid = ?uid, peer_pid = ?pid, "connection refused: another user");
        return None;
    }
    Some(Peer {
        pid,
        exe: pid.and_then(crate::sys::process_exe),
    })
}

/// Sends one error and closes the connection.
async fn refuse(mut stream: Stream, code: ErrorCode, message: String) {
    let frame = encode_frame(&error_response(None, ErrorBody::new(code, message)));
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(&frame).await;
        let _ = stream.flush().await;
        // Closing a socket with unread bytes (the client's hello) resets it, and a reset
        // can destroy the answer before the client reads it. So: end our side, then read
        // what the client sent (bounded) until it closes or the time is up.
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        let mut left = 64 * 1024usize;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}
