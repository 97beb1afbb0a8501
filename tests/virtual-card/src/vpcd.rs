//! The card's side of vsmartcard-vpcd's socket: framing, control messages, socket options.
//!
//! vpcd (the reader driver inside pcscd) listens; the card connects. Each message is a
//! 2-byte big-endian length and a payload. A 1-byte payload is a control message (00 power
//! off, 01 power on, 02 reset, 04 "send your ATR"); anything longer is a command APDU that
//! gets exactly one response APDU. Connecting inserts the card, disconnecting removes it.
//! This module owns those bytes; [`crate::card`] owns what they mean.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
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

    /// A handle that can pull the card out from another thread ([`Remover::pull`]).
    pub fn remover(&self) -> io::Result<Remover> {
        Ok(Remover(self.stream.try_clone()?))
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

/// Pulls a card out of its reader from another thread: closes the connection, which vpcd
/// reports to pcscd as a removal.
pub struct Remover(TcpStream);

impl Remover {
    pub fn pull(&self) {
        // Already closed is fine: the card is out either way.
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

/// What happened on the link, for a caller that logs or traces APDUs.
pub enum Event<'a> {
    /// The reader spoke for the first time: the card is seen as inserted.
    FirstContact,
    /// A control message (power off/on, reset, ATR request).
    Control(u8),
    /// A command APDU and the card's response.
    Apdu {
        command: &'a [u8],
        response: &'a [u8],
    },
}

/// Serves `card` on `link` until the reader closes the connection (pcscd stopped) or the
/// card is pulled. Returns `Ok` on either, `Err` on other I/O errors.
pub fn serve(
    link: &mut VpcdLink,
    card: &mut PivCard,
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
                on_event(Event::Apdu {
                    command,
                    response: &response,
                });
                link.write_message(&response)?;
            }
        }
    }
}

/// Formats bytes as hex for APDU traces.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}
