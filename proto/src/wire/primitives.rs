//! The values messages are built from: request ids, binary data and PINs.
//!
//! Owns how each is written in JSON: an id as a number or a bounded string, bytes as standard
//! base64, a PIN as a string that is wiped on drop and never printed. Knows nothing of the
//! ops, results or events that carry them.

use std::fmt;

use base64::Engine as _;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// A request id, chosen by the client: a non-negative integer or a string (at most
/// [`MAX_ID_STRING_LEN`] bytes). The agent echoes it in the response.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RequestId {
    Num(u64),
    Str(String),
}

/// Longest string id the agent accepts.
pub const MAX_ID_STRING_LEN: usize = 128;

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Num(n) => write!(f, "{n}"),
            RequestId::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl From<u64> for RequestId {
    fn from(n: u64) -> Self {
        RequestId::Num(n)
    }
}

/// Binary data, carried as standard base64 (RFC 4648 section 4, with padding).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Base64Bytes(pub Vec<u8>);

impl fmt::Debug for Base64Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Base64Bytes({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for Base64Bytes {
    fn from(v: Vec<u8>) -> Self {
        Base64Bytes(v)
    }
}

impl Serialize for Base64Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(Base64Bytes)
            .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
    }
}

impl JsonSchema for Base64Bytes {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Base64Bytes".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "contentEncoding": "base64",
            "description": "Binary data as standard base64 with padding (RFC 4648 section 4)."
        })
    }
}

/// A PIN on its way to the agent. Its memory is wiped when dropped, and it never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    pub fn new(pin: impl Into<String>) -> Self {
        Pin(Zeroizing::new(pin.into()))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

impl Serialize for Pin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Pin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Pin(Zeroizing::new(s)))
    }
}

impl JsonSchema for Pin {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Pin".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "The PIN as typed by the person. Never logged by the agent."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{PinParams, Request};

    #[test]
    fn pin_never_prints() {
        let p = PinParams {
            prompt: 1,
            pin: Some(Pin::new("4711")),
            cancel: false,
        };
        assert!(!format!("{p:?}").contains("4711"));
    }

    #[test]
    fn bad_base64_is_an_error() {
        let err = serde_json::from_str::<Request>(
            r#"{"id":1,"op":"sign","signer":"a@b","content":"!!"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("base64"), "{err}");
    }
}
