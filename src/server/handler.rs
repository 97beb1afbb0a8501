//! What each request frame asks: `hello`, `pin` (an answer to an open prompt), `subscribe`,
//! or an op, which runs in a task of its own (when [`super::admission`] gives it a turn) and
//! whose one response goes out when it ends.
//!
//! Owns the request path of one connection: parsing a frame into a request (a malformed one
//! is answered and the connection goes on), the hello rule (nothing before it), and the rule
//! that every request gets exactly one response. Frames as bytes are
//! [`super::connection`]'s; what an op does is [`crate::ops`]'s.

use std::sync::Arc;

use smime_agent_proto::{
    ErrorBody, ErrorCode, Event, HelloParams, HelloResult, MAX_ID_STRING_LEN, Op, Outcome,
    PROTOCOL_VERSION, PinParams, Request, RequestId,
};
use tracing::{debug, info, warn};
use zeroize::Zeroize;

use super::admission::{Admission, MAX_IN_FLIGHT, Refusal};
use super::prompter::RequestPrompter;
use super::prompts::PinAnswer;
use super::session::Session;
use crate::ops::{self, AfterResponse, OpContext, Reply};

/// A response as the agent writes it: the typed result goes straight into the frame.
pub type Response = smime_agent_proto::Response<Reply>;

/// The request side of one connection.
pub struct Handler {
    session: Arc<Session>,
    admission: Admission,
    /// The requests running (or waiting for a turn).
    tasks: tokio::task::JoinSet<()>,
    /// The task that forwards events, once the client subscribed.
    subscription: Option<tokio::task::JoinHandle<()>>,
}

impl Handler {
    /// Requests waiting for a turn may hold `max_waiting_bytes` together.
    pub fn new(session: Arc<Session>, max_waiting_bytes: usize) -> Handler {
        Handler {
            session,
            admission: Admission::new(max_waiting_bytes),
            tasks: tokio::task::JoinSet::new(),
            subscription: None,
        }
    }

    /// Serves one request frame. False when the connection is closing.
    pub async fn frame(&mut self, line: Vec<u8>) -> bool {
        let session = &self.session;
        let size = line.len();
        let req = match parse_request(line) {
            Ok(r) => r,
            Err(resp) => {
                session.send(&*resp).await;
                return true;
            }
        };
        match req.op {
            Op::Hello(h) => {
                let resp = hello(session, req.id, h);
                session.send(&resp).await;
            }
            _ if session.hello.get().is_none() => {
                session
                    .send(&error_response(
                        Some(req.id),
                        ErrorBody::new(ErrorCode::BadRequest, "send hello first"),
                    ))
                    .await;
            }
            Op::Pin(p) => {
                let resp = answer_prompt(session, req.id, p);
                session.send(&resp).await;
            }
            Op::Subscribe(_) => {
                // Events start after the response, so a client sees nothing before it.
                let rx = session.services().events.subscribe();
                session
                    .send(&Response {
                        id: Some(req.id),
                        outcome: Outcome::Ok(Reply::Empty {}),
                    })
                    .await;
                if self.subscription.is_none() {
                    self.subscription = Some(tokio::spawn(forward_events(session.clone(), rx)));
                    debug!(peer = %session.peer, "subscribed to events");
                }
            }
            op => return self.start(req.id, op, size).await,
        }
        true
    }

    /// Runs an op in a task of its own, once it has a turn.
    async fn start(&mut self, id: RequestId, op: Op, size: usize) -> bool {
        let turn = match self.admission.admit(size) {
            Ok(t) => t,
            Err(Refusal::Closed) => return false,
            Err(Refusal::Full) => {
                self.session
                    .send(&error_response(
                        Some(id),
                        ErrorBody::new(
                            ErrorCode::LimitExceeded,
                            format!(
                                "{MAX_IN_FLIGHT} requests run and too many wait on this \
                                 connection; wait for some answers, or open another one"
                            ),
                        ),
                    ))
                    .await;
                return true;
            }
        };
        let session = self.session.clone();
        self.tasks.spawn(async move {
            let Some(permit) = turn.wait().await else {
                return;
            };
            let after = AfterResponse::default();
            let outcome = {
                let services = session.services();
                let ctx = OpContext {
                    services: &services,
                    current: &session.current,
                    peer: &session.peer,
                    prompter: &RequestPrompter::new(session.clone(), id.clone()),
                    request: &id,
                    after_response: &after,
                };
                match ops::dispatch(&ctx, op).await {
                    Ok(v) => Outcome::Ok(v),
                    Err(e) => Outcome::Error(e.to_error_body()),
                }
            };
            session
                .send(&Response {
                    id: Some(id),
                    outcome,
                })
                .await;
            if let Some(follow_up) = after.take() {
                session.send_event(follow_up.await).await;
            }
            drop(permit);
        });
        // Reap finished requests so the set does not grow with every request.
        while self.tasks.try_join_next().is_some() {}
        true
    }

