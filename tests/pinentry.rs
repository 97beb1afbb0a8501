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
