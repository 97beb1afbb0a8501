//! The server: the local socket, who may connect, and one handler per connection.
//!
//! Owns: the socket file (its private directory, its mode, replacing a stale one, refusing
//! to displace a live agent), the peer check (same user only, by SO_PEERCRED), the bound on
//! connections, and graceful shutdown. Knows nothing of PKCS#11 or CMS: requests go to
//! [`crate::ops`].

mod connection;
mod prompter;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::traits::StreamCommon as _;
use interprocess::local_socket::traits::tokio::Listener as _;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use smime_agent_proto::codec::encode_frame;
use smime_agent_proto::{ErrorBody, ErrorCode, Outcome, Response};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, watch};
use tracing::{error, info, warn};

use crate::ops::{Peer, Services};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("another smime-agent is already running on {0}; stop it first (or use --socket)")]
    AlreadyRunning(PathBuf),
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("the socket directory {path} {problem}")]
    UnsafeDirectory { path: PathBuf, problem: String },
    #[error("cannot set up the socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Prepares `path` for binding: a private directory, and no live agent on it. A socket
/// nobody answers on (left by a crashed agent) is removed.
pub fn prepare_socket_path(path: &Path) -> Result<(), ServerError> {
    let io = |source| ServerError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
            // `recursive` applies the mode only to directories it creates, and the umask
            // may have narrowed it: set it explicitly.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        Err(e) => return Err(io(e)),
        Ok(meta) => {
            let mode = meta.mode() & 0o7777;
            let ours = meta.uid() == crate::sys::euid();
            let sticky = mode & 0o1000 != 0;
            if !ours && !sticky {
                return Err(ServerError::UnsafeDirectory {
                    path: dir.to_owned(),
                    problem: format!("belongs to uid {}, not to this user", meta.uid()),
                });
            }
            if ours && mode & 0o022 != 0 && !sticky {
                return Err(ServerError::UnsafeDirectory {
                    path: dir.to_owned(),
                    problem: format!(
                        "is writable by others (mode {mode:o}); use a private directory"
                    ),
                });
            }
        }
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(e)),
        Ok(meta) if !meta.file_type().is_socket() => Err(ServerError::NotASocket {
            path: path.to_owned(),
        }),
        Ok(_) => {
            if agent_answers(path) {
                return Err(ServerError::AlreadyRunning(path.to_owned()));
            }
            info!(socket = %path.display(), "replacing a stale socket");
            std::fs::remove_file(path).map_err(io)
        }
    }
}

/// True when something on `path` accepts a connection and answers (a live agent). A
/// connection that is accepted but never answered within two seconds also counts as live,
/// so a busy agent is not displaced.
fn agent_answers(path: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(path) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let hello = format!(
        "{{\"id\":0,\"op\":\"hello\",\"version\":{}}}\n",
        smime_agent_proto::PROTOCOL_VERSION
    );
    if s.write_all(hello.as_bytes()).is_err() {
        return true;
    }
    let mut line = String::new();
    let _ = BufReader::new(s).read_line(&mut line);
    true
}

/// Binds the socket (mode 0600) and serves until `shutdown` turns true.
pub async fn serve(
    services: Arc<Services>,
    path: PathBuf,
    mut shutdown: watch::Receiver<bool>,
    ready: impl FnOnce(),
) -> Result<(), ServerError> {
    let io = |source| ServerError::Io {
        path: path.clone(),
        source,
    };
    let name = path.as_path().to_fs_name::<GenericFilePath>().map_err(io)?;
    let listener = ListenerOptions::new()
        .name(name)
        .reclaim_name(true)
        .create_tokio()
        .map_err(io)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    info!(socket = %path.display(), "listening");
    ready();

    let limit = Arc::new(Semaphore::new(services.config.agent.max_connections));
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
        let services = services.clone();
        let shutdown = shutdown.clone();
        handlers.spawn(async move {
            connection::handle(services, stream, peer, shutdown).await;
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
    let frame = encode_frame(&Response {
        id: None,
        outcome: Outcome::Error(ErrorBody::new(code, message)),
    });
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(&frame).await;
        let _ = stream.flush().await;
    })
    .await;
}
