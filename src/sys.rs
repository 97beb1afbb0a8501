//! The few operating-system calls the agent makes directly, each wrapped once.
//!
//! This is the only module with `unsafe` code (the crate roots deny it elsewhere): libc
//! calls without a safe std equivalent. Each is a plain system call with no pointer
//! ownership beyond the call.

#![allow(unsafe_code)]

use std::path::PathBuf;

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Hardens the daemon: no core dumps (they would hold PINs and key handles), not
/// ptrace-able by other processes of the user, and files created private (umask 077).
pub fn harden_process() {
    // SAFETY: plain system calls on this process with constant arguments.
    unsafe {
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &zero);
        #[cfg(target_os = "linux")]
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::umask(0o077);
    }
}

/// Raises the soft open-files limit to the hard limit, so `max_connections` can be reached.
pub fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; setrlimit reads it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Locks `len` bytes at `ptr` in RAM. Best effort: false when the OS refuses (limits).
pub fn lock_memory(ptr: *const u8, len: usize) -> bool {
    // SAFETY: mlock only changes page residency of memory this process owns; the caller
    // passes a live buffer.
    unsafe { libc::mlock(ptr.cast(), len) == 0 }
}

/// Undoes [`lock_memory`].
pub fn unlock_memory(ptr: *const u8, len: usize) {
    // SAFETY: as for mlock.
    unsafe {
        libc::munlock(ptr.cast(), len);
    }
}

/// The executable of a process, for the audit log.
pub fn process_exe(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Makes `cmd`'s child start a session of its own (setsid between fork and exec), so the
/// background agent outlives the terminal that started it.
pub fn in_new_session(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the forked child before exec and only calls setsid, which is
    // async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(setsid);
    }
}

/// Starts a new session for the calling process (used in a forked child before exec).
fn setsid() -> std::io::Result<()> {
    // SAFETY: setsid has no memory effects; async-signal-safe, so usable after fork.
    if unsafe { libc::setsid() } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Points stdout at /dev/null, so a parent reading our stdout sees its end.
pub fn close_stdout() {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto fd 1 with a descriptor we own; no Rust object owns fd 1.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}

/// The listening socket a service manager passed, when this process was socket-activated
/// (systemd's `LISTEN_PID` is ours and `LISTEN_FDS` is 1: the socket is fd 3). The variables
/// are removed so that no child takes the socket for its own. Call before any thread starts.
pub fn activation_socket() -> Result<Option<std::os::fd::OwnedFd>, String> {
    use std::os::fd::FromRawFd;
    let (Ok(pid), Ok(fds)) = (std::env::var("LISTEN_PID"), std::env::var("LISTEN_FDS")) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    // SAFETY: called at start-up, before the runtime or any other thread exists, so nothing
    // reads the environment meanwhile.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if fds.trim() != "1" {
        return Err(format!(
            "socket activation passed {fds} sockets; the agent listens on exactly one"
        ));
    }
    const FD: i32 = 3;
    // SAFETY: fstat and fcntl on a descriptor number, writing only into `st`.
    let is_socket = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(FD, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    };
    if !is_socket {
        return Err("socket activation: file descriptor 3 is not a socket".into());
    }
    // SAFETY: as above; the agent's children must not inherit its listening socket.
    unsafe { libc::fcntl(FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: fd 3 was passed to this process for it to own (LISTEN_PID says so), it is a
    // socket, and nothing else in the process uses it.
    Ok(Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(FD) }))
}
