//! PINs typed by a person into the real `pinentry-tty`, on the terminal the client names.
//!
//! A tmux pane plays the person's terminal: the client passes the pane's tty in `hello`,
//! the agent runs pinentry-tty there, the test reads the prompt from the pane and types the
//! PIN with `tmux send-keys`, as a person would.

mod common;

use common::*;
use smime_agent_proto::ErrorCode;
use smime_agent_proto::client::Client;

async fn client_on(agent: &Agent, tty: &str) -> Client {
    Client::connect(&agent.socket, pinentry_hello(tty))
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_typed_into_pinentry_tty_signs_and_a_wrong_one_is_reported() {
    let dir = tempdir();
    let (_hsm, agent) = softhsm_agent(
        dir.path(),
        "Alice Token",
        &["alice-sign-rsa"],
        AgentSpec {
            pin_source: "pinentry",
            pin_extra: "pinentry = \"pinentry-tty\"",
            ..Default::default()
        },
    );
    let term = Terminal::start();
    let tty = term.tty();

    // A wrong PIN first: the token rejects it and the agent says so, without retrying.
    let signing = sign_in_background(client_on(&agent, &tty).await, "typed by a person");
    let screen = term.wait_for("PIN:", 1).await;
    assert!(
        screen.contains("Alice Token"),
        "the prompt does not name the token:\n{screen}"
    );
    term.type_line("0000");
    let err = signing.await.unwrap().expect_err("wrong PIN");
    assert_eq!(err.code(), Some(ErrorCode::PinIncorrect), "{err}");

    // The right PIN at the next prompt: the signature verifies.
    let signing = sign_in_background(client_on(&agent, &tty).await, "typed by a person");
    term.wait_for("PIN:", 2).await;
    term.type_line(PIN);
    let signed = signing.await.unwrap().expect("sign with the typed PIN");
    let (ok, err) = openssl_verifies("cms", &signed.mime.0, dir.path());
    assert!(ok, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_pinentry_program_gives_pin_cancelled_naming_it() {
    let dir = tempdir();
    let (_hsm, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &["alice-sign-rsa"],
        AgentSpec {
            pin_source: "pinentry",
            pin_extra: "pinentry = \"/nonexistent/pinentry-nothing\"",
            ..Default::default()
        },
    );
    let client = agent.client().await;
    let err = client
        .sign(sign_params("alice@example.org", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::PinCancelled));
    assert!(err.to_string().contains("pinentry-nothing"), "{err}");
}

/// A mail client runs `smime-agent` with pipes on every descriptor (NeoMutt does): the PIN
/// prompt still appears on the terminal the client runs in, its session's controlling
/// terminal.
#[test]
fn under_pipes_the_pin_is_asked_on_the_sessions_controlling_terminal() {
    let dir = tempdir();
    let (_hsm, agent) = softhsm_agent(
        dir.path(),
        "Alice Token",
        &["alice-sign-rsa"],
        AgentSpec {
            pin_source: "pinentry",
            pin_extra: "pinentry = \"pinentry-tty\"",
            ..Default::default()
        },
    );
    let d = dir.path();
    let msg = write_file(d, "msg", b"Content-Type: text/plain\n\nunder pipes\n");
    let (out, err, done) = (d.join("signed.eml"), d.join("err"), d.join("done"));
    // Every descriptor of the command is a file or a pipe; only its session has a terminal.
    let command = format!(
        "unset GPG_TTY DISPLAY WAYLAND_DISPLAY; cat {msg} | ({bin} sign --socket {sock} \
         --signer alice@example.org 2>{err}; echo $? > {done}) | cat > {out}; sleep 600",
        msg = msg.display(),
        bin = agent_bin().display(),
        sock = agent.socket.display(),
        err = err.display(),
        out = out.display(),
        done = done.display(),
    );
    let socket = format!("smime-agent-pipes-{}", rand_suffix());
    let st = std::process::Command::new("tmux")
        .args([
            "-L",
            &socket,
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "30",
            &command,
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let _term = Terminal {
        socket: socket.clone(),
    };
    let shown = time_until(std::time::Duration::from_secs(20), || {
        Terminal::tmux(&socket, &["capture-pane", "-p"]).contains("PIN:")
    });
    assert!(
        shown.is_some(),
        "no PIN prompt on the terminal:\n{}\nstderr: {}",
        Terminal::tmux(&socket, &["capture-pane", "-p"]),
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    Terminal::tmux(&socket, &["send-keys", "-t", "0", PIN, "Enter"]);
    let finished = time_until(std::time::Duration::from_secs(20), || {
        std::fs::read_to_string(&done).is_ok_and(|t| t.ends_with('\n')) && out.exists()
    });
    assert!(finished.is_some(), "the command did not finish");
    assert_eq!(
        std::fs::read_to_string(&done).unwrap().trim(),
        "0",
        "{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    assert_openssl_signed(
        &std::fs::read(&out).unwrap(),
        d,
        b"Content-Type: text/plain\n\nunder pipes\n",
    );
}
