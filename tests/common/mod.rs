//! Test support for the agent's integration tests: the test PKI, SoftHSM tokens, a running
//! agent (the real binary on a real socket), protocol clients, and the reference peers.
//!
//! Everything a test starts is stopped when its handle drops, also when the test panics.
//!
//! `fixtures.rs` and `card.rs` need nothing of the agent; the virtual card crate's tests use
//! them too, through `card_crate.rs`.

#![allow(dead_code)]

pub mod card;
pub mod card_agent;
mod fixtures;
pub mod module;
pub mod peers;
pub mod slapd;

pub use fixtures::*;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use smime_agent_proto::client::{Client, ClientError};
use smime_agent_proto::{
    DecryptParams, DecryptResult, Event, HelloParams, MessageLayer, Op, Outcome, PROTOCOL_VERSION,
    Pin, PinNeeded, PinentryEnv, RequestId, SignFormat, SignParams, SignResult,
};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const PIN: &str = "4711";
pub const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_smime-agent"))
}

/// A SoftHSM directory with tokens, made by softhsm-setup/make-token.sh.
pub struct SoftHsm {
    pub dir: PathBuf,
}

impl SoftHsm {
    /// A token `label` holding the named PKI keys and certificates.
    pub fn new(dir: &Path) -> SoftHsm {
        std::fs::create_dir_all(dir).unwrap();
        SoftHsm {
            dir: dir.to_owned(),
        }
    }

    pub fn add_token(&self, label: &str, pin: &str, names: &[&str]) -> &Self {
        self.add_token_from(pki(), label, pin, names)
    }

    /// A token with keys and certificates of another PKI (`NAME`), or CA certificates without
    /// a key (`cacert:FILE`).
    pub fn add_token_from(&self, pki: &Path, label: &str, pin: &str, names: &[&str]) -> &Self {
        let mut args: Vec<String> = vec![];
        for n in names {
            match n.strip_prefix("cacert:") {
                Some(f) => args.extend(["--cacert".to_owned(), f.to_owned()]),
                None => args.push((*n).to_owned()),
            }
        }
        let out = Command::new(workspace_root().join("softhsm-setup/make-token.sh"))
            .arg("--dir")
            .arg(&self.dir)
            .arg("--pki")
            .arg(pki)
            .args(["--label", label, "--pin", pin])
            .args(&args)
            .output()
            .expect("run make-token.sh");
        ok("make-token.sh", &out);
        self
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.join("softhsm2.conf")
    }
}

/// A running agent.
pub struct Agent {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
    pub log: PathBuf,
}

/// How to start an agent.
pub struct AgentSpec<'a> {
    pub softhsm: Option<&'a SoftHsm>,
    /// Extra TOML appended to the configuration.
    pub extra_config: String,
    pub pin_source: &'a str,
    /// Extra lines for the `[pin]` table.
    pub pin_extra: &'a str,
    pub env: Vec<(String, String)>,
    /// Start the agent under this umask (via the shell).
    pub umask: Option<&'a str>,
    /// The lines of the `[trust]` table; `None`: the test PKI's root is the only anchor.
    pub trust: Option<String>,
    /// Extra lines of the `[revocation]` table (its `cache_dir` is `DIR/crls` unless given).
    pub revocation: String,
    /// Where the agent's stderr (its log) goes instead of `DIR/agent.log`.
    pub stderr: Option<&'a Path>,
}

impl Default for AgentSpec<'_> {
    fn default() -> Self {
        AgentSpec {
            softhsm: None,
            extra_config: String::new(),
            pin_source: "client",
            pin_extra: "",
            env: vec![],
            umask: None,
            trust: None,
            revocation: String::new(),
            stderr: None,
        }
    }
}

