//! [`CardRig`]: a private pcscd with virtual readers, and cards inserted into them, owned by
//! one test and torn down when it is dropped.
//!
//! pcscd is a child process of a keeper thread (it dies with the thread, and so with the
//! test process, even on SIGKILL); the same thread kills it and starts it again on request
//! ([`CardRig::kill_pcscd`], [`CardRig::start_pcscd`]). Each inserted card is a thread of
//! this process serving its reader connection, and connecting again when the reader comes
//! back after pcscd died ([`vpcd::keep_inserted`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::card::{CardConfig, PivCard};
use crate::keypad::Keypad;
use crate::keys::SlotSpec;
use crate::pcscd::{self, Lifetime, PcscdOptions, RigLayout};
use crate::pin;
use crate::vpcd::{self, Event, Remover, VpcdLink};
use crate::{RigError, valid_card_name};

/// How long a card waits for its reader to take it.
const INSERT_TIMEOUT: Duration = Duration::from_secs(5);

/// Options for [`CardRig::start_with`].
#[derive(Debug, Clone)]
pub struct RigOptions {
    /// Number of virtual readers, numbered from 0 (rounded up to even). Default 2.
    pub readers: u8,
    /// Log every APDU of every card to stderr (shown by `cargo test` for failing tests).
    /// Default: on when the environment variable `VIRTUAL_PIV_TRACE` is set.
    pub trace_apdus: bool,
    /// Run pcscd with `--debug --apdu` into `DIR/pcscd.log`. Default off.
    pub pcscd_debug: bool,
    /// How long pcscd may take to bring up its readers. Default 10 s.
    pub start_timeout: Duration,
    /// Give every reader a PIN pad: the path of the `ifd-pinpad` library (see
    /// [`crate::pinpad_library`]), which pcscd loads in front of vpcd's driver. PINs are then
    /// typed with [`CardRig::keypad_type`]. Default none.
    pub pinpad: Option<PathBuf>,
}

impl Default for RigOptions {
    fn default() -> Self {
        RigOptions {
            readers: 2,
            trace_apdus: std::env::var_os("VIRTUAL_PIV_TRACE").is_some(),
            pcscd_debug: false,
            start_timeout: Duration::from_secs(10),
            pinpad: None,
        }
    }
}

/// A private pcscd with virtual readers, and the virtual cards inserted into them.
///
/// Dropping it pulls every card and stops pcscd (also while a test panics). The directory
/// keeps `pcscd.log` and the cards' PIN state; delete it yourself (e.g. with
/// `tempfile::TempDir`), or use [`CardRig::start_in_tempdir`].
///
/// `CardRig` is `Send + Sync`: threads of one test can insert and remove cards.
pub struct CardRig {
    layout: RigLayout,
    base_port: u16,
    readers: u8,
    trace: bool,
    pcscd: Mutex<PcscdControl>,
    cards: Mutex<HashMap<String, InsertedCard>>,
    /// The PIN state file of every card inserted so far, removed ones included.
    pin_files: Mutex<HashMap<String, PathBuf>>,
    /// The directory, when the rig made it: removed after everything stopped.
    owned_dir: Option<tempfile::TempDir>,
    /// Whether the readers have PIN pads (RigOptions::pinpad).
    pinpad: bool,
}

/// The keeper and what it last reported.
struct PcscdControl {
    keeper: Option<Keeper>,
    /// pcscd's pid; `None` after [`CardRig::kill_pcscd`].
    pid: Option<u32>,
    isolated: bool,
}

/// The thread that starts and kills pcscd: pcscd dies with it (PR_SET_PDEATHSIG), so it
/// lives as long as the rig. Dropping `requests` stops pcscd and ends the thread.
struct Keeper {
    requests: mpsc::Sender<KeeperRequest>,
    thread: JoinHandle<()>,
}

enum KeeperRequest {
    /// Start pcscd on the rig's ports; reply with its pid and isolation.
    Start(mpsc::Sender<Result<(u32, bool), RigError>>),
    /// SIGKILL pcscd and reap it.
    Kill(mpsc::Sender<()>),
}

struct InsertedCard {
    reader: u8,
    remover: Remover,
    watch: Arc<CardWatch>,
    thread: JoinHandle<()>,
}

