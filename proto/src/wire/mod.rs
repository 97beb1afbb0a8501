//! The messages of the protocol, as serde types.
//!
//! Client to agent: [`Request`] (`{"id":..,"op":"..",...params}`).
//! Agent to client: [`Response`] (`{"id":..,"ok":{..}}` or `{"id":..,"error":{..}}`) and
//! [`Event`] (`{"event":"..",...}`), told apart by [`AgentFrame::parse`].
//!
//! Requests are strict: an unknown field is a `bad_request`, so a misspelt option is never
//! silently ignored. Responses and events may grow new fields in a later minor release;
//! clients must ignore fields they do not know.

// Private modules with every item re-exported: the public paths stay `wire::X` (and `X`
// at the crate root) whichever file a type lives in.
mod error;
mod event;
mod keys;
mod primitives;
mod request;
mod response;
mod result;
mod status;
mod token;
mod validation;

pub use error::*;
pub use event::*;
pub use keys::*;
pub use primitives::*;
pub use request::*;
pub use response::*;
pub use result::*;
pub use status::*;
pub use token::*;
pub use validation::*;