    /// The client is gone or the agent stops: nobody will answer a prompt now. Waits for
    /// the running requests to end.
    pub async fn finish(mut self) {
        if let Some(s) = self.subscription.take() {
            s.abort();
        }
        self.session.prompts.cancel_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

pub fn error_response(id: Option<RequestId>, body: ErrorBody) -> Response {
    Response {
        id,
        outcome: Outcome::Error(body),
    }
}

/// Sends the agent's token and reader events to a subscribed connection.
async fn forward_events(session: Arc<Session>, mut rx: tokio::sync::broadcast::Receiver<Event>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match rx.recv().await {
            Ok(ev) => session.send_event(ev).await,
            Err(RecvError::Lagged(n)) => {
                warn!(peer = %session.peer, missed = n, "a subscriber is too slow; events were dropped");
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Parses a frame into a request, or the response that says what is wrong with it.
///
/// The request is deserialized straight from the frame's bytes (a large message's base64 is
/// decoded from the frame, not copied into a JSON tree first); only a frame that fails is
/// looked at again, for its `id` and `op`, to say what is wrong.
pub(crate) fn parse_request(mut line: Vec<u8>) -> Result<Request, Box<Response>> {
    // A member given twice is ambiguous (which "id", which "signer"?): refused, as serde
    // would for a struct, though a flattened or map-shaped field keeps the last silently.
    let duplicate = serde_json::from_slice::<NoDuplicates>(&line)
        .err()
        .map(|e| e.to_string());
    let parsed = match duplicate {
        None => serde_json::from_slice::<Request>(&line).map_err(|e| e.to_string()),
        Some(_) => Err(String::new()),
    };
    let outcome = match parsed {
        Ok(req) => match &req.id {
            RequestId::Str(s) if s.len() > MAX_ID_STRING_LEN => Err(bad(
                None,
                format!("the id is longer than {MAX_ID_STRING_LEN} bytes"),
            )),
            _ => Ok(req),
        },
        Err(e) => Err(diagnose(&line, duplicate, e)),
    };
    // The frame may hold a PIN: wipe it now that it is parsed. Its bytes, not its spare
    // capacity, which never held any (zeroing a large frame's whole allocation cost 100 ms).
    line.as_mut_slice().zeroize();
    outcome
}

fn bad(id: Option<RequestId>, msg: String) -> Box<Response> {
    Box::new(error_response(
        id,
        ErrorBody::new(ErrorCode::BadRequest, msg),
    ))
}

/// The `id` and `op` of a frame that did not parse as a request (the other members are
/// skipped, not kept).
#[derive(serde::Deserialize)]
struct Peek {
    #[serde(default, deserialize_with = "present")]
    id: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    op: Option<serde_json::Value>,
}

/// A member that is there, `null` included (`Option` alone reads `null` as absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde::Deserialize::deserialize(d).map(Some)
}

/// What is wrong with a frame that is no request: `duplicate` names a member given twice,
/// `error` is serde's complaint about it as a request.
fn diagnose(line: &[u8], duplicate: Option<String>, error: String) -> Box<Response> {
    if let Some(d) = duplicate {
        // A rare error frame (a member twice, or nesting past serde_json's limit): read
        // whole, as JSON keeps the last of two members, its id given back unless the id
        // itself came twice.
        return match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(value) => {
                let id = value
                    .get("id")
                    .filter(|_| !d.contains("\"id\""))
                    .and_then(|v| serde_json::from_value::<RequestId>(v.clone()).ok());
                bad(id, d)
            }
            Err(e) => bad(None, format!("the frame is not valid JSON: {e}")),
        };
    }
    let peek = match serde_json::from_slice::<Peek>(line) {
        // serde also reads a struct from an array: only an object is a request.
        Ok(_) if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') => {
            return bad(None, "a request must be a JSON object".into());
        }
        Ok(p) => p,
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return bad(None, "a request must be a JSON object".into());
        }
        Err(e) => return bad(None, format!("the frame is not valid JSON: {e}")),
    };
    let id = peek
        .id
        .as_ref()
        .and_then(|v| serde_json::from_value::<RequestId>(v.clone()).ok());
    let id = match (peek.id, id) {
        (None, _) => return bad(None, "the request has no id".into()),
        (Some(_), None) => {
            return bad(
                None,
                "the id must be a non-negative integer or a string".into(),
            );
        }
        (Some(_), Some(RequestId::Str(s))) if s.len() > MAX_ID_STRING_LEN => {
            return bad(
                None,
                format!("the id is longer than {MAX_ID_STRING_LEN} bytes"),
            );
        }
        (Some(_), Some(id)) => id,
    };
    let op = match peek.op {
        Some(serde_json::Value::String(s)) => s,
        _ => return bad(Some(id), "the request has no op (a string)".into()),
    };
    if !Op::NAMES.contains(&op.as_str()) {
        return Box::new(error_response(
            Some(id),
            ErrorBody::new(
                ErrorCode::UnknownOp,
                format!(
                    "unknown op {op:?}; this agent knows {}",
                    Op::NAMES.join(", ")
                ),
            ),
        ));
    }
    bad(Some(id), format!("invalid {op} request: {error}"))
}

fn hello(session: &Session, id: RequestId, h: HelloParams) -> Response {
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
    if session.hello.get().is_some() {
        return error_response(
            Some(id),
            ErrorBody::new(
                ErrorCode::BadRequest,
                "hello was already sent on this connection",
            ),
        );
    }
    info!(peer = %session.peer, client = ?h.client, pin_prompt = h.pin_prompt, "client connected");
    let _ = session.hello.set(h);
    let services = session.services();
    let cfg = &services.config;
    let result = HelloResult {
        protocol_version: PROTOCOL_VERSION,
        agent: format!("smime-agent {}", env!("CARGO_PKG_VERSION")),
        capabilities: Op::NAMES.iter().map(|s| (*s).to_owned()).collect(),
        max_frame_bytes: cfg.agent.max_frame_bytes,
        pin_source: cfg.pin.source.as_str().to_owned(),
    };
    Response {
        id: Some(id),
        outcome: Outcome::Ok(Reply::Hello(result)),
    }
}

fn answer_prompt(session: &Session, id: RequestId, p: PinParams) -> Response {
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
    if session.prompts.answer(p.prompt, answer) {
        Response {
            id: Some(id),
            outcome: Outcome::Ok(Reply::Empty {}),
        }
    } else {
        error_response(
            Some(id),
            ErrorBody::new(
                ErrorCode::BadRequest,
                format!(
                    "no PIN prompt {} is waiting on this connection (answered, timed out, or its request ended)",
                    p.prompt
                ),
            ),
        )
    }
}

/// Walks a JSON document and fails on the first object that names a member twice.
struct NoDuplicates;

impl<'de> serde::Deserialize<'de> for NoDuplicates {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicatesVisitor)
    }
}

