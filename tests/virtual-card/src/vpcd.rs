//! The card's side of vsmartcard-vpcd's socket: framing, control messages, socket options.
//!
//! vpcd (the reader driver inside pcscd) listens; the card connects. Each message is a
//! 2-byte big-endian length and a payload. A 1-byte payload is a control message (00 power
//! off, 01 power on, 02 reset, 04 "send your ATR"); anything longer is a command APDU that
//! gets exactly one response APDU. Connecting inserts the card, disconnecting removes it.
//! This module owns those bytes; [`crate::card`] owns what they mean.
//!
//! A card that is "in" its reader stays in when pcscd dies: [`keep_inserted`] connects
//! again, with a short backoff, whenever the reader goes away, until the card is pulled
//! ([`Remover::pull`]). A new pcscd on the same ports then finds the card as if it had
//! been in the reader all along (after a power-up: the PIN must be verified again).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::card::PivCard;

/// A connection to one vpcd reader slot.
pub struct VpcdLink {
    stream: TcpStream,
}

impl VpcdLink {
    /// Connects to the reader on `127.0.0.1:port`, retrying until `timeout` while the
    /// reader is not listening yet (pcscd still starting).
    pub fn connect(port: u16, timeout: Duration) -> io::Result<Self> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + timeout;
        loop {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                Ok(stream) => return Self::from_stream(stream),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Wraps a connected stream and sets the socket options every APDU depends on.
    pub fn from_stream(stream: TcpStream) -> io::Result<Self> {
        // Without NODELAY and QUICKACK each APDU waits ~40 ms for a delayed ACK: an OpenSC
        // enumeration then takes seconds instead of tens of milliseconds.
        stream.set_nodelay(true)?;
        let link = VpcdLink { stream };
        link.quickack()?;
        Ok(link)
    }

    /// One connection attempt, failing at once when nothing listens on the port.
    pub fn connect_once(port: u16) -> io::Result<Self> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        Self::from_stream(TcpStream::connect_timeout(
            &addr,
            Duration::from_millis(500),
        )?)
    }

