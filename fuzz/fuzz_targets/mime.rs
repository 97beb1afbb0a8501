//! MIME reading: any bytes as a mail entity (headers, multipart, base64 bodies).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = smime_agent::smime::mime::read(data);
});