struct NoDuplicatesVisitor;

impl<'de> serde::de::Visitor<'de> for NoDuplicatesVisitor {
    type Value = NoDuplicates;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<NoDuplicates, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !seen.insert(key.clone().into_owned()) {
                return Err(serde::de::Error::custom(format!(
                    "the member \"{key}\" appears twice"
                )));
            }
            map.next_value::<NoDuplicates>()?;
        }
        Ok(NoDuplicates)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<NoDuplicates, A::Error> {
        while seq.next_element::<NoDuplicates>()?.is_some() {}
        Ok(NoDuplicates)
    }

    fn visit_bool<E>(self, _: bool) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_i64<E>(self, _: i64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_u64<E>(self, _: u64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_f64<E>(self, _: f64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_str<E>(self, _: &str) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_unit<E>(self) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(frame: &[u8]) -> (Option<RequestId>, ErrorCode, String) {
        let r = parse_request(frame.to_vec()).expect_err("not a request");
        match r.outcome {
            Outcome::Error(e) => (r.id, e.code, e.message),
            Outcome::Ok(_) => panic!("not an error"),
        }
    }

    #[test]
    fn typed_results_are_written_as_the_bare_result_under_ok() {
        let frame = |r: &Response| String::from_utf8(serde_json::to_vec(r).unwrap()).unwrap();
        let empty = Response {
            id: Some(RequestId::Num(7)),
            outcome: Outcome::Ok(Reply::Empty {}),
        };
        assert_eq!(frame(&empty), r#"{"id":7,"ok":{}}"#);
        let forget = Response {
            id: Some(RequestId::Str("f".into())),
            outcome: Outcome::Ok(Reply::Forget(smime_agent_proto::ForgetResult::default())),
        };
        // The same bytes a client reads back as the op's own result type.
        let back: smime_agent_proto::Response = serde_json::from_str(&frame(&forget)).unwrap();
        let Outcome::Ok(v) = back.outcome else {
            panic!("not ok")
        };
        let _: smime_agent_proto::ForgetResult = serde_json::from_value(v).unwrap();
        assert!(frame(&forget).starts_with(r#"{"id":"f","ok":{"#));
        assert_eq!(
            frame(&error_response(
                None,
                ErrorBody::new(ErrorCode::BadRequest, "m")
            )),
            r#"{"id":null,"error":{"code":"bad_request","message":"m"}}"#
        );
    }

    #[test]
    fn a_frame_that_is_no_request_is_answered_with_what_is_wrong_and_its_id_when_readable() {
        let long = format!(
            r#"{{"id":"{}","op":"status"}}"#,
            "x".repeat(MAX_ID_STRING_LEN + 1)
        );
        let cases: [(&[u8], Option<RequestId>, ErrorCode, &str); 10] = [
            (b"{\"id\":1,", None, ErrorCode::BadRequest, "not valid JSON"),
            (
                b"[1,2]",
                None,
                ErrorCode::BadRequest,
                "must be a JSON object",
            ),
            (
                br#"{"op":"status"}"#,
                None,
                ErrorCode::BadRequest,
                "has no id",
            ),
            (
                br#"{"id":null,"op":"status"}"#,
                None,
                ErrorCode::BadRequest,
                "non-negative integer or a string",
            ),
            (
                br#"{"id":-1,"op":"status"}"#,
                None,
                ErrorCode::BadRequest,
                "non-negative integer or a string",
            ),
            (long.as_bytes(), None, ErrorCode::BadRequest, "longer than"),
            (
                br#"{"id":7}"#,
                Some(RequestId::Num(7)),
                ErrorCode::BadRequest,
                "has no op",
            ),
            (
                br#"{"id":8,"op":"fly"}"#,
                Some(RequestId::Num(8)),
                ErrorCode::UnknownOp,
                "unknown op",
            ),
            (
                br#"{"id":"a","op":"sign","signer":1}"#,
                Some(RequestId::Str("a".into())),
                ErrorCode::BadRequest,
                "invalid sign request",
            ),
            (
                br#"{"id":9,"op":"status","extra":true}"#,
                Some(RequestId::Num(9)),
                ErrorCode::BadRequest,
                "invalid status request",
            ),
        ];
        // The edge cases PROTOCOL.md names: no usable id, so `"id": null`.
        let deep = format!(
            r#"{{"id":1,"op":"status","x":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        for frame in [
            &br#"{"id":-0,"op":"status"}"#[..],
            br#"{"id":1.5,"op":"status"}"#,
            br#"{"id":1e30,"op":"status"}"#,
            br#"{"id":"\ud800","op":"status"}"#,
            br#"{"id":18446744073709551616,"op":"status"}"#,
            deep.as_bytes(),
        ] {
            let (got_id, got_code, message) = refused(frame);
            let shown = String::from_utf8_lossy(frame);
            assert_eq!(got_id, None, "{shown}: {message}");
            assert_eq!(got_code, ErrorCode::BadRequest, "{shown}");
        }
        for (frame, id, code, text) in cases {
            let (got_id, got_code, message) = refused(frame);
            let shown = String::from_utf8_lossy(frame);
            assert_eq!(got_id, id, "{shown}");
            assert_eq!(got_code, code, "{shown}");
            assert!(message.contains(text), "{shown}: {message}");
        }
    }

    #[test]
    fn a_member_given_twice_is_refused_at_any_depth() {
        let ok = br#"{"id":1,"op":"sign","signer":"a@b","content":"eA=="}"#;
        assert!(parse_request(ok.to_vec()).is_ok());
        for (frame, id) in [
            (&br#"{"id":1,"id":2,"op":"status"}"#[..], None),
            (&br#"{"id":3,"op":"status","op":"forget"}"#[..], Some(RequestId::Num(3))),
            (&br#"{"id":4,"op":"sign","signer":"a@b","signer":"c@d","content":"eA=="}"#[..], Some(RequestId::Num(4))),
            (&br#"{"id":5,"op":"encrypt","recipients":["x@y"],"content":"eA==","certificates":[],"sender":"a@b","sender":"c@d"}"#[..], Some(RequestId::Num(5))),
        ] {
            let r = parse_request(frame.to_vec()).expect_err("a duplicate member");
            assert_eq!(r.id, id, "{}", String::from_utf8_lossy(frame));
            match &r.outcome {
                Outcome::Error(e) => {
                    assert_eq!(e.code, ErrorCode::BadRequest);
                    assert!(e.message.contains("appears twice"), "{}", e.message);
                }
                Outcome::Ok(_) => panic!("not an error"),
            }
        }
    }
}
