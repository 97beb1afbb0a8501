//! Writes the JSON Schema files under `proto/schema/` from the wire types.
fn main() -> std::io::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
    std::fs::create_dir_all(&dir)?;
    for (name, content) in smime_agent_proto::schema::files() {
        std::fs::write(dir.join(name), content)?;
        println!("wrote {}", dir.join(name).display());
    }
    Ok(())
}
