//! Answering the agent's `pin_needed` events from the command line: a PIN read once from a
//! file descriptor (`--pin-fd`), or typed at the terminal without echo.

use std::io::Read;

use clap::Args;
use smime_agent_proto::client::EventReply;
use smime_agent_proto::{Event, Pin, PinReason, PinRetries};
use zeroize::Zeroizing;

#[derive(Args)]
pub struct PinArgs {
    /// Read the PIN from file descriptor N (its first line) instead of asking on the terminal.
    #[arg(long, value_name = "N")]
    pin_fd: Option<u32>,
}

impl PinArgs {
    /// The PIN comes from a file descriptor: the agent should ask this command for it,
    /// whatever its configured PIN source.
    pub fn given_on_fd(&self) -> bool {
        self.pin_fd.is_some()
    }
}

/// Answers PIN prompts for one command.
pub struct PinAnswerer {
    /// Where the PIN comes from when none is held yet: a file descriptor, else the terminal.
    fd: Option<u32>,
    /// A PIN read once (from the fd) or given (a mail client's passphrase line), used for
    /// every prompt of the command (the login and a key's context-specific login).
    held: Option<Zeroizing<String>>,
}

impl PinAnswerer {
    pub fn new(args: PinArgs) -> Self {
        PinAnswerer {
            fd: args.pin_fd,
            held: None,
        }
    }

    /// Answers with a PIN the command already holds (a mail client's passphrase line);
    /// without one, the terminal asks should the agent send a prompt at all.
    pub fn fixed(pin: Option<Zeroizing<String>>) -> Self {
        PinAnswerer {
            fd: None,
            held: pin,
        }
    }

    pub fn on_event(&mut self, ev: &Event) -> EventReply {
        let Event::PinNeeded(p) = ev else {
            return EventReply::Ignore;
        };
        if p.on_reader {
            eprintln!(
                "smime-agent: enter the PIN of \"{}\" on the reader's keypad",
                p.token.label
            );
            return EventReply::Ignore;
        }
        let pin = match (&self.held, self.fd) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(fd)) => self.read_fd(fd),
            (None, None) => {
                let mut prompt = match p.reason {
                    PinReason::Login => format!("PIN for token \"{}\"", p.token.label),
                    PinReason::ContextSpecific => {
                        format!("PIN again for the signing key on \"{}\"", p.token.label)
                    }
                };
                match p.retries {
                    PinRetries::FinalTry => prompt.push_str(" (LAST TRY before the PIN locks)"),
                    PinRetries::Low => prompt.push_str(" (few tries left)"),
                    _ => {}
                }
                prompt.push_str(": ");
                rpassword::prompt_password(prompt)
                    .map(Zeroizing::new)
                    .map_err(|e| format!("cannot ask for the PIN on the terminal: {e}"))
            }
        };
        match pin {
            Ok(pin) if !pin.is_empty() => EventReply::Pin {
                prompt: p.prompt,
                pin: Pin::new(pin.as_str()),
            },
            Ok(_) => EventReply::Cancel { prompt: p.prompt },
            Err(e) => {
                eprintln!("smime-agent: {e}");
                EventReply::Cancel { prompt: p.prompt }
            }
        }
    }

    fn read_fd(&mut self, fd: u32) -> Result<Zeroizing<String>, String> {
        let mut f = std::fs::File::open(format!("/dev/fd/{fd}"))
            .map_err(|e| format!("cannot read the PIN from fd {fd}: {e}"))?;
        let mut buf = Zeroizing::new(Vec::with_capacity(256));
        (&mut f)
            .take(1024)
            .read_to_end(&mut buf)
            .map_err(|e| format!("cannot read the PIN from fd {fd}: {e}"))?;
        let pin = first_line(&buf, &format!("fd {fd}"))?;
        self.held = Some(pin.clone());
        Ok(pin)
    }
}

/// The first line of `buf` (without `\n` or `\r\n`), where a PIN given on a descriptor is.
pub fn first_line(buf: &[u8], source: &str) -> Result<Zeroizing<String>, String> {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    std::str::from_utf8(line)
        .map(|s| Zeroizing::new(s.to_owned()))
        .map_err(|_| format!("the PIN on {source} is not UTF-8"))
}
