//! How many requests of one connection run at once, and who waits for a turn.
//!
//! The reader never waits here: it must go on reading, or the `pin` answer that running
//! requests wait for would sit unread behind a waiting request. So a request that finds no
//! free turn is given a place in line (bounded by count and by bytes) and waits in its own
//! task; when the line is full it is refused at once.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// Requests of one connection running at once; more wait for a turn.
pub const MAX_IN_FLIGHT: usize = 64;
/// Requests that may wait for a turn (their bytes are bounded by the frame limit).
const MAX_WAITING: usize = 4096;

/// The turns of one connection.
#[derive(Clone)]
pub struct Admission {
    in_flight: Arc<Semaphore>,
    /// Requests waiting for a turn: how many, and their frames' bytes.
    waiting: Arc<Mutex<(usize, usize)>>,
    /// The most bytes the waiting requests may hold together.
    max_waiting_bytes: usize,
}

/// Why a request was not admitted.
pub enum Refusal {
    /// Too many run and too many wait: `limit_exceeded`.
    Full,
    /// The connection is closing.
    Closed,
}

/// A request's turn: now, or once a running one ends.
pub enum Turn {
    Now(OwnedSemaphorePermit),
    Later { admission: Admission, size: usize },
}

impl Admission {
    pub fn new(max_waiting_bytes: usize) -> Admission {
        Admission {
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            waiting: Arc::new(Mutex::new((0, 0))),
            max_waiting_bytes,
        }
    }

    /// A turn for a request of `size` bytes, without waiting.
    pub fn admit(&self, size: usize) -> Result<Turn, Refusal> {
        match self.in_flight.clone().try_acquire_owned() {
            Ok(p) => Ok(Turn::Now(p)),
            Err(TryAcquireError::Closed) => Err(Refusal::Closed),
            Err(TryAcquireError::NoPermits) => {
                let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
                if w.0 >= MAX_WAITING || w.1 + size > self.max_waiting_bytes {
                    return Err(Refusal::Full);
                }
                *w = (w.0 + 1, w.1 + size);
                Ok(Turn::Later {
                    admission: self.clone(),
                    size,
                })
            }
        }
    }
}

impl Turn {
    /// Waits for the turn (in the request's own task). None when the connection closed.
    pub async fn wait(self) -> Option<OwnedSemaphorePermit> {
        match self {
            Turn::Now(p) => Some(p),
            Turn::Later { admission, size } => {
                let p = admission.in_flight.clone().acquire_owned().await;
                if let Ok(mut w) = admission.waiting.lock() {
                    *w = (w.0 - 1, w.1 - size);
                }
                p.ok()
            }
        }
    }
}
