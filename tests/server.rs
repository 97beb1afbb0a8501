//! The socket and the protocol: who may connect, malformed input, limits, life cycle.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use smime_agent_proto::{ErrorCode, Outcome, RequestId};

fn plain_agent(dir: &std::path::Path, extra: &str) -> Agent {
    Agent::start(
        dir,
        AgentSpec {
            extra_config: extra.into(),
            ..Default::default()
        },
    )
}

/// A raw line-oriented connection, for sending what no well-behaved client would.
struct Raw {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Raw {
    fn connect(agent: &Agent) -> Raw {
        let s = UnixStream::connect(&agent.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Raw {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }
    fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }
    fn recv(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad frame {line:?}: {e}"))
    }
    fn hello(&mut self) {
        self.send(b"{\"id\":0,\"op\":\"hello\",\"version\":1}\n");
        let r = self.recv();
        assert!(r["ok"]["protocol_version"] == 1, "{r}");
    }
}

#[test]
fn socket_is_private_whatever_the_umask() {
    let dir = tempdir();
    // A permissive umask in the parent must not leak into the socket or its directory.
    let agent = Agent::start(
        dir.path(),
        AgentSpec {
            umask: Some("000"),
            ..Default::default()
        },
    );
    let dmode = std::fs::metadata(agent.socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    let smode = std::fs::metadata(&agent.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dmode & 0o777, 0o700, "directory mode {dmode:o}");
    assert_eq!(smode & 0o777, 0o600, "socket mode {smode:o}");
}

#[test]
fn malformed_lines_get_bad_request_and_the_connection_keeps_working() {
    let dir = tempdir();
    let agent = plain_agent(dir.path(), "");
    let mut c = Raw::connect(&agent);
    c.hello();
    let cases: &[&[u8]] = &[
        b"this is not json\n",
        b"[1,2,3]\n",
        b"{\"op\":\"status\"}\n",
        b"{\"id\":-1,\"op\":\"status\"}\n",
        b"{\"id\":5}\n",
        b"{\"id\":6,\"op\":\"sign\"}\n",
        b"{\"id\":7,\"op\":\"status\",\"surprise\":1}\n",
        b"{\"id\":8,\"op\":\"sign\",\"signer\":\"a@b\",\"content\":\"%%%\"}\n",
        b"\xff\xfe\xfd\n",
    ];
    for case in cases {
        c.send(case);
        let r = c.recv();
        assert_eq!(
            r["error"]["code"],
            "bad_request",
            "{:?} -> {r}",
            String::from_utf8_lossy(case)
        );
        assert!(r["error"]["message"].as_str().unwrap().len() > 5);
    }
    // The same connection still works.
    c.send(b"{\"id\":\"after\",\"op\":\"status\"}\n");
    let r = c.recv();
    assert_eq!(r["id"], "after");
    assert!(r["ok"]["agent"]["pid"].is_number(), "{r}");
}

#[test]
fn request_before_hello_and_wrong_version_are_refused() {
    let dir = tempdir();
    let agent = plain_agent(dir.path(), "");
    let mut c = Raw::connect(&agent);
    c.send(b"{\"id\":1,\"op\":\"status\"}\n");
    let r = c.recv();
    assert_eq!(r["error"]["code"], "bad_request");
    assert!(r["error"]["message"].as_str().unwrap().contains("hello"));
    c.send(b"{\"id\":2,\"op\":\"hello\",\"version\":99}\n");
    let r = c.recv();
    assert_eq!(r["error"]["code"], "unsupported_version");
    assert_eq!(r["error"]["supported_versions"][0], 1);
    c.hello();
}

#[test]
fn unknown_op_gives_unknown_op() {
    let dir = tempdir();
    let agent = plain_agent(dir.path(), "");
    let mut c = Raw::connect(&agent);
    c.hello();
    c.send(b"{\"id\":3,\"op\":\"launch_missiles\"}\n");
    let r = c.recv();
    assert_eq!(r["id"], 3);
    assert_eq!(r["error"]["code"], "unknown_op");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("launch_missiles")
    );
}

#[test]
fn oversized_frame_gives_frame_too_large_and_the_connection_goes_on() {
    let dir = tempdir();
    let agent = plain_agent(dir.path(), "[agent]\nmax_frame_bytes = 65536\n");
    let mut c = Raw::connect(&agent);
    c.hello();
    let mut big = b"{\"id\":77,\"op\":\"sign\",\"signer\":\"a@b\",\"content\":\"".to_vec();
    big.extend(std::iter::repeat_n(b'A', 200_000));
    big.extend_from_slice(b"\"}\n");
    c.send(&big);
    let r = c.recv();
    assert_eq!(r["id"], 77, "{r}");
    assert_eq!(r["error"]["code"], "frame_too_large");
    assert_eq!(r["error"]["max_frame_bytes"], 65536);
    c.send(b"{\"id\":78,\"op\":\"status\"}\n");
    assert_eq!(c.recv()["id"], 78);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_requests_in_flight_on_one_connection_each_get_one_response() {
    let dir = tempdir();
    let agent = plain_agent(dir.path(), "");
    let client = std::sync::Arc::new(agent.client().await);
    let mut tasks = vec![];
    for _ in 0..20 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move { c.status().await }));
    }
    for t in tasks {
        t.await.unwrap().expect("status");
    }
    // A raw frame with a string id is answered under that id.
    client
        .send_raw(b"{\"id\":\"s-1\",\"op\":\"list_certs\"}\n")
        .await
        .unwrap();
    let r = client.next_unmatched().await.unwrap();
    assert_eq!(r.id, Some(RequestId::Str("s-1".into())));
    assert!(matches!(r.outcome, Outcome::Ok(_)));
}

