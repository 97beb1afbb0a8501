//! Protocol framing: any byte stream cut into frames (bounded), each frame parsed as a
//! request the way the server does.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use smime_agent_proto::codec::{BlockingFrameReader, Frame};

fuzz_target!(|data: &[u8]| {
    let mut frames = BlockingFrameReader::new(Cursor::new(data), 4096);
    while let Ok(Some(frame)) = frames.next_frame() {
        if let Frame::Line(line) = frame {
            smime_agent::fuzzing::request(&line);
        }
    }
});
