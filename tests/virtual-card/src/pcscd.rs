//! A private pcscd with vsmartcard-vpcd readers: its reader configuration, its ports, its
//! socket, and starting and stopping it.
//!
//! pcscd 1.9.9 ignores `PCSCLITE_CSOCK_NAME`, but takes a listening socket handed over the
//! systemd way: fd 3, `LISTEN_FDS=1`, `LISTEN_PID=<its pid>`. Clients (libpcsclite, so
//! OpenSC) then find it through `PCSCLITE_CSOCK_NAME`.
//!
//! pcscd still uses two system-wide things: `/run/pcscd` (it creates the directory and
//! writes, then deletes, `pcscd.pid` there: two pcscds overwrite each other's, and the
//! system pcscd's) and the USB driver directory (it would grab real USB readers). When the
//! process may create a mount namespace (root with CAP_SYS_ADMIN), pcscd runs in its own
//! with a private `/run/pcscd` and a driver directory that holds only the serial drivers;
//! otherwise it runs without, which is harmless on a machine without USB readers.
//! `CARD_RIG_NO_ISOLATION=1` turns the namespace off.

use std::ffi::CString;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::RigError;

/// Where vpcd's driver is looked for (Debian/Ubuntu first). `VPCD_DRIVER` overrides.
const VPCD_DRIVER_CANDIDATES: [&str; 3] = [
    "/usr/lib/pcsc/drivers/serial/libifdvpcd.so",
    "/usr/lib64/pcsc/drivers/serial/libifdvpcd.so",
    "/usr/local/lib/pcsc/drivers/serial/libifdvpcd.so",
];

/// pcscd's compiled-in USB driver directory and run directory (Debian).
const SYSTEM_DRIVER_DIR: &str = "/usr/lib/pcsc/drivers";
const SYSTEM_RUN_DIR: &str = "/run/pcscd";

/// Ports are picked here, below Linux's default ephemeral range (32768-60999), so that
/// outgoing connections do not take a port between the check and pcscd's bind.
const PORT_RANGE: std::ops::Range<u16> = 20000..32000;

/// The files of one rig under its directory.
#[derive(Debug, Clone)]
pub struct RigLayout {
    pub dir: PathBuf,
}

impl RigLayout {
    /// `dir` is made absolute; it must exist.
    pub fn new(dir: &Path) -> Result<Self, RigError> {
        let dir = fs::canonicalize(dir)
            .map_err(|e| RigError::io(format!("rig directory {}", dir.display()), e))?;
        let layout = RigLayout { dir };
        let sock = layout.csock();
        // sockaddr_un holds 108 bytes including the terminating NUL.
        if sock.as_os_str().len() > 107 {
            return Err(RigError::SocketPathTooLong(sock));
        }
        Ok(layout)
    }

    /// pcscd's client socket: the value of `PCSCLITE_CSOCK_NAME`.
    pub fn csock(&self) -> PathBuf {
        self.dir.join("pcscd.comm")
    }
    pub fn conf_dir(&self) -> PathBuf {
        self.dir.join("reader.conf.d")
    }
    pub fn pcscd_log(&self) -> PathBuf {
        self.dir.join("pcscd.log")
    }
    pub fn cards_dir(&self) -> PathBuf {
        self.dir.join("cards")
    }
    /// The PIN pad's keypad when the readers have one (see the `ifd-pinpad` crate).
    pub fn keypad_dir(&self) -> PathBuf {
        self.dir.join("keypad")
    }
    /// The PIN counter of card `name`, kept across removal.
    pub fn pin_state(&self, name: &str) -> PathBuf {
        self.cards_dir().join(format!("{name}.pin-state"))
    }
    fn isolation_dir(&self) -> PathBuf {
        self.dir.join("isolation")
    }
}

/// How pcscd relates to the process that starts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Dies with the thread that started it (PR_SET_PDEATHSIG), even if that process is
    /// killed: for test support.
    TiedToThread,
    /// Its own session, outliving the starter: for `card-rig up`.
    Detached,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct PcscdOptions {
    /// Number of virtual readers (rounded up to even: each vpcd line gives two).
    pub readers: u8,
    /// Pass `-d -a` to pcscd (debug log with APDUs) into `pcscd.log`.
    pub debug: bool,
    pub lifetime: Lifetime,
    /// How long to wait for pcscd's readers to listen.
    pub timeout: Duration,
    /// Make the readers PIN-pad readers: pcscd loads this library (the `ifd-pinpad` crate)
    /// in front of vpcd's driver, with its keypad in [`RigLayout::keypad_dir`].
    pub pinpad: Option<PathBuf>,
}

