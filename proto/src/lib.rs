//! # smime-agent-proto: the wire protocol of smime-agent
//!
//! smime-agent is a local daemon that owns every private-key operation of the user's smart
//! cards and PKCS#11 tokens. Mail clients and the `smime-agent` command line talk to it over
//! a local stream socket with newline-delimited JSON. This crate is that protocol, and
//! nothing else:
//!
//! - [`wire`]: the messages (requests, responses, events, error codes) as serde types. The
//!   normative description is `PROTOCOL.md` beside this crate; the JSON Schema in
//!   `schema/` is generated from these types ([`schema`]).
//! - [`codec`]: the framing (one JSON document per line, with a size bound), for blocking and
//!   async readers.
//! - [`client`]: a blocking client (what the CLI uses) and an async client (tests,
//!   benchmarks, and any Rust mail client), both of which do the `hello` exchange.
//! - [`paths`]: where the agent's socket lives.
//!
//! A minimal session, as bytes on the socket (`>` client to agent, `<` agent to client):
//!
//! ```text
//! > {"id":1,"op":"hello","version":1,"pin_prompt":true}
//! < {"id":1,"ok":{"protocol_version":1,"agent":"smime-agent 0.1.0",...}}
//! > {"id":2,"op":"sign","signer":"alice@example.org","content":"Q29udGVudC1UeXBlOi..."}
//! < {"event":"pin_needed","request":2,"prompt":1,"token":{...},...}
//! > {"id":3,"op":"pin","prompt":1,"pin":"4711"}
//! < {"id":3,"ok":{}}
//! < {"id":2,"ok":{"mime":"...","certificate":{...},"why":"..."}}
//! ```
#![forbid(unsafe_code)]

pub mod client;
pub mod codec;
pub mod paths;
pub mod schema;
pub mod wire;

pub use wire::*;

/// The protocol version this crate speaks. A `hello` with another version is answered with
/// `unsupported_version`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default bound on one frame (one JSON line, without its newline): 64 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: u64 = 64 * 1024 * 1024;

/// The environment variable that names the agent's socket for clients.
pub const SOCKET_ENV: &str = "SMIME_AGENT_SOCK";
