//! One client connection: frames in, requests dispatched concurrently, frames out.
//!
//! Owns: the connection's protocol state (hello done, the client's PIN abilities), its
//! waiting PIN prompts, and the rule that every request gets exactly one response. A
//! malformed frame is answered and the connection goes on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use interprocess::local_socket::tokio::Stream;
use serde::Serialize;
use smime_agent_proto::codec::{Frame, FrameReader, encode_frame};
use smime_agent_proto::{
    ErrorBody, ErrorCode, Event, HelloParams, HelloResult, MAX_ID_STRING_LEN, Op, Outcome,
    PROTOCOL_VERSION, Pin, PinParams, Request, RequestId, Response,
};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::{Semaphore, TryAcquireError, mpsc, oneshot, watch};
use tracing::{debug, info, warn};
use zeroize::Zeroize;

use super::prompter::RequestPrompter;
use crate::ops::Peer;
use crate::ops::Services;
use crate::ops::{self, AfterResponse, OpContext};

/// Requests of one connection running at once; more wait for a turn. The reader never
/// waits for one: it must go on reading, or the `pin` answer that running requests wait
/// for would sit unread behind a waiting request.
const MAX_IN_FLIGHT: usize = 64;
/// Requests that may wait for a turn, and their bytes at most (more is `limit_exceeded`).
const MAX_WAITING: usize = 4096;

/// When a request runs: now, or once a running one ends (it waits with its frame's size).
enum Turn {
    Now(tokio::sync::OwnedSemaphorePermit),
    Later(usize),
}

/// A person's answer to a PIN prompt.
pub enum PinAnswer {
    Pin(Pin),
    Cancel,
}

/// State shared by the connection's reader and its request tasks.
pub struct Conn {
    pub services: Arc<Services>,
    pub peer: Peer,
    out: mpsc::Sender<Vec<u8>>,
    pub hello: OnceLock<HelloParams>,
    prompts: Mutex<HashMap<u64, oneshot::Sender<PinAnswer>>>,
}

/// Prompt numbers are unique in the agent, so an answer can never reach another
/// connection's prompt.
static NEXT_PROMPT: AtomicU64 = AtomicU64::new(1);

impl Conn {
    /// Queues a frame for the writer.
    pub async fn send<T: Serialize>(&self, msg: &T) {
        let _ = self.out.send(encode_frame(msg)).await;
    }

    pub async fn send_event(&self, ev: Event) {
        self.send(&ev).await;
    }

    /// Registers a prompt; the receiver gets the client's answer (or is dropped when the
    /// connection ends).
    pub fn open_prompt(&self) -> (u64, oneshot::Receiver<PinAnswer>) {
        let id = NEXT_PROMPT.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.prompts.lock() {
            p.insert(id, tx);
        }
        (id, rx)
    }

    pub fn close_prompt(&self, id: u64) {
        if let Ok(mut p) = self.prompts.lock() {
            p.remove(&id);
        }
    }

    fn cancel_all_prompts(&self) {
        if let Ok(mut p) = self.prompts.lock() {
            p.clear();
        }
    }
}

fn error_response(id: Option<RequestId>, body: ErrorBody) -> Response {
    Response {
        id,
        outcome: Outcome::Error(body),
    }
}

