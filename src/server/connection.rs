//! One client connection as frames: a reader that turns bytes into request frames for
//! the [`Handler`], and a writer task that sends the responses and events queued by the
//! [`Session`], in order.
//!
//! Owns the bytes of the connection: the frame size limit (a frame too large is answered and
//! the connection goes on), and draining the writer so that no request task ever blocks on
//! a client that stopped reading.

use std::sync::Arc;
use std::time::{Duration, Instant};

use interprocess::local_socket::tokio::Stream;
use smime_agent_proto::codec::{Frame, FrameReader};
use smime_agent_proto::{ErrorBody, ErrorCode};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use super::budget::{Budget, Share};
use super::handler::{Handler, error_response};
use super::session::Session;
use crate::ops::{Current, Peer};

/// How often the reader looks at an unfinished frame's progress.
const PROGRESS_LOOK: Duration = Duration::from_secs(1);

/// Serves one connection until the client hangs up or the agent shuts down.
pub async fn handle(
    current: Arc<Current>,
    stream: Stream,
    peer: Peer,
    budget: &Budget,
    mut shutdown: watch::Receiver<bool>,
) {
    debug!(peer = %peer, "connection opened");
    let services = current.get();
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
    let session = Arc::new(Session::new(current, peer, out_tx));
    let mut handler = Handler::new(session.clone(), max as usize);
    let mut reader = FrameReader::new(BufReader::new(rx), max);
    let frame_timeout = Duration::from_secs(services.config.agent.frame_timeout_secs);
    // How much of an unfinished frame there was, and since when: a client that stops in
    // the middle of a frame is closed after `frame_timeout` without progress.
    let mut progress = (0u64, Instant::now());
    let mut share = Share::new(budget);
    loop {
        let unfinished = reader.unfinished();
        if unfinished != progress.0 {
            progress = (unfinished, Instant::now());
        }
        if !share.set(unfinished) {
            warn!(peer = %session.peer, bytes = unfinished, "unfinished requests hold the agent's whole budget; closing this connection");
            let body = ErrorBody::new(
                ErrorCode::LimitExceeded,
                format!(
                    "the agent holds {} bytes of unfinished requests at most, across all connections (max_unfinished_bytes); this one is closed",
                    budget.limit()
                ),
            );
            session.send(&error_response(None, body)).await;
            break;
        }
        let stalled = async {
            if unfinished == 0 {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep_until((progress.1 + frame_timeout).into()).await;
        };
        let frame = tokio::select! {
            f = reader.next_frame() => f,
            _ = shutdown.changed() => break,
            // `next_frame` returns only at a frame's end: look now and then, so that a frame
            // begun, and its progress, are seen.
            _ = tokio::time::sleep(PROGRESS_LOOK.min(frame_timeout)) => continue,
            _ = stalled => {
                if reader.unfinished() == progress.0 {
                    warn!(peer = %session.peer, bytes = progress.0, "a request frame stalled; closing the connection");
                    let body = ErrorBody::new(
                        ErrorCode::LimitExceeded,
                        format!(
                            "the request was not finished: no byte of it came for {} s (frame_timeout_secs); the connection is closed",
                            frame_timeout.as_secs()
                        ),
                    );
                    session.send(&error_response(None, body)).await;
                    break;
                }
                continue;
            }
        };
        match frame {
            Ok(Some(Frame::Line(line))) => {
                if !handler.frame(line).await {
                    break;
                }
            }
            Ok(Some(Frame::TooLarge { id, size })) => {
                warn!(peer = %session.peer, size, "frame too large");
                let mut body = ErrorBody::new(
                    ErrorCode::FrameTooLarge,
                    format!(
                        "the request is {size} bytes or more; the agent reads at most {max} (max_frame_bytes)"
                    ),
                );
                body.max_frame_bytes = Some(max);
                session.send(&error_response(id, body)).await;
            }
            Ok(None) => break,
            Err(e) => {
                debug!(peer = %session.peer, error = %e, "read failed");
                break;
            }
        }
    }
    handler.finish().await;
    drop(session);
    let _ = writer.await;
    debug!("connection closed");
}
