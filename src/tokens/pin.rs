//! PINs in memory, the per-token PIN cache, and the interface to whoever asks the person.
//!
//! Owns: [`SecretPin`] (a PIN in a locked, zeroized buffer that never prints), [`PinCache`]
//! (one PIN per token, with a time to live), and the [`PinPrompter`] trait that the server
//! implements for each PIN source. Does not talk to tokens.

use std::fmt;
use std::future::Future;
use std::pin::Pin as StdPin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use smime_agent_proto::{PinReason, PinRetries, TokenRef};
use zeroize::Zeroize;

/// The longest PIN accepted (PKCS#11 tokens report at most 255 in practice).
pub const MAX_PIN_LEN: usize = 255;

/// A PIN held by the agent: a fixed-size buffer, locked in RAM where the OS allows (so it is
/// not swapped out), wiped when dropped, and never printed.
pub struct SecretPin {
    buf: Box<Page>,
    len: usize,
    locked: bool,
}

/// A page of its own for each PIN: mlock and munlock work on whole pages and do not nest,
/// so a PIN sharing a page with another would be unlocked when that one is dropped.
#[repr(C, align(4096))]
struct Page([u8; PAGE]);
const PAGE: usize = 4096;
const _: () = assert!(MAX_PIN_LEN <= PAGE);

impl SecretPin {
    /// Copies `pin` into a locked buffer. `None` when it is empty, too long, or contains a
    /// NUL (which PKCS#11 modules treat as the end of the PIN).
    pub fn new(pin: &[u8]) -> Option<SecretPin> {
        if pin.is_empty() || pin.len() > MAX_PIN_LEN || pin.contains(&0) {
            return None;
        }
        let mut buf = Box::new(Page([0u8; PAGE]));
        buf.0[..pin.len()].copy_from_slice(pin);
        let locked = crate::sys::lock_memory(buf.0.as_ptr(), PAGE);
        Some(SecretPin {
            buf,
            len: pin.len(),
            locked,
        })
    }

    pub fn expose(&self) -> &[u8] {
        &self.buf.0[..self.len]
    }

    /// Another copy, also locked.
    pub fn duplicate(&self) -> SecretPin {
        // `new` only fails on input this PIN was already checked against.
        SecretPin::new(self.expose()).unwrap_or_else(|| SecretPin {
            buf: Box::new(Page([0u8; PAGE])),
            len: 0,
            locked: false,
        })
    }
}

impl Drop for SecretPin {
    fn drop(&mut self) {
        self.buf.0.zeroize();
        if self.locked {
            crate::sys::unlock_memory(self.buf.0.as_ptr(), PAGE);
        }
    }
}

impl fmt::Debug for SecretPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretPin(<redacted>)")
    }
}

/// One cached PIN per token, until its time to live runs out. A login typed on a PIN pad
/// leaves no PIN here but lives as long: it expires the same way.
#[derive(Debug)]
pub struct PinCache {
    ttl: Duration,
    slot: Mutex<Option<(SecretPin, Instant)>>,
    /// Until when a PIN-pad login may stand.
    pinpad_login: Mutex<Option<Instant>>,
}

impl PinCache {
    /// A cache whose entries live `ttl`; a zero `ttl` caches nothing.
    pub fn new(ttl: Duration) -> Self {
        PinCache {
            ttl,
            slot: Mutex::new(None),
            pinpad_login: Mutex::new(None),
        }
    }

