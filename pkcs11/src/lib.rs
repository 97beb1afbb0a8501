//! # smime-agent-pkcs11
//!
//! A PKCS#11 module (`libsmime_agent_pkcs11.so`) that holds no keys and no PINs: it shows
//! the tokens and certificates of the running smime-agent as PKCS#11 slots and objects, and
//! forwards every private-key operation to the agent over its socket. Thunderbird and
//! Evolution (through NSS), OpenSSL programs (through libp11's engine or the pkcs11
//! provider), `pkcs11-tool` and `p11tool` load it like any module; the agent keeps its
//! rules: certificate policy, `smart_card_only`, one PIN prompt per card by its own PIN
//! source, never retrying a rejected PIN, the audit log, and the card life cycle.
//!
//! - `abi`: the C functions (`C_GetFunctionList` and the PKCS#11 2.40 functions), pointers
//!   checked and copied; every entry point catches panics.
//! - [`module`]: the state and the operations in safe Rust.
//! - `agent`: the connections to the agent and the watcher of its token events.
//! - `objects`, `mechanism`, `error`: objects and attributes, mechanisms, CK_RV codes.
//!
//! Unsafe code is allowed only in `abi`, where the C ABI needs it.

#![deny(unsafe_code)]

mod abi;
mod agent;
mod error;
mod mechanism;
pub mod module;
mod objects;

pub use abi::C_GetFunctionList;
