//! Certificate facts: any bytes as a DER certificate (names, addresses, key, usages).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = smime_agent::certs::CertFacts::from_der(data) {
        let _ = c.all_emails().count();
    }
});
