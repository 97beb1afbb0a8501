//! The soak's bad luck, each on a thread of its own until told to stop: the virtual card
//! pulled and put back, pcscd killed and started again, the disk under the agent's log
//! filled and freed; and what is watched meanwhile (the agent's RSS, the card's PIN
//! counter).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use smime_agent_proto::client::BlockingClient;
use virtual_piv_card::CardRig;

use crate::common::card::CARD_PIN;
use crate::common::card_agent::{alice_slots, card_certs};
use crate::common::hello;

/// The name the card has in the rig.
pub const CARD: &str = "alice";

/// What the chaos threads did and saw.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub card_pulls: u64,
    pub pcscd_restarts: u64,
    pub disk_fills: u64,
    /// PIN VERIFY commands the card received, summed over its insertions.
    pub card_verifies: u64,
    /// The lowest PIN try counter seen.
    pub min_tries_left: u8,
    /// The agent's VmRSS, largest seen (KiB).
    pub peak_rss_kib: u64,
    pub problems: Vec<String>,
}

/// The threads; [`Chaos::stop`] ends them with the card in, pcscd running and the disk
/// with room.
pub struct Chaos {
    stop: Arc<AtomicBool>,
    pub seen: Arc<Mutex<Seen>>,
    threads: Vec<JoinHandle<()>>,
}

fn note(seen: &Mutex<Seen>, f: impl FnOnce(&mut Seen)) {
    f(&mut seen.lock().unwrap_or_else(|e| e.into_inner()));
}

