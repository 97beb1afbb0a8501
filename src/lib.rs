//! # smime-agent
//!
//! A local daemon that owns every private-key operation of the user's smart cards and
//! PKCS#11 tokens, and signs S/MIME mail for desktop mail clients over a local socket.
//! See `docs/ARCHITECTURE.md` for the modules and data flows, and `proto/PROTOCOL.md` for
//! the protocol.
//!
//! Layers, each owning one concern:
//! - [`config`]: the configuration file and its checks.
//! - [`server`]: the socket, the peer check, connections.
//! - [`ops`]: what each request does.
//! - [`store`]: the certificates present now, and the selection rules.
//! - [`tokens`]: PKCS#11 modules, tokens, PINs, reader and slot watchers.
//! - [`presence`]: keeps the store in step with the tokens present.
//! - [`smime`]: CMS and MIME.
//! - [`certs`]: facts read from a certificate.
//! - [`alg`]: the names and OIDs of the algorithms.
//! - [`contacts`]: correspondents' certificates.
//! - [`directory`]: other people's certificates and lists from LDAP servers.
//! - [`recipients`]: finding the certificates to encrypt to.
//! - [`agent`]: wiring and life cycle.

#![deny(unsafe_code)]

pub mod agent;
pub mod alg;
pub mod certs;
pub mod config;
pub mod contacts;
pub mod directory;
pub mod log;
pub mod net;
pub mod oids;
pub mod ops;
pub mod presence;
pub mod recipients;
pub mod server;
pub mod smime;
pub mod store;
pub mod sys;
pub mod tokens;
pub mod trust;

/// Entry points for the fuzz targets in `fuzz/` into parsers the library keeps private.
/// Compiled only with `--cfg fuzzing` (which `cargo fuzz` sets).
#[cfg(fuzzing)]
pub mod fuzzing {
    /// A protocol frame as the server parses it into a request.
    pub fn request(line: &[u8]) {
        let _ = crate::server::handler::parse_request(line.to_vec());
    }

    /// A CRL as the cache reads it, and as RFC 5280 6.3 processing judges it.
    pub fn crl(der: &[u8]) {
        let _ = crate::trust::crl::parse("fuzz:", der.to_vec());
        crate::trust::fuzzing::crl_status(der);
    }

    /// An OCSP answer as the revocation check judges it.
    pub fn ocsp(der: &[u8]) {
        crate::trust::fuzzing::ocsp(der);
    }

    /// A PKCS#12 key file, with the empty passphrase and with "fuzz".
    pub fn pkcs12(data: &[u8]) {
        let _ = crate::tokens::soft::open_pkcs12(data, "");
        let _ = crate::tokens::soft::open_pkcs12(data, "fuzz");
    }
}
