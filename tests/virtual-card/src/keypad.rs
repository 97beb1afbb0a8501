//! The keypad of a PIN-pad reader (the `ifd-pinpad` reader library in front of vpcd): files
//! in [`RigLayout::keypad_dir`] named for the reader's vpcd port. The reader writes
//! `<port>.prompt` while it waits for a PIN and removes it before it consumes what was
//! typed; a person (a test) writes `<port>` with the keys, or `<port>.cancel`.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::RigError;
use crate::pcscd::RigLayout;

/// One reader's keypad.
pub struct Keypad {
    dir: PathBuf,
    port: u16,
}

impl Keypad {
    pub fn new(layout: &RigLayout, port: u16) -> Keypad {
        Keypad {
            dir: layout.keypad_dir(),
            port,
        }
    }

    fn file(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}{suffix}", self.port))
    }

    /// Whether the reader waits for a PIN now.
    pub fn prompting(&self) -> bool {
        self.file(".prompt").exists()
    }

    /// Waits until the reader asks for a PIN; `reader` names it in the error.
    pub fn wait_for_prompt(&self, reader: u8, timeout: Duration) -> Result<(), RigError> {
        wait(reader, timeout, || self.prompting())
    }

    /// Types `keys` and presses OK. Written whole, then renamed, so the reader never reads
    /// half a PIN.
    pub fn type_keys(&self, keys: &str) -> Result<(), RigError> {
        let (partial, done) = (self.file(".typing"), self.file(""));
        fs::write(&partial, keys.as_bytes())
            .and_then(|()| fs::rename(&partial, &done))
            .map_err(|e| RigError::io(format!("typing on {}", done.display()), e))
    }

    /// Waits until the reader took what was typed (it drops its prompt first, so a prompt
    /// seen afterwards is the next one).
    pub fn wait_taken(&self, reader: u8, timeout: Duration) -> Result<(), RigError> {
        let keys = self.file("");
        wait(reader, timeout, || !keys.exists())
    }

    /// Presses Cancel.
    pub fn cancel(&self) -> Result<(), RigError> {
        let cancel = self.file(".cancel");
        fs::write(&cancel, b"")
            .map_err(|e| RigError::io(format!("writing {}", cancel.display()), e))
    }
}

/// Polls `done` every 10 ms; a reader that does not get there in time did not ask.
fn wait(reader: u8, timeout: Duration, done: impl Fn() -> bool) -> Result<(), RigError> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > timeout {
            return Err(RigError::NoKeypadPrompt {
                reader,
                millis: timeout.as_millis(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
