//! Keeps the session store in step with the tokens present.
//!
//! Owns: turning watcher events and polls into rescans of the modules, applying what a
//! rescan found to the store (a token in: its certificates appear; a token out: they go,
//! its PIN is wiped, its waiting operations end with `token_removed`), telling
//! subscribers, and the explicit `rescan` (which re-initializes modules that cannot report
//! new tokens, once no operation runs on them).
//!
//! Cards are quick to leave and slow to be noticed by some modules, so PC/SC is believed
//! first: when PC/SC reports a reader empty, its tokens leave the store at once, and slots
//! of empty readers count as empty whatever the module still says.

use std::sync::Arc;
use std::time::Duration;

use smime_agent_proto::{Event, ReaderEvent, TokenEvent, TokenRef};
use tokio::sync::{Notify, broadcast, mpsc};
use tracing::{debug, info, warn};

use crate::store::SessionStore;
use crate::tokens::Modules;
use crate::tokens::module::{Changes, ScannedToken, slot_is_reader};
use crate::tokens::watcher::{self, Readers, WatchEvent};

/// How long after a card is inserted its module is asked again, for modules that notice
/// new cards later than PC/SC does (OpenSC: 0.2 to 0.5 s).
const FOLLOW_UPS: [u64; 3] = [150, 500, 1200];

/// The presence machinery of a running agent: what it watches, and where it puts what it
/// finds.
pub struct Presence {
    modules: Arc<Modules>,
    /// Card readers as PC/SC reports them (shared with `status`).
    readers: Arc<Readers>,
    store: Arc<SessionStore>,
    /// Token and reader events for subscribers.
    events: broadcast::Sender<Event>,
    /// `[pin] cache_ttl_secs`, for the tokens a rescan opens.
    pin_ttl: Duration,
    /// One wake-up per module: a rescan is wanted.
    wake: Vec<Arc<Notify>>,
    /// One rescan at a time per module.
    locks: Vec<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Presence")
    }
}

impl Presence {
    pub fn new(
        modules: Arc<Modules>,
        readers: Arc<Readers>,
        store: Arc<SessionStore>,
        events: broadcast::Sender<Event>,
        pin_ttl: Duration,
    ) -> Presence {
        let n = modules.modules.len();
        Presence {
            modules,
            readers,
            store,
            events,
            pin_ttl,
            wake: (0..n).map(|_| Arc::new(Notify::new())).collect(),
            locks: (0..n).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    fn wake_all(&self) {
        for w in &self.wake {
            w.notify_one();
        }
    }
}

/// Starts the watchers and the loops that follow them.
pub fn start(presence: &Arc<Presence>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let modules = &presence.modules.modules;
    // Readers matter when any module may hold smart cards; a software-only setup does not
    // touch PC/SC (which could start the system's pcscd for nothing).
    if modules
        .iter()
        .any(|m| m.config.kind != crate::config::ModuleKind::Software)
    {
        watcher::watch_pcsc(presence.readers.clone(), tx.clone());
    }
    for (i, m) in modules.iter().enumerate() {
        if !m.is_loaded() {
            continue;
        }
        watcher::watch_slots(i, m.clone(), tx.clone());
        tokio::spawn(module_loop(presence.clone(), i));
    }
    tokio::spawn(event_loop(presence.clone(), rx));
    if presence.modules.soft.is_some() {
        tokio::spawn(soft_loop(presence.clone()));
    }
}

/// How often the key file directory is looked at.
const SOFT_POLL: Duration = Duration::from_secs(5);

async fn soft_loop(presence: Arc<Presence>) {
    loop {
        tokio::time::sleep(SOFT_POLL).await;
        rescan_soft(&presence).await;
    }
}

/// Looks at the key file directory now.
pub async fn rescan_soft(presence: &Arc<Presence>) -> (Vec<TokenRef>, Vec<TokenRef>) {
    let a = presence.clone();
    let changes = tokio::task::spawn_blocking(move || {
        a.modules
            .soft
            .as_ref()
            .map(|s| s.rescan())
            .unwrap_or_default()
    })
    .await
    .unwrap_or_default();
    apply(presence, changes)
}

/// Rescans module `index` when woken, and on its poll interval (a slower safety net when
/// the module reports slot events).
async fn module_loop(presence: Arc<Presence>, index: usize) {
    let module = presence.modules.modules[index].clone();
    let wake = presence.wake[index].clone();
    let poll = Duration::from_millis(module.config.poll_interval_ms);
    loop {
        let interval = if module
            .slot_events
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            poll * 10
        } else {
            poll
        };
        tokio::select! {
            _ = wake.notified() => {},
            _ = tokio::time::sleep(interval) => {},
        }
        if let Err(e) = rescan_module(&presence, index, false).await {
            warn!(module = %module.path().display(), error = %e, "rescan failed");
        }
    }
}

async fn event_loop(presence: Arc<Presence>, mut rx: mpsc::UnboundedReceiver<WatchEvent>) {
    while let Some(ev) = rx.recv().await {
        match ev {
            WatchEvent::ReaderAdded(reader) => {
                let _ = presence
                    .events
                    .send(Event::ReaderAdded(ReaderEvent { reader }));
            }
            WatchEvent::ReaderRemoved(reader) => {
                let _ = presence
                    .events
                    .send(Event::ReaderRemoved(ReaderEvent { reader }));
            }
            WatchEvent::CardInserted(reader) => {
                info!(reader = %reader, "card inserted");
                presence.wake_all();
                for ms in FOLLOW_UPS {
                    let a = presence.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        a.wake_all();
                    });
                }
            }
            WatchEvent::CardRemoved(reader) => {
                info!(reader = %reader, "card removed");
                let gone: Vec<String> = presence
                    .store
                    .snapshot()
                    .tokens
                    .iter()
                    .filter(|t| slot_is_reader(&t.token.facts.slot_description, &reader))
                    .map(|t| t.token.token_ref().id.clone())
                    .collect();
                for id in gone {
                    for m in &presence.modules.modules {
                        m.forget_token(&id);
                    }
                    remove_token(&presence, &id);
                }
                presence.wake_all();
            }
            WatchEvent::SlotEvent(index) => {
                if let Some(w) = presence.wake.get(index) {
                    w.notify_one();
                }
            }
        }
    }
}

