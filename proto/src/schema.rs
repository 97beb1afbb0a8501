//! The JSON Schema of the protocol, generated from the wire types.
//!
//! `proto/schema/request.schema.json` describes what a client sends,
//! `proto/schema/agent-frame.schema.json` what the agent sends. The committed files are
//! checked against these generators by a test; regenerate them with
//! `cargo run -p smime-agent-proto --example gen-schema`.

use schemars::{JsonSchema, schema_for};
use serde::Serialize;

use crate::wire::*;

/// A response as the schema describes it: `ok` holds the result of the request's op.
#[derive(Serialize, JsonSchema)]
#[allow(dead_code, clippy::large_enum_variant)]
struct ResponseSchema {
    /// The request's id; `null` only when it could not be read from the request.
    id: Option<RequestId>,
    #[serde(flatten)]
    outcome: OutcomeSchema,
}

#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code, clippy::large_enum_variant)]
enum OutcomeSchema {
    Ok(OkSchema),
    Error(ErrorBody),
}

/// The result of each op, by op.
#[derive(Serialize, JsonSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)]
enum OkSchema {
    Hello(HelloResult),
    Status(StatusResult),
    ListCerts(ListCertsResult),
    Sign(SignResult),
    Encrypt(EncryptResult),
    Decrypt(DecryptResult),
    Compose(ComposeResult),
    Rescan(RescanResult),
    Forget(ForgetResult),
    Reload(ReloadResult),
    Validate(ValidateResult),
    Which(WhichResult),
    Verify(VerifyResult),
    Empty(PinResult),
}

/// Anything the agent sends: a response or an event.
#[derive(Serialize, JsonSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)]
enum AgentFrameSchema {
    Response(ResponseSchema),
    Event(Event),
}

fn pretty<T: Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// Schema of a client's request frame.
pub fn request_schema() -> String {
    pretty(&schema_for!(Request))
}

/// Schema of an agent's frame (response or event).
pub fn agent_frame_schema() -> String {
    pretty(&schema_for!(AgentFrameSchema))
}

/// The schema files and their generated contents, by file name under `proto/schema/`.
pub fn files() -> Vec<(&'static str, String)> {
    vec![
        ("request.schema.json", request_schema()),
        ("agent-frame.schema.json", agent_frame_schema()),
    ]
}
