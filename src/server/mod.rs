//! The server: the local socket, who may connect, and one handler per connection.
//!
//! Owns: the socket file (its private directory, its mode, replacing a stale one, refusing
//! to displace a live agent), here; and, one room each, after tokio's mini-redis:
//! - [`listener`]: accept, the peer check (same user only, by SO_PEERCRED), the bound on
//!   connections, graceful shutdown;
//! - [`connection`]: frames in and out of one connection, the writer task;
//! - [`handler`]: what each frame asks: hello, pin, subscribe, or an op for [`crate::ops`];
//! - [`admission`]: how many requests of a connection run at once, and who waits;
//! - [`budget`]: the bytes of unfinished frames across all connections, bounded;
//! - [`session`]: what a connection's reader and request tasks share;
//! - [`prompts`] and [`prompter`]: PIN prompts open on a connection, and asking for a PIN.
//!
//! Knows nothing of PKCS#11 or CMS: requests go to [`crate::ops`].

mod admission;
mod budget;
mod connection;
pub(crate) mod handler;
mod listener;
mod prompter;
mod prompts;
mod session;

pub use listener::serve;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::info;

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
