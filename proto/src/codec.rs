//! Framing: one JSON document per line, bounded in size.
//!
//! A frame is the bytes up to a `\n` (a trailing `\r` is dropped, empty lines are skipped).
//! A frame longer than the bound is not buffered: its bytes are discarded up to the next
//! `\n`, and the reader reports [`Frame::TooLarge`] with the request id when the frame began
//! `{"id":<id>` (clients that want their oversized request named put `id` first). The
//! stream stays usable afterwards: newline framing always finds the next frame.
//!
//! Bytes after the last `\n` when the stream ends are an incomplete frame and are dropped.

use std::io::{self, BufRead};

use serde::Serialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::wire::{MAX_ID_STRING_LEN, RequestId};

/// How many bytes of an oversized frame are kept to find its id.
const HEAD_KEEP: usize = 256;

/// One frame read from the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line (without `\n`/`\r\n`), at most the bound long.
    Line(Vec<u8>),
    /// A line over the bound, discarded. `id` is the request id when it could be read from
    /// the frame's first bytes.
    TooLarge { id: Option<RequestId>, size: u64 },
}

/// The framing state shared by the blocking and the async reader.
#[derive(Debug)]
struct Assembler {
    max: usize,
    buf: Vec<u8>,
    /// Set while skipping the rest of an oversized frame.
    discard: Option<Discard>,
}

#[derive(Debug)]
struct Discard {
    head: Vec<u8>,
    seen: u64,
}

impl Assembler {
    fn new(max: u64) -> Self {
        Assembler {
            max: usize::try_from(max).unwrap_or(usize::MAX),
            buf: Vec::new(),
            discard: None,
        }
    }

    /// Takes bytes from `avail`. Returns how many were consumed and the frame they completed.
    fn feed(&mut self, avail: &[u8]) -> (usize, Option<Frame>) {
        let (chunk, consumed, complete) = match avail.iter().position(|&b| b == b'\n') {
            Some(pos) => (&avail[..pos], pos + 1, true),
            None => (avail, avail.len(), false),
        };
        self.take(chunk);
        if !complete {
            return (consumed, None);
        }
        let frame = match self.discard.take() {
            Some(d) => Frame::TooLarge {
                id: sniff_id(&d.head),
                size: d.seen,
            },
            None => {
                let mut line = std::mem::take(&mut self.buf);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Frame::Line(line)
            }
        };
        (consumed, Some(frame))
    }

    fn take(&mut self, chunk: &[u8]) {
        if let Some(d) = &mut self.discard {
            d.seen += chunk.len() as u64;
            return;
        }
        // One byte of slack for the `\r` of a `\r\n` line end; `fix_oversize` catches a
        // line that used the slack without one.
        if self.buf.len() + chunk.len() > self.max.saturating_add(1) {
            let seen = (self.buf.len() + chunk.len()) as u64;
            let mut head = std::mem::take(&mut self.buf);
            head.truncate(HEAD_KEEP);
            let room = HEAD_KEEP - head.len();
            head.extend_from_slice(&chunk[..chunk.len().min(room)]);
            self.discard = Some(Discard { head, seen });
        } else {
            self.buf.extend_from_slice(chunk);
        }
    }
}

/// Reads the request id from the start of a frame shaped `{"id":<number or string>`.
fn sniff_id(head: &[u8]) -> Option<RequestId> {
    // The kept head may end inside a multi-byte character: use its valid prefix.
    let s = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).ok()?,
    };
    let rest = s.trim_start().strip_prefix('{')?.trim_start();
    let rest = rest.strip_prefix("\"id\"")?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    if let Some(body) = rest.strip_prefix('"') {
        let end = body.find('"')?;
        let id = &body[..end];
        if id.contains('\\') || id.len() > MAX_ID_STRING_LEN {
            return None;
        }
        return Some(RequestId::Str(id.to_owned()));
    }
    let digits: &str = &rest[..rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len())];
    let after = rest[digits.len()..].trim_start();
    if digits.is_empty() || !(after.starts_with(',') || after.starts_with('}')) {
        return None;
    }
    digits.parse().ok().map(RequestId::Num)
}

fn fix_oversize(asm: &Assembler, frame: Frame) -> Frame {
    match frame {
        Frame::Line(l) if l.len() > asm.max => Frame::TooLarge {
            id: sniff_id(&l[..l.len().min(HEAD_KEEP)]),
            size: l.len() as u64,
        },
        other => other,
    }
}

/// Reads frames from an async byte stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    asm: Assembler,
}

impl<R: AsyncBufRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_frame_bytes: u64) -> Self {
        FrameReader {
            inner,
            asm: Assembler::new(max_frame_bytes),
        }
    }

    /// Bytes of a frame begun and not yet ended (counted also while an oversized one is
    /// skipped): what a stalled client holds. 0 between frames.
    pub fn unfinished(&self) -> u64 {
        match &self.asm.discard {
            Some(d) => d.seen,
            None => self.asm.buf.len() as u64,
        }
    }

    /// The next frame, or `None` at the end of the stream. Cancel-safe: dropping the future
    /// loses no bytes.
    pub async fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            let avail = self.inner.fill_buf().await?;
            if avail.is_empty() {
                return Ok(None);
            }
            let (n, frame) = self.asm.feed(avail);
            self.inner.consume(n);
            match frame {
                Some(Frame::Line(l)) if l.is_empty() => continue,
                Some(f) => return Ok(Some(fix_oversize(&self.asm, f))),
                None => continue,
            }
        }
    }
}