/// A started pcscd.
#[derive(Debug)]
pub struct StartedPcscd {
    pub child: Child,
    /// Reader N listens on `base_port + N`.
    pub base_port: u16,
    /// Number of readers.
    pub readers: u8,
    /// Whether it runs in a private mount namespace (see the module docs).
    pub isolated: bool,
}

/// Starts pcscd with `options.readers` vpcd readers on free ports, and waits until all of
/// them listen. Ports that another process takes meanwhile are retried with new ones.
pub fn start(layout: &RigLayout, options: &PcscdOptions) -> Result<StartedPcscd, RigError> {
    let readers = even_readers(options.readers);
    let mut last_error = None;
    for _ in 0..5 {
        let base_port = choose_base_port(readers)?;
        match start_on(layout, options, base_port) {
            Ok(started) => return Ok(started),
            Err(e @ RigError::ReadersNotListening { .. }) => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or(RigError::ReadersNotListening {
        ports: String::new(),
        log: layout.pcscd_log(),
    }))
}

/// Starts pcscd with its readers on the given ports (`base_port` onwards), on the rig's
/// socket path, and waits until all of them listen: for bringing back a pcscd that died,
/// so that clients and cards find it where they left it. Fails with
/// [`RigError::ReadersNotListening`] when a port is taken.
pub fn start_on(
    layout: &RigLayout,
    options: &PcscdOptions,
    base_port: u16,
) -> Result<StartedPcscd, RigError> {
    let pcscd = find_pcscd()?;
    let driver = find_vpcd_driver()?;
    let readers = even_readers(options.readers);
    fs::create_dir_all(layout.conf_dir())
        .map_err(|e| RigError::io(format!("creating {}", layout.conf_dir().display()), e))?;
    let reader_driver = match &options.pinpad {
        Some(pinpad) => {
            fs::create_dir_all(layout.keypad_dir()).map_err(|e| {
                RigError::io(format!("creating {}", layout.keypad_dir().display()), e)
            })?;
            pinpad.clone()
        }
        None => driver.clone(),
    };
    write_reader_conf(&layout.conf_dir(), &reader_driver, base_port, readers)?;
    let mut child = spawn(&pcscd, &driver, layout, options)?;
    let ports: Vec<u16> = (0..u16::from(readers)).map(|n| base_port + n).collect();
    match wait_listening(&mut child, &ports, options.timeout, layout) {
        Ok(()) => {
            let isolated = in_other_mount_namespace(child.id());
            Ok(StartedPcscd {
                child,
                base_port,
                readers,
                isolated,
            })
        }
        // It exited by itself: already reaped, nothing to stop.
        Err(e @ RigError::PcscdExited { .. }) => Err(e),
        Err(e) => {
            stop(&mut child);
            Err(e)
        }
    }
}

/// Each vpcd line gives two readers.
fn even_readers(readers: u8) -> u8 {
    readers.clamp(1, 254).div_ceil(2) * 2
}

/// Kills pcscd at once (SIGKILL: no cleanup, as when it crashes) and reaps it. Its readers'
/// connections to the cards drop; the socket file stays behind, dead.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends SIGKILL to `pid`.
pub fn kill_pid(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill() has no memory effects; a stale pid is the caller's concern.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Stops pcscd: SIGTERM (it cleans up and closes the readers, which ends the cards'
/// connections), then SIGKILL after two seconds.
pub fn stop(child: &mut Child) {
    terminate_pid(child.id());
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends SIGTERM to `pid`.
pub fn terminate_pid(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill() has no memory effects; a stale pid is the caller's concern.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// Whether `pid` runs (a zombie does not count).
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses, which may itself hold ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn find_pcscd() -> Result<PathBuf, RigError> {
    if let Some(p) = std::env::var_os("PCSCD") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join("pcscd"))
        .find(|p| p.is_file())
        .ok_or(RigError::Missing {
            what: "pcscd",
            hint: "install the Debian package pcscd (softhsm-setup/deps.sh)",
        })
}

fn find_vpcd_driver() -> Result<PathBuf, RigError> {
    if let Some(p) = std::env::var_os("VPCD_DRIVER") {
        return Ok(PathBuf::from(p));
    }
    VPCD_DRIVER_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or(RigError::Missing {
            what: "the vpcd reader driver (libifdvpcd.so)",
            hint: "install the Debian package vsmartcard-vpcd (softhsm-setup/deps.sh)",
        })
}

/// A base port P such that P .. P+count are all free now.
fn choose_base_port(count: u8) -> Result<u16, RigError> {
    let span = PORT_RANGE.end - PORT_RANGE.start - u16::from(count);
    for _ in 0..200 {
        let mut r = [0u8; 2];
        getrandom::fill(&mut r)
            .map_err(|e| RigError::io("choosing a port", io::Error::other(e)))?;
        let base = PORT_RANGE.start + u16::from_be_bytes(r) % span;
        // vpcd binds 0.0.0.0 with SO_REUSEADDR; std's listener does the same.
        let free = (0..u16::from(count))
            .all(|n| TcpListener::bind((Ipv4Addr::UNSPECIFIED, base + n)).is_ok());
        if free {
            return Ok(base);
        }
    }
    Err(RigError::io(
        "choosing a port",
        io::Error::new(io::ErrorKind::AddrInUse, "no free port range found"),
    ))
}

/// One `vpcd` file with a reader line per pair of readers.
fn write_reader_conf(
    conf_dir: &Path,
    driver: &Path,
    base: u16,
    readers: u8,
) -> Result<(), RigError> {
    let mut conf = String::from(
        "# Written by virtual-piv-card's card rig. Each entry gives two readers: port and port+1.\n",
    );
    for pair in 0..u16::from(readers / 2) {
        let port = base + 2 * pair;
        conf.push_str(&format!(
            "\nFRIENDLYNAME \"Virtual PCD\"\nDEVICENAME   /dev/null:0x{port:04X}\nLIBPATH      {}\nCHANNELID    0x{port:04X}\n",
            driver.display()
        ));
    }
    let path = conf_dir.join("vpcd");
    fs::write(&path, conf).map_err(|e| RigError::io(format!("writing {}", path.display()), e))
}

/// Paths the child needs for the optional mount namespace, prepared before fork.
struct Isolation {
    run_dir: CString,
    drivers_dir: CString,
    serial_mount: CString,
    system_run: CString,
    system_drivers: CString,
    system_serial: CString,
}

impl Isolation {
    fn prepare(layout: &RigLayout) -> Option<Self> {
        // For trying the rig as it runs where namespaces are not allowed.
        if std::env::var_os("CARD_RIG_NO_ISOLATION").is_some() {
            return None;
        }
        // Only root can make a mount namespace without a user namespace.
        // SAFETY: geteuid() cannot fail and touches no memory.
        #[allow(unsafe_code)]
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let base = layout.isolation_dir();
        let run_dir = base.join("run");
        let drivers_dir = base.join("drivers");
        let serial_mount = drivers_dir.join("serial");
        fs::create_dir_all(&run_dir).ok()?;
        fs::create_dir_all(&serial_mount).ok()?;
        // The mount point must exist; pcscd would create it anyway.
        fs::create_dir_all(SYSTEM_RUN_DIR).ok()?;
        let system_serial = Path::new(SYSTEM_DRIVER_DIR).join("serial");
        if !system_serial.is_dir() {
            return None;
        }
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).ok();
        Some(Isolation {
            run_dir: c(&run_dir)?,
            drivers_dir: c(&drivers_dir)?,
            serial_mount: c(&serial_mount)?,
            system_run: c(Path::new(SYSTEM_RUN_DIR))?,
            system_drivers: c(Path::new(SYSTEM_DRIVER_DIR))?,
            system_serial: c(&system_serial)?,
        })
    }

    /// Runs in the forked child: only async-signal-safe system calls. Best effort: on any
    /// failure pcscd simply sees the system paths.
    #[allow(unsafe_code)]
    fn enter(&self) {
        // SAFETY: plain system calls on NUL-terminated strings that live in the parent's
        // copy of `self`, valid in the child until exec.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return;
            }
            let none = std::ptr::null();
            // Keep our mounts from propagating back to the system.
            if libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return;
            }
            libc::mount(
                self.run_dir.as_ptr(),
                self.system_run.as_ptr(),
                none,
                libc::MS_BIND,
                std::ptr::null(),
            );
            // Only the serial drivers (vpcd) stay visible: no USB drivers, no real readers.
            if libc::mount(
                self.system_serial.as_ptr(),
                self.serial_mount.as_ptr(),
                none,
                libc::MS_BIND,
                std::ptr::null(),
            ) == 0
            {
                libc::mount(
                    self.drivers_dir.as_ptr(),
                    self.system_drivers.as_ptr(),
                    none,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                );
            }
        }
    }
}

