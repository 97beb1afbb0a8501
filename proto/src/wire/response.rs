//! What the agent sends back: one [`Response`] per request, and [`AgentFrame`], which tells
//! a response from an event on the same stream.
//!
//! Owns the envelope of a response (`id` with `ok` or `error`); the bodies are in the result,
//! error and event modules.

use serde::{Deserialize, Serialize};

use crate::wire::{ErrorBody, Event, RequestId};

/// One response frame: exactly one per request.
///
/// `T` is the result's type. A client reads any result as a `serde_json::Value` (the
/// default) and decodes it by the op it sent; the agent writes its typed result straight
/// into the frame, so a large result is never copied into a `Value` tree first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Response<T = serde_json::Value> {
    /// The request's id; `null` only when the request was so malformed that its id could not
    /// be read.
    pub id: Option<RequestId>,
    #[serde(flatten)]
    pub outcome: Outcome<T>,
}

/// `{"ok": {...}}` or `{"error": {...}}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome<T = serde_json::Value> {
    Ok(T),
    Error(ErrorBody),
}

/// A frame from the agent: a response or an event.
#[derive(Clone, Debug)]
pub enum AgentFrame {
    Response(Response),
    Event(Event),
}

impl AgentFrame {
    /// Parses one frame. A frame with an `event` member is an event, anything else a response.
    pub fn parse(line: &[u8]) -> Result<AgentFrame, serde_json::Error> {
        // A first pass that keeps nothing tells the kind; then the frame is read once into
        // its type, not into a `Value` tree and copied again from there.
        #[derive(Deserialize)]
        struct Kind {
            event: Option<serde::de::IgnoredAny>,
        }
        let kind: Kind = serde_json::from_slice(line)?;
        if kind.event.is_some() {
            serde_json::from_slice(line).map(AgentFrame::Event)
        } else {
            serde_json::from_slice(line).map(AgentFrame::Response)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ErrorCode;

    #[test]
    fn response_and_event_frames_are_told_apart() {
        let r = AgentFrame::parse(br#"{"id":"x","error":{"code":"pin_locked","message":"m"}}"#)
            .unwrap();
        assert!(
            matches!(r, AgentFrame::Response(Response { outcome: Outcome::Error(ref e), .. }) if e.code == ErrorCode::PinLocked)
        );
        let e = AgentFrame::parse(
            br#"{"event":"pin_needed","request":1,"prompt":2,"token":{"id":"t","label":"l","serial":"s"},"reason":"login","on_reader":false,"retries":"ok"}"#,
        )
        .unwrap();
        assert!(matches!(e, AgentFrame::Event(Event::PinNeeded(_))));
    }
}