/// Sleeps `d` in small steps; false when told to stop meanwhile.
fn pause(stop: &AtomicBool, d: Duration) -> bool {
    let step = Duration::from_millis(50);
    let mut left = d;
    while !left.is_zero() {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
    !stop.load(Ordering::Relaxed)
}

impl Chaos {
    pub fn new() -> Chaos {
        Chaos {
            stop: Arc::default(),
            seen: Arc::new(Mutex::new(Seen {
                min_tries_left: u8::MAX,
                ..Seen::default()
            })),
            threads: vec![],
        }
    }

    /// Every `period`: the card pulled (for a second) and put back, and every third time
    /// pcscd killed (for a second and a half) and started again instead.
    ///
    /// With a `gate`, each happens between card operations: the gate is taken (no card
    /// request runs; new ones wait), the card pulled or pcscd killed, the agent's store
    /// seen without the card, and the gate given back, so requests meet the card's absence
    /// while none is inside OpenSC. Without one ("wild"), they happen under running
    /// operations, which OpenSC 0.23 does not survive: a card pulled under a call can leave
    /// its card mutex locked for good (every later call into the module hangs), and a pcscd
    /// restart under a call can recurse in `sc_transmit_apdu` until the thread's stack
    /// overflows (the agent aborts). See README, Reliability.
    pub fn card(
        &mut self,
        rig: Arc<CardRig>,
        socket: PathBuf,
        period: Duration,
        gate: Option<Arc<tokio::sync::RwLock<()>>>,
    ) {
        let (stop, seen) = (self.stop.clone(), self.seen.clone());
        self.threads.push(std::thread::spawn(move || {
            let mut cycle = 0u64;
            let problem = |p: String| note(&seen, |s| s.problems.push(p));
            while pause(&stop, period) {
                cycle += 1;
                let turn = gate.as_ref().map(|g| g.blocking_write());
                if cycle.is_multiple_of(3) {
                    if let Err(e) = rig.kill_pcscd() {
                        problem(format!("killing pcscd: {e}"));
                        return;
                    }
                    if turn.is_some() {
                        card_seen(&socket, false).unwrap_or_else(&problem);
                    }
                    drop(turn);
                    std::thread::sleep(Duration::from_millis(1500));
                    match rig.start_pcscd() {
                        Ok(()) => note(&seen, |s| s.pcscd_restarts += 1),
                        Err(e) => {
                            problem(format!("starting pcscd: {e}"));
                            return;
                        }
                    }
                } else {
                    if let Err(e) = rig.remove(CARD) {
                        problem(format!("pulling the card: {e}"));
                        return;
                    }
                    let verifies = rig.verify_count(CARD).unwrap_or(0);
                    note(&seen, |s| {
                        s.card_pulls += 1;
                        s.card_verifies += u64::from(verifies);
                    });
                    if turn.is_some() {
                        card_seen(&socket, false).unwrap_or_else(&problem);
                    }
                    drop(turn);
                    std::thread::sleep(Duration::from_secs(1));
                    if let Err(e) = rig.insert(CARD, 0, CARD_PIN, &alice_slots()) {
                        problem(format!("inserting the card: {e}"));
                        return;
                    }
                }
            }
        }));
    }

    /// Every `period`: the log's file system filled to the last byte and held full for
    /// `period`, then the filler and the log removed.
    pub fn log_disk(&mut self, disk: PathBuf, log: PathBuf, period: Duration) {
        let (stop, seen) = (self.stop.clone(), self.seen.clone());
        self.threads.push(std::thread::spawn(move || {
            let filler = disk.join("filler");
            while pause(&stop, period) {
                if let Err(e) = fill(&filler) {
                    note(&seen, |s| s.problems.push(format!("filling the disk: {e}")));
                    return;
                }
                note(&seen, |s| s.disk_fills += 1);
                let held = pause(&stop, period);
                let _ = std::fs::remove_file(&filler);
                // The agent keeps its descriptor; emptying the file gives the room back.
                if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&log) {
                    let _ = f.set_len(0);
                }
                if !held {
                    return;
                }
            }
        }));
    }

    /// Samples the process's VmRSS and the card's PIN counter every 20 ms.
    pub fn watch(&mut self, pid: u32, rig: Arc<CardRig>) {
        let (stop, seen) = (self.stop.clone(), self.seen.clone());
        self.threads.push(std::thread::spawn(move || {
            while pause(&stop, Duration::from_millis(20)) {
                let rss = rss_kib(pid).unwrap_or(0);
                let tries = rig.tries_left(CARD).ok();
                note(&seen, |s| {
                    s.peak_rss_kib = s.peak_rss_kib.max(rss);
                    if let Some(t) = tries {
                        s.min_tries_left = s.min_tries_left.min(t);
                    }
                });
            }
        }));
    }

    /// Ends every thread; each leaves things as they were (the card is put back by the
    /// caller if it is out).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Chaos {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until the agent's store holds the card's certificates (`present`) or none.
fn card_seen(socket: &Path, present: bool) -> Result<(), String> {
    let mut client = BlockingClient::connect(socket, hello(false))
        .map_err(|e| format!("connecting for status: {e}"))?;
    let start = Instant::now();
    loop {
        let st = client.status().map_err(|e| format!("status: {e}"))?;
        if (card_certs(&st, "Alice") == 2) == present {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "the agent did not see the card {}: {st:?}",
                if present { "come" } else { "go" }
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Writes `path` until the file system has no room left.
fn fill(path: &Path) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    let block = vec![0x5a_u8; 16 * 1024];
    loop {
        match f.write(&block) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => return Err(e),
        }
    }
    // The last partial block's worth, byte by byte, so not even one short line fits.
    while let Ok(1) = f.write(&block[..1]) {}
    Ok(())
}

/// A process's resident set size in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// A small tmpfs for the agent's log, unmounted when dropped (lazily: the agent may still
/// hold its file). `None` when this process may not mount (not root).
pub struct LogDisk {
    pub path: PathBuf,
}

impl LogDisk {
    pub fn mount(path: &Path, size: &str) -> Option<LogDisk> {
        std::fs::create_dir_all(path).ok()?;
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .ok()?;
        st.success().then(|| LogDisk {
            path: path.to_owned(),
        })
    }
}

impl Drop for LogDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
