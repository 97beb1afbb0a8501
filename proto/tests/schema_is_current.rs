//! The committed JSON Schema must match the wire types.

#[test]
fn committed_schema_matches_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
    for (name, generated) in smime_agent_proto::schema::files() {
        let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        assert!(
            committed == generated,
            "proto/schema/{name} is out of date: run `cargo run -p smime-agent-proto --example gen-schema` and commit the result"
        );
    }
}

#[test]
fn every_error_code_is_documented_in_protocol_md() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("PROTOCOL.md"),
    )
    .expect("PROTOCOL.md");
    for code in smime_agent_proto::ErrorCode::ALL {
        assert!(
            doc.contains(&format!("`{}`", code.as_str())),
            "PROTOCOL.md does not document error code {code}"
        );
    }
    for op in smime_agent_proto::Op::NAMES {
        assert!(
            doc.contains(&format!("### `{op}`")),
            "PROTOCOL.md has no section for op {op}"
        );
    }
}
