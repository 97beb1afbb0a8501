//! Clients of the agent: [`BlockingClient`] (one request at a time, what the CLI uses) and
//! [`Client`] (async, many requests in flight, events on a channel).
//!
//! Both connect, do the `hello` exchange, and refuse locally to send a frame larger than the
//! agent's advertised `max_frame_bytes`.

use std::collections::HashMap;
use std::io::{self, BufReader, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use interprocess::local_socket::traits::Stream as _;
use interprocess::local_socket::traits::StreamCommon;
use interprocess::local_socket::traits::tokio::Stream as _;
use interprocess::local_socket::{GenericFilePath, ToFsName};
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, oneshot};

use crate::codec::{BlockingFrameReader, Frame, FrameReader, encode_frame};
use crate::wire::*;
use crate::{DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to the agent at {path}: {source}. Start it with `eval \"$(smime-agent serve)\"` (or `systemctl --user start smime-agent.socket` with the units in contrib/systemd), or set SMIME_AGENT_SOCK to the socket of the one running"
    )]
    Connect { path: String, source: io::Error },
    #[error("connection to the agent failed: {0}")]
    Io(#[from] io::Error),
    /// The agent answered with an error.
    #[error("{0}")]
    Agent(Box<ErrorBody>),
    #[error("the agent sent something this client does not understand: {0}")]
    Protocol(String),
    #[error("the request is {size} bytes, more than the agent accepts ({max}); send less content")]
    TooLarge { size: u64, max: u64 },
    #[error("the agent closed the connection")]
    Closed,
    /// The socket is served by a process of another user: not this user's agent.
    #[error(
        "the socket {path} is served by {owner}, not by this user ({uid}): refusing to send it anything"
    )]
    NotOurAgent {
        path: String,
        owner: String,
        uid: u32,
    },
}

impl ClientError {
    /// The agent's error code, when the agent answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Agent(e) => Some(e.code),
            _ => None,
        }
    }
}

/// The largest response a client reads. A response can be larger than its request (a
/// signed or encrypted message grows by base64 and CMS), and it comes from the user's own
/// agent, so the bound is generous.
pub const MAX_RESPONSE_BYTES: u64 = 4 << 30;

/// Checks that the process serving `path` runs as this user, before a message or a PIN
/// goes to it: a socket in a shared directory (the `/tmp` fallback) could be anyone's.
fn check_agent_peer(stream: &impl StreamCommon, path: &Path) -> Result<(), ClientError> {
    let uid = crate::paths::current_uid().map_err(|source| ClientError::Connect {
        path: path.display().to_string(),
        source,
    })?;
    let owner = stream.peer_creds().map(|c| c.euid());
    match owner {
        Ok(Some(o)) if o == uid => Ok(()),
        other => Err(ClientError::NotOurAgent {
            path: path.display().to_string(),
            owner: match other {
                Ok(Some(o)) => format!("uid {o}"),
                Ok(None) => "an unknown user".into(),
                Err(e) => format!("a process whose user cannot be read ({e})"),
            },
            uid,
        }),
    }
}

fn decode<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ClientError> {
    serde_json::from_value(value).map_err(|e| ClientError::Protocol(e.to_string()))
}

fn check_size(frame: &[u8], max: u64) -> Result<(), ClientError> {
    // The bound does not count the newline.
    let size = frame.len() as u64 - 1;
    if size > max {
        return Err(ClientError::TooLarge { size, max });
    }
    Ok(())
}

/// One stream used by a reader and a writer at once: `&Stream` reads and writes, so two
/// handles on one `Arc` replace interprocess's deprecated split halves.
pub struct Shared<S>(Arc<S>);

impl<S> Shared<S> {
    fn pair(stream: S) -> (Self, Self) {
        let a = Arc::new(stream);
        (Shared(a.clone()), Shared(a))
    }
}

impl<S> io::Read for Shared<S>
where
    for<'a> &'a S: io::Read,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl<S> io::Write for Shared<S>
where
    for<'a> &'a S: io::Write,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