    /// Reads one message; `None` when the reader closed the connection.
    pub fn read_message(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 2];
        match self.stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let mut payload = vec![0u8; usize::from(u16::from_be_bytes(len))];
        self.stream.read_exact(&mut payload)?;
        self.quickack()?;
        Ok(Some(payload))
    }

    /// Sends one message.
    pub fn write_message(&mut self, payload: &[u8]) -> io::Result<()> {
        let len = u16::try_from(payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message over 64 KiB"))?;
        let mut frame = Vec::with_capacity(payload.len() + 2);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame)?;
        self.quickack()
    }

    /// TCP_QUICKACK is not sticky: Linux falls back to delayed ACKs, so it is set again
    /// after every receive and send.
    fn quickack(&self) -> io::Result<()> {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local; the fd is
        // owned by `self.stream` for the duration of the call.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Pulls a card out of its reader from another thread: closes its current connection
/// (vpcd reports that to pcscd as a removal) and tells [`keep_inserted`] and any
/// [`CardConfig::op_delay`](crate::CardConfig::op_delay) wait in [`serve`] to stop.
/// Clones share the same card.
#[derive(Clone, Default)]
pub struct Remover(Arc<Pull>);

#[derive(Default)]
struct Pull {
    state: Mutex<PullState>,
    changed: Condvar,
}

#[derive(Default)]
struct PullState {
    pulled: bool,
    /// The connection `pull` closes.
    stream: Option<TcpStream>,
}

impl Remover {
    /// A remover for a card that is not connected yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pulls the card: for good, also while it waits for its reader to come back.
    pub fn pull(&self) {
        let mut state = self.lock();
        state.pulled = true;
        if let Some(stream) = state.stream.take() {
            // Already closed is fine: the card is out either way.
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.0.changed.notify_all();
    }

    /// Whether the card was pulled.
    pub fn is_pulled(&self) -> bool {
        self.lock().pulled
    }

    /// Sleeps for `duration` or until the card is pulled; returns whether it was pulled.
    pub fn sleep(&self, duration: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .0
            .changed
            .wait_timeout_while(state, duration, |s| !s.pulled)
            .unwrap_or_else(PoisonError::into_inner);
        state.pulled
    }

    /// Makes `link` the connection [`Remover::pull`] closes. Returns `false` (and closes
    /// it) when the card was already pulled.
    pub fn attach(&self, link: &VpcdLink) -> io::Result<bool> {
        let stream = link.stream.try_clone()?;
        let mut state = self.lock();
        if state.pulled {
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(false);
        }
        state.stream = Some(stream);
        Ok(true)
    }

    fn detach(&self) {
        self.lock().stream = None;
    }

    fn lock(&self) -> MutexGuard<'_, PullState> {
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What happened on the link, for a caller that logs or traces APDUs.
pub enum Event<'a> {
    /// The reader spoke for the first time on this connection: the card is seen as
    /// inserted (again, after the reader came back).
    FirstContact,
    /// The card holds the answer to a private-key operation for this long
    /// ([`CardConfig::op_delay`](crate::CardConfig::op_delay)); [`Event::Apdu`] follows
    /// when it is sent.
    Holding(Duration),
    /// The connection ended without a pull (pcscd stopped or died; with the error, if
    /// any): [`keep_inserted`] connects again.
    ReaderLost(Option<&'a io::Error>),
    /// A control message (power off/on, reset, ATR request).
    Control(u8),
    /// A command APDU and the card's response.
    Apdu {
        command: &'a [u8],
        response: &'a [u8],
    },
}

/// Serves `card` on `link` until the reader closes the connection (pcscd stopped) or the
/// card is pulled with `remover`. Returns `Ok` on either, `Err` on other I/O errors.
/// Answers to private-key operations are held for the card's
/// [`answer_delay`](PivCard::answer_delay) (cut short by a pull).
pub fn serve(
    link: &mut VpcdLink,
    card: &mut PivCard,
    remover: &Remover,
    mut on_event: impl FnMut(Event<'_>),
) -> io::Result<()> {
    let mut first = true;
    loop {
        let message = match link.read_message() {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            // A pull from another thread shows up as a reset or a failed read.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::NotConnected
                        | io::ErrorKind::BrokenPipe
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if first {
            first = false;
            on_event(Event::FirstContact);
        }
        match message.as_slice() {
            [control] => {
                on_event(Event::Control(*control));
                match control {
                    // Power off, power on and reset all end the card session.
                    0x00..=0x02 => card.reset(),
                    0x04 => {
                        let atr = card.atr();
                        link.write_message(atr)?;
                    }
                    // Unknown control messages expect no answer.
                    _ => {}
                }
            }
            // vpcd never sends empty messages; a real card would not answer one either.
            [] => {}
            command => {
                let response = card.process(command);
                if let Some(delay) = card.answer_delay() {
                    on_event(Event::Holding(delay));
                    if remover.sleep(delay) {
                        // Pulled in the middle of the operation: no answer.
                        return Ok(());
                    }
                }
                on_event(Event::Apdu {
                    command,
                    response: &response,
                });
                link.write_message(&response)?;
            }
        }
    }
}

/// The first pause before connecting again to a reader that went away, doubled after
/// every failed attempt up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// The longest pause between attempts: a new pcscd finds the card at most this late.
pub const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// Keeps `card` in the reader on `127.0.0.1:port` until `remover` pulls it: serves the
/// connection `first` (if given, else connects), and whenever the reader goes away (pcscd
/// stopped, killed, restarting) connects again, pausing [`MIN_BACKOFF`] to
/// [`MAX_BACKOFF`] between attempts. Each new connection starts with a power-up
/// ([`PivCard::reset`]). Returns once the card is pulled; `Err` only when a connection
/// cannot be set up at all.
pub fn keep_inserted(
    port: u16,
    first: Option<VpcdLink>,
    card: &mut PivCard,
    remover: &Remover,
    mut on_event: impl FnMut(Event<'_>),
) -> io::Result<()> {
    let mut next = first;
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut link = match next.take() {
            Some(link) => link,
            None => match VpcdLink::connect_once(port) {
                Ok(link) => link,
                Err(_) => {
                    if remover.sleep(backoff) {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        if !remover.attach(&link)? {
            return Ok(());
        }
        card.reset();
        let mut contact = false;
        let result = serve(&mut link, card, remover, |event| {
            if matches!(event, Event::FirstContact) {
                contact = true;
            }
            on_event(event);
        });
        remover.detach();
        drop(link);
        if remover.is_pulled() {
            return Ok(());
        }
        on_event(Event::ReaderLost(result.as_ref().err()));
        // A reader that talked gets the card back at once; one that hung up without a word
        // (not ready, or refusing the card) is not hammered.
        if contact {
            backoff = MIN_BACKOFF;
        } else {
            if remover.sleep(backoff) {
                return Ok(());
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Formats bytes as hex for APDU traces.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::mpsc;

    use super::*;
    use crate::card::CardConfig;

    /// A stand-in for vpcd: a listener on a free port that speaks the framing.
    struct FakeReader(TcpListener);

    impl FakeReader {
        fn new() -> Self {
            FakeReader(TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap())
        }
        fn port(&self) -> u16 {
            self.0.local_addr().unwrap().port()
        }
        /// Takes the next card connection and asks for its ATR.
        fn take_card(&self) -> VpcdLink {
            let (stream, _) = self.0.accept().unwrap();
            let mut link = VpcdLink::from_stream(stream).unwrap();
            link.write_message(&[0x04]).unwrap();
            assert_eq!(link.read_message().unwrap().unwrap(), crate::card::ATR);
            link
        }
    }

    fn card(op_delay: Option<Duration>) -> PivCard {
        let mut config = CardConfig::new("test", "123456", Vec::new());
        config.op_delay = op_delay;
        PivCard::new(&config).unwrap()
    }

    #[test]
    fn a_card_connects_again_when_its_reader_comes_back_until_it_is_pulled() {
        let reader = FakeReader::new();
        let port = reader.port();
        let remover = Remover::new();
        let (events_tx, events) = mpsc::channel();
        let thread = {
            let remover = remover.clone();
            std::thread::spawn(move || {
                let mut card = card(None);
                keep_inserted(port, None, &mut card, &remover, |e| {
                    let name = match e {
                        Event::FirstContact => "contact",
                        Event::ReaderLost(_) => "lost",
                        _ => return,
                    };
                    events_tx.send(name).unwrap();
                })
            })
        };
        let link = reader.take_card();
        assert_eq!(events.recv().unwrap(), "contact");
        // The reader goes away (pcscd killed): the card comes back by itself.
        drop(link);
        assert_eq!(events.recv().unwrap(), "lost");
        let mut link = reader.take_card();
        assert_eq!(events.recv().unwrap(), "contact");
        // Still a working card on the new connection.
        link.write_message(&[0x00, 0x20, 0x00, 0x80]).unwrap();
        assert_eq!(link.read_message().unwrap().unwrap(), [0x63, 0xC3]);
        // Gone for good: the card waits, polling, and a pull ends the wait at once.
        drop(link);
        drop(reader);
        assert_eq!(events.recv().unwrap(), "lost");
        std::thread::sleep(Duration::from_millis(300));
        let pulled = Instant::now();
        remover.pull();
        thread.join().unwrap().unwrap();
        assert!(pulled.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn a_slow_card_answers_everything_but_private_key_operations_at_once() {
        let reader = FakeReader::new();
        let port = reader.port();
        let remover = Remover::new();
        let thread = {
            let remover = remover.clone();
            std::thread::spawn(move || {
                let mut card = card(Some(Duration::from_secs(5)));
                keep_inserted(port, None, &mut card, &remover, |_| {})
            })
        };
        let mut link = reader.take_card();
        // The management key's challenge (OpenSC's random numbers) is no key operation.
        let start = Instant::now();
        link.write_message(&[0x00, 0x87, 0x00, 0x9B, 0x04, 0x7C, 0x02, 0x81, 0x00, 0x00])
            .unwrap();
        let answer = link.read_message().unwrap().unwrap();
        assert_eq!(answer[answer.len() - 2..], [0x90, 0x00]);
        assert!(start.elapsed() < Duration::from_secs(1));
        // Card authentication (9E) needs no PIN, but this card has no key: refused at once.
        link.write_message(&[
            0x00, 0x87, 0x11, 0x9E, 0x08, 0x7C, 0x06, 0x82, 0x00, 0x81, 0x02, 0x01, 0x02, 0x00,
        ])
        .unwrap();
        assert_eq!(link.read_message().unwrap().unwrap(), [0x6A, 0x88]);
        assert!(start.elapsed() < Duration::from_secs(1));
        remover.pull();
        thread.join().unwrap().unwrap();
        // Pulled: the reader sees the connection end.
        assert!(link.read_message().unwrap_or(None).is_none());
    }
}
