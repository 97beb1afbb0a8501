//! Starting on demand: the real `systemd-socket-activate` holds the socket and starts the
//! agent on the first connection, handing the socket over (LISTEN_FDS), as a systemd user
//! socket unit does; the agent says it is ready and stopping (NOTIFY_SOCKET, `Type=notify`)
//! and leaves the socket to the manager when it stops.

mod common;

use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use smime_agent_proto::client::BlockingClient;

#[test]
fn the_first_connection_starts_the_agent_on_the_passed_socket_and_it_stops_cleanly() {
    let dir = tempdir();
    let run = dir.path().join("run");
    std::fs::DirBuilder::new().mode(0o700).create(&run).unwrap();
    let socket = run.join("agent.sock");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[trust]\nuse_system_roots = false\n\n[revocation]\ncache_dir = \"{}\"\n\n[contacts]\ndir = \"{}\"\n",
            dir.path().join("crls").display(),
            dir.path().join("contacts").display()
        ),
    )
    .unwrap();
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    let mut manager = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .arg("-E")
        .arg(format!("NOTIFY_SOCKET={}", notify_path.display()))
        .arg(agent_bin())
        .args(["serve", "--foreground", "--config"])
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
        .spawn()
        .expect("systemd-socket-activate");
    let start = Instant::now();
    while !socket.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no socket from the manager"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The first client is queued on the manager's socket, starts the agent, and is served.
    let mut client = BlockingClient::connect(&socket, hello(false)).expect("connect");
    let st = client.status().expect("status from the started agent");
    assert_eq!(
        st.agent.pid,
        manager.id(),
        "the manager execs the agent in its place"
    );
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).expect("READY=1");
    assert_eq!(&buf[..n], b"READY=1");

    // A second client is served by the same agent.
    let mut again = BlockingClient::connect(&socket, hello(false)).expect("connect again");
    assert_eq!(again.status().unwrap().agent.pid, st.agent.pid);
    drop((client, again));

    // SIGTERM: a clean stop, reported; the socket stays the manager's.
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(manager.id() as i32, libc::SIGTERM) };
    let n = notify.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let status = manager.wait().unwrap();
    assert!(
        status.success(),
        "{status:?}: {}",
        std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
    );
    assert!(
        socket.exists(),
        "the agent left the manager's socket in place"
    );
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert!(log.contains("socket passed by socket activation"), "{log}");
}
