//! PKCS#12 key files: any bytes as a key file, opened with two passphrases.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smime_agent::fuzzing::pkcs12(data);
});
