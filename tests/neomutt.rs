//! NeoMutt (Debian's `neomutt`, driven in tmux) with only the shipped
//! `contrib/neomutt/smime-agent.neomuttrc` for S/MIME: mail it signs and encrypts through the
//! agent is checked with OpenSSL, mail OpenSSL made is read with the agent's verdicts on
//! NeoMutt's screen, and a wrong PIN is shown and costs one try.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A body NeoMutt's editor (a script) writes into each new message.
const BODY: &str = "Hello Bob,\n\nsigned on the token, sent by NeoMutt.\n\nAlice\n";

/// One NeoMutt in its own tmux server, with Alice's agent behind it.
struct Neomutt {
    socket: String,
    dir: PathBuf,
}

impl Neomutt {
    /// Starts NeoMutt for `agent` in `dir`: a Maildir inbox (`dir/Mail/inbox`), `sendmail`
    /// writing each message to `dir/sent/`, and a muttrc that sets only mailbox and sending
    /// matters and sources the shipped smime-agent.neomuttrc unchanged.
    fn start(dir: &Path, agent: &Agent) -> Neomutt {
        for d in [
            "Mail/inbox/cur",
            "Mail/inbox/new",
            "Mail/inbox/tmp",
            "sent",
            "home",
        ] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        // The agent's configuration where every smime-agent command looks for it.
        let config_dir = dir.join("home/.config/smime-agent");
        std::fs::create_dir_all(&config_dir).unwrap();
        std::fs::copy(&agent.config, config_dir.join("config.toml")).unwrap();
        let script = |name: &str, text: String| {
            let p = write_file(dir, name, text.as_bytes());
            run("chmod", &["+x", path_str(&p)]);
            p
        };
        script(
            "sendmail.sh",
            format!(
                "#!/bin/sh\ncat > \"{}/sent/mail-$(date +%s%N).eml\"\n",
                dir.display()
            ),
        );
        script(
            "editor.sh",
            format!("#!/bin/sh\nprintf '%s' '{BODY}' >> \"$1\"\n"),
        );
        let rc = workspace_root().join("contrib/neomutt/smime-agent.neomuttrc");
        let muttrc = format!(
            "set folder={d}/Mail\nset spoolfile=+inbox\nset mbox_type=Maildir\n\
             set from=\"Alice Example <alice@example.org>\"\nset use_from=yes\n\
             set sendmail=\"{d}/sendmail.sh\"\nset editor=\"{d}/editor.sh\"\nset record=\"\"\n\
             set askcc=no\nset postpone=no\nset abort_unmodified=no\nset sleep_time=0\n\
             set mark_old=no\nsource {rc}\n",
            d = dir.display(),
            rc = rc.display()
        );
        write_file(dir, "muttrc", muttrc.as_bytes());
        let bin_dir = agent_bin().parent().unwrap().to_owned();
        // tmux hands its own server's environment to the pane: the settings go in a script.
        script(
            "neomutt.sh",
            format!(
                "#!/bin/sh\nexport HOME={d}/home PATH={bin}:/usr/bin:/bin SMIME_AGENT_SOCK={sock} \
                 TERM=screen LANG=C.UTF-8\nunset XDG_CONFIG_HOME XDG_DATA_HOME\n\
                 exec neomutt -n -F {d}/muttrc\n",
                d = dir.display(),
                bin = bin_dir.display(),
                sock = agent.socket.display()
            ),
        );
        let socket = format!("smime-agent-neomutt-{}", rand_suffix());
        let st = Command::new("tmux")
            .args(["-L", &socket, "new-session", "-d", "-x", "200", "-y", "50"])
            .arg(format!("{}/neomutt.sh; sleep 600", dir.display()))
            .status()
            .expect("tmux");
        assert!(st.success(), "tmux new-session failed");
        let n = Neomutt {
            socket,
            dir: dir.to_owned(),
        };
        n.wait_for("q:Quit");
        n
    }

