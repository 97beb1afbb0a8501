//! What an op is handed: the agent's [`Services`], and the request's own context (who
//! asked, how to prompt for a PIN, the request id, work for after the response).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use smime_agent_proto::{Event, RequestId};
use tokio::sync::broadcast;

use crate::config::Config;
use crate::contacts::Contacts;
use crate::directory::Directory;
use crate::presence::Presence;
use crate::store::SessionStore;
use crate::tokens::watcher::Readers;
use crate::tokens::{Modules, PinPrompter};
use crate::trust::Trust;

/// What the ops work with: the agent's parts, wired up once at start-up (`agent.rs`) and
/// shared by every request. Nothing below the ops sees it: presence, tokens, trust and the
/// store each have only their own handles.
#[derive(Debug)]
pub struct Services {
    pub config: Config,
    /// The configuration file, for `status`.
    pub config_path: Option<PathBuf>,
    /// The certificates of the keys present now.
    pub store: Arc<SessionStore>,
    pub modules: Arc<Modules>,
    /// Card readers as PC/SC reports them, for `status`.
    pub readers: Arc<Readers>,
    /// For `rescan`: the same machinery that follows the readers and slots.
    pub presence: Arc<Presence>,
    /// Trust anchors, CRL cache and validation.
    pub trust: Arc<Trust>,
    /// Correspondents' certificates.
    pub contacts: Contacts,
    /// The LDAP servers of `[directory]`, asked after the request and the contacts; `None`
    /// when none is configured.
    pub directory: Option<Arc<Directory>>,
    /// Token, reader and validation events for subscribers.
    pub events: broadcast::Sender<Event>,
    pub started: Instant,
    pub socket_path: PathBuf,
}

/// The agent's services as of the last configuration load. A reload builds new ones
/// around the same tokens, store, modules and subscribers and swaps them in: each request
/// takes the current ones when it starts and keeps them to its end.
#[derive(Debug)]
pub struct Current(std::sync::RwLock<Arc<Services>>);

impl Current {
    pub fn new(services: Arc<Services>) -> Current {
        Current(std::sync::RwLock::new(services))
    }

    pub fn get(&self) -> Arc<Services> {
        match self.0.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set(&self, services: Arc<Services>) {
        match self.0.write() {
            Ok(mut s) => *s = services,
            Err(poisoned) => *poisoned.into_inner() = services,
        }
    }
}

/// Who is on the other end of a connection: the process named in every audit line.
#[derive(Debug, Clone)]
pub struct Peer {
    pub pid: Option<u32>,
    pub exe: Option<PathBuf>,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.pid, &self.exe) {
            (Some(pid), Some(exe)) => write!(f, "pid {pid} ({})", exe.display()),
            (Some(pid), None) => write!(f, "pid {pid}"),
            _ => write!(f, "unknown process"),
        }
    }
}

/// What an op needs from the request it serves.
pub struct OpContext<'a> {
    pub services: &'a Arc<Services>,
    /// Where `reload` swaps in new services.
    pub current: &'a Current,
    pub peer: &'a Peer,
    pub prompter: &'a dyn PinPrompter,
    /// The request's id, for events about it.
    pub request: &'a RequestId,
    /// Work to run after the response is sent, whose event follows it.
    pub after_response: &'a AfterResponse,
}

/// Work an op leaves for after its response: the connection runs it once the response is
/// queued and sends the event it yields (`verify` with `validation: event` sends
/// `validation_done` this way, so the event never overtakes the response).
#[derive(Default)]
pub struct AfterResponse(std::sync::Mutex<Option<FollowUp>>);

pub type FollowUp = Pin<Box<dyn Future<Output = Event> + Send + 'static>>;

impl AfterResponse {
    pub fn set(&self, f: FollowUp) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(f);
        }
    }

    pub fn take(&self) -> Option<FollowUp> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}
