//! The module's side of the agent's socket: a small pool of connections (so that several
//! threads of the host program sign at once), and a watcher thread that follows the agent's
//! token events and tells the module when to look at the tokens again.
//!
//! Owns the connections; knows nothing of slots or objects.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smime_agent_proto::client::{BlockingClient, ClientError, EventReply};
use smime_agent_proto::{
    Event, HelloParams, KeysParams, KeysResult, Op, PROTOCOL_VERSION, PinentryEnv,
};

/// Connections kept for reuse; more may be open while many threads work at once.
const POOL: usize = 8;

/// How often the watcher looks at its stop flag while no event comes.
const WATCH_TICK: Duration = Duration::from_millis(200);

/// The agent, as the module reaches it.
pub struct Agent {
    socket: PathBuf,
    idle: Mutex<Vec<BlockingClient>>,
}

impl Agent {
    /// The agent named by `SMIME_AGENT_SOCK`, else at its default socket: the same
    /// discovery as the command line's.
    pub fn from_env() -> Agent {
        let socket = std::env::var_os(smime_agent_proto::SOCKET_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(smime_agent_proto::paths::default_socket_path);
        Agent {
            socket,
            idle: Mutex::new(vec![]),
        }
    }

    fn connect(&self) -> Result<BlockingClient, ClientError> {
        BlockingClient::connect(
            &self.socket,
            HelloParams {
                version: PROTOCOL_VERSION,
                client: Some(format!(
                    "smime-agent-pkcs11 {} in {}",
                    env!("CARGO_PKG_VERSION"),
                    std::env::current_exe()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|_| "an unknown program".into())
                )),
                // A host program cannot answer prompts: the agent asks by its own source.
                pin_prompt: false,
                pin_from_client: false,
                pinentry: Some(PinentryEnv::of_this_process()),
            },
        )
    }

    /// Runs `op` on a pooled connection (a new one if none is idle). Only a pooled
    /// connection is tried twice: one the agent closed since (it restarted) fails at once,
    /// and the op goes on a new one; a new connection that fails is the answer.
    pub fn call(&self, op: Op) -> Result<serde_json::Value, ClientError> {
        let pooled = self.idle.lock().ok().and_then(|mut p| p.pop());
        if let Some(mut client) = pooled {
            match client.call(op.clone(), &mut |_| EventReply::Ignore) {
                Err(ClientError::Io(_) | ClientError::Closed) => {}
                r => {
                    self.give_back(client, &r);
                    return r;
                }
            }
        }
        let mut client = self.connect()?;
        let r = client.call(op, &mut |_| EventReply::Ignore);
        self.give_back(client, &r);
        r
    }

    fn give_back(&self, client: BlockingClient, r: &Result<serde_json::Value, ClientError>) {
        if matches!(r, Err(ClientError::Io(_) | ClientError::Closed)) {
            return;
        }
        if let Ok(mut p) = self.idle.lock()
            && p.len() < POOL
        {
            p.push(client);
        }
    }

    pub fn keys(&self) -> Result<KeysResult, ClientError> {
        let v = self.call(Op::Keys(KeysParams {}))?;
        serde_json::from_value(v).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Closes the idle connections.
    pub fn close(&self) {
        if let Ok(mut p) = self.idle.lock() {
            p.clear();
        }
    }

    /// Starts the watcher: `changed` runs after every token event (and once the agent is
    /// reached again after it was away), until `stop` is set.
    pub fn watch(
        self: &Arc<Self>,
        stop: Arc<AtomicBool>,
        changed: impl Fn() + Send + 'static,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let agent = self.clone();
        std::thread::Builder::new()
            .name("smime-agent-pkcs11 events".into())
            .spawn(move || {
                let mut backoff = WATCH_TICK;
                while !stop.load(Ordering::SeqCst) {
                    let Ok(mut c) = agent.connect() else {
                        // No agent now: try again, less often the longer it is away.
                        sleep_unless(&stop, backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    };
                    backoff = WATCH_TICK;
                    if c.subscribe().is_err() || c.set_read_timeout(Some(WATCH_TICK)).is_err() {
                        continue;
                    }
                    // Reached (again): what it has may differ from what the module knew.
                    changed();
                    while !stop.load(Ordering::SeqCst) {
                        match c.next_event() {
                            Ok(Event::TokenInserted(_) | Event::TokenRemoved(_)) => changed(),
                            Ok(_) => {}
                            Err(ClientError::Io(e))
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => {
                                // The agent went away: its tokens with it.
                                changed();
                                break;
                            }
                        }
                    }
                }
            })
    }
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = std::time::Instant::now() + d;
    while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < end {
        std::thread::sleep(WATCH_TICK.min(end - std::time::Instant::now()));
    }
}
