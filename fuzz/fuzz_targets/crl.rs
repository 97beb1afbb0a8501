//! CRLs: any bytes as a DER CRL, as the cache reads it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smime_agent::fuzzing::crl(data);
});