impl Agent {
    /// Starts `smime-agent serve --foreground` and waits for its socket line.
    pub fn start(dir: &Path, spec: AgentSpec<'_>) -> Agent {
        std::fs::create_dir_all(dir).unwrap();
        let mut cfg = String::new();
        if spec.softhsm.is_some() {
            cfg.push_str(&format!(
                "[[tokens.module]]\npath = \"{SOFTHSM}\"\nkind = \"software\"\n\n"
            ));
        }
        cfg.push_str(&format!(
            "[pin]\nsource = \"{}\"\n{}\n\n",
            spec.pin_source, spec.pin_extra
        ));
        let trust = spec.trust.clone().unwrap_or_else(|| {
            let keys = spec.softhsm.is_some()
                || spec.extra_config.contains("[[tokens.module]]")
                || spec.extra_config.contains("[soft_store]");
            if !keys {
                // No keys, no certificates to validate: no need for the test PKI.
                return "use_system_roots = false\n".into();
            }
            trust_for(pki())
        });
        cfg.push_str(&format!("[trust]\n{trust}\n"));
        let mut revocation = spec.revocation.clone();
        if !revocation.contains("cache_dir") {
            revocation.push_str(&format!(
                "\ncache_dir = \"{}\"\n",
                dir.join("crls").display()
            ));
        }
        cfg.push_str(&format!("[revocation]\n{revocation}\n"));
        // Contacts (harvested signers) stay in the test's directory, never in $HOME.
        if !spec.extra_config.contains("[contacts]") {
            cfg.push_str(&format!(
                "[contacts]\ndir = \"{}\"\n\n",
                dir.join("contacts").display()
            ));
        }
        cfg.push_str(&spec.extra_config);
        let config = dir.join("agent.toml");
        std::fs::write(&config, cfg).unwrap();
        let socket = dir.join("run").join("agent.sock");
        Self::spawn(dir, config, socket, &spec)
    }

