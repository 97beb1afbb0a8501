//! What one connection's reader and its request tasks share: the agent's services, who the
//! client is, its `hello`, its open PIN prompts, and the queue to its writer.

use std::sync::{Arc, OnceLock};

use serde::Serialize;
use smime_agent_proto::codec::encode_frame;
use smime_agent_proto::{Event, HelloParams};
use tokio::sync::mpsc;

use super::prompts::Prompts;
use crate::ops::{Current, Peer, Services};

/// State shared by a connection's reader and its request tasks.
pub struct Session {
    /// The agent's services as of the last configuration load (see [`Current`]).
    pub current: Arc<Current>,
    pub peer: Peer,
    /// Frames for the writer task.
    out: mpsc::Sender<Vec<u8>>,
    /// Set once by `hello`; until then only `hello` is served.
    pub hello: OnceLock<HelloParams>,
    pub prompts: Prompts,
}

impl Session {
    pub fn new(current: Arc<Current>, peer: Peer, out: mpsc::Sender<Vec<u8>>) -> Session {
        Session {
            current,
            peer,
            out,
            hello: OnceLock::new(),
            prompts: Prompts::default(),
        }
    }

    /// The services as configured now.
    pub fn services(&self) -> Arc<Services> {
        self.current.get()
    }

    /// Queues a frame for the writer.
    pub async fn send<T: Serialize>(&self, msg: &T) {
        let _ = self.out.send(encode_frame(msg)).await;
    }

    pub async fn send_event(&self, ev: Event) {
        self.send(&ev).await;
    }
}
