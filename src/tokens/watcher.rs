//! Watching card readers (PC/SC) and PKCS#11 slots, on threads of their own.
//!
//! Owns: the PC/SC watch (readers attached and detached through `\\?PnP?\Notification`,
//! cards inserted and removed in every reader, by `SCardGetStatusChange`), surviving pcscd
//! being absent, dying or restarting (retry with backoff, keep what is known); and one
//! thread per module that waits in `C_WaitForSlotEvent` where the module supports it.
//! Both only report [`WatchEvent`]s; deciding what changed in the store is `presence`'s job.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cryptoki::error::{Error as CkError, RvError};
use pcsc::{Context, Error as PcscError, PNP_NOTIFICATION, ReaderState, Scope, State};
use smime_agent_proto::{ReaderInfo, ReadersStatus};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, info, warn};

use super::Module;

/// What the watchers saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    ReaderAdded(String),
    ReaderRemoved(String),
    CardInserted(String),
    CardRemoved(String),
    /// A module reported a slot event.
    SlotEvent(usize),
}

/// The readers PC/SC reports, for `status` and for telling modules which readers are empty.
#[derive(Debug, Default)]
pub struct Readers {
    state: Mutex<ReadersInner>,
}

#[derive(Debug, Default)]
struct ReadersInner {
    watched: bool,
    error: Option<String>,
    /// Reader name -> a card is present.
    readers: BTreeMap<String, bool>,
}

impl Readers {
    pub fn status(&self) -> ReadersStatus {
        match self.state.lock() {
            Ok(s) => ReadersStatus {
                watched: s.watched,
                error: s.error.clone(),
                readers: s
                    .readers
                    .iter()
                    .map(|(name, present)| ReaderInfo {
                        name: name.clone(),
                        card_present: *present,
                    })
                    .collect(),
            },
            Err(_) => ReadersStatus::default(),
        }
    }