impl<S> tokio::io::AsyncRead for Shared<S>
where
    for<'a> &'a S: tokio::io::AsyncRead,
{
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let mut r = &*self.0;
        std::pin::Pin::new(&mut r).poll_read(cx, buf)
    }
}

impl<S> tokio::io::AsyncWrite for Shared<S>
where
    for<'a> &'a S: tokio::io::AsyncWrite,
{
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let mut w = &*self.0;
        std::pin::Pin::new(&mut w).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let mut w = &*self.0;
        std::pin::Pin::new(&mut w).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let mut w = &*self.0;
        std::pin::Pin::new(&mut w).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------
// Blocking
// ---------------------------------------------------------------------------------------

/// What to do with an event that arrives while a request is waiting.
#[derive(Debug)]
pub enum EventReply {
    /// Nothing to send.
    Ignore,
    /// Answer a `pin_needed` with this PIN.
    Pin { prompt: u64, pin: Pin },
    /// Answer a `pin_needed` with `cancel`.
    Cancel { prompt: u64 },
}

/// A connection that sends one request at a time and hands events to a callback.
pub struct BlockingClient {
    reader: BlockingFrameReader<BufReader<Shared<interprocess::local_socket::Stream>>>,
    writer: Shared<interprocess::local_socket::Stream>,
    next_id: u64,
    hello: HelloResult,
}

impl BlockingClient {
    /// Connects to the agent at `path` and says hello.
    pub fn connect(path: &Path, hello: HelloParams) -> Result<Self, ClientError> {
        let connect_err = |source| ClientError::Connect {
            path: path.display().to_string(),
            source,
        };
        let name = path.to_fs_name::<GenericFilePath>().map_err(connect_err)?;
        let stream = interprocess::local_socket::Stream::connect(name).map_err(connect_err)?;
        check_agent_peer(&stream, path)?;
        let (rx, tx) = Shared::pair(stream);
        let mut client = BlockingClient {
            // Responses can carry a whole signed message: allow twice the default bound.
            reader: BlockingFrameReader::new(BufReader::new(rx), MAX_RESPONSE_BYTES),
            writer: tx,
            next_id: 1,
            hello: HelloResult {
                protocol_version: PROTOCOL_VERSION,
                agent: String::new(),
                capabilities: vec![],
                max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
                pin_source: String::new(),
            },
        };
        let value = client.call(Op::Hello(hello), &mut |_| EventReply::Ignore)?;
        client.hello = decode(value)?;
        Ok(client)
    }

    /// The agent's answer to `hello`.
    pub fn hello(&self) -> &HelloResult {
        &self.hello
    }

    fn send(&mut self, op: Op) -> Result<RequestId, ClientError> {
        let id = RequestId::Num(self.next_id);
        self.next_id += 1;
        let frame = encode_frame(&Request { id: id.clone(), op });
        check_size(&frame, self.hello.max_frame_bytes)?;
        self.writer.write_all(&frame)?;
        self.writer.flush()?;
        Ok(id)
    }

    /// Sends `op` and waits for its response. Events that arrive meanwhile go to `on_event`;
    /// its PIN answers are sent at once.
    pub fn call(
        &mut self,
        op: Op,
        on_event: &mut dyn FnMut(&Event) -> EventReply,
    ) -> Result<serde_json::Value, ClientError> {
        let id = match self.send(op) {
            Ok(id) => id,
            Err(ClientError::Io(e)) => return Err(self.refusal().unwrap_or(ClientError::Io(e))),
            Err(e) => return Err(e),
        };
        // Responses to our own `pin` answers are not waited for: the prompt may have expired
        // (the request ended meanwhile); the main response tells the outcome.
        loop {
            let line = match self.reader.next_frame()? {
                None => return Err(ClientError::Closed),
                Some(Frame::Line(l)) => l,
                Some(Frame::TooLarge { size, .. }) => {
                    return Err(ClientError::Protocol(format!(
                        "a response of {size} bytes is larger than this client reads"
                    )));
                }
            };
            let frame =
                AgentFrame::parse(&line).map_err(|e| ClientError::Protocol(e.to_string()))?;
            match frame {
                AgentFrame::Event(ev) => match on_event(&ev) {
                    EventReply::Ignore => {}
                    EventReply::Pin { prompt, pin } => {
                        self.send(Op::Pin(PinParams {
                            prompt,
                            pin: Some(pin),
                            cancel: false,
                        }))?;
                    }
                    EventReply::Cancel { prompt } => {
                        self.send(Op::Pin(PinParams {
                            prompt,
                            pin: None,
                            cancel: true,
                        }))?;
                    }
                },
                AgentFrame::Response(resp) => {
                    if resp.id.as_ref() == Some(&id) {
                        return match resp.outcome {
                            Outcome::Ok(v) => Ok(v),
                            Outcome::Error(e) => Err(ClientError::Agent(Box::new(e))),
                        };
                    }
                    if resp.id.is_none() {
                        // Only a frame the agent could not read at all has no id, and we
                        // sent one request: it was ours.
                        if let Outcome::Error(e) = resp.outcome {
                            return Err(ClientError::Agent(Box::new(e)));
                        }
                    }
                    // Otherwise a response to one of our `pin` answers: nothing to do.
                }
            }
        }
    }

    /// After a failed write: the agent may have refused the connection and said why
    /// before closing it.
    fn refusal(&mut self) -> Option<ClientError> {
        let Ok(Some(Frame::Line(line))) = self.reader.next_frame() else {
            return None;
        };
        match AgentFrame::parse(&line) {
            Ok(AgentFrame::Response(Response {
                outcome: Outcome::Error(e),
                ..
            })) => Some(ClientError::Agent(Box::new(e))),
            _ => None,
        }
    }

    /// How long a read waits for the agent (`None`: for ever). A read that times out fails
    /// with an I/O error and loses nothing: the next read goes on where it stopped.
    pub fn set_read_timeout(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        use interprocess::local_socket::traits::Stream as _;
        self.writer.0.set_recv_timeout(timeout)
    }

    /// `status`.
    pub fn status(&mut self) -> Result<StatusResult, ClientError> {
        let v = self.call(Op::Status(StatusParams {}), &mut |_| EventReply::Ignore)?;
        decode(v)
    }

    /// `list_certs`.
    pub fn list_certs(&mut self, include_der: bool) -> Result<ListCertsResult, ClientError> {
        let v = self.call(Op::ListCerts(ListCertsParams { include_der }), &mut |_| {
            EventReply::Ignore
        })?;
        decode(v)
    }

    /// `subscribe`: token and reader events follow; read them with
    /// [`BlockingClient::next_event`].
    pub fn subscribe(&mut self) -> Result<(), ClientError> {
        self.call(Op::Subscribe(SubscribeParams {}), &mut |_| {
            EventReply::Ignore
        })
        .map(|_| ())
    }

    /// Waits for the next event.
    pub fn next_event(&mut self) -> Result<Event, ClientError> {
        loop {
            let line = match self.reader.next_frame()? {
                None => return Err(ClientError::Closed),
                Some(Frame::Line(l)) => l,
                Some(Frame::TooLarge { .. }) => continue,
            };
            if let Ok(AgentFrame::Event(ev)) = AgentFrame::parse(&line) {
                return Ok(ev);
            }
        }
    }

    /// `rescan`.
    pub fn rescan(&mut self) -> Result<RescanResult, ClientError> {
        let v = self.call(Op::Rescan(RescanParams {}), &mut |_| EventReply::Ignore)?;
        decode(v)
    }

    /// `reload`.
    pub fn reload(&mut self) -> Result<ReloadResult, ClientError> {
        let v = self.call(Op::Reload(ReloadParams {}), &mut |_| EventReply::Ignore)?;
        decode(v)
    }

    /// `forget`.
    pub fn forget(&mut self) -> Result<ForgetResult, ClientError> {
        let v = self.call(Op::Forget(ForgetParams {}), &mut |_| EventReply::Ignore)?;
        decode(v)
    }

    /// `validate`.
    pub fn validate(&mut self, params: ValidateParams) -> Result<ValidateResult, ClientError> {
        let v = self.call(Op::Validate(params), &mut |_| EventReply::Ignore)?;
        decode(v)
    }

    /// `which`.
    pub fn which(&mut self, params: WhichParams) -> Result<WhichResult, ClientError> {
        let v = self.call(Op::Which(params), &mut |_| EventReply::Ignore)?;
        decode(v)
    }

    /// `encrypt` (no private key is used, so no PIN).
    pub fn encrypt(&mut self, params: EncryptParams) -> Result<EncryptResult, ClientError> {
        let v = self.call(Op::Encrypt(params), &mut |_| EventReply::Ignore)?;
        decode(v)
    }

    /// `compose`, with `on_event` answering PIN prompts.
    pub fn compose(
        &mut self,
        params: ComposeParams,
        on_event: &mut dyn FnMut(&Event) -> EventReply,
    ) -> Result<ComposeResult, ClientError> {
        let v = self.call(Op::Compose(params), on_event)?;
        decode(v)
    }

    /// `decrypt`, with `on_event` answering PIN prompts.
    pub fn decrypt(
        &mut self,
        params: DecryptParams,
        on_event: &mut dyn FnMut(&Event) -> EventReply,
    ) -> Result<DecryptResult, ClientError> {
        let v = self.call(Op::Decrypt(params), on_event)?;
        decode(v)
    }

    /// `verify`. With `validation: event`, read the `validation_done` event with
    /// [`BlockingClient::next_event`].
    pub fn verify(&mut self, params: VerifyParams) -> Result<VerifyResult, ClientError> {
        let v = self.call(Op::Verify(params), &mut |_| EventReply::Ignore)?;
        decode(v)
    }

    /// `sign`, with `on_event` answering PIN prompts.
    pub fn sign(
        &mut self,
        params: SignParams,
        on_event: &mut dyn FnMut(&Event) -> EventReply,
    ) -> Result<SignResult, ClientError> {
        let v = self.call(Op::Sign(params), on_event)?;
        decode(v)
    }

    /// `keys`.
    pub fn keys(&mut self) -> Result<KeysResult, ClientError> {
        let v = self.call(Op::Keys(KeysParams {}), &mut |_| EventReply::Ignore)?;
        decode(v)
    }

    /// `key_login`: the agent asks for the PIN by its own source.
    pub fn key_login(&mut self, token: &str) -> Result<(), ClientError> {
        self.call(
            Op::KeyLogin(KeyLoginParams {
                token: token.to_owned(),
            }),
            &mut |_| EventReply::Ignore,
        )?;
        Ok(())
    }

    /// `key_sign`, `key_decrypt` or `key_derive` (`op` is one of them): the bytes it gives.
    pub fn key_op(&mut self, op: Op) -> Result<Vec<u8>, ClientError> {
        let v = self.call(op, &mut |_| EventReply::Ignore)?;
        let r: KeyOpResult = decode(v)?;
        Ok(r.data.0)
    }
}

// ---------------------------------------------------------------------------------------
// Async
// ---------------------------------------------------------------------------------------

type Pending = Arc<Mutex<HashMap<RequestId, oneshot::Sender<Outcome>>>>;

/// An async connection: many requests in flight, events on a channel.
pub struct Client {
    writer: tokio::sync::Mutex<Shared<interprocess::local_socket::tokio::Stream>>,
    pending: Pending,
    next_id: AtomicU64,
    hello: HelloResult,
    events: Mutex<Option<mpsc::UnboundedReceiver<Event>>>,
    unmatched: tokio::sync::Mutex<mpsc::UnboundedReceiver<Response>>,
    reader_task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader_task.abort();
    }
}