    pub fn spawn(dir: &Path, config: PathBuf, socket: PathBuf, spec: &AgentSpec<'_>) -> Agent {
        std::fs::create_dir_all(dir).unwrap();
        let log = dir.join("agent.log");
        let logf = match spec.stderr {
            Some(p) => std::fs::OpenOptions::new().write(true).open(p).unwrap(),
            None => std::fs::File::create(&log).unwrap(),
        };
        let mut cmd = match spec.umask {
            Some(mask) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("umask {mask} && exec \"$0\" \"$@\""))
                    .arg(agent_bin());
                c
            }
            None => Command::new(agent_bin()),
        };
        cmd.arg("serve")
            .arg("--foreground")
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(&socket)
            .env("RUST_LOG", "debug")
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(logf);
        if let Some(h) = spec.softhsm {
            cmd.env("SOFTHSM2_CONF", h.conf());
        }
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start smime-agent");
        let stdout = child.stdout.take().unwrap();
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first).unwrap();
        let mut agent = Agent {
            dir: dir.to_owned(),
            socket,
            config,
            child: Some(child),
            log,
        };
        if !first.starts_with("SMIME_AGENT_SOCK=") {
            let log = std::fs::read_to_string(&agent.log).unwrap_or_default();
            agent.child = None;
            panic!("the agent did not start: stdout {first:?}\nlog:\n{log}");
        }
        agent
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGTERM and waits for the agent to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("agent running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the agent did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A connected async client that answers PIN prompts itself.
    pub async fn client(&self) -> Client {
        Client::connect(&self.socket, hello(true))
            .await
            .expect("connect")
    }

    /// Runs the CLI against this agent.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(agent_bin());
        c.env("SMIME_AGENT_SOCK", &self.socket);
        c
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An agent with one SoftHSM token `label` (PIN [`PIN`]) holding the test PKI's keys and
/// certificates `names`, in `DIR/softhsm`; the agent in `DIR/agent`, started as `spec` says.
pub fn softhsm_agent(
    dir: &Path,
    label: &str,
    names: &[&str],
    spec: AgentSpec<'_>,
) -> (SoftHsm, Agent) {
    let hsm = SoftHsm::new(&dir.join("softhsm"));
    hsm.add_token(label, PIN, names);
    let agent = Agent::start(
        &dir.join("agent"),
        AgentSpec {
            softhsm: Some(&hsm),
            ..spec
        },
    );
    (hsm, agent)
}

/// Alice's agent: her keys `keys` on a SoftHSM token "alice", the PKI's certificates
/// `contacts` in her contacts store (`DIR/contacts`), and `extra` configuration.
pub fn agent_with_contacts(
    dir: &Path,
    keys: &[&str],
    contacts: &[&str],
    extra: &str,
) -> (SoftHsm, Agent) {
    let store = dir.join("contacts");
    std::fs::create_dir_all(&store).unwrap();
    for c in contacts {
        std::fs::copy(
            pki_file(&format!("{c}.pem")),
            store.join(format!("{c}.pem")),
        )
        .unwrap();
    }
    softhsm_agent(
        dir,
        "alice",
        keys,
        AgentSpec {
            extra_config: format!("[contacts]\ndir = \"{}\"\n\n{extra}", store.display()),
            ..Default::default()
        },
    )
}

pub fn hello(pin_prompt: bool) -> HelloParams {
    HelloParams {
        version: PROTOCOL_VERSION,
        client: Some("integration-test".into()),
        pin_prompt,
        pin_from_client: false,
        pinentry: None,
    }
}

/// The `hello` of a client that answers no prompts itself, on terminal `tty`: the agent
/// asks with pinentry there.
pub fn pinentry_hello(tty: &str) -> HelloParams {
    HelloParams {
        version: PROTOCOL_VERSION,
        client: Some("pinentry-test".into()),
        pin_prompt: false,
        pin_from_client: false,
        pinentry: Some(PinentryEnv {
            ttyname: Some(tty.to_owned()),
            ttytype: Some("xterm".into()),
            display: None,
        }),
    }
}

/// A small MIME entity, LF line ends as a client might send them.
pub fn sample_entity(text: &str) -> Vec<u8> {
    format!("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n{text}\n")
        .into_bytes()
}

/// A request to sign [`sample_entity`]`(text)` as `signer`, in the default format.
pub fn sign_params(signer: &str, text: &str) -> SignParams {
    SignParams {
        signer: signer.into(),
        content: sample_entity(text).into(),
        format: None,
        ..Default::default()
    }
}

/// Alice signs [`sample_entity`]`(text)` on a task of its own, so that the test can answer
/// the PIN prompt meanwhile (on a terminal or a reader's keypad).
pub fn sign_in_background(
    client: Client,
    text: &str,
) -> JoinHandle<Result<SignResult, ClientError>> {
    let params = sign_params("alice@example.org", text);
    tokio::spawn(async move { client.sign(params).await })
}

/// A request sent to the agent, whose PIN prompts the test answers one by one:
/// `while let Some(p) = sent.next_prompt().await { ... }`, then [`SentRequest::outcome`].
pub struct SentRequest {
    id: RequestId,
    events: UnboundedReceiver<Event>,
    rx: oneshot::Receiver<Outcome>,
    outcome: Option<Outcome>,
}

impl SentRequest {
    /// Sends `op` on `client`, whose events (the prompts) it takes.
    pub async fn send(client: &Client, op: Op) -> SentRequest {
        let events = client.take_events().expect("events not taken yet");
        let (id, rx) = client.start(op).await.expect("send the request");
        SentRequest {
            id,
            events,
            rx,
            outcome: None,
        }
    }

    /// The next PIN prompt for this request, or `None` once the agent has answered it.
    pub async fn next_prompt(&mut self) -> Option<PinNeeded> {
        if self.outcome.is_some() {
            return None;
        }
        loop {
            tokio::select! {
                ev = self.events.recv() => {
                    let Some(Event::PinNeeded(p)) = ev else { continue };
                    assert_eq!(p.request, self.id, "a prompt for another request");
                    return Some(p);
                }
                out = &mut self.rx => {
                    self.outcome = Some(out.expect("response"));
                    return None;
                }
            }
        }
    }

    /// The agent's answer, after [`SentRequest::next_prompt`] said there are no more prompts.
    pub fn outcome(self) -> Outcome {
        self.outcome.expect("the agent has answered")
    }
}

/// Answers the PIN prompt `p` with `pin`.
pub async fn answer_pin(client: &Client, p: &PinNeeded, pin: &str) {
    client
        .pin(p.prompt, Some(Pin::new(pin)))
        .await
        .expect("answer pin");
}

/// The result an outcome carries, or the agent's error.
pub fn result_of<T: DeserializeOwned>(outcome: Outcome) -> Result<T, ClientError> {
    match outcome {
        Outcome::Ok(v) => Ok(serde_json::from_value(v).expect("the result")),
        Outcome::Error(e) => Err(ClientError::Agent(Box::new(e))),
    }
}

/// Sends `op`, answering each of its PIN prompts with `pin`; the result or the agent's error.
pub async fn op_answering<T: DeserializeOwned>(
    client: &Client,
    op: Op,
    pin: &str,
) -> Result<T, ClientError> {
    let mut sent = SentRequest::send(client, op).await;
    while let Some(p) = sent.next_prompt().await {
        answer_pin(client, &p, pin).await;
    }
    result_of(sent.outcome())
}

/// Decrypts `content` through the agent, answering each PIN prompt with `pin`.
pub async fn decrypt_answering(
    client: &Client,
    content: Vec<u8>,
    pin: &str,
) -> Result<DecryptResult, ClientError> {
    let op = Op::Decrypt(DecryptParams {
        content: content.into(),
        ..Default::default()
    });
    op_answering(client, op, pin).await
}

/// The kinds of the layers the agent read, outermost first: "signed" or "encrypted".
pub fn layer_kinds(layers: &[MessageLayer]) -> Vec<&'static str> {
    layers
        .iter()
        .map(|l| match l {
            MessageLayer::Signed(_) => "signed",
            MessageLayer::Encrypted(_) => "encrypted",
        })
        .collect()
}

