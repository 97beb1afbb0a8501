//! The PIV application PIN (key reference 80), its retry counter, and how many times a PIN
//! was presented.
//!
//! Owns the PIN value, the counter, and the optional state file that lets the counter
//! survive the card's removal (a new process for the same card reads it back) and lets
//! another process watch the card ([`read_state_file`]). It does not know whether the PIN
//! is currently verified: that is security status, kept by the card.
//!
//! The state file has one `key value` line each:
//!
//! ```text
//! pin-tries-left 2
//! pin-verifies 1
//! ```
//!
//! `pin-tries-left` survives removal and reinsertion. `pin-verifies` counts the VERIFY
//! commands that presented a PIN since the card was made (inserted): right, wrong, or on a
//! blocked PIN alike; the empty VERIFY that only asks for the status is not counted. Both
//! are written before the card answers the VERIFY, so a reader never sees a stale value
//! once the application has its answer. Files with only the first line (written before the
//! count existed) are read as `pin-verifies 0`.

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

/// The PIN, its retry counter and the count of PIN VERIFYs.
pub struct PinState {
    padded: Zeroizing<PaddedPin>,
    max_tries: u8,
    tries_left: u8,
    /// PINs presented since this state was made.
    verifies: u32,
    /// Where the state is persisted, if it outlives this process.
    state_file: Option<PathBuf>,
}

/// What a PIN state file holds (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinFile {
    /// Tries left before the PIN blocks.
    pub tries_left: u8,
    /// VERIFY commands with a PIN since the card was inserted.
    pub verifies: u32,
}

impl PinState {
    /// A PIN of 1 to 8 characters (PIV uses 6-8 digits; OpenSC accepts 4-8) and at most 15
    /// tries. With a state file the counter is read from it when it exists; the file is
    /// then written at once (with the VERIFY count back at 0: a new card session starts)
    /// and again on every PIN VERIFY.
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
            Some(path) => read_state_file(path)?.map_or(max_tries, |f| f.tries_left.min(max_tries)),
            None => max_tries,
        };
        let state = PinState {
            padded,
            max_tries,
            tries_left,
            verifies: 0,
            state_file,
        };
        state
            .save(state.tries_left, 0)
            .map_err(|e| CardError::StateFile {
                path: state.state_file.clone().unwrap_or_default(),
                reason: e.to_string(),
            })?;
        Ok(state)
    }

    /// Tries left before the PIN blocks.
    pub fn tries_left(&self) -> u8 {
        self.tries_left
    }

    /// VERIFY commands that presented a PIN since this state was made.
    pub fn verifies(&self) -> u32 {
        self.verifies
    }

    /// Whether no tries are left.
    pub fn is_blocked(&self) -> bool {
        self.tries_left == 0
    }

    /// Compares `candidate`, counts the attempt and updates the counter. An error means the
    /// state could not be stored; the card then refuses the VERIFY rather than forget a
    /// wrong try.
    pub fn verify(&mut self, candidate: &PaddedPin) -> io::Result<VerifyOutcome> {
        let verifies = self.verifies.saturating_add(1);
        if self.is_blocked() {
            self.save(self.tries_left, verifies)?;
            self.verifies = verifies;
            return Ok(VerifyOutcome::Blocked);
        }
        let diff = candidate
            .iter()
            .zip(self.padded.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        let (tries_left, outcome) = if diff == 0 {
            (self.max_tries, VerifyOutcome::Correct)
        } else {
            let left = self.tries_left - 1;
            (left, VerifyOutcome::Wrong { tries_left: left })
        };
        self.save(tries_left, verifies)?;
        self.tries_left = tries_left;
        self.verifies = verifies;
        Ok(outcome)
    }

    fn save(&self, tries_left: u8, verifies: u32) -> io::Result<()> {
        match &self.state_file {
            Some(path) => write_state_file(
                path,
                PinFile {
                    tries_left,
                    verifies,
                },
            ),
            None => Ok(()),
        }
    }
}

/// Reads a PIN state file; `None` when it does not exist (a card that was never inserted).
pub fn read_state_file(path: &Path) -> Result<Option<PinFile>, CardError> {
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
    let value = |key: &str| {
        text.lines()
            .filter_map(|l| l.trim().split_once(' '))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.trim())
    };
    let bad = |what: &str| CardError::StateFile {
        path: path.to_owned(),
        reason: format!("{what}; delete the file to reset the counter"),
    };
    let tries_left = value("pin-tries-left")
        .and_then(|n| n.parse::<u8>().ok())
        .ok_or_else(|| bad("expected a line `pin-tries-left N`"))?;
    let verifies = match value("pin-verifies") {
        None => 0,
        Some(n) => n
            .parse::<u32>()
            .map_err(|_| bad("`pin-verifies` is not a number"))?,
    };
    Ok(Some(PinFile {
        tries_left,
        verifies,
    }))
}

fn write_state_file(path: &Path, state: PinFile) -> io::Result<()> {
    // Write and rename so a crash (or a reader in another process) never sees half a file.
    let tmp = path.with_extension("tmp");
    fs::write(
        &tmp,
        format!(
            "pin-tries-left {}\npin-verifies {}\n",
            state.tries_left, state.verifies
        ),
    )?;
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
    fn pin_verifies_are_counted_per_session_and_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("card.pin-state");
        let mut pin = PinState::new("1234", 2, Some(file.clone())).unwrap();
        let state = |f: &Path| read_state_file(f).unwrap().unwrap();
        assert_eq!(
            state(&file),
            PinFile {
                tries_left: 2,
                verifies: 0
            }
        );
        pin.verify(&pad("1234").unwrap()).unwrap();
        pin.verify(&pad("9999").unwrap()).unwrap();
        assert_eq!((pin.verifies(), state(&file).verifies), (2, 2));
        pin.verify(&pad("9999").unwrap()).unwrap();
        // Blocked: nothing compared, but the attempt is counted.
        assert_eq!(
            pin.verify(&pad("1234").unwrap()).unwrap(),
            VerifyOutcome::Blocked
        );
        assert_eq!(
            state(&file),
            PinFile {
                tries_left: 0,
                verifies: 4
            }
        );
        // A new session (insertion) keeps the counter and starts the count again.
        drop(pin);
        let pin = PinState::new("1234", 2, Some(file.clone())).unwrap();
        assert_eq!((pin.tries_left(), pin.verifies()), (0, 0));
        assert_eq!(state(&file).verifies, 0);
        // The one-line files of earlier versions still read.
        fs::write(&file, "pin-tries-left 1\n").unwrap();
        assert_eq!(
            state(&file),
            PinFile {
                tries_left: 1,
                verifies: 0
            }
        );
        assert!(
            read_state_file(&dir.path().join("absent"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn rejects_unusable_pins() {
        assert!(PinState::new("", 3, None).is_err());
        assert!(PinState::new("123456789", 3, None).is_err());
        assert!(PinState::new("1234", 0, None).is_err());
        assert!(PinState::new("1234", 16, None).is_err());
    }
}