fn spawn(
    pcscd: &Path,
    vpcd_driver: &Path,
    layout: &RigLayout,
    options: &PcscdOptions,
) -> Result<Child, RigError> {
    let csock = layout.csock();
    match fs::remove_file(&csock) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(RigError::io(format!("removing {}", csock.display()), e)),
    }
    let listener = UnixListener::bind(&csock)
        .map_err(|e| RigError::io(format!("binding {}", csock.display()), e))?;
    let listen_fd = listener.as_raw_fd();
    let log_path = layout.pcscd_log();
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| RigError::io(format!("opening {}", log_path.display()), e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| RigError::io(format!("opening {}", log_path.display()), e))?;
    let isolation = Isolation::prepare(layout);
    let lifetime = options.lifetime;

    // LISTEN_PID must be pcscd's own pid, known only in the child: a shell sets it from $$
    // and execs pcscd in place, keeping the pid.
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(r#"LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@""#)
        .arg(pcscd)
        .arg("--foreground")
        .arg("--config")
        .arg(layout.conf_dir());
    if options.debug {
        cmd.args(["--debug", "--apdu"]);
    }
    if options.pinpad.is_some() {
        cmd.env("IFD_PINPAD_DRIVER", vpcd_driver)
            .env("IFD_PINPAD_KEYPAD_DIR", layout.keypad_dir());
    }
    cmd.env("LISTEN_FDS", "1")
        .env_remove("LISTEN_FDNAMES")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: the closure only makes async-signal-safe system calls (setsid, prctl, dup2,
    // fcntl, unshare, mount) on values prepared before fork.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            match lifetime {
                Lifetime::Detached => {
                    libc::setsid();
                }
                Lifetime::TiedToThread => {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                }
            }
            if listen_fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(listen_fd, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(iso) = &isolation {
                iso.enter();
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| RigError::io(format!("starting {}", pcscd.display()), e))?;
    // pcscd has its own copy at fd 3; ours would only keep the socket alive after it dies.
    drop(listener);
    Ok(child)
}

/// Waits until every port has a listening socket that belongs to pcscd (vpcd binds them
/// while pcscd creates its readers, before it serves clients).
fn wait_listening(
    child: &mut Child,
    ports: &[u16],
    timeout: Duration,
    layout: &RigLayout,
) -> Result<(), RigError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(RigError::PcscdExited {
                status: status.to_string(),
                log: layout.pcscd_log(),
            });
        }
        let owned = socket_inodes(child.id());
        let listening = listening_inodes(ports);
        let missing: Vec<u16> = ports
            .iter()
            .zip(&listening)
            .filter(|(_, inode)| !inode.is_some_and(|i| owned.contains(&i)))
            .map(|(p, _)| *p)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(RigError::ReadersNotListening {
                ports: format!("{missing:?}"),
                log: layout.pcscd_log(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The socket inodes among `pid`'s open files.
fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_str()?;
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// For each port, the inode of the IPv4 socket listening on it, from /proc/net/tcp.
fn listening_inodes(ports: &[u16]) -> Vec<Option<u64>> {
    let table = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let mut found = vec![None; ports.len()];
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        let (Some(local), Some(state), Some(inode)) = (fields.get(1), fields.get(3), fields.get(9))
        else {
            continue;
        };
        if *state != "0A" {
            continue;
        }
        let Some(port) = local
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        if let Some(i) = ports.iter().position(|p| *p == port) {
            found[i] = inode.parse().ok();
        }
    }
    found
}

fn in_other_mount_namespace(pid: u32) -> bool {
    match (
        fs::read_link(format!("/proc/{pid}/ns/mnt")),
        fs::read_link("/proc/self/ns/mnt"),
    ) {
        (Ok(theirs), Ok(ours)) => theirs != ours,
        _ => false,
    }
}