    fn screen(&self) -> String {
        Terminal::tmux(&self.socket, &["capture-pane", "-p", "-J"])
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            Terminal::tmux(&self.socket, &["send-keys", "-t", "0", k]);
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn line(&self, text: &str) {
        Terminal::tmux(&self.socket, &["send-keys", "-t", "0", "-l", text]);
        Terminal::tmux(&self.socket, &["send-keys", "-t", "0", "Enter"]);
        std::thread::sleep(Duration::from_millis(150));
    }

    /// Waits until the screen shows every one of `texts`; returns the screen.
    fn wait_for_all(&self, texts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen();
            if texts.iter().all(|t| s.contains(t)) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "NeoMutt never showed {texts:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_for(&self, text: &str) -> String {
        self.wait_for_all(&[text])
    }

    /// Composes a message to Bob with `security` chosen in the S/MIME menu (`s`ign,
    /// `e`ncrypt, `b`oth) and sends it.
    fn compose(&self, subject: &str, security: &str) {
        self.keys(&["m"]);
        self.wait_for("To:");
        self.line("bob@example.org");
        self.wait_for("Subject:");
        self.line(subject);
        self.wait_for("Compose");
        self.keys(&["S"]);
        self.wait_for("S/MIME (e)ncrypt");
        self.keys(&[security, "y"]);
    }

    /// The messages `sendmail` got, oldest first.
    fn sent(&self) -> Vec<Vec<u8>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("sent"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files.iter().map(|f| std::fs::read(f).unwrap()).collect()
    }
}

impl Drop for Neomutt {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

fn alice_agent(dir: &Path) -> (SoftHsm, Agent) {
    agent_with_contacts(
        dir,
        &["alice-sign-rsa", "alice-enc-rsa"],
        &["bob-dual-rsa"],
        "[[identity]]\naddress = \"alice@example.org\"\n",
    )
}

/// `text` without carriage returns (to compare bodies whatever the line ends).
fn lines(text: &[u8]) -> String {
    String::from_utf8_lossy(text).replace('\r', "")
}

#[test]
fn neomutt_signs_and_encrypts_through_the_agent_and_openssl_agrees() {
    let dir = tempdir();
    let (_hsm, agent) = alice_agent(dir.path());
    let mutt = Neomutt::start(&dir.path().join("mutt"), &agent);

    // The key index NeoMutt reads was written from the agent's configuration and tokens.
    let index = std::fs::read_to_string(
        mutt.dir
            .join("home/.local/share/smime-agent/neomutt/.index"),
    )
    .unwrap();
    assert!(
        index.contains("alice@example.org alice@example.org own ? t se"),
        "{index}"
    );
    assert!(
        index.contains("bob@example.org bob@example.org contact ? t e"),
        "{index}"
    );

    // Signed: NeoMutt asks for the passphrase and hands it to the agent.
    mutt.compose("signed by neomutt", "s");
    mutt.wait_for("Enter S/MIME passphrase:");
    mutt.line(PIN);
    mutt.wait_for("Mail sent");
    let sent = mutt.sent();
    assert_eq!(sent.len(), 1);
    let signed = &sent[0];
    let text = lines(signed);
    assert!(text.contains("multipart/signed"), "{text}");
    assert!(text.contains("micalg=sha-256"), "{text}");
    for tool in ["cms", "smime"] {
        let content = openssl_signed_content(tool, signed, dir.path())
            .unwrap_or_else(|e| panic!("openssl {tool} -verify refused NeoMutt's mail: {e}"));
        assert!(lines(&content).contains(BODY), "{}", lines(&content));
    }
    let tampered = text.replace("signed on the token", "signed off the token");
    let (ok, _) = openssl_verifies("smime", tampered.as_bytes(), dir.path());
    assert!(!ok, "OpenSSL accepted a changed copy");

    // Encrypted to Bob (and to Alice herself): OpenSSL decrypts it as Bob.
    mutt.compose("encrypted by neomutt", "e");
    mutt.wait_for("Mail sent");
    let sent = mutt.sent();
    assert_eq!(sent.len(), 2);
    assert!(lines(&sent[1]).contains("enveloped-data"));
    let opened = openssl_decrypt(dir.path(), &sent[1], "bob-dual-rsa")
        .unwrap_or_else(|e| panic!("OpenSSL cannot decrypt NeoMutt's mail as Bob: {e}"));
    assert!(lines(&opened).contains(BODY), "{}", lines(&opened));
    let algorithms = openssl(
        dir.path(),
        &["cms", "-cmsout", "-print", "-inform", "SMIME"],
        &sent[1],
    )
    .unwrap();
    assert!(
        lines(&algorithms).contains("aes-256-cbc"),
        "the cipher NeoMutt asked for (aes256):\n{}",
        lines(&algorithms)
    );

    // Signed and encrypted: Bob decrypts, and the signature inside verifies.
    mutt.compose("signed and encrypted by neomutt", "b");
    mutt.wait_for("Mail sent");
    let sent = mutt.sent();
    assert_eq!(sent.len(), 3);
    let inner = openssl_decrypt(dir.path(), &sent[2], "bob-dual-rsa").unwrap();
    let content = openssl_signed_content("smime", &inner, dir.path())
        .unwrap_or_else(|e| panic!("the signature inside does not verify: {e}"));
    assert!(lines(&content).contains(BODY));
}

#[test]
fn a_wrong_pin_in_neomutt_shows_the_agents_message_and_costs_one_try() {
    let dir = tempdir();
    let (_hsm, agent) = alice_agent(dir.path());
    let mutt = Neomutt::start(&dir.path().join("mutt"), &agent);
    let rejected = || {
        agent
            .log_text()
            .matches("the token rejected the PIN")
            .count()
    };

    mutt.compose("wrong pin", "s");
    mutt.wait_for("Enter S/MIME passphrase:");
    mutt.line("999999");
    let screen = mutt.wait_for("pin_incorrect");
    assert!(screen.contains("rejected the PIN"), "{screen}");
    assert_eq!(rejected(), 1);
    assert!(mutt.sent().is_empty(), "nothing may be sent");

    // NeoMutt keeps the passphrase it was given and sends it again on the next try: the
    // agent does not hand it to the token a second time.
    mutt.keys(&["Enter"]);
    mutt.wait_for("No output from OpenSSL");
    mutt.keys(&["Enter"]);
    mutt.wait_for("Compose");
    mutt.keys(&["y"]);
    let repeated = time_until(Duration::from_secs(20), || {
        agent.log_text().contains("not sent to the token again")
    });
    assert!(
        repeated.is_some(),
        "NeoMutt did not offer the PIN again:\n{}",
        mutt.screen()
    );
    let screen = mutt.wait_for("pin_incorrect");
    assert!(!screen.contains("Mail sent"), "{screen}");
    assert_eq!(rejected(), 1, "the same wrong PIN reached the token twice");

    // Forgetting the passphrase (ctrl-F) and typing the right one sends the mail.
    mutt.keys(&["Enter"]);
    mutt.wait_for("No output from OpenSSL");
    mutt.keys(&["Enter"]);
    mutt.wait_for("Compose");
    mutt.keys(&["C-f"]);
    mutt.keys(&["y"]);
    mutt.wait_for("Enter S/MIME passphrase:");
    mutt.line(PIN);
    mutt.wait_for("Mail sent");
    assert_eq!(mutt.sent().len(), 1);
    assert_eq!(rejected(), 1);
}

/// Mail from Bob as OpenSSL writes it, into NeoMutt's inbox.
fn openssl_mail(dir: &Path, inbox: &Path) {
    let work = dir.join("made");
    std::fs::create_dir_all(&work).unwrap();
    let body = write_file(
        &work,
        "body",
        b"Content-Type: text/plain; charset=us-ascii\n\nHello Alice, this is the body.\n",
    );
    let header = |from: &str, subject: &str| {
        format!(
            "From: {from}\nTo: alice@example.org\nSubject: {subject}\n\
             Date: Mon, 7 Dec 2026 10:00:00 +0000\nMessage-ID: <{}@example.org>\n",
            rand_suffix()
        )
    };
    let bob = |extra: &[&str], input: &Path| -> String {
        let cert = pki_file("bob-dual-rsa.pem");
        let key = pki_file("bob-dual-rsa.key.pem");
        let mut args = vec!["smime", "-sign", "-signer", path_str(&cert), "-inkey"];
        args.push(path_str(&key));
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-in", path_str(input)]);
        run("openssl", &args)
    };
    let to_alice = |input: &Path| -> String {
        let cert = pki_file("alice-enc-rsa.pem");
        run(
            "openssl",
            &[
                "smime",
                "-encrypt",
                "-aes256",
                "-in",
                path_str(input),
                path_str(&cert),
            ],
        )
    };
    let mut n = 0;
    let mut put = |text: String| {
        n += 1;
        write_file(inbox, &format!("1700000000.{n}.host"), text.as_bytes());
    };
    let clear = bob(&[], &body);
    put(header("Bob Example <bob@example.org>", "m1 clear signed") + &clear);
    put(header("Bob Example <bob@example.org>", "m2 opaque signed") + &bob(&["-nodetach"], &body));
    put(header("Bob Example <bob@example.org>", "m3 tampered")
        + &clear.replace("this is the body", "this is the BODY"));
    // Signed by a certificate no trusted root vouches for, naming Bob all the same.
    let mal_key = work.join("mal.key");
    let mal = work.join("mal.pem");
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            path_str(&mal_key),
            "-out",
            path_str(&mal),
            "-subj",
            "/CN=Bob Example/emailAddress=bob@example.org",
            "-days",
            "30",
            "-addext",
            "subjectAltName=email:bob@example.org",
        ],
    );
    let forged = run(
        "openssl",
        &[
            "smime",
            "-sign",
            "-signer",
            path_str(&mal),
            "-inkey",
            path_str(&mal_key),
            "-in",
            path_str(&body),
        ],
    );
    put(header("Bob Example <bob@example.org>", "m4 untrusted signer") + &forged);
    put(header("Bob Example <bob@example.org>", "m5 encrypted") + &to_alice(&body));
    let inner = write_file(&work, "inner", clear.as_bytes());
    put(header("Bob Example <bob@example.org>", "m6 signed and encrypted") + &to_alice(&inner));
    // Bob's good signature on mail that says it is from Carol.
    put(header("Carol Example <carol@example.org>", "m7 not the sender") + &clear);
}