/// Signs, answering every PIN prompt of this request with `pin`. Returns the result and
/// how many prompts there were.
pub async fn sign_answering(
    client: &Client,
    signer: &str,
    content: Vec<u8>,
    format: Option<SignFormat>,
    pin: &str,
) -> (Result<SignResult, ClientError>, usize) {
    sign_answering_together(client, signer, content, format, pin, None).await
}

/// Requests that wait for each other: a prompt is answered only once `total` requests
/// were sent, and a moment later, so that each is under way at the agent by then.
#[derive(Clone)]
pub struct SentTogether {
    sent: std::sync::Arc<tokio::sync::watch::Sender<usize>>,
    total: usize,
}

impl SentTogether {
    pub fn new(total: usize) -> SentTogether {
        SentTogether {
            sent: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
            total,
        }
    }

    fn one_sent(&self) {
        self.sent.send_modify(|n| *n += 1);
    }

    async fn all_sent(&self) {
        let mut rx = self.sent.subscribe();
        let _ = rx.wait_for(|n| *n >= self.total).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// [`sign_answering`], as one of requests sent together: its prompts are answered only
/// once all of them were sent.
pub async fn sign_answering_together(
    client: &Client,
    signer: &str,
    content: Vec<u8>,
    format: Option<SignFormat>,
    pin: &str,
    together: Option<&SentTogether>,
) -> (Result<SignResult, ClientError>, usize) {
    let op = Op::Sign(SignParams {
        signer: signer.into(),
        content: content.into(),
        format,
        ..Default::default()
    });
    let mut sent = SentRequest::send(client, op).await;
    if let Some(t) = together {
        t.one_sent();
    }
    let mut prompts = 0;
    while let Some(p) = sent.next_prompt().await {
        prompts += 1;
        if let Some(t) = together {
            t.all_sent().await;
        }
        answer_pin(client, &p, pin).await;
    }
    (result_of(sent.outcome()), prompts)
}

/// `openssl cms -verify` (or `smime`) on a signed message; true when OpenSSL accepts it.
pub fn openssl_verifies(tool: &str, message: &[u8], dir: &Path) -> (bool, String) {
    match openssl_signed_content(tool, message, dir) {
        Ok(_) => (true, String::new()),
        Err(e) => (false, e),
    }
}

/// The content OpenSSL verified the signature over (its `-out`), or its complaint.
pub fn openssl_signed_content(tool: &str, message: &[u8], dir: &Path) -> Result<Vec<u8>, String> {
    let n = rand_suffix();
    let path = dir.join(format!("verify-{n}.eml"));
    let verified = dir.join(format!("verified-{n}.out"));
    std::fs::write(&path, message).unwrap();
    let out = Command::new("openssl")
        .arg(tool)
        .arg("-verify")
        .arg("-in")
        .arg(&path)
        .arg("-CAfile")
        .arg(pki_file("chain.pem"))
        .args(["-purpose", "smimesign", "-out"])
        .arg(&verified)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(std::fs::read(&verified).unwrap())
}

/// Asserts that OpenSSL accepts `message` and that what it signs is `sent` (line ends
/// aside: the agent signs the canonical CRLF form).
pub fn assert_openssl_signed(message: &[u8], dir: &Path, sent: &[u8]) {
    let content = openssl_signed_content("cms", message, dir)
        .unwrap_or_else(|e| panic!("openssl cms -verify rejected the signature: {e}"));
    let plain = |b: &[u8]| -> Vec<u8> {
        let mut v: Vec<u8> = b.iter().copied().filter(|c| *c != b'\r').collect();
        while v.last() == Some(&b'\n') {
            v.pop();
        }
        v
    };
    assert!(
        plain(&content) == plain(sent),
        "OpenSSL verified other content than was sent:\n{}",
        String::from_utf8_lossy(&content)
    );
}

/// `openssl ARGS -in FILE`, FILE holding `input` (made in `dir`): what it wrote out, or its
/// complaint.
pub fn openssl(dir: &Path, args: &[&str], input: &[u8]) -> Result<Vec<u8>, String> {
    let path = write_file(dir, &format!("openssl-in-{}", rand_suffix()), input);
    let out = Command::new("openssl")
        .args(args)
        .arg("-in")
        .arg(&path)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `openssl cms -decrypt` of an S/MIME entity with the PKI's key `name`.
pub fn openssl_decrypt(dir: &Path, mime: &[u8], name: &str) -> Result<Vec<u8>, String> {
    openssl_decrypt_as(dir, mime, name, "SMIME")
}

/// `openssl cms -decrypt` of a DER envelope with the PKI's key `name`.
pub fn openssl_decrypt_der(dir: &Path, der: &[u8], name: &str) -> Result<Vec<u8>, String> {
    openssl_decrypt_as(dir, der, name, "DER")
}

fn openssl_decrypt_as(
    dir: &Path,
    input: &[u8],
    name: &str,
    inform: &str,
) -> Result<Vec<u8>, String> {
    let cert = pki_file(&format!("{name}.pem"));
    let key = pki_file(&format!("{name}.key.pem"));
    let args = [
        "cms",
        "-decrypt",
        "-inform",
        inform,
        "-recip",
        path_str(&cert),
        "-inkey",
        path_str(&key),
    ];
    openssl(dir, &args, input)
}

/// A private tmux server with one pane that only sleeps, so nothing but pinentry reads its
/// tty. The server is killed when this is dropped.
pub struct Terminal {
    pub socket: String,
}

impl Terminal {
    pub fn start() -> Terminal {
        let socket = format!("smime-agent-test-{}", rand_suffix());
        let st = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "new-session",
                "-d",
                "-x",
                "160",
                "-y",
                "40",
                "sleep 600",
            ])
            .status()
            .expect("tmux");
        assert!(st.success(), "tmux new-session failed");
        Terminal { socket }
    }

    pub fn tmux(socket: &str, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", socket])
            .args(args)
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn tty(&self) -> String {
        Self::tmux(&self.socket, &["display", "-p", "#{pane_tty}"])
            .trim()
            .to_owned()
    }

    /// Waits (on the blocking pool) until the pane shows `text` for the `n`-th time.
    pub async fn wait_for(&self, text: &'static str, n: usize) -> String {
        let socket = self.socket.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let s = Self::tmux(&socket, &["capture-pane", "-p", "-S", "-200"]);
                if s.matches(text).count() >= n {
                    return s;
                }
                assert!(
                    Instant::now() < deadline,
                    "the terminal never showed {text:?} {n} times:\n{s}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await
        .unwrap()
    }

    pub fn type_line(&self, text: &str) {
        Self::tmux(&self.socket, &["send-keys", "-t", "0", text, "Enter"]);
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// A test PKI of its own (make-pki.sh DIR URL --only NAMES), for tests that serve its CRLs.
pub fn pki_in(dir: &Path, crl_base: &str, only: &[&str]) -> PathBuf {
    make_pki(dir, crl_base, only, &[])
}

/// As [`pki_in`], with the user certificates naming the OCSP responder at `ocsp_url` (and
/// the responder certificates made, when `only` names them).
pub fn pki_with_ocsp(dir: &Path, crl_base: &str, ocsp_url: &str, only: &[&str]) -> PathBuf {
    make_pki(dir, crl_base, only, &["--ocsp", ocsp_url])
}

/// As [`pki_in`], with the user certificates' CRL distribution point `ca_crl_url` (the
/// issuing CA's own still under `crl_base`).
pub fn pki_with_ca_crl(dir: &Path, crl_base: &str, ca_crl_url: &str, only: &[&str]) -> PathBuf {
    make_pki(dir, crl_base, only, &["--ca-crl", ca_crl_url])
}

/// As [`pki_in`], with the user certificates' AIA caIssuers `aia_url`.
pub fn pki_with_aia(dir: &Path, crl_base: &str, aia_url: &str, only: &[&str]) -> PathBuf {
    make_pki(dir, crl_base, only, &["--aia", aia_url])
}

fn make_pki(dir: &Path, crl_base: &str, only: &[&str], more: &[&str]) -> PathBuf {
    let mut cmd = Command::new(workspace_root().join("softhsm-setup/make-pki.sh"));
    cmd.arg(dir).arg(crl_base).arg("--only").arg(only.join(","));
    cmd.args(more);
    let st = cmd.status().expect("run make-pki.sh");
    assert!(st.success(), "make-pki.sh failed");
    dir.to_owned()
}

/// A CRL of `pki`'s issuing CA (or root, `ca = "root"`) revoking `revoke`, thisUpdate a
/// minute ago, nextUpdate `next_secs` from now (make-crl.sh).
pub fn make_crl(pki: &Path, ca: &str, revoke: &[&str], next_secs: i64) -> Vec<u8> {
    let out = pki.join(format!("crl-{}.der", rand_suffix()));
    let mut cmd = Command::new(workspace_root().join("softhsm-setup/make-crl.sh"));
    cmd.arg(pki)
        .arg(&out)
        .args(["--ca", ca, "--next-update", &next_secs.to_string()]);
    for r in revoke {
        cmd.args(["--revoke", r]);
    }
    let st = cmd.status().expect("run make-crl.sh");
    assert!(st.success(), "make-crl.sh failed");
    std::fs::read(&out).unwrap()
}

/// What the loopback CRL server serves, and what it saw.
#[derive(Default)]
pub struct ServerState {
    pub files: std::collections::HashMap<String, Vec<u8>>,
    pub hits: std::collections::HashMap<String, usize>,
    /// Wait this long before answering (so concurrent requests overlap).
    pub delay: Duration,
    /// Accept connections and never answer.
    pub hang: bool,
    /// The head of every request, in order (request line and headers).
    pub heads: Vec<String>,
}

/// A loopback HTTP server publishing CRLs, on a port of its own.
pub struct CrlServer {
    pub port: u16,
    pub state: std::sync::Arc<std::sync::Mutex<ServerState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CrlServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CrlServer {
    pub async fn start() -> CrlServer {
        CrlServer::start_on(0).await
    }

    /// Serves on 127.0.0.1:`port` (0: any free port). A POST gets the file published at its
    /// path, as a GET does (an OCSP answer made beforehand, say).
    pub async fn start_on(port: u16) -> CrlServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // SO_REUSEADDR: a responder that held the port just before leaves TIME_WAITs on it;
        // and a server dropped just before lets go of it when its aborted task ends.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_reuseaddr(true).unwrap();
            match socket
                .bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
                .and_then(|()| socket.listen(64))
            {
                Ok(l) => break l,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot listen on 127.0.0.1:{port}: {e}"),
            }
        };
        let port = listener.local_addr().unwrap().port();
        let state: std::sync::Arc<std::sync::Mutex<ServerState>> = Default::default();
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    // Read a request body too, so the close does not reset the connection.
                    let head_len = req
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(req.len(), |p| p + 4);
                    let text = String::from_utf8_lossy(&req[..head_len]).to_string();
                    let body_len = text
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0)
                        .min(1 << 20);
                    while req.len() < head_len + body_len {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let (body, delay, hang) = {
                        let mut s = st.lock().unwrap();
                        *s.hits.entry(path.clone()).or_default() += 1;
                        s.heads.push(text.to_string());
                        (s.files.get(&path).cloned(), s.delay, s.hang)
                    };
                    if hang {
                        // Hold the connection open, say nothing.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    let resp = match body {
                        Some(b) => {
                            let mut r = format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                b.len()
                            )
                            .into_bytes();
                            r.extend_from_slice(&b);
                            r
                        }
                        None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec(),
                    };
                    let _ = sock.write_all(&resp).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        CrlServer { port, state, task }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn publish(&self, path: &str, bytes: Vec<u8>) {
        self.state.lock().unwrap().files.insert(path.into(), bytes);
    }

    pub fn hits(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

/// A port nothing listens on (bound, then released).
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A copy of SoftHSM's library at another path, so the agent can load it a second time as a
/// module of another kind (SoftHSM reads the same token directory through both).
pub fn softhsm_copy(dir: &Path) -> PathBuf {
    let p = dir.join("libsofthsm2-hw.so");
    std::fs::copy(SOFTHSM, &p).unwrap();
    p
}

/// `[trust]` lines for a PKI of a test's own.
pub fn trust_for(pki: &Path) -> String {
    format!(
        "roots = [\"{}\"]\nuse_system_roots = false\nintermediates = [\"{}\"]\n",
        pki.join("root-ca.pem").display(),
        pki.join("ca.pem").display()
    )
}

/// The `validate` parameters for a PEM certificate file.
pub fn validate_params(cert_pem: &Path) -> smime_agent_proto::ValidateParams {
    smime_agent_proto::ValidateParams {
        certificate: std::fs::read(cert_pem).unwrap().into(),
        ..Default::default()
    }
}