impl Client {
    /// Connects to the agent at `path` and says hello.
    pub async fn connect(path: &Path, hello: HelloParams) -> Result<Self, ClientError> {
        let connect_err = |source| ClientError::Connect {
            path: path.display().to_string(),
            source,
        };
        let name = path.to_fs_name::<GenericFilePath>().map_err(connect_err)?;
        let stream = interprocess::local_socket::tokio::Stream::connect(name)
            .await
            .map_err(connect_err)?;
        check_agent_peer(&stream, path)?;
        let (rx, tx) = Shared::pair(stream);
        let pending: Pending = Arc::default();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (un_tx, un_rx) = mpsc::unbounded_channel();
        let reader_task = tokio::spawn(read_loop(
            FrameReader::new(tokio::io::BufReader::new(rx), MAX_RESPONSE_BYTES),
            pending.clone(),
            ev_tx,
            un_tx,
        ));
        let mut client = Client {
            writer: tokio::sync::Mutex::new(tx),
            pending,
            next_id: AtomicU64::new(1),
            hello: HelloResult {
                protocol_version: PROTOCOL_VERSION,
                agent: String::new(),
                capabilities: vec![],
                max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
                pin_source: String::new(),
            },
            events: Mutex::new(Some(ev_rx)),
            unmatched: tokio::sync::Mutex::new(un_rx),
            reader_task,
        };
        match client.call(Op::Hello(hello)).await {
            Ok(v) => client.hello = decode(v)?,
            Err(e @ (ClientError::Io(_) | ClientError::Closed)) => {
                // A refused connection gets one error frame (without id) before it closes.
                let refusal = tokio::time::timeout(
                    std::time::Duration::from_millis(500),
                    client.next_unmatched(),
                )
                .await;
                return Err(match refusal {
                    Ok(Some(Response {
                        outcome: Outcome::Error(body),
                        ..
                    })) => ClientError::Agent(Box::new(body)),
                    _ => e,
                });
            }
            Err(e) => return Err(e),
        }
        Ok(client)
    }