/// What the rig sees of a card's thread.
#[derive(Default)]
struct CardWatch {
    state: Mutex<WatchState>,
    changed: Condvar,
}

#[derive(Default, Clone, Copy)]
struct WatchState {
    /// Connections on which the reader has spoken: 1 after insertion, one more each time
    /// the reader came back.
    contacts: u64,
    /// The card holds the answer to a private-key operation (op_delay).
    holding: bool,
    /// The card is being pulled: nobody should wait for it any more.
    removed: bool,
}

impl CardWatch {
    fn update(&self, f: impl FnOnce(&mut WatchState)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }

    fn get(&self) -> WatchState {
        *self.lock()
    }

    /// Waits until `done` holds; false at `deadline`.
    fn wait_until(&self, deadline: Instant, done: impl Fn(&WatchState) -> bool) -> bool {
        let mut state = self.lock();
        loop {
            if done(&state) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn lock(&self) -> MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl CardRig {
    /// Starts pcscd with two virtual readers (0 and 1) on free ports. `dir` must exist and
    /// is where the rig keeps its socket, reader configuration, log and PIN counters.
    pub fn start(dir: impl AsRef<Path>) -> Result<CardRig, RigError> {
        Self::start_with(dir, RigOptions::default())
    }

    /// Starts a rig in a new temporary directory under `/tmp` (short enough for the
    /// socket path), removed when the rig is dropped.
    pub fn start_in_tempdir(options: RigOptions) -> Result<CardRig, RigError> {
        let dir = tempfile::Builder::new()
            .prefix("card-rig-")
            .tempdir_in("/tmp")
            .map_err(|e| RigError::io("creating a temporary rig directory in /tmp", e))?;
        let mut rig = Self::start_with(dir.path(), options)?;
        rig.owned_dir = Some(dir);
        Ok(rig)
    }

    /// Starts pcscd with the given options.
    pub fn start_with(dir: impl AsRef<Path>, options: RigOptions) -> Result<CardRig, RigError> {
        let layout = RigLayout::new(dir.as_ref())?;
        let pcscd_options = PcscdOptions {
            readers: options.readers,
            debug: options.pcscd_debug,
            lifetime: Lifetime::TiedToThread,
            timeout: options.start_timeout,
            pinpad: options.pinpad.clone(),
        };
        let (started_tx, started_rx) = mpsc::channel();
        let (requests_tx, requests_rx) = mpsc::channel::<KeeperRequest>();
        let keeper_layout = layout.clone();
        let thread = std::thread::Builder::new()
            .name("pcscd-keeper".into())
            .spawn(move || match pcscd::start(&keeper_layout, &pcscd_options) {
                Ok(started) => {
                    let info = (
                        started.base_port,
                        started.readers,
                        started.child.id(),
                        started.isolated,
                    );
                    let _ = started_tx.send(Ok(info));
                    let mut options = pcscd_options;
                    options.readers = started.readers;
                    keep_pcscd(
                        &keeper_layout,
                        &options,
                        started.base_port,
                        started.child,
                        requests_rx,
                    );
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                }
            })
            .map_err(|e| RigError::io("starting the pcscd keeper thread", e))?;
        let started = started_rx.recv().unwrap_or_else(|_| {
            Err(RigError::io(
                "starting pcscd",
                std::io::Error::other("the keeper thread died"),
            ))
        });
        let (base_port, readers, pid, isolated) = match started {
            Ok(info) => info,
            Err(e) => {
                let _ = thread.join();
                return Err(e);
            }
        };
        let rig = CardRig {
            layout,
            base_port,
            readers,
            trace: options.trace_apdus,
            pcscd: Mutex::new(PcscdControl {
                keeper: Some(Keeper {
                    requests: requests_tx,
                    thread,
                }),
                pid: Some(pid),
                isolated,
            }),
            cards: Mutex::new(HashMap::new()),
            pin_files: Mutex::new(HashMap::new()),
            owned_dir: None,
            pinpad: options.pinpad.is_some(),
        };
        // Dropping the rig on this error stops pcscd again.
        std::fs::create_dir_all(rig.layout.cards_dir()).map_err(|e| {
            RigError::io(format!("creating {}", rig.layout.cards_dir().display()), e)
        })?;
        Ok(rig)
    }

    /// The pcscd socket: the value for `PCSCLITE_CSOCK_NAME`. It stays the same when pcscd
    /// is killed and started again.
    pub fn csock_path(&self) -> PathBuf {
        self.layout.csock()
    }

    /// The environment a PC/SC client needs to use this rig, for `Command::envs`.
    pub fn env(&self) -> [(&'static str, PathBuf); 1] {
        [("PCSCLITE_CSOCK_NAME", self.csock_path())]
    }

    /// The rig directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.layout.dir
    }

    /// pcscd's log file (every pcscd of the rig appends to it).
    pub fn pcscd_log(&self) -> PathBuf {
        self.layout.pcscd_log()
    }

    /// Number of readers (0 to `readers() - 1`).
    pub fn readers(&self) -> u8 {
        self.readers
    }

    /// The TCP port of reader `reader` (vpcd listens on all interfaces). It stays the same
    /// when pcscd is killed and started again.
    pub fn reader_port(&self, reader: u8) -> Option<u16> {
        (reader < self.readers).then(|| self.base_port + u16::from(reader))
    }

    /// Types `pin` on the keypad of reader `reader` and presses OK. The reader takes it when
    /// it next asks for a PIN (or now, if it is asking); see [`CardRig::keypad_enter`].
    pub fn keypad_type(&self, reader: u8, pin: &str) -> Result<(), RigError> {
        self.keypad(reader)?.type_keys(pin)
    }

    /// Presses Cancel on the keypad of reader `reader`.
    pub fn keypad_cancel(&self, reader: u8) -> Result<(), RigError> {
        self.keypad(reader)?.cancel()
    }

    /// Waits until reader `reader` asks for a PIN on its keypad.
    pub fn wait_for_keypad(&self, reader: u8, timeout: Duration) -> Result<(), RigError> {
        self.keypad(reader)?.wait_for_prompt(reader, timeout)
    }

    /// Waits until reader `reader` asks for a PIN, types `pin` and waits until the reader
    /// took it: one PIN entry by a person.
    pub fn keypad_enter(&self, reader: u8, pin: &str, timeout: Duration) -> Result<(), RigError> {
        let keypad = self.keypad(reader)?;
        keypad.wait_for_prompt(reader, timeout)?;
        keypad.type_keys(pin)?;
        keypad.wait_taken(reader, timeout)
    }

    /// Whether reader `reader` is waiting for a PIN on its keypad now.
    pub fn keypad_waiting(&self, reader: u8) -> Result<bool, RigError> {
        Ok(self.keypad(reader)?.prompting())
    }

    fn keypad(&self, reader: u8) -> Result<Keypad, RigError> {
        if !self.pinpad {
            return Err(RigError::NoPinPad);
        }
        let port = self.reader_port(reader).ok_or(RigError::NoSuchReader {
            reader,
            last: self.readers.saturating_sub(1),
        })?;
        Ok(Keypad::new(&self.layout, port))
    }

    /// Whether pcscd runs in its own mount namespace (private `/run/pcscd`, no USB
    /// readers); see [`crate::pcscd`].
    pub fn is_isolated(&self) -> bool {
        self.lock_pcscd().isolated
    }

    /// The pid of the running pcscd; `None` while it is killed (or died by itself).
    pub fn pcscd_pid(&self) -> Option<u32> {
        self.lock_pcscd()
            .pid
            .filter(|pid| pcscd::process_alive(*pid))
    }

    /// Kills the rig's pcscd with SIGKILL, as when it crashes, and returns once it is gone.
    /// Clients get errors (`SCARD_E_NO_SERVICE` and the like); the inserted cards stay in
    /// their readers from the rig's point of view and wait for them to come back
    /// ([`CardRig::start_pcscd`]). Cards can still be inserted and removed meanwhile.
    /// Fails with [`RigError::PcscdNotRunning`] when it is already killed.
    pub fn kill_pcscd(&self) -> Result<(), RigError> {
        let mut control = self.lock_pcscd();
        if control.pid.is_none() {
            return Err(RigError::PcscdNotRunning);
        }
        let keeper = control.keeper.as_ref().ok_or(RigError::PcscdNotRunning)?;
        let (reply_tx, reply_rx) = mpsc::channel();
        keeper
            .requests
            .send(KeeperRequest::Kill(reply_tx))
            .map_err(|_| keeper_died())?;
        reply_rx.recv().map_err(|_| keeper_died())?;
        control.pid = None;
        Ok(())
    }

    /// Starts a new pcscd after [`CardRig::kill_pcscd`], on the same socket path
    /// ([`CardRig::csock_path`]) and the same reader ports, so a running client that set
    /// `PCSCLITE_CSOCK_NAME` once finds it again. Returns once its readers listen and every
    /// inserted card has been taken by its reader again (a card is power-cycled: its PIN
    /// must be verified again). Fails with [`RigError::PcscdAlreadyRunning`] while pcscd
    /// runs, and with [`RigError::CardNotSeen`] when a card does not come back within 5 s.
    pub fn start_pcscd(&self) -> Result<(), RigError> {
        let mut control = self.lock_pcscd();
        if control.pid.is_some_and(pcscd::process_alive) {
            return Err(RigError::PcscdAlreadyRunning);
        }
        // How often each card had been seen, to wait for one more.
        let waiting: Vec<(u8, Arc<CardWatch>, u64)> = self
            .lock_cards()
            .values()
            .map(|c| (c.reader, Arc::clone(&c.watch), c.watch.get().contacts))
            .collect();
        let keeper = control.keeper.as_ref().ok_or_else(keeper_died)?;
        let (reply_tx, reply_rx) = mpsc::channel();
        keeper
            .requests
            .send(KeeperRequest::Start(reply_tx))
            .map_err(|_| keeper_died())?;
        let (pid, isolated) = reply_rx.recv().map_err(|_| keeper_died())??;
        control.pid = Some(pid);
        control.isolated = isolated;
        let deadline = Instant::now() + INSERT_TIMEOUT;
        for (reader, watch, before) in waiting {
            if !watch.wait_until(deadline, |w| w.contacts > before || w.removed) {
                return Err(RigError::CardNotSeen {
                    port: self.base_port + u16::from(reader),
                    seconds: INSERT_TIMEOUT.as_secs(),
                    log: self.layout.pcscd_log(),
                });
            }
        }
        Ok(())
    }

    /// [`CardRig::kill_pcscd`] (if it runs), then [`CardRig::start_pcscd`].
    pub fn restart_pcscd(&self) -> Result<(), RigError> {
        match self.kill_pcscd() {
            Ok(()) | Err(RigError::PcscdNotRunning) => {}
            Err(e) => return Err(e),
        }
        self.start_pcscd()
    }

    /// Where card `name`'s PIN state (counter, VERIFY count) is kept between insertions,
    /// unless [`CardConfig::pin_state_file`] named another file.
    pub fn pin_state_file(&self, name: &str) -> PathBuf {
        self.layout.pin_state(name)
    }

    /// Card `name`'s PIN tries left, from its PIN state file: while it is inserted (up to
    /// date as soon as the application has the card's answer) and after its removal. Fails
    /// with [`RigError::NoPinState`] for a card never inserted into this rig's directory.
    pub fn tries_left(&self, name: &str) -> Result<u8, RigError> {
        Ok(self.read_pin_file(name)?.tries_left)
    }

    /// How many VERIFY commands presenting a PIN card `name` has received since it was
    /// inserted (right, wrong, or on a blocked PIN; not the empty VERIFY that asks for the
    /// status): one per PIN attempt of an application. Read from the PIN state file like
    /// [`CardRig::tries_left`]; after removal it stays at its last value until the card is
    /// inserted again, which starts it at 0. A pcscd restart does not reset it.
    pub fn verify_count(&self, name: &str) -> Result<u32, RigError> {
        Ok(self.read_pin_file(name)?.verifies)
    }

    fn read_pin_file(&self, name: &str) -> Result<pin::PinFile, RigError> {
        let path = self
            .pin_files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.layout.pin_state(name));
        pin::read_state_file(&path)?.ok_or(RigError::NoPinState {
            card: name.to_owned(),
            path,
        })
    }

    /// Waits until card `name` holds the answer to a private-key operation (only a card
    /// inserted with [`CardConfig::op_delay`] holds one), and returns at once if it already
    /// does: the moment to pull it in the middle of a signature. Fails with
    /// [`RigError::NoOperation`] after `timeout`.
    pub fn wait_for_operation(&self, name: &str, timeout: Duration) -> Result<(), RigError> {
        let watch = self
            .lock_cards()
            .get(name)
            .map(|c| Arc::clone(&c.watch))
            .ok_or_else(|| RigError::CardNotInserted(name.to_owned()))?;
        if watch.wait_until(Instant::now() + timeout, |w| w.holding || w.removed) {
            if watch.get().removed {
                return Err(RigError::CardNotInserted(name.to_owned()));
            }
            Ok(())
        } else {
            Err(RigError::NoOperation {
                card: name.to_owned(),
                millis: timeout.as_millis(),
            })
        }
    }

    /// Inserts a card called `name` into reader `reader`, with PIN `pin` (3 tries) and
    /// the given slots, and returns once the reader has taken it (PC/SC then reports it
    /// present). The PIN counter is kept in the rig directory under `name`, so removing and
    /// inserting the same name again keeps it.
    pub fn insert(
        &self,
        name: &str,
        reader: u8,
        pin: &str,
        slots: &[SlotSpec],
    ) -> Result<(), RigError> {
        self.insert_card(reader, CardConfig::new(name, pin, slots.to_vec()))
    }

    /// Inserts a card with a full configuration (retry limit, GUID, own state file, a slow
    /// card's `op_delay`). A `pin_state_file` of `None` is set to the rig's file for
    /// `config.name`. While pcscd is killed the card goes into its reader and the call
    /// returns at once; the next pcscd takes it ([`CardRig::start_pcscd`] waits for that).
    pub fn insert_card(&self, reader: u8, mut config: CardConfig) -> Result<(), RigError> {
        let name = config.name.clone();
        if !valid_card_name(&name) {
            return Err(RigError::BadCardName(name));
        }
        let port = self.reader_port(reader).ok_or(RigError::NoSuchReader {
            reader,
            last: self.readers - 1,
        })?;
        // Held throughout: pcscd is not killed or started while a card goes in.
        let control = self.lock_pcscd();
        let mut cards = self.lock_cards();
        if cards.contains_key(&name) {
            return Err(RigError::CardAlreadyInserted(name));
        }
        if let Some((other, _)) = cards.iter().find(|(_, c)| c.reader == reader) {
            return Err(RigError::ReaderBusy {
                reader,
                card: other.clone(),
            });
        }
        let pin_file = config
            .pin_state_file
            .get_or_insert_with(|| self.layout.pin_state(&name))
            .clone();
        let mut card = PivCard::new(&config)?;
        self.pin_files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.clone(), pin_file);
        let pcscd_runs = control.pid.is_some_and(pcscd::process_alive);
        let first = if pcscd_runs {
            Some(VpcdLink::connect(port, INSERT_TIMEOUT).map_err(|e| {
                RigError::io(
                    format!("connecting card {name:?} to reader {reader} (port {port})"),
                    e,
                )
            })?)
        } else {
            None
        };
        let remover = Remover::new();
        let watch = Arc::new(CardWatch::default());
        let thread = {
            let remover = remover.clone();
            let watch = Arc::clone(&watch);
            let trace = self.trace;
            std::thread::Builder::new()
                .name(format!("card-{name}"))
                .spawn(move || {
                    let label = card.name().to_owned();
                    let result = vpcd::keep_inserted(port, first, &mut card, &remover, |event| {
                        match event {
                            Event::FirstContact => watch.update(|w| w.contacts += 1),
                            Event::Holding(delay) => {
                                watch.update(|w| w.holding = true);
                                if trace {
                                    eprintln!("[{label}] holding the answer for {delay:?}");
                                }
                            }
                            Event::Apdu { command, response } => {
                                watch.update(|w| w.holding = false);
                                if trace {
                                    eprintln!("[{label}] > {}", vpcd::hex(command));
                                    eprintln!("[{label}] < {}", vpcd::hex(response));
                                }
                            }
                            Event::ReaderLost(error) => {
                                watch.update(|w| w.holding = false);
                                if trace {
                                    eprintln!(
                                        "[{label}] the reader went away ({error:?}); waiting for it"
                                    );
                                }
                            }
                            Event::Control(_) => {}
                        }
                    });
                    if let Err(e) = result {
                        eprintln!("virtual card {label:?}: connection to the reader failed: {e}");
                    }
                })
                .map_err(|e| RigError::io(format!("starting card {name:?}"), e))?
        };
        if pcscd_runs && !watch.wait_until(Instant::now() + INSERT_TIMEOUT, |w| w.contacts > 0) {
            remover.pull();
            let _ = thread.join();
            return Err(RigError::CardNotSeen {
                port,
                seconds: INSERT_TIMEOUT.as_secs(),
                log: self.layout.pcscd_log(),
            });
        }
        cards.insert(
            name,
            InsertedCard {
                reader,
                remover,
                watch,
                thread,
            },
        );
        Ok(())
    }

    /// Pulls card `name` out of its reader (also in the middle of an operation, and while
    /// pcscd is killed). Its PIN state stays in the rig directory.
    pub fn remove(&self, name: &str) -> Result<(), RigError> {
        let card = self
            .lock_cards()
            .remove(name)
            .ok_or_else(|| RigError::CardNotInserted(name.to_owned()))?;
        card.watch.update(|w| w.removed = true);
        card.remover.pull();
        let _ = card.thread.join();
        Ok(())
    }

    /// The inserted cards as (name, reader), sorted by reader.
    pub fn inserted(&self) -> Vec<(String, u8)> {
        let mut list: Vec<_> = self
            .lock_cards()
            .iter()
            .map(|(n, c)| (n.clone(), c.reader))
            .collect();
        list.sort_by_key(|(_, r)| *r);
        list
    }

    /// Pulls every card and stops pcscd now (dropping the rig does the same).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let cards: Vec<InsertedCard> = self.lock_cards().drain().map(|(_, c)| c).collect();
        for card in &cards {
            card.remover.pull();
        }
        for card in cards {
            let _ = card.thread.join();
        }
        let keeper = self.lock_pcscd().keeper.take();
        if let Some(keeper) = keeper {
            // Its channel closes: the keeper stops pcscd and ends.
            drop(keeper.requests);
            let _ = keeper.thread.join();
        }
        let _ = std::fs::remove_file(self.layout.csock());
        // Dropping the TempDir removes the directory, now that nothing uses it.
        self.owned_dir = None;
    }