    /// A login on the reader's keypad succeeded: it stands for `ttl`, like a cached PIN.
    pub fn put_pinpad_login(&self) {
        if let (true, Ok(mut l)) = (self.enabled(), self.pinpad_login.lock()) {
            *l = Some(Instant::now() + self.ttl);
        }
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    pub fn put(&self, pin: &SecretPin) {
        if !self.enabled() {
            return;
        }
        if let Ok(mut s) = self.slot.lock() {
            *s = Some((pin.duplicate(), Instant::now() + self.ttl));
        }
    }

    /// A copy of the cached PIN, if one is cached and fresh.
    pub fn get(&self) -> Option<SecretPin> {
        let mut s = self.slot.lock().ok()?;
        match &*s {
            Some((pin, expires)) if Instant::now() < *expires => Some(pin.duplicate()),
            Some(_) => {
                *s = None;
                None
            }
            None => None,
        }
    }

    pub fn is_cached(&self) -> bool {
        matches!(self.slot.lock().as_deref(), Ok(Some((_, e))) if Instant::now() < *e)
    }

    /// Wipes the PIN (and forgets a PIN-pad login).
    pub fn clear(&self) {
        if let Ok(mut s) = self.slot.lock() {
            *s = None;
        }
        if let Ok(mut l) = self.pinpad_login.lock() {
            *l = None;
        }
    }

    /// Wipes the PIN, or forgets the PIN-pad login, whose time ran out; true when one did
    /// (the token is then to be logged out).
    pub fn expire(&self) -> bool {
        let now = Instant::now();
        let pin = match self.slot.lock() {
            Ok(mut s) => match &*s {
                Some((_, e)) if now >= *e => {
                    *s = None;
                    true
                }
                _ => false,
            },
            Err(_) => false,
        };
        let login = match self.pinpad_login.lock() {
            Ok(mut l) => match *l {
                Some(e) if now >= e => {
                    *l = None;
                    true
                }
                _ => false,
            },
            Err(_) => false,
        };
        pin || login
    }
}

/// What the person is asked for.
#[derive(Debug, Clone)]
pub struct PinRequest {
    pub token: TokenRef,
    /// Subject of the certificate whose key needs the PIN.
    pub certificate: Option<String>,
    pub reason: PinReason,
    pub retries: PinRetries,
    pub retries_left: Option<u32>,
    /// A passphrase (of a key file) rather than a token PIN.
    pub passphrase: bool,
}

impl PinRequest {
    /// The prompt text, naming the token and the tries left when they are low.
    pub fn description(&self) -> String {
        let mut d = match self.reason {
            PinReason::Login if self.passphrase => format!(
                "Please enter the passphrase of the key file \"{}\"",
                self.token.label
            ),
            PinReason::Login => format!(
                "Please enter the PIN of the token \"{}\" (serial {})",
                self.token.label, self.token.serial
            ),
            PinReason::ContextSpecific => format!(
                "The key on the token \"{}\" (serial {}) asks for the PIN again before it signs",
                self.token.label, self.token.serial
            ),
        };
        if let Some(c) = &self.certificate {
            d.push_str(&format!(" to use the key of {c}"));
        }
        d.push('.');
        match self.retries {
            PinRetries::FinalTry => {
                d.push_str(" This is the LAST try: a wrong PIN locks the token.")
            }
            PinRetries::Low => d.push_str(" A wrong PIN was entered before: few tries are left."),
            _ => {}
        }
        d
    }
}

/// Why no PIN came back.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PinError {
    #[error("the PIN prompt was cancelled")]
    Cancelled,
    #[error("nobody answered the PIN prompt within {0} seconds")]
    Timeout(u64),
    #[error("no PIN could be asked for: {0}")]
    Unavailable(String),
}

pub type BoxFuture<'a, T> = StdPin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Asks a person for a PIN, on behalf of one request.
pub trait PinPrompter: Send + Sync {
    /// Ask for the PIN.
    fn ask(&self, req: PinRequest) -> BoxFuture<'_, Result<SecretPin, PinError>>;
    /// Tell the person to type the PIN on the reader's keypad now. A returned notice (a
    /// pinentry message) stays up until it is dropped, when the reader is done.
    fn notify_on_reader(&self, req: PinRequest) -> BoxFuture<'_, Option<Notice>>;
}

/// A message shown while the reader's keypad waits for the PIN (a pinentry window, say);
/// dropping it takes the message down, as gpg-agent does with its PIN-pad popup.
pub struct Notice {
    task: tokio::task::AbortHandle,
}

impl Notice {
    /// The notice shown by `task`: dropping the notice aborts the task.
    pub fn new(task: tokio::task::AbortHandle) -> Notice {
        Notice { task }
    }
}

impl Drop for Notice {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pin_has_a_page_of_its_own() {
        let a = SecretPin::new(b"1234").unwrap();
        let b = a.duplicate();
        let (pa, pb) = (a.buf.0.as_ptr() as usize, b.buf.0.as_ptr() as usize);
        assert_eq!(pa % PAGE, 0);
        assert_eq!(pb % PAGE, 0);
        assert_ne!(pa, pb);
        assert_eq!(b.expose(), b"1234");
    }

    #[test]
    fn secret_pin_rejects_empty_long_and_nul() {
        assert!(SecretPin::new(b"").is_none());
        assert!(SecretPin::new(&[b'1'; MAX_PIN_LEN + 1]).is_none());
        assert!(SecretPin::new(b"12\x0034").is_none());
        assert_eq!(SecretPin::new(b"4711").unwrap().expose(), b"4711");
    }

    #[test]
    fn secret_pin_never_prints() {
        let p = SecretPin::new(b"4711").unwrap();
        assert!(!format!("{p:?}").contains("4711"));
    }

    #[test]
    fn cache_expires_and_zero_ttl_caches_nothing() {
        let c = PinCache::new(Duration::from_millis(30));
        c.put(&SecretPin::new(b"1234").unwrap());
        assert_eq!(c.get().unwrap().expose(), b"1234");
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.get().is_none());
        let off = PinCache::new(Duration::ZERO);
        off.put(&SecretPin::new(b"1234").unwrap());
        assert!(off.get().is_none());
    }

    #[test]
    fn description_names_token_and_final_try() {
        let r = PinRequest {
            token: TokenRef {
                id: "t".into(),
                label: "Alice card".into(),
                serial: "42".into(),
            },
            certificate: None,
            reason: PinReason::Login,
            retries: PinRetries::FinalTry,
            retries_left: Some(1),
            passphrase: false,
        };
        let d = r.description();
        assert!(d.contains("Alice card") && d.contains("LAST"), "{d}");
    }
}
