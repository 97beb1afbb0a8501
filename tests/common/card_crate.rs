//! `tests/common` as the virtual card crate's tests see it: `tests/virtual-card/tests/*.rs`
//! include this file by path. It brings the fixtures and the card support, not the agent's
//! test support, which needs the agent's binary and crates the card crate does not have.

#![allow(dead_code, unused_imports)] // Each test binary uses a different part.

mod card;
mod fixtures;

pub use card::*;
pub use fixtures::*;