    fn lock_cards(&self) -> MutexGuard<'_, HashMap<String, InsertedCard>> {
        // A panic while holding the lock leaves the map consistent (single inserts/removes).
        self.cards.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_pcscd(&self) -> MutexGuard<'_, PcscdControl> {
        self.pcscd.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The keeper thread's loop: kills and starts pcscd on request, stops it when the rig
/// goes (its channel closes).
fn keep_pcscd(
    layout: &RigLayout,
    options: &PcscdOptions,
    base_port: u16,
    child: Child,
    requests: mpsc::Receiver<KeeperRequest>,
) {
    let mut child = Some(child);
    while let Ok(request) = requests.recv() {
        // One that died by itself is reaped and counts as not running.
        if let Some(c) = &mut child
            && !matches!(c.try_wait(), Ok(None))
        {
            child = None;
        }
        match request {
            KeeperRequest::Kill(reply) => {
                if let Some(mut c) = child.take() {
                    pcscd::kill(&mut c);
                }
                let _ = reply.send(());
            }
            KeeperRequest::Start(reply) => {
                let result = if child.is_some() {
                    Err(RigError::PcscdAlreadyRunning)
                } else {
                    pcscd::start_on(layout, options, base_port).map(|started| {
                        let info = (started.child.id(), started.isolated);
                        child = Some(started.child);
                        info
                    })
                };
                let _ = reply.send(result);
            }
        }
    }
    if let Some(mut c) = child {
        pcscd::stop(&mut c);
    }
}

fn keeper_died() -> RigError {
    RigError::io(
        "controlling pcscd",
        std::io::Error::other("the pcscd keeper thread is gone"),
    )
}

impl Drop for CardRig {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for CardRig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardRig")
            .field("dir", &self.layout.dir)
            .field("base_port", &self.base_port)
            .field("readers", &self.readers)
            .field("pcscd_pid", &self.pcscd_pid())
            .field("isolated", &self.is_isolated())
            .field("inserted", &self.inserted())
            .finish()
    }
}
