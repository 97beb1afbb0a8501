//! The example client in Python (`proto/examples/smime_agent_client.py`, standard library
//! only) against the real agent: it signs, answering the PIN prompt itself, OpenSSL verifies
//! the result, and it verifies the agent's signature and OpenSSL's refusal of a tampered one.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn python(agent: &Agent, args: &[&str], input: &[u8], pin: Option<&str>) -> std::process::Output {
    let script = workspace_root().join("proto/examples/smime_agent_client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg("--socket").arg(&agent.socket);
    let mut pin_file = None;
    if let Some(pin) = pin {
        // The PIN on file descriptor 3, as --pin-fd 3 expects it.
        let (r, mut w) = std::io::pipe().unwrap();
        writeln!(w, "{pin}").unwrap();
        drop(w);
        pin_file = Some(r);
        cmd.args(["--pin-fd", "3"]);
    }
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(r) = pin_file {
        use std::os::fd::{AsRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;
        let fd: OwnedFd = r.into();
        let raw = fd.as_raw_fd();
        // SAFETY: dup2/fcntl in the child between fork and exec, on descriptors it owns. When
        // the pipe already is fd 3, dup2 would keep its close-on-exec flag: clear it instead.
        unsafe {
            cmd.pre_exec(move || {
                let rc = if raw == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(raw, 3)
                };
                if rc == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        drop(fd);
        return out;
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_python_example_signs_and_verifies_through_the_agent() {
    let dir = tempdir();
    let (_hsm, agent) = softhsm_agent(dir.path(), "alice", &["alice-sign-rsa"], Default::default());
    let entity = sample_entity("from Python");
    let out = python(&agent, &["sign", "alice@example.org"], &entity, Some(PIN));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("signed with"));
    assert_openssl_signed(&out.stdout, dir.path(), &entity);

    let signed = out.stdout;
    let out = python(&agent, &["verify"], &signed, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "valid");

    let text = String::from_utf8_lossy(&signed).replace("from Python", "from someone else");
    let out = python(&agent, &["verify"], text.as_bytes(), None);
    assert!(!out.status.success(), "a tampered message verified");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "invalid");
}