    /// The agent's answer to `hello`.
    pub fn hello(&self) -> &HelloResult {
        &self.hello
    }

    /// The event stream of this connection. Can be taken once.
    pub fn take_events(&self) -> Option<mpsc::UnboundedReceiver<Event>> {
        self.events.lock().ok()?.take()
    }

    /// Sends `op` and waits for its response.
    pub async fn call(&self, op: Op) -> Result<serde_json::Value, ClientError> {
        let (_, rx) = self.start(op).await?;
        match rx.await.map_err(|_| ClientError::Closed)? {
            Outcome::Ok(v) => Ok(v),
            Outcome::Error(e) => Err(ClientError::Agent(Box::new(e))),
        }
    }

    /// Sends `op` and returns its id and a receiver for its outcome, so a caller can match
    /// events (which name the request) to it.
    pub async fn start(
        &self,
        op: Op,
    ) -> Result<(RequestId, oneshot::Receiver<Outcome>), ClientError> {
        let id = RequestId::Num(self.next_id.fetch_add(1, Ordering::Relaxed));
        let frame = encode_frame(&Request { id: id.clone(), op });
        check_size(&frame, self.hello.max_frame_bytes)?;
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| ClientError::Closed)?
            .insert(id.clone(), tx);
        let mut w = self.writer.lock().await;
        if let Err(e) = w.write_all(&frame).await {
            if let Ok(mut p) = self.pending.lock() {
                p.remove(&id);
            }
            return Err(e.into());
        }
        Ok((id, rx))
    }

    /// Sends raw bytes (tests use this to send malformed input). Responses to such frames
    /// arrive through [`Client::next_unmatched`].
    pub async fn send_raw(&self, bytes: &[u8]) -> Result<(), ClientError> {
        self.writer.lock().await.write_all(bytes).await?;
        Ok(())
    }

    /// The next response that answers no call of this client (a frame sent with
    /// [`Client::send_raw`], or one the agent could not read an id from).
    pub async fn next_unmatched(&self) -> Option<Response> {
        self.unmatched.lock().await.recv().await
    }

    pub async fn status(&self) -> Result<StatusResult, ClientError> {
        decode(self.call(Op::Status(StatusParams {})).await?)
    }

    pub async fn list_certs(&self, include_der: bool) -> Result<ListCertsResult, ClientError> {
        decode(
            self.call(Op::ListCerts(ListCertsParams { include_der }))
                .await?,
        )
    }

    /// `subscribe`: token and reader events arrive on [`Client::take_events`].
    pub async fn subscribe(&self) -> Result<(), ClientError> {
        self.call(Op::Subscribe(SubscribeParams {}))
            .await
            .map(|_| ())
    }

    pub async fn rescan(&self) -> Result<RescanResult, ClientError> {
        decode(self.call(Op::Rescan(RescanParams {})).await?)
    }

    pub async fn forget(&self) -> Result<ForgetResult, ClientError> {
        decode(self.call(Op::Forget(ForgetParams {})).await?)
    }

    pub async fn validate(&self, params: ValidateParams) -> Result<ValidateResult, ClientError> {
        decode(self.call(Op::Validate(params)).await?)
    }

    pub async fn which(&self, params: WhichParams) -> Result<WhichResult, ClientError> {
        decode(self.call(Op::Which(params)).await?)
    }

    pub async fn encrypt(&self, params: EncryptParams) -> Result<EncryptResult, ClientError> {
        decode(self.call(Op::Encrypt(params)).await?)
    }

    /// `compose`. If the agent asks for a PIN, answer on another task with [`Client::pin`].
    pub async fn compose(&self, params: ComposeParams) -> Result<ComposeResult, ClientError> {
        decode(self.call(Op::Compose(params)).await?)
    }

    /// `decrypt`. If the agent asks for a PIN, answer on another task with [`Client::pin`].
    pub async fn decrypt(&self, params: DecryptParams) -> Result<DecryptResult, ClientError> {
        decode(self.call(Op::Decrypt(params)).await?)
    }

    /// `verify`. With `validation: event`, the `validation_done` event arrives on the
    /// event channel ([`Client::take_events`]).
    pub async fn verify(&self, params: VerifyParams) -> Result<VerifyResult, ClientError> {
        decode(self.call(Op::Verify(params)).await?)
    }

    /// `sign`. If the agent asks for a PIN, answer on another task with [`Client::pin`].
    pub async fn sign(&self, params: SignParams) -> Result<SignResult, ClientError> {
        decode(self.call(Op::Sign(params)).await?)
    }

    /// Answers a `pin_needed` prompt.
    pub async fn pin(&self, prompt: u64, pin: Option<Pin>) -> Result<(), ClientError> {
        let cancel = pin.is_none();
        self.call(Op::Pin(PinParams {
            prompt,
            pin,
            cancel,
        }))
        .await
        .map(|_| ())
    }
}

