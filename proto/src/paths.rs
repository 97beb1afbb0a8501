//! Where the agent's socket lives, and its per-user data directory.
//!
//! The agent listens on `$XDG_RUNTIME_DIR/smime-agent/agent.sock` when `XDG_RUNTIME_DIR` is
//! set (it is a per-user 0700 directory on systemd systems), else on
//! `/tmp/smime-agent-$UID/agent.sock`. Clients look at `SMIME_AGENT_SOCK` first.

use std::path::PathBuf;

/// The agent's default socket path (ignores `SMIME_AGENT_SOCK`, which is for clients).
pub fn default_socket_path() -> PathBuf {
    // Without /proc, a uid no user has: the connection fails instead of going to root's.
    default_socket_path_for(current_uid().unwrap_or(u32::MAX))
}

/// The default socket path of user `uid`.
pub fn default_socket_path_for(uid: u32) -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("smime-agent").join("agent.sock"),
        _ => PathBuf::from(format!("/tmp/smime-agent-{uid}")).join("agent.sock"),
    }
}

/// The per-user data directory: `$XDG_DATA_HOME/smime-agent`, else
/// `~/.local/share/smime-agent`; `None` without either variable.
pub fn data_dir() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_DATA_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".local/share"),
    };
    Some(base.join("smime-agent"))
}

/// The socket a client should connect to: `SMIME_AGENT_SOCK`, else the default.
pub fn client_socket_path() -> PathBuf {
    match std::env::var_os(crate::SOCKET_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => default_socket_path(),
    }
}

/// The effective uid of this process (the owner of `/proc/self`), read so this crate needs
/// no unsafe code.
pub(crate) fn current_uid() -> std::io::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid())
}