#[test]
fn another_users_connection_is_refused_and_logged() {
    let dir = tempdir();
    let agent = plain_agent(dir.path(), "");
    // Open the door on purpose, so the peer check (not file permissions) is what refuses.
    for p in [dir.path(), agent.socket.parent().unwrap()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&agent.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut p = dir.path().to_path_buf();
    while let Some(parent) = p.parent() {
        // The test tree must be traversable by nobody.
        let m = std::fs::metadata(parent).unwrap().permissions().mode();
        if m & 0o001 == 0 {
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(m | 0o011)).unwrap();
        }
        p = parent.to_path_buf();
    }
    // A raw client: the agent's own client would itself refuse to talk to another user's
    // agent (see a_socket_served_by_another_user_gets_nothing_from_the_client).
    let out = as_nobody("/usr/bin/python3")
        .args(["-c", RAW_CLIENT])
        .arg(&agent.socket)
        .output()
        .expect("setpriv (util-linux) and python3");
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(answer.contains("permission_denied"), "answer: {answer}");
    std::thread::sleep(Duration::from_millis(200));
    let log = agent.log_text();
    assert!(
        log.contains("connection refused: another user") && log.contains("65534"),
        "the refusal is not logged:\n{log}"
    );
    // The agent's own user still gets in.
    let out = agent.cli().arg("status").output().unwrap();
    assert!(out.status.success());
}

/// A command run as user and group nobody (65534).
fn as_nobody(program: &str) -> std::process::Command {
    let mut c = std::process::Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", program]);
    c
}

/// Connects to the socket in argv[1], says hello, prints the first line it gets.
const RAW_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b'{"id":1,"op":"hello","version":1}\n')
print(s.makefile().readline())
"#;

/// Listens on argv[1] (made reachable by everyone), accepts one connection and records
/// whatever it receives into argv[2].
const IMPOSTOR: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
s.listen(1)
open(sys.argv[1] + ".ready", "w").close()
c, _ = s.accept()
c.settimeout(2)
got = b""
try:
    while True:
        b = c.recv(4096)
        if not b:
            break
        got += b
except Exception:
    pass
open(sys.argv[2], "wb").write(got)
"#;

#[test]
fn a_socket_served_by_another_user_gets_nothing_from_the_client() {
    let dir = tempdir();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut p = shared.clone();
    while let Some(parent) = p.parent() {
        let m = std::fs::metadata(parent).unwrap().permissions().mode();
        if m & 0o001 == 0 {
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(m | 0o011)).unwrap();
        }
        p = parent.to_path_buf();
    }
    // Another user serves the path this user's client is pointed at (as anyone can in /tmp).
    let sock = shared.join("agent.sock");
    let got = shared.join("received");
    let mut impostor = as_nobody("/usr/bin/python3")
        .args(["-c", IMPOSTOR])
        .arg(&sock)
        .arg(&got)
        .spawn()
        .expect("setpriv (util-linux) and python3");
    let ready = shared.join("agent.sock.ready");
    let start = std::time::Instant::now();
    while !ready.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the impostor did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let input = dir.path().join("message.eml");
    std::fs::write(&input, sample_entity("for my agent only")).unwrap();
    let out = std::process::Command::new(agent_bin())
        .args(["sign", "--signer", "alice@example.org", "--socket"])
        .arg(&sock)
        .arg("--in")
        .arg(&input)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("not by this user") && stderr.contains("uid 65534"),
        "stderr: {stderr}"
    );
    impostor.wait().unwrap();
    let received = std::fs::read(&got).unwrap();
    assert!(
        received.is_empty(),
        "the client sent the impostor: {}",
        String::from_utf8_lossy(&received)
    );
}

