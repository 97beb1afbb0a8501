//! The agent's log: lines that cannot be written (a full disk under the log file, a closed
//! stderr) are dropped and counted, never retried and never a reason to stop serving.
//!
//! tracing-subscriber reports a failed write with `eprintln!`, which panics when stderr
//! itself fails, so a full disk used to take down whatever task was logging (the accept loop
//! among them). Here every line is written once; a failure only counts it, `status` shows
//! the count, and the first line written after failures says how many were lost.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::fmt::MakeWriter;

/// How many lines could not be written, and how many of those the log has told of.
#[derive(Debug, Default)]
pub struct Drops {
    dropped: AtomicU64,
    told: AtomicU64,
}

impl Drops {
    pub const fn new() -> Drops {
        Drops {
            dropped: AtomicU64::new(0),
            told: AtomicU64::new(0),
        }
    }

    /// Lines lost so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes one log line to `out`, first saying how many were lost since it last could.
    pub fn write_line(&self, out: &mut impl Write, line: &[u8]) {
        let lost = self.dropped() - self.told.load(Ordering::Relaxed);
        if lost > 0 {
            let note = format!(
                "smime-agent: {lost} log line(s) were dropped: the log could not be written\n"
            );
            if out.write_all(note.as_bytes()).is_ok() {
                self.told.fetch_add(lost, Ordering::Relaxed);
            }
        }
        if out.write_all(line).and_then(|()| out.flush()).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The agent's log drops.
pub static DROPS: Drops = Drops::new();

/// The writer the agent logs through: each event is collected and written to stderr as one
/// line when tracing is done with it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stderr;

/// One event's bytes on their way to stderr.
pub struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            DROPS.write_line(&mut io::stderr().lock(), &self.0);
        }
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(Vec::with_capacity(256))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log destination that fails while `full` is set.
    struct Disk {
        full: bool,
        written: Vec<u8>,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.full {
                return Err(io::Error::other("No space left on device"));
            }
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_that_cannot_be_written_are_counted_and_told_of_once_the_log_works_again() {
        let drops = Drops::new();
        let mut disk = Disk {
            full: true,
            written: vec![],
        };
        drops.write_line(&mut disk, b"one\n");
        drops.write_line(&mut disk, b"two\n");
        assert_eq!(drops.dropped(), 2);
        disk.full = false;
        drops.write_line(&mut disk, b"three\n");
        drops.write_line(&mut disk, b"four\n");
        let text = String::from_utf8(disk.written).unwrap();
        assert_eq!(
            text,
            "smime-agent: 2 log line(s) were dropped: the log could not be written\nthree\nfour\n"
        );
        assert_eq!(drops.dropped(), 2);
    }
}