/// Reads frames from a blocking byte stream.
#[derive(Debug)]
pub struct BlockingFrameReader<R> {
    inner: R,
    asm: Assembler,
}

impl<R: BufRead> BlockingFrameReader<R> {
    pub fn new(inner: R, max_frame_bytes: u64) -> Self {
        BlockingFrameReader {
            inner,
            asm: Assembler::new(max_frame_bytes),
        }
    }

    /// The next frame, or `None` at the end of the stream.
    pub fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            let avail = self.inner.fill_buf()?;
            if avail.is_empty() {
                return Ok(None);
            }
            let (n, frame) = self.asm.feed(avail);
            self.inner.consume(n);
            match frame {
                Some(Frame::Line(l)) if l.is_empty() => continue,
                Some(f) => return Ok(Some(fix_oversize(&self.asm, f))),
                None => continue,
            }
        }
    }
}

/// Encodes a message as one frame: compact JSON and `\n`. JSON escapes every newline inside
/// strings, so the frame cannot be split.
pub fn encode_frame<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serializing the protocol's own types cannot fail: all keys are strings and there are
    // no non-finite floats.
    let mut out = serde_json::to_vec(msg).unwrap_or_else(|e| {
        format!(
            r#"{{"id":null,"error":{{"code":"internal","message":"cannot encode a frame: {e}"}}}}"#
        )
        .into_bytes()
    });
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8], max: u64, chunk: usize) -> Vec<Frame> {
        // Feed in small chunks to exercise every split point.
        struct Chunked<'a>(&'a [u8], usize, usize);
        impl io::Read for Chunked<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = self.1.min(out.len()).min(self.0.len() - self.2);
                out[..n].copy_from_slice(&self.0[self.2..self.2 + n]);
                self.2 += n;
                Ok(n)
            }
        }
        let reader = io::BufReader::with_capacity(chunk, Chunked(input, chunk, 0));
        let mut r = BlockingFrameReader::new(reader, max);
        let mut out = vec![];
        while let Some(f) = r.next_frame().unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn splits_lines_strips_cr_and_skips_empty_lines() {
        for chunk in [1, 2, 3, 7, 64] {
            let f = frames(b"{\"a\":1}\r\n\n{\"b\":2}\nincomplete", 100, chunk);
            assert_eq!(
                f,
                vec![
                    Frame::Line(b"{\"a\":1}".to_vec()),
                    Frame::Line(b"{\"b\":2}".to_vec())
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn oversized_frame_is_reported_with_its_id_and_the_stream_goes_on() {
        let mut input = br#"{"id":42,"op":"sign","content":""#.to_vec();
        input.extend(std::iter::repeat_n(b'A', 1000));
        input.extend_from_slice(b"\"}\n{\"id\":43}\n");
        for chunk in [1, 5, 64, 4096] {
            let f = frames(&input, 100, chunk);
            assert_eq!(f.len(), 2, "chunk {chunk}");
            match &f[0] {
                Frame::TooLarge { id, size } => {
                    assert_eq!(id, &Some(RequestId::Num(42)));
                    assert!(*size > 100, "size {size}");
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(f[1], Frame::Line(b"{\"id\":43}".to_vec()));
        }
    }

    #[test]
    fn frame_of_exactly_the_bound_passes_one_over_does_not() {
        let ok = [vec![b'x'; 10], b"\n".to_vec()].concat();
        assert_eq!(frames(&ok, 10, 3), vec![Frame::Line(vec![b'x'; 10])]);
        let ok_crlf = [vec![b'x'; 10], b"\r\n".to_vec()].concat();
        assert_eq!(frames(&ok_crlf, 10, 3), vec![Frame::Line(vec![b'x'; 10])]);
        let over = [vec![b'x'; 11], b"\n".to_vec()].concat();
        assert!(matches!(
            frames(&over, 10, 3)[..],
            [Frame::TooLarge { id: None, .. }]
        ));
    }

    #[test]
    fn sniffs_only_well_formed_leading_ids() {
        assert_eq!(
            sniff_id(br#" { "id" : "abc", "op""#),
            Some(RequestId::Str("abc".into()))
        );
        assert_eq!(sniff_id(br#"{"id":7}"#), Some(RequestId::Num(7)));
        assert_eq!(sniff_id(br#"{"op":"x","id":7}"#), None);
        assert_eq!(sniff_id(br#"{"id":7.5,"#), None);
        assert_eq!(sniff_id(br#"{"id":"a\"b","#), None);
        assert_eq!(sniff_id(b"\xff\xfe"), None);
    }
}
