//! Signing through the running agent with SoftHSM keys, checked by OpenSSL.

mod common;

use common::*;
use smime_agent_proto::{ErrorCode, SignFormat};

/// One SoftHSM token "alice" with every kind of signing key the PKI has.
fn alice_agent(dir: &std::path::Path) -> (SoftHsm, Agent) {
    softhsm_agent(
        dir,
        "alice",
        &["alice-sign-rsa", "alice-enc-rsa", "alice-expired"],
        Default::default(),
    )
}

async fn sign_and_check(names: &[&str], format: Option<SignFormat>, expect_key: &str) -> Vec<u8> {
    let dir = tempdir();
    let (_hsm, agent) = softhsm_agent(dir.path(), "alice", names, Default::default());
    let client = agent.client().await;
    let (res, prompts) = sign_answering(
        &client,
        "alice@example.org",
        sample_entity("Hello, OpenSSL."),
        format,
        PIN,
    )
    .await;
    let res = res.expect("sign");
    assert_eq!(prompts, 1, "one PIN prompt for the first use of the token");
    assert_eq!(res.certificate.key, expect_key);
    assert_eq!(res.digest_algorithm, "sha256");
    for tool in ["cms", "smime"] {
        let content = openssl_signed_content(tool, &res.mime.0, dir.path())
            .unwrap_or_else(|e| panic!("openssl {tool} -verify rejected the signature: {e}"));
        // What OpenSSL extracted is the content we sent, canonicalized.
        assert!(
            String::from_utf8_lossy(&content).contains("Hello, OpenSSL."),
            "verified content: {content:?}"
        );
    }
    assert_openssl_signed(&res.mime.0, dir.path(), &sample_entity("Hello, OpenSSL."));
    res.mime.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_signed_rsa_verifies_with_openssl() {
    let mime = sign_and_check(&["alice-sign-rsa"], None, "rsa-2048").await;
    assert!(String::from_utf8_lossy(&mime).contains("multipart/signed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_rsa_verifies_with_openssl() {
    let mime = sign_and_check(&["alice-sign-rsa"], Some(SignFormat::Opaque), "rsa-2048").await;
    assert!(String::from_utf8_lossy(&mime).contains("smime-type=signed-data"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_signed_ec_p256_verifies_with_openssl() {
    sign_and_check(&["alice-sign-ec"], None, "ec-p256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_ec_p256_verifies_with_openssl() {
    sign_and_check(&["alice-sign-ec"], Some(SignFormat::Opaque), "ec-p256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_and_opaque_ec_p384_verify_with_openssl() {
    sign_and_check(&["alice-sign-p384"], None, "ec-p384").await;
    sign_and_check(&["alice-sign-p384"], Some(SignFormat::Opaque), "ec-p384").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_message_fails_openssl_verification() {
    let dir = tempdir();
    let (_hsm, agent) = alice_agent(dir.path());
    let client = agent.client().await;
    let (res, _) = sign_answering(
        &client,
        "alice@example.org",
        sample_entity("Pay 10 EUR to Bob."),
        None,
        PIN,
    )
    .await;
    let mime = res.expect("sign").mime.0;
    let (ok, err) = openssl_verifies("cms", &mime, dir.path());
    assert!(ok, "{err}");
    let tampered = String::from_utf8(mime)
        .unwrap()
        .replace("10 EUR", "99 EUR")
        .into_bytes();
    let (ok, _) = openssl_verifies("cms", &tampered, dir.path());
    assert!(!ok, "OpenSSL accepted a tampered message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_usage_key_is_chosen_only_without_a_single_usage_one() {
    let dir = tempdir();
    let (_hsm, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &["alice-dual-rsa", "alice-sign-rsa"],
        Default::default(),
    );
    let client = agent.client().await;
    let (res, _) =
        sign_answering(&client, "alice@example.org", sample_entity("x"), None, PIN).await;
    let res = res.unwrap();
    assert_eq!(
        res.certificate.key_usage,
        ["digitalSignature", "nonRepudiation"]
    );
    assert!(res.why.contains("single key usage"), "{}", res.why);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pin_is_reported_and_not_retried_and_the_right_pin_still_works() {
    let dir = tempdir();
    let (_hsm, agent) = alice_agent(dir.path());
    let client = agent.client().await;
    let (res, prompts) = sign_answering(
        &client,
        "alice@example.org",
        sample_entity("x"),
        None,
        "0000",
    )
    .await;
    let err = res.expect_err("a wrong PIN must fail");
    assert_eq!(err.code(), Some(ErrorCode::PinIncorrect), "{err}");
    assert_eq!(
        prompts, 1,
        "the agent asked more than once: it must not retry"
    );
    let smime_agent_proto::client::ClientError::Agent(body) = &err else {
        unreachable!()
    };
    assert_eq!(body.token.as_ref().map(|t| t.label.as_str()), Some("alice"));
    assert!(
        !body.message.contains("0000"),
        "the error repeats the PIN: {}",
        body.message
    );

    // A new connection, the right PIN: signing works (the agent did not lock the token).
    let client = agent.client().await;
    let (res, prompts) =
        sign_answering(&client, "alice@example.org", sample_entity("x"), None, PIN).await;
    res.expect("the right PIN works after a wrong one");
    assert_eq!(prompts, 1);

    // The PIN is cached now: no prompt.
    let client = agent.client().await;
    let (res, prompts) = sign_answering(
        &client,
        "alice@example.org",
        sample_entity("y"),
        None,
        "unused",
    )
    .await;
    res.expect("sign with the cached PIN");
    assert_eq!(prompts, 0);

    // Neither PIN is in the log.
    let log = agent.log_text();
    assert!(
        !log.contains("4711") && !log.contains("\"0000\""),
        "a PIN is in the log"
    );
    assert!(
        log.contains("private-key operation") && log.contains("op=\"sign\""),
        "the audit log is missing:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_pin_prompt_gives_pin_cancelled() {
    let dir = tempdir();
    let (_hsm, agent) = alice_agent(dir.path());
    let client = agent.client().await;
    let mut events = client.take_events().unwrap();
    let c2 = std::sync::Arc::new(client);
    let c3 = c2.clone();
    let answer = tokio::spawn(async move {
        if let Some(smime_agent_proto::Event::PinNeeded(p)) = events.recv().await {
            c3.pin(p.prompt, None).await.unwrap();
        }
    });
    let err = c2
        .sign(sign_params("alice@example.org", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::PinCancelled), "{err}");
    answer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_certificate_names_the_address_and_what_was_found() {
    let dir = tempdir();
    let (_hsm, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &["alice-expired", "alice-enc-rsa"],
        Default::default(),
    );
    let client = agent.client().await;
    let err = client
        .sign(sign_params("Alice@Example.ORG", "x"))
        .await
        .unwrap_err();
    let smime_agent_proto::client::ClientError::Agent(body) = err else {
        panic!("expected an agent error")
    };
    assert_eq!(body.code, ErrorCode::NoCertificate);
    assert!(
        body.message.contains("Alice@Example.ORG"),
        "{}",
        body.message
    );
    assert!(
        body.message.contains("expired on 2021-01-01"),
        "{}",
        body.message
    );
    assert!(
        body.message.contains("does not allow signing"),
        "{}",
        body.message
    );

    let err = client
        .sign(sign_params("nobody@example.org", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NoCertificate));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_that_is_not_a_mime_entity_is_a_bad_request() {
    let dir = tempdir();
    let (_hsm, agent) = alice_agent(dir.path());
    let client = agent.client().await;
    let err = client
        .sign(smime_agent_proto::SignParams {
            signer: "alice@example.org".into(),
            content: b"just some text without headers".to_vec().into(),
            format: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err}");
    assert!(err.to_string().contains("MIME entity"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_clients_each_get_a_valid_signature() {
    let dir = tempdir();
    let (_hsm, agent) = alice_agent(dir.path());
    let mut tasks = vec![];
    for i in 0..50 {
        let socket = agent.socket.clone();
        tasks.push(tokio::spawn(async move {
            let client = smime_agent_proto::client::Client::connect(&socket, hello(true))
                .await
                .expect("connect");
            let (res, _) = sign_answering(
                &client,
                "alice@example.org",
                sample_entity(&format!("message number {i}")),
                None,
                PIN,
            )
            .await;
            (i, res.expect("sign").mime.0)
        }));
    }
    let mut results = vec![];
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(results.len(), 50);
    for (i, mime) in results {
        // Each client got the signature of its own message.
        assert_openssl_signed(
            &mime,
            dir.path(),
            &sample_entity(&format!("message number {i}")),
        );
    }
}

#[test]
fn cli_signs_with_pin_from_fd_and_openssl_verifies() {
    let dir = tempdir();
    let (_hsm, agent) = alice_agent(dir.path());
    let input = write_file(dir.path(), "msg.txt", &sample_entity("Signed by the CLI."));
    let out = dir.path().join("signed.eml");
    let pin_file = write_file(dir.path(), "pin", format!("{PIN}\n").as_bytes());
    // Hand the PIN over on fd 3, as a script would: `smime-agent sign --pin-fd 3 3<pinfile`.
    let st = agent
        .cli()
        .arg("sign")
        .args(["--signer", "alice@example.org", "--pin-fd", "3", "--opaque"])
        .arg("--in")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .env("PIN_FILE", &pin_file)
        .output_with_fd3(&pin_file);
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let signed = std::fs::read(&out).unwrap();
    let (ok, err) = openssl_verifies("smime", &signed, dir.path());
    assert!(ok, "{err}");

    // Errors: the code on stderr and a non-zero exit.
    let st = agent
        .cli()
        .args(["sign", "--signer", "nobody@example.org", "--pin-fd", "3"])
        .arg("--in")
        .arg(&input)
        .output_with_fd3(&pin_file);
    assert_eq!(st.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&st.stderr).contains("no_certificate"),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}

/// Runs a command with `file` open on its fd 3.
trait WithFd3 {
    fn output_with_fd3(&mut self, file: &std::path::Path) -> std::process::Output;
}

impl WithFd3 for std::process::Command {
    fn output_with_fd3(&mut self, file: &std::path::Path) -> std::process::Output {
        // The shell does the redirection, so the test needs no unsafe pre_exec.
        let program = self.get_program().to_owned();
        let args: Vec<_> = self.get_args().map(|a| a.to_owned()).collect();
        let mut sh = std::process::Command::new("sh");
        sh.arg("-c")
            .arg("exec \"$@\" 3<\"$PIN_FILE\"")
            .arg("sh")
            .arg(program)
            .args(args)
            .env("PIN_FILE", file);
        for (k, v) in self.get_envs() {
            match v {
                Some(v) => sh.env(k, v),
                None => sh.env_remove(k),
            };
        }
        sh.output().unwrap()
    }
}

#[test]
fn cli_status_and_certs_show_the_token_and_its_certificates() {
    let dir = tempdir();
    let (_hsm, agent) = alice_agent(dir.path());
    let out = agent.cli().args(["status", "--json"]).output().unwrap();
    assert!(out.status.success());
    let st: smime_agent_proto::StatusResult = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st.tokens.len(), 1);
    let t = &st.tokens[0];
    assert_eq!(t.token.label, "alice");
    assert!(!t.hardware, "the config marks SoftHSM as software");
    assert_eq!(t.certificates.len(), 3);
    assert!(
        t.certificates
            .iter()
            .all(|c| c.emails.contains(&"alice@example.org".to_owned()))
    );
    assert_eq!(st.modules[0].path, SOFTHSM);

    let out = agent.cli().args(["certs", "--json"]).output().unwrap();
    assert!(out.status.success());
    let list: smime_agent_proto::ListCertsResult = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.certificates.len(), 3);

    let out = agent.cli().arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"alice\"") && text.contains("software"),
        "{text}"
    );
}

/// Signs as Alice with her PIN typed once; the PIN is cached afterwards.
async fn signed_once_pin_cached(agent: &Agent) {
    let c = agent.client().await;
    let (res, prompts) =
        sign_answering(&c, "alice@example.org", sample_entity("1"), None, PIN).await;
    res.unwrap();
    assert_eq!(prompts, 1);
    assert!(status_of(agent).await.tokens[0].pin.cached);
}

async fn status_of(agent: &Agent) -> smime_agent_proto::StatusResult {
    agent.client().await.status().await.expect("status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_pin_expires_after_its_ttl_and_the_token_is_logged_out() {
    let dir = tempdir();
    let (_hsm, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &["alice-sign-rsa"],
        AgentSpec {
            pin_extra: "cache_ttl_secs = 1",
            ..Default::default()
        },
    );
    let client = agent.client().await;
    let (res, prompts) =
        sign_answering(&client, "alice@example.org", sample_entity("1"), None, PIN).await;
    res.unwrap();
    assert_eq!(prompts, 1);
    assert!(status_of(&agent).await.tokens[0].pin.cached);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(
        !status_of(&agent).await.tokens[0].pin.cached,
        "the PIN outlived its TTL"
    );
    // Logged out too: the next signature asks again.
    let client = agent.client().await;
    let (res, prompts) =
        sign_answering(&client, "alice@example.org", sample_entity("2"), None, PIN).await;
    res.unwrap();
    assert_eq!(
        prompts, 1,
        "the token stayed logged in after the PIN expired"
    );
    assert!(agent.log_text().contains("token logged out"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_ttl_asks_for_the_pin_every_time() {
    let dir = tempdir();
    let (_hsm, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &["alice-sign-ec"],
        AgentSpec {
            pin_extra: "cache_ttl_secs = 0",
            ..Default::default()
        },
    );
    for i in 0..3 {
        let client = agent.client().await;
        let (res, prompts) = sign_answering(
            &client,
            "alice@example.org",
            sample_entity(&i.to_string()),
            None,
            PIN,
        )
        .await;
        res.unwrap();
        assert_eq!(prompts, 1, "signature {i} did not ask for the PIN");
        // The logout runs right after the response; give it a moment.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(!status_of(&agent).await.tokens[0].pin.cached);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_mib_message_signs_and_verifies() {
    let dir = tempdir();
    let (_hsm, agent) = alice_agent(dir.path());
    let client = agent.client().await;
    let body: String = (0..120_000)
        .map(|i| format!("line {i:06} of a long message, signed on the token\n"))
        .collect();
    assert!(body.len() > 5 * 1024 * 1024);
    let entity = sample_entity(&body);
    for format in [None, Some(SignFormat::Opaque)] {
        let client2 = agent.client().await;
        let (res, _) =
            sign_answering(&client2, "alice@example.org", entity.clone(), format, PIN).await;
        let mime = res.expect("sign a large message").mime.0;
        assert_openssl_signed(&mime, dir.path(), &entity);
    }
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_wipes_the_cached_pin_so_the_next_signature_asks_again() {
    let dir = tempdir();
    let (_hsm, agent) = alice_agent(dir.path());
    signed_once_pin_cached(&agent).await;
    let out = agent.cli().arg("forget").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 token"));
    assert!(!status_of(&agent).await.tokens[0].pin.cached);
    // Give the logout (which waits for operations) a moment.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let c = agent.client().await;
    let (res, prompts) =
        sign_answering(&c, "alice@example.org", sample_entity("2"), None, PIN).await;
    res.unwrap();
    assert_eq!(prompts, 1, "the token stayed logged in after forget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescan_finds_a_softhsm_token_created_after_the_agent_started() {
    let dir = tempdir();
    let (hsm, agent) = alice_agent(dir.path());
    let c = agent.client().await;
    // Logged in on the first token, to show the rescan keeps it usable.
    let (res, _) = sign_answering(&c, "alice@example.org", sample_entity("1"), None, PIN).await;
    res.unwrap();
    hsm.add_token("bob", "2222", &["bob-dual-rsa"]);
    // SoftHSM never shows the new token to a running process by itself.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(status_of(&agent).await.tokens.len(), 1);

    let out = agent.cli().args(["rescan", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: smime_agent_proto::RescanResult = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r.inserted.iter().any(|t| t.label == "bob"), "{r:?}");
    let st = status_of(&agent).await;
    assert_eq!(st.tokens.len(), 2);
    // Nothing changed since: a second rescan reports nothing inserted or removed.
    let again = agent.client().await.rescan().await.unwrap();
    assert!(
        again.inserted.is_empty() && again.removed.is_empty(),
        "{again:?}"
    );
    for (who, pin) in [("bob", "2222"), ("alice", PIN)] {
        let c = agent.client().await;
        let (res, _) = sign_answering(
            &c,
            &format!("{who}@example.org"),
            sample_entity(who),
            None,
            pin,
        )
        .await;
        let res = res.unwrap_or_else(|e| panic!("{who}: {e}"));
        let (ok, err) = openssl_verifies("cms", &res.mime.0, dir.path());
        assert!(ok, "{who}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rescan_a_pin_changed_elsewhere_is_asked_for_not_tried_from_the_cache() {
    let dir = tempdir();
    let (hsm, agent) = alice_agent(dir.path());
    signed_once_pin_cached(&agent).await;

    // Another program changes the PIN; `rescan` re-initializes SoftHSM.
    let out = std::process::Command::new("pkcs11-tool")
        .args([
            "--module",
            SOFTHSM,
            "--token-label",
            "alice",
            "--login",
            "--pin",
            PIN,
        ])
        .args(["--change-pin", "--new-pin", "9876"])
        .env("SOFTHSM2_CONF", hsm.conf())
        .output()
        .unwrap();
    ok("pkcs11-tool --change-pin", &out);
    agent.client().await.rescan().await.unwrap();

    // The token is opened again without its cached PIN: the next signature asks, and the
    // old PIN is never tried (it would fail, and spend a try nobody typed).
    assert!(!status_of(&agent).await.tokens[0].pin.cached);
    let c = agent.client().await;
    let (res, prompts) =
        sign_answering(&c, "alice@example.org", sample_entity("2"), None, "9876").await;
    let res = res.expect("the new PIN, typed");
    assert_eq!(prompts, 1, "asked for the PIN after the rescan");
    assert_openssl_signed(&res.mime.0, dir.path(), &sample_entity("2"));
    assert!(
        !agent.log_text().contains("rejected the PIN"),
        "the old PIN was tried: {}",
        agent.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_connection_still_reads_the_pin_answer_its_requests_wait_for() {
    let dir = tempdir();
    let (_hsm, agent) = alice_agent(dir.path());
    let client = agent.client().await;
    let mut events = client.take_events().unwrap();
    let mut waiting = vec![];
    // 64 requests fill the connection: one prompts, the others wait for its login.
    for n in 0..64 {
        let (_, rx) = client
            .start(smime_agent_proto::Op::Sign(sign_params(
                "alice@example.org",
                &format!("request {n}"),
            )))
            .await
            .unwrap();
        waiting.push(rx);
    }
    let Some(smime_agent_proto::Event::PinNeeded(prompt)) = events.recv().await else {
        panic!("no PIN prompt")
    };
    // One more waits for a turn without stopping the connection's reader...
    let (_, extra) = client
        .start(smime_agent_proto::Op::Status(Default::default()))
        .await
        .unwrap();
    // ...which still reads the PIN answer: all 64 sign, then the 65th runs.
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.pin(prompt.prompt, Some(smime_agent_proto::Pin::new(PIN))),
    )
    .await
    .expect("the pin answer is read and answered")
    .unwrap();
    waiting.push(extra);
    for rx in waiting {
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(60), rx)
            .await
            .expect("every waiting request finishes")
            .unwrap();
        assert!(
            matches!(outcome, smime_agent_proto::Outcome::Ok(_)),
            "{outcome:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_whose_reinitialization_failed_comes_back_with_the_next_rescan() {
    let dir = tempdir();
    let (hsm, agent) = softhsm_agent(dir.path(), "alice", &["alice-sign-rsa"], Default::default());
    let client = agent.client().await;
    let (r, _) = sign_answering(
        &client,
        "alice@example.org",
        sample_entity("before"),
        None,
        PIN,
    )
    .await;
    r.expect("sign before");

    // The token store goes away: the rescan's C_Initialize fails. The token leaves the store
    // (it cannot work) and status says why the module is down.
    let tokens = hsm.dir.join("tokens");
    let aside = hsm.dir.join("tokens-aside");
    std::fs::rename(&tokens, &aside).unwrap();
    let r = client.rescan().await.expect("rescan answers");
    assert!(!r.skipped.is_empty(), "{r:?}");
    let st = client.status().await.unwrap();
    assert!(st.tokens.is_empty(), "{st:?}");
    assert!(
        st.modules[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("C_Initialize")),
        "{:?}",
        st.modules[0]
    );
    let c = agent.client().await;
    let (r, _) = sign_answering(
        &c,
        "alice@example.org",
        sample_entity("meanwhile"),
        None,
        PIN,
    )
    .await;
    assert_eq!(
        r.expect_err("no token").code(),
        Some(smime_agent_proto::ErrorCode::NoCertificate)
    );

    // The store is back: after the module's short wait a rescan initializes it again, the
    // token returns, and it signs (a new login: the old one died with the module).
    std::fs::rename(&aside, &tokens).unwrap();
    let start = std::time::Instant::now();
    loop {
        client.rescan().await.expect("rescan answers");
        let st = client.status().await.unwrap();
        if !st.tokens.is_empty() {
            assert!(st.modules[0].error.is_none(), "{:?}", st.modules[0]);
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the module never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let c = agent.client().await;
    let (r, _) = sign_answering(&c, "alice@example.org", sample_entity("after"), None, PIN).await;
    let signed = r.expect("sign after the module came back");
    assert_openssl_signed(&signed.mime.0, dir.path(), &sample_entity("after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescan_that_finds_the_same_tokens_reports_and_announces_nothing() {
    let dir = tempdir();
    let (_hsm, agent) = softhsm_agent(dir.path(), "alice", &["alice-sign-rsa"], Default::default());
    let watcher = agent.client().await;
    let mut events = watcher.take_events().unwrap();
    watcher.subscribe().await.unwrap();
    let client = agent.client().await;
    for _ in 0..3 {
        let r = client.rescan().await.unwrap();
        assert!(r.inserted.is_empty() && r.removed.is_empty(), "{r:?}");
    }
    // A token that does come is announced: the events would have arrived by now.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        events.try_recv().is_err(),
        "no token event for tokens that stayed"
    );
    let st = client.status().await.unwrap();
    assert_eq!(st.tokens.len(), 1);
}

#[test]
fn pin_fd_is_honoured_when_the_agent_asks_with_pinentry() {
    // A mail client runs the command with pipes: pinentry would find no terminal. The PIN on
    // a file descriptor is what the agent uses, whatever its source (/bin/false as the
    // pinentry proves it is not run).
    let dir = tempdir();
    let (_hsm, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &["alice-sign-rsa"],
        AgentSpec {
            pin_source: "pinentry",
            pin_extra: "pinentry = \"/bin/false\"",
            ..Default::default()
        },
    );
    let input = write_file(dir.path(), "msg.txt", &sample_entity("Signed from a pipe."));
    let out = dir.path().join("signed.eml");
    let pin_file = write_file(dir.path(), "pin", format!("{PIN}\n").as_bytes());
    let st = agent
        .cli()
        .args(["sign", "--signer", "alice@example.org", "--pin-fd", "3"])
        .arg("--in")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output_with_fd3(&pin_file);
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert_openssl_signed(
        &std::fs::read(&out).unwrap(),
        dir.path(),
        &sample_entity("Signed from a pipe."),
    );
}

#[test]
fn every_command_that_talks_to_the_agent_answers_in_json_with_json() {
    let dir = tempdir();
    let (_hsm, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &["alice-sign-rsa", "alice-enc-rsa"],
        Default::default(),
    );
    let input = write_file(dir.path(), "msg.txt", &sample_entity("JSON out."));
    let pin_file = write_file(dir.path(), "pin", format!("{PIN}\n").as_bytes());
    let json_of = |out: &std::process::Output| -> serde_json::Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "silent on success: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON on stdout")
    };
    let signed = json_of(
        &agent
            .cli()
            .args([
                "sign",
                "--json",
                "--signer",
                "alice@example.org",
                "--pin-fd",
                "3",
                "--in",
            ])
            .arg(&input)
            .output_with_fd3(&pin_file),
    );
    assert!(
        signed["why"].as_str().is_some_and(|w| !w.is_empty()),
        "{signed}"
    );
    use base64::Engine;
    let mime = base64::engine::general_purpose::STANDARD
        .decode(signed["mime"].as_str().unwrap())
        .unwrap();
    assert_openssl_signed(&mime, dir.path(), &sample_entity("JSON out."));

    let cert = pki_file("alice-enc-rsa.pem");
    let enc = json_of(
        &agent
            .cli()
            .args(["encrypt", "--json", "--to", "alice@example.org", "--cert"])
            .arg(&cert)
            .arg("--in")
            .arg(&input)
            .output()
            .unwrap(),
    );
    assert_eq!(
        enc["recipients"][0]["address"], "alice@example.org",
        "{enc}"
    );
    let enc_mime = base64::engine::general_purpose::STANDARD
        .decode(enc["mime"].as_str().unwrap())
        .unwrap();
    let enc_file = write_file(dir.path(), "enc.eml", &enc_mime);
    let dec = json_of(
        &agent
            .cli()
            .args(["decrypt", "--json", "--pin-fd", "3", "--in"])
            .arg(&enc_file)
            .output_with_fd3(&pin_file),
    );
    assert!(dec["certificate"]["subject"].as_str().is_some(), "{dec}");
    let forget = json_of(&agent.cli().args(["forget", "--json"]).output().unwrap());
    assert_eq!(
        forget["tokens"].as_array().map(Vec::len),
        Some(1),
        "{forget}"
    );
}