#[test]
fn neomutt_shows_the_agents_verdict_on_mail_openssl_made() {
    let dir = tempdir();
    let (_hsm, agent) = alice_agent(dir.path());
    let mutt_dir = dir.path().join("mutt");
    std::fs::create_dir_all(mutt_dir.join("Mail/inbox/new")).unwrap();
    openssl_mail(dir.path(), &mutt_dir.join("Mail/inbox/new"));
    let mutt = Neomutt::start(&mutt_dir, &agent);
    mutt.wait_for("m7 not the sender");

    // Opens message `n` and waits for what its screen must show.
    let open = |n: usize, expect: &[&str]| -> String {
        if n == 1 {
            mutt.keys(&["Enter"]);
        } else {
            mutt.keys(&["j"]);
        }
        let mut all = vec![format!("m{n} ")];
        all.extend(expect.iter().map(|s| s.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        mutt.wait_for_all(&all)
    };
    let good = "S/MIME signature successfully verified";
    let bad = "S/MIME signature could NOT be verified";

    let s = open(
        1,
        &[
            "Verification successful",
            "Hello Alice, this is the body.",
            good,
        ],
    );
    assert!(s.contains("certificate valid"), "{s}");
    open(
        2,
        &[
            "Verification successful",
            "Hello Alice, this is the body.",
            good,
        ],
    );
    let s = open(3, &["Verification failure", "digest_mismatch", bad]);
    assert!(!s.contains(good), "{s}");
    let s = open(4, &["Verification failure", "no_trusted_root", bad]);
    assert!(!s.contains(good), "{s}");

    // Encrypted: the passphrase goes to the agent; the key never leaves the token.
    mutt.keys(&["j"]);
    mutt.wait_for("Enter S/MIME passphrase:");
    mutt.line(PIN);
    mutt.wait_for_all(&["m5 ", "S/MIME encrypted", "Hello Alice, this is the body."]);

    // Signed, then encrypted: decrypted one layer, and the signature inside verified.
    open(
        6,
        &[
            "S/MIME encrypted",
            "Verification successful",
            "Hello Alice, this is the body.",
            good,
        ],
    );

    // A good signature by Bob on mail from Carol: NeoMutt compares the addresses the agent
    // reads from the signer's certificate with From.
    let s = open(
        7,
        &[
            "Verification successful",
            "S/MIME certificate owner does not match sender",
        ],
    );
    assert!(!s.contains(good), "{s}");
}

/// `smime-agent neomutt ARGS` against `agent`, with `stdin`.
fn neomutt_cmd(agent: &Agent, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = agent
        .cli()
        .arg("neomutt")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A command that refuses before it reads (a digest it will not use) may be gone by now:
    // the broken pipe is not the test's verdict, its output is.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn the_neomutt_commands_keep_the_clients_choices_or_refuse_them_and_list_only_inert_keys() {
    let dir = tempdir();
    let d = dir.path();
    // A contact whose certificate names an address a shell would act on.
    let contacts = d.join("contacts");
    std::fs::create_dir_all(&contacts).unwrap();
    let evil_key = d.join("evil.key");
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            path_str(&evil_key),
            "-out",
            path_str(&contacts.join("evil.pem")),
            "-subj",
            "/CN=Evil",
            "-days",
            "30",
            "-addext",
            "subjectAltName=email:a;touch>pwned@evil.example",
        ],
    );
    let (_hsm, agent) = agent_with_contacts(
        d,
        &["alice-sign-rsa", "alice-enc-rsa"],
        &["bob-dual-rsa"],
        "[[identity]]\naddress = \"alice@example.org\"\n\n\
         [policy]\nsigning_algorithms = [\"sha256\", \"sha512\"]\n",
    );
    let keys = d.join("keys");
    let alice = keys.join("alice@example.org");
    let bob = keys.join("bob@example.org");
    let msg = write_file(d, "msg", b"Content-Type: text/plain\n\nHello Bob\n");
    let pin = format!("{PIN}\n");
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();

    // The index: Alice's and Bob's addresses, not the one with shell syntax in it.
    let o = neomutt_cmd(
        &agent,
        &[
            "keyring",
            "--dir",
            path_str(&keys),
            "--config",
            path_str(&agent.config),
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let index = std::fs::read_to_string(keys.join(".index")).unwrap();
    assert_eq!(
        index,
        "alice@example.org alice@example.org own ? t se\n\
         bob@example.org bob@example.org contact ? t e\n"
    );
    assert!(
        stderr(&o).contains("left 1 address(es) out"),
        "{}",
        stderr(&o)
    );
    let o = neomutt_cmd(
        &agent,
        &["default-key", "--config", path_str(&agent.config)],
        b"",
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "alice@example.org\n");

    // The digest NeoMutt names is used, or refused; never replaced.
    let sign = |digest: &str| {
        neomutt_cmd(
            &agent,
            &[
                "sign",
                "--digest",
                digest,
                "--key",
                path_str(&alice),
                "--in",
                path_str(&msg),
            ],
            pin.as_bytes(),
        )
    };
    let o = sign("sha512");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stderr.is_empty(), "silent on success: {}", stderr(&o));
    let sig = write_file(d, "sig.der", &o.stdout);
    let checked = Command::new("openssl")
        .args([
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            path_str(&sig),
            "-content",
        ])
        .arg(&msg)
        .args([
            "-CAfile",
            path_str(&pki_file("chain.pem")),
            "-purpose",
            "smimesign",
        ])
        .args(["-out", "/dev/null"])
        .output()
        .unwrap();
    ok("openssl cms -verify of the detached signature", &checked);
    let printed = openssl(
        d,
        &["cms", "-cmsout", "-print", "-inform", "DER"],
        &o.stdout,
    )
    .unwrap();
    assert!(lines(&printed).contains("sha512"), "{}", lines(&printed));
    for refused in ["sha384", "sha1", "md5"] {
        let o = sign(refused);
        assert_eq!(o.status.code(), Some(1), "{refused}: {}", stderr(&o));
        assert!(o.stdout.is_empty());
        let e = stderr(&o);
        assert!(e.contains("policy_denied") && e.contains(refused), "{e}");
    }
    let o = neomutt_cmd(
        &agent,
        &[
            "sign",
            "--key",
            path_str(&keys.join("0a1b2c3d")),
            "--in",
            path_str(&msg),
        ],
        pin.as_bytes(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not an address"), "{}", stderr(&o));

    // The cipher likewise; the envelope is bare DER that OpenSSL opens as Bob.
    let encrypt = |cipher: &str| {
        neomutt_cmd(
            &agent,
            &[
                "encrypt",
                "--cipher",
                cipher,
                "--in",
                path_str(&msg),
                path_str(&bob),
            ],
            b"",
        )
    };
    let o = encrypt("aes128");
    assert!(o.status.success(), "{}", stderr(&o));
    let opened = openssl_decrypt_der(d, &o.stdout, "bob-dual-rsa").unwrap();
    assert!(lines(&opened).contains("Hello Bob"));
    let printed = openssl(
        d,
        &["cms", "-cmsout", "-print", "-inform", "DER"],
        &o.stdout,
    )
    .unwrap();
    assert!(
        lines(&printed).contains("aes-128-cbc"),
        "{}",
        lines(&printed)
    );
    for refused in ["des3", "rc2-40", "aes128-gcm"] {
        let o = encrypt(refused);
        assert_eq!(o.status.code(), Some(1), "{refused}");
        let e = stderr(&o);
        assert!(e.contains("policy_denied") && e.contains(refused), "{e}");
    }

    // Bob's detached signature (OpenSSL's), checked against the content given apart.
    let bob_sig = run(
        "openssl",
        &[
            "smime",
            "-sign",
            "-outform",
            "DER",
            "-signer",
            path_str(&pki_file("bob-dual-rsa.pem")),
            "-inkey",
            path_str(&pki_file("bob-dual-rsa.key.pem")),
            "-in",
            path_str(&msg),
            "-out",
            path_str(&d.join("bob.p7s")),
        ],
    );
    assert!(bob_sig.is_empty());
    let o = neomutt_cmd(
        &agent,
        &[
            "verify",
            "--signature",
            path_str(&d.join("bob.p7s")),
            "--content",
            path_str(&msg),
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("Verification successful\n"),
        "{}",
        stderr(&o)
    );
    let changed = write_file(d, "changed", b"Content-Type: text/plain\n\nHello Bop\n");
    let o = neomutt_cmd(
        &agent,
        &[
            "verify",
            "--signature",
            path_str(&d.join("bob.p7s")),
            "--content",
            path_str(&changed),
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("Verification failure\n"),
        "{}",
        stderr(&o)
    );

    // Certificates out of a message, as pk7out, get_cert, get_signer_cert and
    // get_cert_email give them to NeoMutt.
    let mail = openssl(
        d,
        &[
            "smime",
            "-sign",
            "-signer",
            path_str(&pki_file("bob-dual-rsa.pem")),
            "-inkey",
            path_str(&pki_file("bob-dual-rsa.key.pem")),
        ],
        b"Content-Type: text/plain\n\nsigned\n",
    )
    .unwrap();
    let mail = write_file(d, "mail.eml", &mail);
    let o = neomutt_cmd(&agent, &["pk7out", "--in", path_str(&mail)], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("-----BEGIN PKCS7-----\n"));
    let p7 = write_file(d, "p7.pem", &o.stdout);
    let o = neomutt_cmd(&agent, &["get-cert", "--in", path_str(&p7)], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    let bob_pem = std::fs::read_to_string(pki_file("bob-dual-rsa.pem")).unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(bob_pem.trim()),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let signer = d.join("signer.pem");
    let o = neomutt_cmd(
        &agent,
        &[
            "signer-cert",
            "--in",
            path_str(&mail),
            "--out",
            path_str(&signer),
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&signer).unwrap().trim(),
        bob_pem.trim()
    );
    let o = neomutt_cmd(&agent, &["cert-email", "--in", path_str(&signer)], b"");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "bob@example.org\n");
    assert!(!d.join("pwned").exists() && !Path::new("pwned").exists());
}
