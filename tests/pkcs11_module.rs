//! The PKCS#11 module (`libsmime_agent_pkcs11.so`) in the programs that load it: NSS (the
//! library of Thunderbird and Evolution: `modutil`, `certutil`, `cmsutil`), OpenSSL's pkcs11
//! engine (libp11), OpenSC's `pkcs11-tool` and GnuTLS's `p11tool`, against the real agent on
//! SoftHSM keys. PINs are typed by a person into the real pinentry-tty in a terminal (tmux):
//! the host programs name that terminal in `GPG_TTY`, as with gpg-agent.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

/// The module, built beside the agent binary.
fn module() -> &'static Path {
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
        let mut c = Command::new(program);
        c.env(smime_agent_proto::SOCKET_ENV, &self.agent.socket)
            .env("GPG_TTY", self.term.tty())
            .env("TERM", "xterm")
            .env_remove("DISPLAY")
            .stdin(std::process::Stdio::null());
        c
    }

    /// A fresh NSS database with the module loaded and the test PKI's root trusted.
    fn nss_db(&self) -> String {
        let db = self.path("nssdb");
        std::fs::create_dir_all(&db).unwrap();
        let db = format!("sql:{}", db.display());
        run_ok(Command::new("certutil").args(["-N", "-d", &db, "--empty-password"]));
        run_ok(
            Command::new("modutil")
                .args(["-dbdir", &db, "-add", "smime-agent", "-force", "-libfile"])
                .arg(module()),
        );
        run_ok(
            Command::new("certutil")
                .args(["-A", "-d", &db, "-n", "root", "-t", "C,C,C", "-i"])
                .arg(pki_file("root-ca.pem")),
        );
        run_ok(
            Command::new("certutil")
                .args(["-A", "-d", &db, "-n", "ca", "-t", ",,", "-i"])
                .arg(pki_file("ca.pem")),
        );
        db
    }
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run");
    ok(&format!("{cmd:?}"), &out);
    out
}

/// Runs `cmd` in the background; the person types `pin` at the one prompt it brings
/// (the `prompt_no`-th on the terminal).
async fn with_pin(setup: &Setup, cmd: Command, prompt_no: usize, pin: &str) -> Output {
    with_pins(setup, cmd, prompt_no, &[pin]).await
}

/// The same with one PIN per prompt, in order.
async fn with_pins(setup: &Setup, mut cmd: Command, first_prompt: usize, pins: &[&str]) -> Output {
    let child = tokio::task::spawn_blocking(move || cmd.output().expect("run"));
    for (i, pin) in pins.iter().enumerate() {
        setup.term.wait_for("PIN:", first_prompt + i).await;
        setup.term.type_line(pin);
    }
    match tokio::time::timeout(Duration::from_secs(30), child).await {
        Ok(out) => out.unwrap(),
        Err(_) => panic!(
            "the program did not finish; the agent's log:\n{}\nthe terminal:\n{}",
            setup.agent.log_text(),
            Terminal::tmux(&setup.term.socket, &["capture-pane", "-p", "-S", "-50"])
        ),
    }
}

/// OpenSSL's verdict on a DER SignedData: the signed content, if it verifies.
fn openssl_verified(dir: &Path, der: &[u8]) -> Result<Vec<u8>, String> {
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

const MSG: &[u8] = b"Content-Type: text/plain\r\n\r\nSigned in NSS through the agent.\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nss_lists_signs_and_decrypts_through_the_module() {
    let s = Setup::new();
    let db = s.nss_db();

    // certutil lists the token's certificates. It logs in to every token first (`-h all`):
    // the person types the PIN into pinentry, the one prompt of this test.
    let mut cmd = s.cmd("certutil");
    cmd.args(["-L", "-d", &db, "-h", "all"]);
    let out = with_pin(&s, cmd, 1, PIN).await;
    assert!(
        out.status.success(),
        "certutil -L: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = String::from_utf8_lossy(&out.stdout);
    assert_eq!(list.matches("alice:Alice Example").count(), 3, "{list}");

    // cmsutil signs in a process of its own: its C_Login costs no prompt (the agent holds
    // the PIN), the agent signs on the token, OpenSSL accepts the result.
    let input = write_file(s.dir.path(), "m.txt", MSG);
    let signed = s.path("signed.p7m");
    let out = run_ok(
        s.cmd("cmsutil")
            .args(["-S", "-d", &db, "-N", "alice:Alice Example", "-i"])
            .arg(&input)
            .arg("-o")
            .arg(&signed),
    );
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
    run_ok(
        Command::new("openssl")
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
            .arg(pki_file("alice-enc-rsa.pem")),
    );
    let plain = s.path("plain.txt");
    let out = run_ok(
        s.cmd("cmsutil")
            .args(["-D", "-d", &db, "-i"])
            .arg(&env)
            .arg("-o")
            .arg(&plain),
    );
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
    let out = with_pins(&s, cmd, 1, &["0000", PIN]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
            with_pin(&s, cmd, 1, PIN).await
        } else {
            cmd.output().unwrap()
        };
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
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
    let out = run_ok(s.cmd("pkcs11-tool").args(["--module", &m, "-L"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("token label        : alice"), "{text}");
    assert!(
        text.contains("PIN pad present"),
        "protected authentication path: {text}"
    );
    let out = run_ok(s.cmd("pkcs11-tool").args(["--module", &m, "-M"]));
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
    let out = run_ok(
        Command::new("p11tool")
            .arg(format!("--provider={m}"))
            .arg("--list-all-certs")
            .env(smime_agent_proto::SOCKET_ENV, &s.agent.socket),
    );
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
    let out = with_pin(&s, cmd, 1, PIN).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pubkey = s.path("pub.pem");
    let out = run_ok(
        Command::new("openssl")
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(pki_file("alice-sign-rsa.pem")),
    );
    std::fs::write(&pubkey, out.stdout).unwrap();
    run_ok(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&pubkey)
            .arg("-signature")
            .arg(&sig)
            .arg(&data),
    );

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
        run_ok(
            Command::new("openssl")
                .args(["pkeyutl", "-encrypt", "-certin", "-inkey"])
                .arg(pki_file("alice-enc-rsa.pem"))
                .arg("-in")
                .arg(&secret)
                .arg("-out")
                .arg(&enc)
                .args(opts),
        );
        let dec = s.path("secret.dec");
        let out = run_ok(
            s.cmd("pkcs11-tool")
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
                .arg(&dec),
        );
        assert!(out.status.success());
        assert_eq!(
            std::fs::read(&dec).unwrap(),
            std::fs::read(&secret).unwrap(),
            "{mech}"
        );
    }
}
