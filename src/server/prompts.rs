//! The PIN prompts open on one connection: each waits for the client's `pin` answer, which
//! must name it. Prompt numbers are unique in the agent, so an answer can never reach
//! another connection's prompt.
//!
//! Owns only the registry; asking (the event, the timeout) is [`super::prompter`]'s.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use smime_agent_proto::Pin;
use tokio::sync::oneshot;

/// A person's answer to a PIN prompt.
pub enum PinAnswer {
    Pin(Pin),
    Cancel,
}

static NEXT_PROMPT: AtomicU64 = AtomicU64::new(1);

/// The prompts of one connection that wait for an answer.
#[derive(Default)]
pub struct Prompts(Mutex<HashMap<u64, oneshot::Sender<PinAnswer>>>);

impl Prompts {
    /// Registers a prompt; the receiver gets the client's answer (or is dropped when the
    /// connection ends).
    pub fn open(&self) -> (u64, oneshot::Receiver<PinAnswer>) {
        let id = NEXT_PROMPT.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.0.lock() {
            p.insert(id, tx);
        }
        (id, rx)
    }

    pub fn close(&self, id: u64) {
        if let Ok(mut p) = self.0.lock() {
            p.remove(&id);
        }
    }

    /// Hands `answer` to prompt `id`; false when no such prompt waits.
    pub fn answer(&self, id: u64, answer: PinAnswer) -> bool {
        match self.0.lock().ok().and_then(|mut m| m.remove(&id)) {
            Some(tx) => {
                let _ = tx.send(answer);
                true
            }
            None => false,
        }
    }

    /// Nobody will answer any more (the connection ended): every waiting prompt fails.
    pub fn cancel_all(&self) {
        if let Ok(mut p) = self.0.lock() {
            p.clear();
        }
    }
}
