//! SignedData: any bytes as a signed message (clear, opaque, bare DER, BER or PEM), every
//! layer verified.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let _ = smime_agent::smime::verify::verify_layers(data, now);
    let _ = smime_agent::smime::verify::carried_certificates(data);
});
