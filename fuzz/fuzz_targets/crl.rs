//! CRLs: any bytes as a DER CRL, as the cache reads it and as RFC 5280 6.3 processing
//! judges it for a fixed certificate (distribution points, reasons, indirect entries).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    smime_agent::fuzzing::crl(data);
});
