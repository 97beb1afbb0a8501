//! EnvelopedData and AuthEnvelopedData: any bytes as an envelope, its recipients read.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = smime_agent::smime::envelope::parse(data) {
        let _ = env.decrypt(&[0u8; 32]);
    }
});