/// Routes responses to their waiting calls, events to the event channel, and responses
/// nobody waits for to the unmatched channel.
async fn read_loop(
    mut reader: FrameReader<
        tokio::io::BufReader<Shared<interprocess::local_socket::tokio::Stream>>,
    >,
    pending: Pending,
    events: mpsc::UnboundedSender<Event>,
    unmatched: mpsc::UnboundedSender<Response>,
) {
    loop {
        let line = match reader.next_frame().await {
            Ok(Some(Frame::Line(l))) => l,
            // Fails the call it answers, rather than leaving it waiting forever.
            Ok(Some(Frame::TooLarge { id, size })) => {
                let waiting = id.and_then(|id| pending.lock().ok()?.remove(&id));
                if let Some(tx) = waiting {
                    let _ = tx.send(Outcome::Error(ErrorBody::new(
                        ErrorCode::FrameTooLarge,
                        format!("a response of {size} bytes is larger than this client reads"),
                    )));
                }
                continue;
            }
            Ok(None) | Err(_) => break,
        };
        let Ok(frame) = AgentFrame::parse(&line) else {
            continue;
        };
        match frame {
            AgentFrame::Event(ev) => {
                let _ = events.send(ev);
            }
            AgentFrame::Response(resp) => {
                let Ok(mut p) = pending.lock() else { break };
                match resp.id.as_ref().and_then(|id| p.remove(id)) {
                    Some(tx) => {
                        let _ = tx.send(resp.outcome);
                    }
                    None => {
                        let _ = unmatched.send(resp);
                    }
                }
            }
        }
    }
    // Dropping the senders wakes every waiting call with `Closed`.
    if let Ok(mut p) = pending.lock() {
        p.clear();
    }
}