    /// Readers known to hold no card.
    pub fn empty_readers(&self) -> std::collections::HashSet<String> {
        match self.state.lock() {
            Ok(s) => s
                .readers
                .iter()
                .filter(|(_, present)| !**present)
                .map(|(n, _)| n.clone())
                .collect(),
            Err(_) => Default::default(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut ReadersInner)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Starts the PC/SC watch thread. It runs for the life of the process.
pub fn watch_pcsc(readers: Arc<Readers>, events: UnboundedSender<WatchEvent>) {
    readers.update(|s| s.watched = true);
    let spawned = std::thread::Builder::new()
        .name("pcsc-watch".into())
        .spawn(move || pcsc_loop(&readers, &events));
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the PC/SC watcher");
    }
}

fn pcsc_loop(readers: &Readers, events: &UnboundedSender<WatchEvent>) {
    let mut backoff = BACKOFF_MIN;
    let mut logged_down = false;
    loop {
        let ctx = match Context::establish(Scope::User) {
            Ok(c) => c,
            Err(e) => {
                if !logged_down {
                    warn!(error = %e, "PC/SC is not available (is pcscd running?); retrying");
                    logged_down = true;
                }
                readers.update(|s| s.error = Some(format!("PC/SC unavailable: {e}")));
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        if logged_down {
            info!("PC/SC is available again");
            logged_down = false;
        }
        backoff = BACKOFF_MIN;
        readers.update(|s| s.error = None);
        if events.is_closed() {
            return;
        }
        let why = watch_context(&ctx, readers, events);
        debug!(error = %why, "PC/SC context lost");
        // pcscd went away: its readers and cards are gone with it.
        let gone: Vec<(String, bool)> = match readers.state.lock() {
            Ok(mut s) => std::mem::take(&mut s.readers).into_iter().collect(),
            Err(_) => vec![],
        };
        for (name, present) in gone {
            if present {
                let _ = events.send(WatchEvent::CardRemoved(name.clone()));
            }
            let _ = events.send(WatchEvent::ReaderRemoved(name));
        }
        readers.update(|s| s.error = Some(format!("PC/SC connection lost: {why}")));
        std::thread::sleep(BACKOFF_MIN);
    }
}

/// Follows readers and cards on one PC/SC context until it fails; returns why.
fn watch_context(
    ctx: &Context,
    readers: &Readers,
    events: &UnboundedSender<WatchEvent>,
) -> PcscError {
    let mut states: Vec<ReaderState> = vec![ReaderState::new(PNP_NOTIFICATION(), State::UNAWARE)];
    loop {
        // Reader list: add new readers, drop detached ones.
        let names = match ctx.list_readers_owned() {
            Ok(n) => n,
            Err(PcscError::NoReadersAvailable) => vec![],
            Err(e) => return e,
        };
        sync_reader_list(&mut states, &names, readers, events);

        match ctx.get_status_change(Duration::from_secs(2), &mut states) {
            Ok(()) | Err(PcscError::Timeout) => {}
            // A reader vanished between listing and waiting: list again.
            Err(PcscError::UnknownReader) => continue,
            Err(e) => return e,
        }
        for rs in states.iter_mut().skip(1) {
            let name = rs.name().to_string_lossy().into_owned();
            let ev = rs.event_state();
            if ev.intersects(State::UNKNOWN | State::IGNORE) {
                continue;
            }
            let present = ev.contains(State::PRESENT) && !ev.contains(State::MUTE);
            let was = readers
                .state
                .lock()
                .ok()
                .and_then(|s| s.readers.get(&name).copied())
                .unwrap_or(false);
            if present != was {
                readers.update(|s| {
                    s.readers.insert(name.clone(), present);
                });
                let e = if present {
                    WatchEvent::CardInserted(name)
                } else {
                    WatchEvent::CardRemoved(name)
                };
                debug!(event = ?e, "PC/SC");
                if events.send(e).is_err() {
                    return PcscError::Cancelled;
                }
            }
            rs.sync_current_state();
        }
        states[0].sync_current_state();
    }
}

fn sync_reader_list(
    states: &mut Vec<ReaderState>,
    names: &[CString],
    readers: &Readers,
    events: &UnboundedSender<WatchEvent>,
) {
    let before: Vec<String> = states
        .iter()
        .skip(1)
        .map(|s| s.name().to_string_lossy().into_owned())
        .collect();
    let now: Vec<String> = names
        .iter()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    states.retain(|s| {
        let n = s.name().to_string_lossy();
        s.name() == PNP_NOTIFICATION() || now.iter().any(|x| *x == n)
    });
    for gone in before.iter().filter(|b| !now.contains(b)) {
        let had_card = readers
            .state
            .lock()
            .ok()
            .and_then(|mut s| s.readers.remove(gone))
            .unwrap_or(false);
        info!(reader = %gone, "reader removed");
        if had_card {
            let _ = events.send(WatchEvent::CardRemoved(gone.clone()));
        }
        let _ = events.send(WatchEvent::ReaderRemoved(gone.clone()));
    }
    for (name, cname) in now.iter().zip(names) {
        if !before.contains(name) {
            info!(reader = %name, "reader added");
            readers.update(|s| {
                s.readers.entry(name.clone()).or_insert(false);
            });
            states.push(ReaderState::new(cname.clone(), State::UNAWARE));
            let _ = events.send(WatchEvent::ReaderAdded(name.clone()));
        }
    }
}

/// Starts a thread that waits for the module's slot events, if the module has them.
/// Modules without (SoftHSM) answer CKR_FUNCTION_NOT_SUPPORTED at once; they are polled.
pub fn watch_slots(index: usize, module: Arc<Module>, events: UnboundedSender<WatchEvent>) {
    let Some(pkcs11) = module.pkcs11().cloned() else {
        return;
    };
    let name = format!("slot-watch-{index}");
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let mut backoff = BACKOFF_MIN;
        loop {
            match pkcs11.wait_for_slot_event() {
                Ok(_) => {
                    module.slot_events.store(true, Ordering::Relaxed);
                    backoff = BACKOFF_MIN;
                    if events.send(WatchEvent::SlotEvent(index)).is_err() {
                        return;
                    }
                }
                Err(CkError::Pkcs11(RvError::FunctionNotSupported, _)) => {
                    debug!(module = %module.path().display(), "no slot events; polling");
                    return;
                }
                Err(CkError::Pkcs11(RvError::CryptokiNotInitialized, _)) => {
                    // Re-initialized by a rescan: wait for it to come back.
                    std::thread::sleep(BACKOFF_MIN);
                }
                Err(e) => {
                    debug!(module = %module.path().display(), error = %e, "C_WaitForSlotEvent failed; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    if events.is_closed() {
                        return;
                    }
                }
            }
        }
    });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start a slot watcher");
    }
}
