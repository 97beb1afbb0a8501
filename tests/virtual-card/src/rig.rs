//! [`CardRig`]: a private pcscd with virtual readers, and cards inserted into them, owned by
//! one test and torn down when it is dropped.
//!
//! pcscd is a child process tied to a keeper thread (it dies with the thread, and so with
//! the test process, even on SIGKILL); each inserted card is a thread of this process
//! serving its reader connection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::card::{CardConfig, PivCard};
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
}

impl Default for RigOptions {
    fn default() -> Self {
        RigOptions {
            readers: 2,
            trace_apdus: std::env::var_os("VIRTUAL_PIV_TRACE").is_some(),
            pcscd_debug: false,
            start_timeout: Duration::from_secs(10),
        }
    }
}

/// A private pcscd with virtual readers, and the virtual cards inserted into them.
///
/// Dropping it pulls every card and stops pcscd (also while a test panics). The directory
/// keeps `pcscd.log` and the cards' PIN counters; delete it yourself (e.g. with
/// `tempfile::TempDir`).
///
/// `CardRig` is `Send + Sync`: threads of one test can insert and remove cards.
pub struct CardRig {
    layout: RigLayout,
    base_port: u16,
    readers: u8,
    isolated: bool,
    trace: bool,
    keeper: Option<Keeper>,
    cards: Mutex<HashMap<String, InsertedCard>>,
    /// The PIN state file of every card inserted so far, removed ones included.
    pin_files: Mutex<HashMap<String, PathBuf>>,
    /// The directory, when the rig made it: removed after everything stopped.
    owned_dir: Option<tempfile::TempDir>,
}

/// The thread that started pcscd: pcscd dies with it (PR_SET_PDEATHSIG).
struct Keeper {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

struct InsertedCard {
    reader: u8,
    remover: Remover,
    thread: JoinHandle<()>,
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
        };
        let (started_tx, started_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let keeper_layout = layout.clone();
        let thread = std::thread::Builder::new()
            .name("pcscd-keeper".into())
            .spawn(move || match pcscd::start(&keeper_layout, &pcscd_options) {
                Ok(mut started) => {
                    let info = (started.base_port, started.readers, started.isolated);
                    let _ = started_tx.send(Ok(info));
                    // Until the rig is dropped (or the sender is, if the rig's thread dies).
                    let _ = stop_rx.recv();
                    pcscd::stop(&mut started.child);
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
        let (base_port, readers, isolated) = match started {
            Ok(info) => info,
            Err(e) => {
                let _ = thread.join();
                return Err(e);
            }
        };
        std::fs::create_dir_all(layout.cards_dir())
            .map_err(|e| RigError::io(format!("creating {}", layout.cards_dir().display()), e))?;
        Ok(CardRig {
            layout,
            base_port,
            readers,
            isolated,
            trace: options.trace_apdus,
            keeper: Some(Keeper {
                stop: stop_tx,
                thread,
            }),
            cards: Mutex::new(HashMap::new()),
            pin_files: Mutex::new(HashMap::new()),
            owned_dir: None,
        })
    }

    /// The pcscd socket: the value for `PCSCLITE_CSOCK_NAME`.
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

    /// pcscd's log file.
    pub fn pcscd_log(&self) -> PathBuf {
        self.layout.pcscd_log()
    }

    /// Number of readers (0 to `readers() - 1`).
    pub fn readers(&self) -> u8 {
        self.readers
    }

    /// The TCP port of reader `reader` (vpcd listens on all interfaces).
    pub fn reader_port(&self, reader: u8) -> Option<u16> {
        (reader < self.readers).then(|| self.base_port + u16::from(reader))
    }

    /// Whether pcscd runs in its own mount namespace (private `/run/pcscd`, no USB
    /// readers); see [`crate::pcscd`].
    pub fn is_isolated(&self) -> bool {
        self.isolated
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
    /// inserted again, which starts it at 0.
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

    /// Inserts a card with a full configuration (retry limit, GUID, own state file). A
    /// `pin_state_file` of `None` is set to the rig's file for `config.name`.
    pub fn insert_card(&self, reader: u8, mut config: CardConfig) -> Result<(), RigError> {
        let name = config.name.clone();
        if !valid_card_name(&name) {
            return Err(RigError::BadCardName(name));
        }
        let port = self.reader_port(reader).ok_or(RigError::NoSuchReader {
            reader,
            last: self.readers - 1,
        })?;
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
        let mut link = VpcdLink::connect(port, INSERT_TIMEOUT).map_err(|e| {
            RigError::io(
                format!("connecting card {name:?} to reader {reader} (port {port})"),
                e,
            )
        })?;
        let remover = link
            .remover()
            .map_err(|e| RigError::io(format!("card {name:?}"), e))?;
        let (seen_tx, seen_rx) = mpsc::channel();
        let trace = self.trace;
        let thread = std::thread::Builder::new()
            .name(format!("card-{name}"))
            .spawn(move || {
                let label = card.name().to_owned();
                let result = vpcd::serve(&mut link, &mut card, |event| match event {
                    Event::FirstContact => {
                        let _ = seen_tx.send(());
                    }
                    Event::Apdu { command, response } if trace => {
                        eprintln!("[{label}] > {}", vpcd::hex(command));
                        eprintln!("[{label}] < {}", vpcd::hex(response));
                    }
                    _ => {}
                });
                if let Err(e) = result {
                    eprintln!("virtual card {label:?}: connection to the reader failed: {e}");
                }
            })
            .map_err(|e| RigError::io(format!("starting card {name:?}"), e))?;
        if seen_rx.recv_timeout(INSERT_TIMEOUT).is_err() {
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
                thread,
            },
        );
        Ok(())
    }

    /// Pulls card `name` out of its reader. Its PIN counter stays in the rig directory.
    pub fn remove(&self, name: &str) -> Result<(), RigError> {
        let card = self
            .lock_cards()
            .remove(name)
            .ok_or_else(|| RigError::CardNotInserted(name.to_owned()))?;
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
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.stop.send(());
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
            .field("isolated", &self.isolated)
            .field("inserted", &self.inserted())
            .finish()
    }
}