/// Rescans one module and applies the changes. With `reinit`, first re-initializes the
/// module (for modules without slot events), waiting until no operation runs on it.
pub async fn rescan_module(
    presence: &Arc<Presence>,
    index: usize,
    reinit: bool,
) -> Result<(Vec<TokenRef>, Vec<TokenRef>), String> {
    let module = presence.modules.modules[index].clone();
    let _one = presence.locks[index].lock().await;
    let empty = presence.readers.empty_readers();
    let ttl = presence.pin_ttl;
    let changes: Changes = if reinit {
        // Every token of the module, exclusively: operations in flight finish first, new
        // ones wait until the module is back.
        let snapshot = presence.store.snapshot();
        let mine: Vec<_> = snapshot
            .tokens
            .iter()
            .filter(|t| t.token.facts.module_path == module.config.path)
            .collect();
        let mut guards = Vec::with_capacity(mine.len());
        for t in &mine {
            guards.push(t.token.exclusive().await);
        }
        for t in &mine {
            t.token.reset_sessions();
        }
        let m = module.clone();
        let r = tokio::task::spawn_blocking(move || {
            m.reinitialize()?;
            // Every token is opened again (the old objects hold dead handles).
            for t in m.known_ids() {
                m.forget_token(&t);
            }
            m.rescan(&empty, ttl)
        })
        .await
        .map_err(|e| e.to_string())?;
        drop(guards);
        let mut changes = match r {
            Ok(c) => c,
            Err(e) => {
                // The module is down: its tokens cannot work (their sessions died with the
                // module), so they leave the store now and come back with it.
                let gone = Changes {
                    removed: mine
                        .iter()
                        .map(|t| t.token.token_ref().id.clone())
                        .collect(),
                    ..Default::default()
                };
                apply(presence, gone);
                return Err(e);
            }
        };
        // Tokens that came back are replaced, not removed and re-added for subscribers.
        let back: Vec<String> = changes
            .inserted
            .iter()
            .map(|t| t.token.token_ref().id.clone())
            .collect();
        for t in &mine {
            let id = &t.token.token_ref().id;
            if !back.contains(id) && !changes.removed.contains(id) {
                changes.removed.push(id.clone());
            }
        }
        changes
    } else {
        let m = module.clone();
        tokio::task::spawn_blocking(move || m.rescan(&empty, ttl))
            .await
            .map_err(|e| e.to_string())??
    };
    Ok(apply(presence, changes))
}

/// Puts a rescan's findings into the store and tells subscribers.
fn apply(presence: &Presence, changes: Changes) -> (Vec<TokenRef>, Vec<TokenRef>) {
    let mut removed = vec![];
    let inserted_ids: Vec<String> = changes
        .inserted
        .iter()
        .map(|t| t.token.token_ref().id.clone())
        .collect();
    for id in &changes.removed {
        if inserted_ids.contains(id) {
            // Re-opened (in another slot, or after a re-initialization): the new object
            // replaces the old one below, with no news for subscribers.
            continue;
        }
        if let Some(r) = remove_token(presence, id) {
            removed.push(r);
        }
    }
    let mut inserted = vec![];
    for t in changes.inserted {
        inserted.extend(insert_token(presence, t));
    }
    (inserted, removed)
}

/// Puts a token in the store and tells subscribers; a token that replaces its own old
/// object (re-opened after its module was re-initialized) is no news: no event, and it is
/// not returned.
fn insert_token(presence: &Presence, t: ScannedToken) -> Option<TokenRef> {
    let facts = t.token.facts.clone();
    let count = t.certs.len();
    let replaced = presence.store.insert(t.token, t.certs);
    if let Some(old) = replaced {
        old.token.mark_removed();
        debug!(token = %facts.token.label, serial = %facts.token.serial, "token re-opened");
        return None;
    }
    info!(
        token = %facts.token.label,
        serial = %facts.token.serial,
        hardware = facts.hardware,
        certificates = count,
        "token inserted"
    );
    let _ = presence.events.send(Event::TokenInserted(TokenEvent {
        token: facts.token.clone(),
        hardware: facts.hardware,
        removable: facts.removable,
        slot: facts.slot_description.clone(),
        certificates: count,
    }));
    Some(facts.token)
}

/// Takes a token out of the store: its PIN is wiped, its sessions closed, and operations
/// waiting on it end with `token_removed`. Returns it if it was there.
pub fn remove_token(presence: &Presence, id: &str) -> Option<TokenRef> {
    let entry = presence.store.remove(id)?;
    entry.token.mark_removed();
    let facts = &entry.token.facts;
    info!(token = %facts.token.label, serial = %facts.token.serial, "token removed");
    let _ = presence.events.send(Event::TokenRemoved(TokenEvent {
        token: facts.token.clone(),
        hardware: facts.hardware,
        removable: facts.removable,
        slot: facts.slot_description.clone(),
        certificates: entry.certs.len(),
    }));
    Some(facts.token.clone())
}