#[test]
fn connections_are_bounded() {
    let dir = tempdir();
    let agent = plain_agent(dir.path(), "[agent]\nmax_connections = 2\n");
    let mut a = Raw::connect(&agent);
    let mut b = Raw::connect(&agent);
    a.hello();
    b.hello();
    let mut c = Raw::connect(&agent);
    let r = c.recv();
    assert_eq!(r["error"]["code"], "too_many_connections", "{r}");
    drop(a);
    std::thread::sleep(Duration::from_millis(300));
    let mut d = Raw::connect(&agent);
    d.hello();
}

#[test]
fn a_live_agent_is_not_displaced_and_a_stale_socket_is_replaced() {
    let dir = tempdir();
    let first = plain_agent(&dir.path().join("a"), "");
    let out = std::process::Command::new(agent_bin())
        .args(["serve", "--foreground", "--socket"])
        .arg(&first.socket)
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The first agent is unharmed.
    assert!(first.cli().arg("status").output().unwrap().status.success());

    // Kill it hard: the socket file stays behind, stale.
    let socket = first.socket.clone();
    std::process::Command::new("kill")
        .args(["-KILL", &first.pid().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(socket.exists(), "SIGKILL cannot remove the socket");
    let spec = AgentSpec::default();
    let second = Agent::spawn(&dir.path().join("b"), first.config.clone(), socket, &spec);
    assert!(
        second
            .cli()
            .arg("status")
            .output()
            .unwrap()
            .status
            .success()
    );
    drop(first);
}

#[test]
fn sigterm_stops_gracefully_and_removes_the_socket() {
    let dir = tempdir();
    let mut agent = plain_agent(dir.path(), "");
    assert!(agent.socket.exists());
    let st = agent.stop();
    assert!(st.success(), "exit status {st}");
    assert!(!agent.socket.exists(), "the socket was left behind");
}

#[test]
fn background_serve_prints_the_socket_line_and_detaches() {
    let dir = tempdir();
    let socket = dir.path().join("bg").join("agent.sock");
    let out = std::process::Command::new(agent_bin())
        .args(["serve", "--socket"])
        .arg(&socket)
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!(
            "SMIME_AGENT_SOCK={}; export SMIME_AGENT_SOCK;",
            socket.display()
        )),
        "{stdout}"
    );
    let pid: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("echo Agent pid "))
        .and_then(|l| l.trim_end_matches(';').parse().ok())
        .expect("pid line");
    let status = std::process::Command::new(agent_bin())
        .arg("status")
        .env("SMIME_AGENT_SOCK", &socket)
        .output()
        .unwrap();
    std::process::Command::new("kill")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.status.success());
    for _ in 0..100 {
        if !socket.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the background agent did not stop on SIGTERM");
}

#[test]
fn bad_config_is_refused_naming_the_key_and_line() {
    let dir = tempdir();
    let cfg = write_file(
        dir.path(),
        "bad.toml",
        b"[pin]\nsource = \"client\"\ncache_ttl = 5\n",
    );
    let out = std::process::Command::new(agent_bin())
        .args(["serve", "--foreground", "--config"])
        .arg(&cfg)
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("line 3") && err.contains("cache_ttl"), "{err}");

    let out = std::process::Command::new(agent_bin())
        .args(["config", "--defaults"])
        .output()
        .unwrap();
    let defaults = write_file(dir.path(), "defaults.toml", &out.stdout);
    let out = std::process::Command::new(agent_bin())
        .args(["config", "--config"])
        .arg(&defaults)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unloadable_module_is_reported_in_status_not_fatal() {
    let dir = tempdir();
    let agent = plain_agent(
        dir.path(),
        "[[tokens.module]]\npath = \"/nonexistent/libnothing.so\"\n",
    );
    let out = agent.cli().args(["status", "--json"]).output().unwrap();
    let st: smime_agent_proto::StatusResult = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        st.modules[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("cannot load")
    );
    let _ = ErrorCode::Internal;
}

