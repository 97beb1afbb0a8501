//! The PIV application PIN (key reference 80) and its retry counter.
//!
//! Owns the PIN value and the counter, and the optional state file that lets the counter
//! survive the card's removal (a new process for the same card reads it back). It does not
//! know whether the PIN is currently verified: that is security status, kept by the card.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::CardError;

/// A PIN as VERIFY carries it: the characters padded with `FF` to eight bytes.
pub type PaddedPin = [u8; 8];

/// The result of presenting a PIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// Correct; the counter is back at its maximum.
    Correct,
    /// Wrong; this many tries remain (0 means the PIN is now blocked).
    Wrong { tries_left: u8 },
    /// The PIN was already blocked; nothing was compared.
    Blocked,
}

/// The PIN and its retry counter.
pub struct PinState {
    padded: Zeroizing<PaddedPin>,
    max_tries: u8,
    tries_left: u8,
    /// Where the counter is persisted, if it outlives this process.
    state_file: Option<PathBuf>,
}

impl PinState {
    /// A PIN of 1 to 8 characters (PIV uses 6-8 digits; OpenSC accepts 4-8) and at most 15
    /// tries. With a state file the counter is read from it when it exists, and written to
    /// it on every change.
    pub fn new(pin: &str, max_tries: u8, state_file: Option<PathBuf>) -> Result<Self, CardError> {
        let bytes = pin.as_bytes();
        if bytes.is_empty() || bytes.len() > 8 || bytes.contains(&0xFF) {
            return Err(CardError::BadPin(
                "the PIN must have 1 to 8 characters (PIV cards use 6 to 8 digits)".into(),
            ));
        }
        if !(1..=15).contains(&max_tries) {
            return Err(CardError::BadPin(format!(
                "the retry limit must be 1 to 15 (it is reported as 63 Cx), not {max_tries}"
            )));
        }
        let mut padded = Zeroizing::new([0xFF; 8]);
        padded[..bytes.len()].copy_from_slice(bytes);
        let tries_left = match &state_file {
            Some(path) => read_counter(path)?.map_or(max_tries, |n| n.min(max_tries)),
            None => max_tries,
        };
        Ok(PinState {
            padded,
            max_tries,
            tries_left,
            state_file,
        })
    }

    /// Tries left before the PIN blocks.
    pub fn tries_left(&self) -> u8 {
        self.tries_left
    }

    /// Whether no tries are left.
    pub fn is_blocked(&self) -> bool {
        self.tries_left == 0
    }

    /// Compares `candidate` and updates the counter. An error means the counter could not
    /// be stored; the card then refuses the VERIFY rather than forget a wrong try.
    pub fn verify(&mut self, candidate: &PaddedPin) -> io::Result<VerifyOutcome> {
        if self.is_blocked() {
            return Ok(VerifyOutcome::Blocked);
        }
        let diff = candidate
            .iter()
            .zip(self.padded.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            self.set_tries(self.max_tries)?;
            Ok(VerifyOutcome::Correct)
        } else {
            self.set_tries(self.tries_left - 1)?;
            Ok(VerifyOutcome::Wrong {
                tries_left: self.tries_left,
            })
        }
    }

    fn set_tries(&mut self, n: u8) -> io::Result<()> {
        if n == self.tries_left {
            return Ok(());
        }
        if let Some(path) = &self.state_file {
            write_counter(path, n)?;
        }
        self.tries_left = n;
        Ok(())
    }
}

/// The state file is one line, `pin-tries-left N`.
fn read_counter(path: &Path) -> Result<Option<u8>, CardError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CardError::StateFile {
                path: path.to_owned(),
                reason: e.to_string(),
            });
        }
    };
    text.trim()
        .strip_prefix("pin-tries-left ")
        .and_then(|n| n.trim().parse::<u8>().ok())
        .map(Some)
        .ok_or_else(|| CardError::StateFile {
            path: path.to_owned(),
            reason: "expected `pin-tries-left N`; delete the file to reset the counter".into(),
        })
}

fn write_counter(path: &Path, n: u8) -> io::Result<()> {
    // Write and rename so a crash never leaves a half-written counter.
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, format!("pin-tries-left {n}\n"))?;
    fs::rename(&tmp, path)
}

/// Pads a PIN the way VERIFY carries it.
pub fn pad(pin: &str) -> Option<PaddedPin> {
    let bytes = pin.as_bytes();
    if bytes.len() > 8 {
        return None;
    }
    let mut padded = [0xFF; 8];
    padded[..bytes.len()].copy_from_slice(bytes);
    Some(padded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_down_blocks_and_resets() {
        let mut pin = PinState::new("123456", 3, None).unwrap();
        let wrong = pad("000000").unwrap();
        let right = pad("123456").unwrap();
        assert_eq!(
            pin.verify(&wrong).unwrap(),
            VerifyOutcome::Wrong { tries_left: 2 }
        );
        assert_eq!(pin.verify(&right).unwrap(), VerifyOutcome::Correct);
        assert_eq!(pin.tries_left(), 3);
        for left in [2, 1, 0] {
            assert_eq!(
                pin.verify(&wrong).unwrap(),
                VerifyOutcome::Wrong { tries_left: left }
            );
        }
        assert_eq!(pin.verify(&right).unwrap(), VerifyOutcome::Blocked);
    }

    #[test]
    fn counter_survives_in_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("card.pin");
        let mut pin = PinState::new("1234", 3, Some(file.clone())).unwrap();
        pin.verify(&pad("9999").unwrap()).unwrap();
        drop(pin);
        let pin = PinState::new("1234", 3, Some(file.clone())).unwrap();
        assert_eq!(pin.tries_left(), 2);
        fs::write(&file, "garbage").unwrap();
        assert!(PinState::new("1234", 3, Some(file)).is_err());
    }

    #[test]
    fn rejects_unusable_pins() {
        assert!(PinState::new("", 3, None).is_err());
        assert!(PinState::new("123456789", 3, None).is_err());
        assert!(PinState::new("1234", 0, None).is_err());
        assert!(PinState::new("1234", 16, None).is_err());
    }
}