/// Serves one connection until the client hangs up or the agent shuts down.
pub async fn handle(
    services: Arc<Services>,
    stream: Stream,
    peer: Peer,
    mut shutdown: watch::Receiver<bool>,
) {
    debug!(peer = %peer, "connection opened");
    let max = services.config.agent.max_frame_bytes;
    let (rx, mut tx) = tokio::io::split(stream);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
    let writer = tokio::spawn(async move {
        let mut broken = false;
        while let Some(frame) = out_rx.recv().await {
            // After a write error keep draining, so request tasks never block on a dead
            // client.
            if !broken && (tx.write_all(&frame).await.is_err() || tx.flush().await.is_err()) {
                broken = true;
            }
        }
        let _ = tx.shutdown().await;
    });
    let conn = Arc::new(Conn {
        services,
        peer,
        out: out_tx,
        hello: OnceLock::new(),
        prompts: Mutex::new(HashMap::new()),
    });
    let mut reader = FrameReader::new(BufReader::new(rx), max);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // Requests waiting for a turn: how many, and their frames' bytes.
    let waiting = Arc::new(Mutex::new((0usize, 0usize)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut subscription: Option<tokio::task::JoinHandle<()>> = None;

    loop {
        let frame = tokio::select! {
            f = reader.next_frame() => f,
            _ = shutdown.changed() => break,
        };
        let line = match frame {
            Ok(Some(Frame::Line(l))) => l,
            Ok(Some(Frame::TooLarge { id, size })) => {
                warn!(peer = %conn.peer, size, "frame too large");
                let mut body = ErrorBody::new(
                    ErrorCode::FrameTooLarge,
                    format!(
                        "the request is {size} bytes or more; the agent reads at most {max} (max_frame_bytes)"
                    ),
                );
                body.max_frame_bytes = Some(max);
                conn.send(&error_response(id, body)).await;
                continue;
            }
            Ok(None) => break,
            Err(e) => {
                debug!(peer = %conn.peer, error = %e, "read failed");
                break;
            }
        };
        let size = line.len();
        let req = parse_request(line);
        let req = match req {
            Ok(r) => r,
            Err(resp) => {
                conn.send(&*resp).await;
                continue;
            }
        };
        match req.op {
            Op::Hello(h) => {
                let resp = hello(&conn, req.id, h);
                conn.send(&resp).await;
            }
            _ if conn.hello.get().is_none() => {
                conn.send(&error_response(
                    Some(req.id),
                    ErrorBody::new(ErrorCode::BadRequest, "send hello first"),
                ))
                .await;
            }
            Op::Pin(p) => {
                let resp = answer_prompt(&conn, req.id, p);
                conn.send(&resp).await;
            }
            Op::Subscribe(_) => {
                // Events start after the response, so a client sees nothing before it.
                let rx = conn.services.events.subscribe();
                conn.send(&Response {
                    id: Some(req.id),
                    outcome: Outcome::Ok(serde_json::json!({})),
                })
                .await;
                if subscription.is_none() {
                    subscription = Some(tokio::spawn(forward_events(conn.clone(), rx)));
                    debug!(peer = %conn.peer, "subscribed to events");
                }
            }
            op => {
                let turn = match in_flight.clone().try_acquire_owned() {
                    Ok(p) => Turn::Now(p),
                    Err(TryAcquireError::Closed) => break,
                    Err(TryAcquireError::NoPermits) => {
                        let w = waiting.lock().map(|w| *w).unwrap_or((0, 0));
                        if w.0 >= MAX_WAITING || w.1 + size > max as usize {
                            conn.send(&error_response(
                                Some(req.id),
                                ErrorBody::new(
                                    ErrorCode::LimitExceeded,
                                    format!(
                                        "{MAX_IN_FLIGHT} requests run and too many wait on this \
                                         connection; wait for some answers, or open another one"
                                    ),
                                ),
                            ))
                            .await;
                            continue;
                        }
                        if let Ok(mut w) = waiting.lock() {
                            *w = (w.0 + 1, w.1 + size);
                        }
                        Turn::Later(size)
                    }
                };
                let (in_flight, waiting) = (in_flight.clone(), waiting.clone());
                let conn = conn.clone();
                let id = req.id;
                tasks.spawn(async move {
                    let permit = match turn {
                        Turn::Now(p) => p,
                        Turn::Later(size) => {
                            let p = in_flight.acquire_owned().await;
                            if let Ok(mut w) = waiting.lock() {
                                *w = (w.0 - 1, w.1 - size);
                            }
                            match p {
                                Ok(p) => p,
                                Err(_) => return,
                            }
                        }
                    };
                    let after = AfterResponse::default();
                    let outcome = {
                        let ctx = OpContext {
                            services: &conn.services,
                            peer: &conn.peer,
                            prompter: &RequestPrompter::new(conn.clone(), id.clone()),
                            request: &id,
                            after_response: &after,
                        };
                        match ops::dispatch(&ctx, op).await {
                            Ok(v) => Outcome::Ok(v),
                            Err(e) => Outcome::Error(e.to_error_body()),
                        }
                    };
                    conn.send(&Response {
                        id: Some(id),
                        outcome,
                    })
                    .await;
                    if let Some(follow_up) = after.take() {
                        conn.send_event(follow_up.await).await;
                    }
                    drop(permit);
                });
                while tasks.try_join_next().is_some() {}
            }
        }
    }
    // The client is gone or the agent stops: nobody will answer a prompt now.
    if let Some(s) = subscription {
        s.abort();
    }
    conn.cancel_all_prompts();
    while tasks.join_next().await.is_some() {}
    drop(conn);
    let _ = writer.await;
    debug!("connection closed");
}

/// Sends the agent's token and reader events to a subscribed connection.
async fn forward_events(conn: Arc<Conn>, mut rx: tokio::sync::broadcast::Receiver<Event>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match rx.recv().await {
            Ok(ev) => conn.send_event(ev).await,
            Err(RecvError::Lagged(n)) => {
                warn!(peer = %conn.peer, missed = n, "a subscriber is too slow; events were dropped");
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Parses a frame into a request, or the response that says what is wrong with it.
fn parse_request(mut line: Vec<u8>) -> Result<Request, Box<Response>> {
    let parsed = serde_json::from_slice::<serde_json::Value>(&line);
    // The frame may hold a PIN: wipe it now that it is parsed.
    line.zeroize();
    let bad = |id: Option<RequestId>, msg: String| {
        Box::new(error_response(
            id,
            ErrorBody::new(ErrorCode::BadRequest, msg),
        ))
    };
    let value = parsed.map_err(|e| bad(None, format!("the frame is not valid JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad(None, "a request must be a JSON object".into()))?;
    let id = match obj.get("id") {
        Some(v) => match serde_json::from_value::<RequestId>(v.clone()) {
            Ok(RequestId::Str(s)) if s.len() > MAX_ID_STRING_LEN => {
                return Err(bad(
                    None,
                    format!("the id is longer than {MAX_ID_STRING_LEN} bytes"),
                ));
            }
            Ok(id) => id,
            Err(_) => {
                return Err(bad(
                    None,
                    "the id must be a non-negative integer or a string".into(),
                ));
            }
        },
        None => return Err(bad(None, "the request has no id".into())),
    };
    let op = match obj.get("op") {
        Some(serde_json::Value::String(s)) => s.clone(),
        _ => return Err(bad(Some(id), "the request has no op (a string)".into())),
    };
    if !Op::NAMES.contains(&op.as_str()) {
        return Err(Box::new(error_response(
            Some(id),
            ErrorBody::new(
                ErrorCode::UnknownOp,
                format!(
                    "unknown op {op:?}; this agent knows {}",
                    Op::NAMES.join(", ")
                ),
            ),
        )));
    }
    serde_json::from_value::<Request>(value)
        .map_err(|e| bad(Some(id), format!("invalid {op} request: {e}")))
}

fn hello(conn: &Conn, id: RequestId, h: HelloParams) -> Response {
    if h.version != PROTOCOL_VERSION {
        let mut body = ErrorBody::new(
            ErrorCode::UnsupportedVersion,
            format!(
                "protocol version {} is not supported; this agent speaks version {PROTOCOL_VERSION}",
                h.version
            ),
        );
        body.supported_versions = Some(vec![PROTOCOL_VERSION]);
        return error_response(Some(id), body);
    }
    if conn.hello.get().is_some() {
        return error_response(
            Some(id),
            ErrorBody::new(
                ErrorCode::BadRequest,
                "hello was already sent on this connection",
            ),
        );
    }
    info!(peer = %conn.peer, client = ?h.client, pin_prompt = h.pin_prompt, "client connected");
    let _ = conn.hello.set(h);
    let cfg = &conn.services.config;
    let result = HelloResult {
        protocol_version: PROTOCOL_VERSION,
        agent: format!("smime-agent {}", env!("CARGO_PKG_VERSION")),
        capabilities: Op::NAMES.iter().map(|s| (*s).to_owned()).collect(),
        max_frame_bytes: cfg.agent.max_frame_bytes,
        pin_source: cfg.pin.source.as_str().to_owned(),
    };
    Response {
        id: Some(id),
        outcome: Outcome::Ok(serde_json::to_value(result).unwrap_or_default()),
    }
}

fn answer_prompt(conn: &Conn, id: RequestId, p: PinParams) -> Response {
    let answer = match (p.pin, p.cancel) {
        (Some(pin), false) => PinAnswer::Pin(pin),
        (None, true) => PinAnswer::Cancel,
        _ => {
            return error_response(
                Some(id),
                ErrorBody::new(
                    ErrorCode::BadRequest,
                    "a pin answer carries exactly one of \"pin\" and \"cancel\": true",
                ),
            );
        }
    };
    let waiting = conn
        .prompts
        .lock()
        .ok()
        .and_then(|mut m| m.remove(&p.prompt));
    match waiting {
        Some(tx) => {
            let _ = tx.send(answer);
            Response {
                id: Some(id),
                outcome: Outcome::Ok(serde_json::json!({})),
            }
        }
        None => error_response(
            Some(id),
            ErrorBody::new(
                ErrorCode::BadRequest,
                format!(
                    "no PIN prompt {} is waiting on this connection (answered, timed out, or its request ended)",
                    p.prompt
                ),
            ),
        ),
    }
}
