//! The PKCS#11 module (`libsmime_agent_pkcs11.so`) in the programs that load it: NSS (the
//! library of Thunderbird and Evolution: `modutil`, `certutil`, `cmsutil`), OpenSSL's pkcs11
//! engine (libp11), OpenSC's `pkcs11-tool` and GnuTLS's `p11tool`, against the real agent on
//! SoftHSM keys. PINs are typed by a person into the real pinentry-tty in a terminal (tmux):
//! the host programs name that terminal in `GPG_TTY`, as with gpg-agent.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::card::{CARD_PIN, rig};
use common::card_agent::*;
use common::module::*;
use common::peers::run;
use common::*;

/// An agent with Alice's keys on SoftHSM and PINs by pinentry-tty; the terminal it prompts
/// on.
struct Setup {
    dir: tempfile::TempDir,
    _hsm: SoftHsm,
    agent: Agent,
    term: Terminal,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempdir();
        let (hsm, agent) = softhsm_agent(
            dir.path(),
            "alice",
            &["alice-sign-rsa", "alice-sign-ec", "alice-enc-rsa"],
            AgentSpec {
                pin_source: "pinentry",
                pin_extra: "pinentry = \"pinentry-tty\"",
                ..Default::default()
            },
        );
        Setup {
            dir,
            _hsm: hsm,
            agent,
            term: Terminal::start(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A host program that loads the module: it finds the agent and names the terminal.
    fn cmd(&self, program: &str) -> Command {
        host_program(program, &self.agent, &self.term)
    }

    /// A fresh NSS database with the module loaded and the test PKI's root trusted.
    fn nss_db(&self) -> String {
        nss_db(&self.path("nssdb"))
    }
}

const MSG: &[u8] = b"Content-Type: text/plain\r\n\r\nSigned in NSS through the agent.\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nss_lists_signs_and_decrypts_through_the_module() {
    let s = Setup::new();
    let db = s.nss_db();

    // certutil lists the token's certificates. It logs in to every token first (`-h all`):
    // the person types the PIN into pinentry, the one prompt of this test.
    let mut cmd = s.cmd("certutil");
    cmd.args(["-L", "-d", &db, "-h", "all"]);
    let out = with_pin(&s.agent, &s.term, cmd, 1, PIN).await;
    ok("certutil -L", &out);
    let list = String::from_utf8_lossy(&out.stdout);
    assert_eq!(list.matches("alice:Alice Example").count(), 3, "{list}");

    // cmsutil signs in a process of its own: its C_Login costs no prompt (the agent holds
    // the PIN), the agent signs on the token, OpenSSL accepts the result.
    let input = write_file(s.dir.path(), "m.txt", MSG);
    let signed = s.path("signed.p7m");
    let out = run(s
        .cmd("cmsutil")
        .args(["-S", "-d", &db, "-N", "alice:Alice Example", "-i"])
        .arg(&input)
        .arg("-o")
        .arg(&signed));
    assert!(out.status.success());
    let content = openssl_verified(s.dir.path(), &std::fs::read(&signed).unwrap())
        .expect("OpenSSL verifies what NSS signed through the module");
    assert_eq!(content, MSG);
    let log = s.agent.log_text();
    assert!(
        log.contains("cmsutil") && log.contains("key_sign"),
        "the audit line names the program:\n{log}"
    );

    // cmsutil decrypts what OpenSSL encrypted to Alice: another process, and again no
    // prompt.
    let env = s.path("env.der");
    run(Command::new("openssl")
        .args([
            "cms",
            "-encrypt",
            "-binary",
            "-aes-256-cbc",
            "-outform",
            "DER",
            "-in",
        ])
        .arg(&input)
        .arg("-out")
        .arg(&env)
        .arg(pki_file("alice-enc-rsa.pem")));
    let plain = s.path("plain.txt");
    let out = run(s
        .cmd("cmsutil")
        .args(["-D", "-d", &db, "-i"])
        .arg(&env)
        .arg("-o")
        .arg(&plain));
    assert!(out.status.success());
    assert_eq!(std::fs::read(&plain).unwrap(), MSG);
    let screen = s.term.wait_for("PIN:", 1).await;
    assert_eq!(
        screen.matches("PIN:").count(),
        1,
        "one prompt in all:\n{screen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_in_nss_is_tried_once_and_the_person_asked_again() {
    let s = Setup::new();
    let db = s.nss_db();
    let input = write_file(s.dir.path(), "m.txt", MSG);
    let signed = s.path("signed.p7m");
    let mut cmd = s.cmd("cmsutil");
    cmd.args(["-S", "-d", &db, "-N", "alice:Alice Example", "-i"])
        .arg(&input)
        .arg("-o")
        .arg(&signed);
    // A wrong PIN: the token rejects it and it is never tried again. NSS asks to log in
    // once more, and the agent asks the person (saying a wrong PIN came before), who types
    // the right one.
    let out = with_pins(&s.agent, &s.term, cmd, 1, &["0000", PIN]).await;
    ok("cmsutil", &out);
    openssl_verified(s.dir.path(), &std::fs::read(&signed).unwrap()).unwrap();
    let screen = Terminal::tmux(&s.term.socket, &["capture-pane", "-p", "-S", "-200"]);
    assert_eq!(screen.matches("PIN:").count(), 2, "{screen}");
    assert!(
        screen.contains("A wrong PIN was entered before"),
        "{screen}"
    );
    let log = s.agent.log_text();
    assert_eq!(
        log.matches("the token rejected the PIN").count(),
        1,
        "one login with the wrong PIN, never repeated:\n{log}"
    );
    assert!(!log.contains("0000"), "the PIN is in the log:\n{log}");
}

/// The CKA_ID of a PKI key as a pkcs11: URI's percent-encoded id.
fn uri_id(name: &str) -> String {
    let der = std::fs::read(pki_file(&format!("{name}.der"))).unwrap();
    let facts = smime_agent::certs::CertFacts::from_der(&der).unwrap();
    // make-token.sh gives each key the SHA-1 of its public key as CKA_ID.
    let spki = facts.cert.tbs_certificate().subject_public_key_info();
    let id = {
        use sha1::Digest;
        sha1::Sha1::digest(spki.subject_public_key.raw_bytes())
    };
    id.iter().map(|b| format!("%{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_signs_with_rsa_and_ecdsa_keys_through_the_pkcs11_engine() {
    let s = Setup::new();
    let input = write_file(s.dir.path(), "m.txt", MSG);
    for (n, name) in ["alice-sign-rsa", "alice-sign-ec"].into_iter().enumerate() {
        let out_file = s.path(&format!("{name}.p7m"));
        let mut cmd = s.cmd("openssl");
        cmd.env("PKCS11_MODULE_PATH", module())
            .args([
                "cms",
                "-sign",
                "-nodetach",
                "-binary",
                "-outform",
                "DER",
                "-engine",
                "pkcs11",
                "-keyform",
                "engine",
                "-inkey",
            ])
            .arg(format!("pkcs11:type=private;id={}", uri_id(name)))
            .arg("-signer")
            .arg(pki_file(&format!("{name}.pem")))
            .arg("-in")
            .arg(&input)
            .arg("-out")
            .arg(&out_file);
        // The first signature logs in (one prompt); the second process finds the PIN held.
        let out = if n == 0 {
            with_pin(&s.agent, &s.term, cmd, 1, PIN).await
        } else {
            cmd.output().unwrap()
        };
        ok(&format!("openssl {name}"), &out);
        let der = std::fs::read(&out_file).unwrap();
        assert_eq!(openssl_verified(s.dir.path(), &der).expect(name), MSG);
        // And the agent itself verifies it.
        let mime = smime_agent::smime::mime::pkcs7_mime("signed-data", &der);
        let r = s
            .agent
            .client()
            .await
            .verify(smime_agent_proto::VerifyParams {
                content: mime.into(),
                validation: smime_agent_proto::ValidationMode::Wait,
                ..Default::default()
            })
            .await
            .expect("verify");
        assert_eq!(
            r.status,
            smime_agent_proto::VerifyStatus::Valid,
            "{name}: {r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs11_tool_and_p11tool_list_sign_and_decrypt() {
    let s = Setup::new();
    let m = module().to_str().unwrap().to_owned();
    let out = run(s.cmd("pkcs11-tool").args(["--module", &m, "-L"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("token label        : alice"), "{text}");
    assert!(
        text.contains("PIN pad present"),
        "protected authentication path: {text}"
    );
    let out = run(s.cmd("pkcs11-tool").args(["--module", &m, "-M"]));
    let text = String::from_utf8_lossy(&out.stdout);
    for mech in [
        "RSA-PKCS, ",
        "RSA-PKCS-OAEP",
        "SHA256-RSA-PKCS",
        "ECDSA, ",
        "ECDH1-DERIVE",
    ] {
        assert!(text.contains(mech), "{mech}: {text}");
    }
    let out = run(Command::new("p11tool")
        .arg(format!("--provider={m}"))
        .arg("--list-all-certs")
        .env(smime_agent_proto::SOCKET_ENV, &s.agent.socket));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("Type: X.509 Certificate").count(), 3, "{text}");

    // Sign with the RSA key: OpenSSL checks it against the certificate.
    let data = write_file(s.dir.path(), "data.txt", b"signed by pkcs11-tool");
    let sig = s.path("sig.bin");
    let id: String = uri_id("alice-sign-rsa").replace('%', "");
    let mut cmd = s.cmd("pkcs11-tool");
    cmd.args([
        "--module",
        &m,
        "--login",
        "--sign",
        "-m",
        "SHA256-RSA-PKCS",
        "--id",
        &id,
        "-i",
    ])
    .arg(&data)
    .arg("-o")
    .arg(&sig);
    let out = with_pin(&s.agent, &s.term, cmd, 1, PIN).await;
    ok("pkcs11-tool", &out);
    let pubkey = s.path("pub.pem");
    let out = run(Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(pki_file("alice-sign-rsa.pem")));
    std::fs::write(&pubkey, out.stdout).unwrap();
    run(Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&pubkey)
        .arg("-signature")
        .arg(&sig)
        .arg(&data));

    // RSA-PSS, hashed by the module (SHA-256, salt as long as the hash): OpenSSL checks it.
    let out = run(s
        .cmd("pkcs11-tool")
        .args([
            "--module",
            &m,
            "--login",
            "--sign",
            "-m",
            "SHA256-RSA-PKCS-PSS",
            "--id",
            &id,
            "-i",
        ])
        .arg(&data)
        .arg("-o")
        .arg(&sig));
    assert!(out.status.success());
    run(Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:32",
            "-verify",
        ])
        .arg(&pubkey)
        .arg("-signature")
        .arg(&sig)
        .arg(&data));

    // Decrypt what OpenSSL encrypted to the RSA encryption key (PKCS#1 v1.5 and OAEP).
    let secret = write_file(
        s.dir.path(),
        "secret.bin",
        b"thirty-two bytes of content key!",
    );
    let enc_id: String = uri_id("alice-enc-rsa").replace('%', "");
    for (opts, mech) in [
        (&["-pkeyopt", "rsa_padding_mode:pkcs1"][..], "RSA-PKCS"),
        // pkcs11-tool asks for OAEP with SHA-256 (for the label and MGF1).
        (
            &[
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                "rsa_oaep_md:sha256",
                "-pkeyopt",
                "rsa_mgf1_md:sha256",
            ][..],
            "RSA-PKCS-OAEP",
        ),
    ] {
        let enc = s.path("secret.enc");
        run(Command::new("openssl")
            .args(["pkeyutl", "-encrypt", "-certin", "-inkey"])
            .arg(pki_file("alice-enc-rsa.pem"))
            .arg("-in")
            .arg(&secret)
            .arg("-out")
            .arg(&enc)
            .args(opts));
        let dec = s.path("secret.dec");
        let out = run(s
            .cmd("pkcs11-tool")
            .args([
                "--module",
                &m,
                "--login",
                "--decrypt",
                "-m",
                mech,
                "--id",
                &enc_id,
                "-i",
            ])
            .arg(&enc)
            .arg("-o")
            .arg(&dec));
        assert!(out.status.success());
        assert_eq!(
            std::fs::read(&dec).unwrap(),
            std::fs::read(&secret).unwrap(),
            "{mech}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nss_programs_at_once_share_one_token_and_one_pin_prompt() {
    let s = Setup::new();
    let db = s.nss_db();
    let input = write_file(s.dir.path(), "m.txt", MSG);
    let sign = |n: usize| {
        let mut c = s.cmd("cmsutil");
        c.args(["-S", "-d", &db, "-N", "alice:Alice Example", "-i"])
            .arg(&input)
            .arg("-o")
            .arg(s.path(&format!("signed-{n}.p7m")));
        c
    };
    let (mut a, mut b) = (sign(1), sign(2));
    let first = tokio::task::spawn_blocking(move || a.output().unwrap());
    let second = tokio::task::spawn_blocking(move || b.output().unwrap());
    s.term.wait_for("PIN:", 1).await;
    s.term.type_line(PIN);
    for (n, p) in [(1, first), (2, second)] {
        let out = tokio::time::timeout(Duration::from_secs(30), p)
            .await
            .expect("both finish")
            .unwrap();
        ok(&format!("cmsutil {n}"), &out);
        let der = std::fs::read(s.path(&format!("signed-{n}.p7m"))).unwrap();
        assert_eq!(openssl_verified(s.dir.path(), &der).unwrap(), MSG);
    }
    let screen = Terminal::tmux(&s.term.socket, &["capture-pane", "-p", "-S", "-200"]);
    assert_eq!(
        screen.matches("PIN:").count(),
        1,
        "one prompt for both:\n{screen}"
    );
}

/// What NSS's certutil lists of the module's tokens: lines of user certificates.
fn nss_user_certs(listing: &str) -> usize {
    listing
        .lines()
        .filter(|l| l.trim_end().ends_with("u,u,u"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nss_sees_the_card_come_and_go_and_a_wrong_pin_costs_one_try() {
    use common::module::*;
    let dir = tempdir();
    let rig = rig();
    let agent = pinentry_card_agent(&dir.path().join("agent"), &rig);
    let client = agent.client().await;
    let term = Terminal::start();
    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    wait_status(&client, "the card", |st| card_certs(st, "Alice") == 2).await;
    let db = nss_db(&dir.path().join("nssdb"));
    let list = |term: &Terminal| {
        let mut c = host_program("certutil", &agent, term);
        c.args(["-L", "-d", &db, "-h", "all"]);
        c
    };

    // The first listing logs in to the card, and the person mistypes: the card counts
    // exactly one failed try and the agent does not repeat it (certutil lists the public
    // certificates all the same).
    let tries = rig.tries_left("alice").unwrap();
    let out = with_pin(&agent, &term, list(&term), 1, "999999").await;
    assert_eq!(nss_user_certs(&String::from_utf8_lossy(&out.stdout)), 2);
    assert_eq!(rig.tries_left("alice").unwrap(), tries - 1, "one try spent");
    let log = agent.log_text();
    assert_eq!(
        log.matches("the token rejected the PIN").count(),
        1,
        "{log}"
    );
    // The next listing asks again; the right PIN resets the card's counter.
    let out = with_pin(&agent, &term, list(&term), 2, CARD_PIN).await;
    ok("certutil -L", &out);
    assert_eq!(nss_user_certs(&String::from_utf8_lossy(&out.stdout)), 2);
    assert_eq!(rig.tries_left("alice").unwrap(), tries);

    // The card is pulled: its certificates are gone from NSS's view.
    rig.remove("alice").unwrap();
    wait_status(&client, "the card leaving", |st| st.tokens.is_empty()).await;
    let out = run(&mut list(&term));
    assert_eq!(nss_user_certs(&String::from_utf8_lossy(&out.stdout)), 0);

    // Put back: they return. Its PIN went with it, so the listing asks again (prompt 3).
    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    wait_status(&client, "the card back", |st| card_certs(st, "Alice") == 2).await;
    let out = with_pin(&agent, &term, list(&term), 3, CARD_PIN).await;
    assert!(out.status.success());
    assert_eq!(nss_user_certs(&String::from_utf8_lossy(&out.stdout)), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs11_tool_derives_the_ecdh_secret_openssl_computes() {
    let dir = tempdir();
    let (_hsm, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &["alice-enc-ec"],
        AgentSpec {
            pin_source: "pinentry",
            pin_extra: "pinentry = \"pinentry-tty\"",
            ..Default::default()
        },
    );
    let term = Terminal::start();
    let path = |n: &str| dir.path().join(n);
    // The peer: a fresh P-256 key made by OpenSSL; its public key as DER for pkcs11-tool.
    run(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(path("peer.pem")));
    run(Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(path("peer.pem"))
        .arg("-out")
        .arg(path("peer.der")));
    let alice_pub = path("alice-pub.pem");
    let out = run(Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(pki_file("alice-enc-ec.pem")));
    std::fs::write(&alice_pub, out.stdout).unwrap();
    run(Command::new("openssl")
        .args(["pkeyutl", "-derive", "-inkey"])
        .arg(path("peer.pem"))
        .arg("-peerkey")
        .arg(&alice_pub)
        .arg("-out")
        .arg(path("expected.bin")));
    // pkcs11-tool derives with Alice's key behind the module (the person types the PIN).
    let id: String = uri_id("alice-enc-ec").replace('%', "");
    let m = module().to_str().unwrap().to_owned();
    let mut cmd = host_program("pkcs11-tool", &agent, &term);
    cmd.args([
        "--module",
        &m,
        "--login",
        "--derive",
        "-m",
        "ECDH1-DERIVE",
        "--id",
        &id,
        "--input-file",
    ])
    .arg(path("peer.der"))
    .arg("--output-file")
    .arg(path("z.bin"));
    let out = with_pin(&agent, &term, cmd, 1, PIN).await;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(path("z.bin")).unwrap(),
        std::fs::read(path("expected.bin")).unwrap(),
        "the module's ECDH secret is OpenSSL's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nss_programs_share_one_card_and_one_pin_prompt() {
    let dir = tempdir();
    let rig = rig();
    // The card's signing key (PIV 9C) wants the PIN for every use; the policy that lets the
    // cached PIN serve it makes the one prompt enough.
    let agent = Agent::start(
        &dir.path().join("agent"),
        AgentSpec {
            extra_config: format!(
                "[[tokens.module]]\npath = \"{}\"\n",
                virtual_piv_card::OPENSC_PKCS11
            ),
            pin_source: "pinentry",
            pin_extra: "pinentry = \"pinentry-tty\"\nalways_authenticate_uses_cache = true",
            env: rig_env(&rig).collect(),
            ..Default::default()
        },
    );
    let client = agent.client().await;
    let term = Terminal::start();
    rig.insert("alice", 0, CARD_PIN, &alice_slots()).unwrap();
    wait_status(&client, "the card", |st| card_certs(st, "Alice") == 2).await;
    let tries = rig.tries_left("alice").unwrap();
    let verifies = rig.verify_count("alice").unwrap();
    let db = nss_db(&dir.path().join("nssdb"));
    // The card's certificates, as NSS names them: token label, then the certificate's label
    // (its common name); NSS picks the one fit for signing.
    let st = client.status().await.unwrap();
    let nickname = format!("{}:Alice Example", st.tokens[0].token.label);
    let input = write_file(dir.path(), "m.txt", MSG);
    let sign = |n: usize| {
        let mut c = host_program("cmsutil", &agent, &term);
        c.args(["-S", "-d", &db, "-N", &nickname, "-i"])
            .arg(&input)
            .arg("-o")
            .arg(dir.path().join(format!("signed-{n}.p7m")));
        c
    };
    let (mut a, mut b) = (sign(1), sign(2));
    let first = tokio::task::spawn_blocking(move || a.output().unwrap());
    let second = tokio::task::spawn_blocking(move || b.output().unwrap());
    term.wait_for("PIN:", 1).await;
    term.type_line(CARD_PIN);
    for (n, p) in [(1, first), (2, second)] {
        let out = tokio::time::timeout(Duration::from_secs(60), p)
            .await
            .expect("both finish")
            .unwrap();
        ok(&format!("cmsutil {n}"), &out);
        let der = std::fs::read(dir.path().join(format!("signed-{n}.p7m"))).unwrap();
        assert_eq!(openssl_verified(dir.path(), &der).unwrap(), MSG);
    }
    let screen = Terminal::tmux(&term.socket, &["capture-pane", "-p", "-S", "-200"]);
    assert_eq!(
        screen.matches("PIN:").count(),
        1,
        "one prompt for both:\n{screen}"
    );
    assert_eq!(
        rig.tries_left("alice").unwrap(),
        tries,
        "no wrong PIN was tried"
    );
    // The login and one context-specific login per signature: the PIN the person typed,
    // never a guess.
    let spent = rig.verify_count("alice").unwrap() - verifies;
    assert!((1..=3).contains(&spent), "VERIFY commands: {spent}");
}