#[test]
fn a_frame_that_stops_arriving_closes_its_connection_and_a_slow_one_is_served() {
    let dir = tempdir();
    let agent = plain_agent(dir.path(), "[agent]\nframe_timeout_secs = 1\n");

    // Half a request, then nothing: one error frame, then the connection is closed.
    let mut c = Raw::connect(&agent);
    c.hello();
    let start = std::time::Instant::now();
    c.send(b"{\"id\":1,\"op\":\"sta");
    let r = c.recv();
    assert_eq!(r["error"]["code"], "limit_exceeded", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("frame_timeout_secs"),
        "{r}"
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );
    let mut rest = String::new();
    assert_eq!(
        c.r.read_line(&mut rest).unwrap(),
        0,
        "then the end: {rest:?}"
    );

    // A slow client whose bytes keep coming is served, however long the frame takes.
    let mut c = Raw::connect(&agent);
    c.hello();
    for b in b"{\"id\":2,\"op\":\"status\"}".chunks(4) {
        c.send(b);
        std::thread::sleep(Duration::from_millis(350));
    }
    c.send(b"\n");
    let r = c.recv();
    assert_eq!(r["id"], 2, "{r}");
    assert!(r["ok"]["agent"].is_object(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_written_drops_lines_and_the_agent_serves_on() {
    let dir = tempdir();
    // /dev/full: every write fails with "No space left on device", as on a full disk. The
    // agent logs at debug level (a line or more per request).
    let agent = Agent::start(
        dir.path(),
        AgentSpec {
            stderr: Some(std::path::Path::new("/dev/full")),
            ..Default::default()
        },
    );
    // Every connection and every request is answered.
    for _ in 0..20 {
        let c = agent.client().await;
        c.status().await.expect("status while the log is full");
    }
    let st = agent.client().await.status().await.unwrap();
    assert!(st.agent.log_lines_dropped > 20, "{:?}", st.agent);
}

#[test]
fn every_refused_client_reads_its_answer_even_after_sending_first() {
    let dir = tempdir();
    let agent = plain_agent(dir.path(), "[agent]\nmax_connections = 1\n");
    let mut held = Raw::connect(&agent);
    held.hello();
    // Each refused client sends its hello at once, before reading: closing a socket with
    // that unread would reset it, and the reset could destroy the answer.
    for i in 0..50 {
        let mut c = Raw::connect(&agent);
        c.send(b"{\"id\":0,\"op\":\"hello\",\"version\":1}\n");
        let r = c.recv();
        assert_eq!(
            r["error"]["code"], "too_many_connections",
            "client {i}: {r}"
        );
    }
}

#[test]
fn unfinished_frames_across_connections_are_bounded() {
    let dir = tempdir();
    let agent = plain_agent(
        dir.path(),
        "[agent]\nmax_frame_bytes = 1048576\nmax_unfinished_bytes = 2000000\n",
    );
    // Two clients hold 900 KB of unfinished frames each: within the budget, they stay.
    let half = vec![b'A'; 900_000];
    let mut held = vec![];
    for _ in 0..2 {
        let mut c = Raw::connect(&agent);
        c.hello();
        c.send(b"{\"id\":1,\"op\":\"status\",\"x\":\"");
        c.send(&half);
        held.push(c);
    }
    // A third would pass it: refused and closed, the others untouched.
    let mut third = Raw::connect(&agent);
    third.hello();
    third.send(b"{\"id\":1,\"op\":\"status\",\"x\":\"");
    third.send(&half);
    let r = third.recv();
    assert_eq!(r["error"]["code"], "limit_exceeded", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_unfinished_bytes"),
        "{r}"
    );
    // The first two finish their frames and are answered (an unknown member: bad_request).
    for c in &mut held {
        c.send(b"\"}\n");
        let r = c.recv();
        assert_eq!(r["id"], 1, "{r}");
        assert_eq!(r["error"]["code"], "bad_request", "{r}");
    }
    // With the budget free again, a new client is served.
    let mut c = Raw::connect(&agent);
    c.hello();
}
