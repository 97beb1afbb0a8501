//! OCSP answers: any bytes as a responder's answer about a fixed certificate, judged as the
//! revocation check judges one (form, nonce, CertID, times, then certval's signature and
//! responder checks).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smime_agent::fuzzing::ocsp(data);
});
