//! The PKCS#11 module in host programs: where it is, an NSS database that loads it, and
//! programs run while a person types PINs into the terminal the agent prompts on.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use super::peers::run;
use super::*;

/// The module, built beside the agent binary.
pub fn module() -> &'static Path {
    static M: OnceLock<PathBuf> = OnceLock::new();
    M.get_or_init(|| {
        let so = agent_bin()
            .parent()
            .unwrap()
            .join("libsmime_agent_pkcs11.so");
        // `cargo test --workspace` (and so `make test`) builds it; a narrower run may find an
        // old one, which would test old code.
        let built = std::fs::metadata(&so).and_then(|m| m.modified()).ok();
        let newest_source = ["pkcs11/src", "proto/src", "proto/src/wire"]
            .iter()
            .flat_map(|d| std::fs::read_dir(workspace_root().join(d)).into_iter().flatten())
            .filter_map(|e| e.ok()?.metadata().ok()?.modified().ok())
            .max();
        assert!(
            built.is_some_and(|b| newest_source.is_none_or(|s| s <= b)),
            "{} is missing or older than its sources: run `cargo build -p smime-agent-pkcs11` (make test does)",
            so.display()
        );
        so
    })
}

/// A fresh NSS database in `dir` with the module loaded and the test PKI's root trusted;
/// its `sql:` name.
pub fn nss_db(dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let db = format!("sql:{}", dir.display());
    run(Command::new("certutil").args(["-N", "-d", &db, "--empty-password"]));
    run(Command::new("modutil")
        .args(["-dbdir", &db, "-add", "smime-agent", "-force", "-libfile"])
        .arg(module()));
    run(Command::new("certutil")
        .args(["-A", "-d", &db, "-n", "root", "-t", "C,C,C", "-i"])
        .arg(pki_file("root-ca.pem")));
    run(Command::new("certutil")
        .args(["-A", "-d", &db, "-n", "ca", "-t", ",,", "-i"])
        .arg(pki_file("ca.pem")));
    db
}

/// A host program that loads the module: it finds `agent` and names `term` (GPG_TTY).
pub fn host_program(program: &str, agent: &Agent, term: &Terminal) -> Command {
    let mut c = Command::new(program);
    c.env(smime_agent_proto::SOCKET_ENV, &agent.socket)
        .env("GPG_TTY", term.tty())
        .env("TERM", "xterm")
        .env_remove("DISPLAY")
        .stdin(std::process::Stdio::null());
    c
}

/// Runs `cmd` in the background; the person types `pin` at the one prompt it brings
/// (the `prompt_no`-th on the terminal).
pub async fn with_pin(
    agent: &Agent,
    term: &Terminal,
    cmd: Command,
    prompt_no: usize,
    pin: &str,
) -> Output {
    with_pins(agent, term, cmd, prompt_no, &[pin]).await
}

/// The same with one PIN per prompt, in order.
pub async fn with_pins(
    agent: &Agent,
    term: &Terminal,
    mut cmd: Command,
    first_prompt: usize,
    pins: &[&str],
) -> Output {
    let child = tokio::task::spawn_blocking(move || cmd.output().expect("run"));
    for (i, pin) in pins.iter().enumerate() {
        term.wait_for("PIN:", first_prompt + i).await;
        term.type_line(pin);
    }
    match tokio::time::timeout(Duration::from_secs(30), child).await {
        Ok(out) => out.unwrap(),
        Err(_) => panic!(
            "the program did not finish; the agent's log:\n{}\nthe terminal:\n{}",
            agent.log_text(),
            Terminal::tmux(&term.socket, &["capture-pane", "-p", "-S", "-50"])
        ),
    }
}

/// OpenSSL's verdict on a DER SignedData: the signed content, if it verifies.
pub fn openssl_verified(dir: &Path, der: &[u8]) -> Result<Vec<u8>, String> {
    let input = write_file(dir, &format!("v-{}.p7m", rand_suffix()), der);
    let out = Command::new("openssl")
        .args(["cms", "-verify", "-inform", "DER", "-in"])
        .arg(&input)
        .arg("-CAfile")
        .arg(pki_file("chain.pem"))
        .args(["-purpose", "smimesign"])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
