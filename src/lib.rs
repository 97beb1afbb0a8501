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
//! - [`recipients`]: finding the certificates to encrypt to.
//! - [`agent`]: wiring and life cycle.

#![deny(unsafe_code)]

pub mod agent;
pub mod alg;
pub mod certs;
pub mod config;
pub mod contacts;
pub mod log;
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
