//! The reference peers as test harnesses: GnuPG's `gpgsm` and NSS's `cmsutil` (the CMS code
//! of Thunderbird), each in a private home or database holding keys of the test PKI, its CAs,
//! and the root trusted.
//!
//! Peer notes (workarounds; the README's interoperability table says the same):
//! - gpgsm 2.2 imports only legacy PKCS#12 (3DES, SHA-1 MAC) and crashes importing an EC
//!   one; verifies a detached signature only over CRLF-canonical data; fetches CRLs through
//!   dirmngr, so its CRL checks are off here (`disable-crl-checks`): the test PKI's
//!   distribution point is not served. Its envelopes: RSA PKCS#1 v1.5 with AES-CBC only
//!   (no RSA-OAEP, no ECDH in this version's import, no AuthEnvelopedData). Decrypting, it
//!   exits 2 when a recipient listed before its own is one whose certificate it holds
//!   without the key, though it decrypts: its output is the verdict.
//! - NSS 3.87 `cmsutil`: envelopes with RSA PKCS#1 v1.5 and AES-CBC only (no RSA-OAEP, no
//!   ECDH either way, no AuthEnvelopedData), and it cannot read an envelope that has any EC
//!   (key agreement) recipient at all, OpenSSL's or ours (`SEC_ERROR_BAD_DER`), even when
//!   its own recipient info is RSA. `cmsutil -D` exits 0 whatever the signature:
//!   its verdict is the `signer0.status=GoodSignature` line that `-h 2` prints. NSS gives
//!   every certificate of one subject the same nickname, so one key per person here.
//! - gpgsm and NSS write BER (indefinite lengths); gpgsm armours as `SIGNED MESSAGE`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::{ok, pki_file, rand_suffix, write_file};

/// Runs a peer tool; panics with its output when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run a peer tool");
    ok(&format!("{cmd:?}"), &out);
    out
}

/// Runs a peer tool with `stdin` on its standard input.
fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run a peer tool");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// A legacy PKCS#12 (password `test`) of a key of the test PKI: gpgsm imports only these.
pub fn legacy_p12(dir: &Path, name: &str) -> PathBuf {
    legacy_p12_of(super::pki(), dir, name)
}

/// A legacy PKCS#12 (password `test`) of the key `name` of the PKI in `pki`.
pub fn legacy_p12_of(pki: &Path, dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(format!("{name}-{}.p12", rand_suffix()));
    export_p12(
        pki,
        name,
        "test",
        &[
            "-keypbe",
            "PBE-SHA1-3DES",
            "-certpbe",
            "PBE-SHA1-3DES",
            "-macalg",
            "sha1",
        ],
        &out,
    );
    out
}

/// `openssl pkcs12 -export` of the key and certificate `name` of the PKI in `pki` into
/// `out`, with `passphrase` and further `options` (`-legacy`, `-nomac`, ...).
pub fn export_p12(pki: &Path, name: &str, passphrase: &str, options: &[&str], out: &Path) {
    run(Command::new("openssl")
        .args(["pkcs12", "-export"])
        .args(options)
        .arg("-passout")
        .arg(format!("pass:{passphrase}"))
        .arg("-in")
        .arg(pki.join(format!("{name}.pem")))
        .arg("-inkey")
        .arg(pki.join(format!("{name}.key.pem")))
        .arg("-out")
        .arg(out));
}

/// A private GnuPG home: the PKI keys `keys` (RSA), the certificates `certs`, the CAs, the
/// root trusted, CRL checks off.
pub struct Gpgsm {
    home: PathBuf,
}

impl Gpgsm {
    /// With the test PKI.
    pub fn new(dir: &Path, keys: &[&str], certs: &[&str]) -> Gpgsm {
        Gpgsm::with_pki(super::pki(), dir, keys, certs)
    }

    /// With the PKI in `pki` (made by make-pki.sh).
    pub fn with_pki(pki: &Path, dir: &Path, keys: &[&str], certs: &[&str]) -> Gpgsm {
        let home = dir.join(format!("gnupg-{}", rand_suffix()));
        std::fs::create_dir_all(&home).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(home.join("gpg-agent.conf"), "allow-loopback-pinentry\n").unwrap();
        std::fs::write(home.join("gpgsm.conf"), "disable-crl-checks\n").unwrap();
        let g = Gpgsm { home };
        for k in keys {
            // Once in a full test run, gpgsm failed to decrypt a fresh PKCS#12 ("decryption
            // failed; trying charset ..."); never reproduced alone. A new file (new salt)
            // and a second try, then the failure is real.
            let mut said = vec![];
            let imported = (0..2).any(|_| {
                let p12 = legacy_p12_of(pki, dir, k);
                let o = run_with_stdin(
                    g.cmd().args(["--passphrase-fd", "0", "--import"]).arg(&p12),
                    b"test\n",
                );
                let err = String::from_utf8_lossy(&o.stderr).into_owned();
                let ok = err.contains("secret keys imported: 1");
                said.push(err);
                ok
            });
            assert!(imported, "gpgsm --import {k}: {}", said.join("\n---\n"));
        }
        run(g.cmd().arg("--import").arg(pki.join("chain.pem")));
        for c in certs {
            run(g.cmd().arg("--import").arg(pki.join(format!("{c}.pem"))));
        }
        let fpr = String::from_utf8(
            run(Command::new("openssl")
                .args(["x509", "-noout", "-fingerprint", "-sha1", "-in"])
                .arg(pki.join("root-ca.pem")))
            .stdout,
        )
        .unwrap();
        let fpr = fpr.trim().rsplit('=').next().unwrap().replace(':', "");
        std::fs::write(g.home.join("trustlist.txt"), format!("{fpr} S relax\n")).unwrap();
        g
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("gpgsm");
        c.env("GNUPGHOME", &self.home)
            .args(["--batch", "--pinentry-mode", "loopback"]);
        c
    }

    /// Signs `data` as `signer` (detached, DER; or opaque, armoured).
    pub fn sign(&self, signer: &str, data: &Path, out: &Path, detached: bool) {
        let mut c = self.cmd();
        c.args(["--passphrase-fd", "0", "-u", signer]);
        if detached {
            c.arg("--detach-sign");
        } else {
            c.args(["--sign", "--armor"]);
        }
        c.arg("-o").arg(out).arg(data);
        let o = run_with_stdin(&mut c, b"test\n");
        assert!(
            o.status.success(),
            "gpgsm sign: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// `gpgsm --verify`: (accepted, stderr).
    pub fn verify(&self, sig: &Path, data: Option<&Path>) -> (bool, String) {
        let mut c = self.cmd();
        c.arg("--verify").arg(sig);
        if let Some(d) = data {
            c.arg(d);
        }
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        (o.status.success() && err.contains("Good signature"), err)
    }

    /// `gpgsm --encrypt` of `data` to `recipient` (an address), DER out.
    pub fn encrypt(&self, recipient: &str, data: &[u8], extra: &[&str]) -> Vec<u8> {
        let input = write_file(&self.home, &format!("plain-{}", rand_suffix()), data);
        let out = self.home.join(format!("enc-{}.p7m", rand_suffix()));
        run(self
            .cmd()
            .args(["-r", recipient])
            .args(extra)
            .arg("--encrypt")
            .arg("-o")
            .arg(&out)
            .arg(&input));
        std::fs::read(&out).unwrap()
    }

    /// `gpgsm --decrypt` of CMS (DER): what it wrote out, and what it said. Its exit status
    /// is not the verdict: gpgsm tries the recipients in order and exits 2 when one before
    /// the key it has is a certificate it knows without its key, even though it goes on and
    /// decrypts. The caller compares the output with what was sent.
    pub fn decrypt(&self, cms: &[u8]) -> (Vec<u8>, String) {
        let input = write_file(&self.home, &format!("enc-{}.p7m", rand_suffix()), cms);
        let o = run_with_stdin(
            self.cmd()
                .args(["--passphrase-fd", "0", "--decrypt"])
                .arg(&input),
            b"test\n",
        );
        (o.stdout, String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

impl Drop for Gpgsm {
    fn drop(&mut self) {
        // The gpg-agent this home started.
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", &self.home)
            .args(["--kill", "all"])
            .status();
    }
}

/// A private NSS database: the PKI keys `keys`, the certificates `certs` (nicknamed by
/// their PKI name), the CAs, the root trusted.
pub struct Nss {
    pub db: String,
}

impl Nss {
    pub fn new(dir: &Path, keys: &[&str], certs: &[&str]) -> Nss {
        let path = dir.join(format!("nssdb-{}", rand_suffix()));
        std::fs::create_dir_all(&path).unwrap();
        let db = format!("sql:{}", path.display());
        run(Command::new("certutil").args(["-N", "-d", &db, "--empty-password"]));
        for k in keys {
            let p12 = legacy_p12(dir, k);
            run(Command::new("pk12util")
                .arg("-i")
                .arg(&p12)
                .args(["-d", &db, "-W", "test"]));
        }
        run(Command::new("certutil")
            .args(["-A", "-d", &db, "-n", "root", "-t", "C,C,C", "-i"])
            .arg(pki_file("root-ca.pem")));
        run(Command::new("certutil")
            .args(["-A", "-d", &db, "-n", "ca", "-t", ",,", "-i"])
            .arg(pki_file("ca.pem")));
        for c in certs {
            run(Command::new("certutil")
                .args(["-A", "-d", &db, "-n", c, "-t", ",,", "-i"])
                .arg(pki_file(&format!("{c}.pem"))));
        }
        Nss { db }
    }

    /// `cmsutil -S` of `data` by the key nicknamed `nickname`, detached or not; BER out.
    pub fn sign(&self, nickname: &str, data: &Path, out: &Path, detached: bool) {
        let mut c = Command::new("cmsutil");
        c.args([
            "-S", "-G", "-P", "-N", nickname, "-Y", "NONE", "-d", &self.db, "-p", "",
        ]);
        if detached {
            c.arg("-T");
        }
        run(c.arg("-i").arg(data).arg("-o").arg(out));
    }

    /// `cmsutil -D`: (GoodSignature, its report).
    pub fn verify(&self, cms: &Path, content: Option<&Path>) -> (bool, String) {
        let mut c = Command::new("cmsutil");
        c.args(["-D", "-d", &self.db, "-n", "-h", "2", "-i"])
            .arg(cms);
        if let Some(d) = content {
            c.arg("-c").arg(d);
        }
        let o = run(&mut c);
        let report = String::from_utf8_lossy(&o.stdout).into_owned();
        (report.contains("signer0.status=GoodSignature"), report)
    }

    /// `cmsutil -E` of `data` to the certificate nicknamed `recipient`; DER out.
    pub fn encrypt(&self, dir: &Path, recipient: &str, data: &[u8]) -> Vec<u8> {
        let input = write_file(dir, &format!("plain-{}", rand_suffix()), data);
        let out = dir.join(format!("nss-{}.p7m", rand_suffix()));
        run(Command::new("cmsutil")
            .args(["-E", "-d", &self.db, "-p", "", "-r", recipient, "-i"])
            .arg(&input)
            .arg("-o")
            .arg(&out));
        std::fs::read(&out).unwrap()
    }

    /// `cmsutil -D` of an envelope: the content, or NSS's complaint.
    pub fn decrypt(&self, dir: &Path, cms: &[u8]) -> Result<Vec<u8>, String> {
        let input = write_file(dir, &format!("nss-in-{}.p7m", rand_suffix()), cms);
        let o = Command::new("cmsutil")
            .args(["-D", "-d", &self.db, "-p", "", "-i"])
            .arg(&input)
            .output()
            .unwrap();
        if o.status.success() {
            Ok(o.stdout)
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    }
}

/// Debian's tinyproxy, run in the foreground on a free loopback port with a configuration of
/// its own (no system service touched); stopped when dropped.
pub struct Tinyproxy {
    pub port: u16,
    log: PathBuf,
    child: std::process::Child,
}

impl Tinyproxy {
    pub fn start(dir: &Path) -> Tinyproxy {
        std::fs::create_dir_all(dir).unwrap();
        let port = super::dead_port();
        let log = dir.join("tinyproxy.log");
        let conf = write_file(
            dir,
            "tinyproxy.conf",
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Info\n\
                 MaxClients 16\nAllow 127.0.0.1\nDisableViaHeader No\n",
                log.display()
            )
            .as_bytes(),
        );
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy (Debian package tinyproxy)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "tinyproxy did not listen on {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Tinyproxy { port, log, child }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the proxy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// OpenSSL's OCSP responder (`openssl ocsp -index ... -port`) answering for the issuing CA
/// of a make-pki.sh PKI, on a loopback port of the test's choosing.
pub struct OcspResponder {
    child: std::process::Child,
}

/// Debian's libfaketime (package faketime).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// How an [`OcspResponder`] answers.
pub struct OcspSpec<'a> {
    /// The certificate (and NAME.key.pem) that signs the answers: `ca` itself, or a
    /// responder certificate of the PKI (`ocsp-responder`, `ocsp-no-eku`, `ocsp-rogue`).
    pub signer: &'a str,
    /// Certificates the responder reports revoked.
    pub revoke: &'a [&'a str],
    /// Certificates left out of the responder's index (answered `unknown`).
    pub forget: &'a [&'a str],
    /// A libfaketime offset for the responder's clock (`-2d`: answers two days old).
    pub clock: Option<&'a str>,
}

impl Default for OcspSpec<'_> {
    fn default() -> Self {
        OcspSpec {
            signer: "ca",
            revoke: &[],
            forget: &[],
            clock: None,
        }
    }
}

impl OcspResponder {
    /// Starts the responder on 127.0.0.1:`port` with its database under `dir`; returns
    /// once it accepts connections. Answers say nextUpdate is one day after thisUpdate.
    pub fn start(pki: &Path, dir: &Path, port: u16, spec: OcspSpec<'_>) -> OcspResponder {
        let db = dir.join(format!("ocsp-db-{}", rand_suffix()));
        run(Command::new("cp")
            .arg("-r")
            .arg(pki.join(".ca/ca"))
            .arg(&db));
        for name in spec.revoke {
            run(Command::new("openssl")
                .args(["ca", "-config"])
                .arg(pki.join(".ca/openssl.cnf"))
                .args(["-batch", "-crl_reason", "keyCompromise", "-revoke"])
                .arg(pki.join(format!("{name}.pem")))
                .env("CA_DIR", &db)
                .env("CA_KEY", pki.join("ca.key.pem"))
                .env("CA_CERT", pki.join("ca.pem"))
                .env("CRL_URL", "unused"));
        }
        let index = db.join("index.txt");
        let mut lines = std::fs::read_to_string(&index).unwrap();
        for name in spec.forget {
            let serial = String::from_utf8(
                run(Command::new("openssl")
                    .args(["x509", "-noout", "-serial", "-in"])
                    .arg(pki.join(format!("{name}.pem"))))
                .stdout,
            )
            .unwrap();
            let serial = serial.trim().trim_start_matches("serial=").to_owned();
            lines = lines
                .lines()
                .filter(|l| l.split('\t').nth(3) != Some(serial.as_str()))
                .map(|l| format!("{l}\n"))
                .collect();
        }
        std::fs::write(&index, lines).unwrap();
        let mut cmd = Command::new("openssl");
        if let Some(offset) = spec.clock {
            // libfaketime preloaded into openssl itself: the `faketime` wrapper forks, and
            // killing it would leave the responder holding the port.
            cmd.env("LD_PRELOAD", LIBFAKETIME).env("FAKETIME", offset);
        }
        cmd.arg("ocsp")
            .arg("-index")
            .arg(&index)
            .args(["-port", &port.to_string()])
            .arg("-CA")
            .arg(pki.join("ca.pem"))
            .arg("-rsigner")
            .arg(pki.join(format!("{}.pem", spec.signer)))
            .arg("-rkey")
            .arg(pki.join(format!("{}.key.pem", spec.signer)))
            .args(["-ndays", "1", "-ignore_err"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("openssl ocsp");
        // Not probed by connecting: openssl 3.0's responder spins on a connection closed
        // before its request, and answers no one after it.
        wait_listening(port, "openssl ocsp");
        OcspResponder { child }
    }
}

/// Waits (10 s at most) until something listens on TCP `port`, without connecting to it.
pub fn wait_listening(port: u16, what: &str) {
    let done = super::time_until(std::time::Duration::from_secs(10), || listening(port));
    assert!(done.is_some(), "{what} did not listen on {port}");
}

/// Whether a socket listens on TCP `port` (any address), from /proc/net/tcp and tcp6.
pub fn listening(port: u16) -> bool {
    let local = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .any(|l| {
                let mut cols = l.split_whitespace();
                let addr = cols.nth(1).unwrap_or("");
                let state = cols.nth(1).unwrap_or("");
                addr.ends_with(&local) && state == "0A"
            })
    })
}

impl Drop for OcspResponder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An answer of `openssl ocsp` (signed by the issuing CA, good) about the certificate
/// NAME of `pki`, made beforehand (to a request with a nonce of its own when `nonce`): for
/// serving where another certificate was asked about, or replaying.
pub fn ocsp_answer_about(pki: &Path, dir: &Path, name: &str, nonce: bool) -> Vec<u8> {
    let req = dir.join(format!("ocsp-req-{}.der", rand_suffix()));
    let resp = dir.join(format!("ocsp-resp-{}.der", rand_suffix()));
    run(Command::new("openssl")
        .args([
            "ocsp",
            if nonce { "-nonce" } else { "-no_nonce" },
            "-issuer",
        ])
        .arg(pki.join("ca.pem"))
        .arg("-cert")
        .arg(pki.join(format!("{name}.pem")))
        .arg("-reqout")
        .arg(&req));
    run(Command::new("openssl")
        .arg("ocsp")
        .arg("-index")
        .arg(pki.join(".ca/ca/index.txt"))
        .arg("-CA")
        .arg(pki.join("ca.pem"))
        .arg("-rsigner")
        .arg(pki.join("ca.pem"))
        .arg("-rkey")
        .arg(pki.join("ca.key.pem"))
        .args(["-ndays", "1", "-reqin"])
        .arg(&req)
        .arg("-respout")
        .arg(&resp));
    std::fs::read(&resp).unwrap()
}

/// OpenSSL's test web server (`openssl s_server -WWW`): serves the files of `docroot` over
/// https:// on 127.0.0.1:`port` with the certificate and key given.
pub struct HttpsServer {
    child: std::process::Child,
}

impl HttpsServer {
    pub fn start(docroot: &Path, port: u16, cert: &Path, key: &Path) -> HttpsServer {
        std::fs::create_dir_all(docroot).unwrap();
        let child = Command::new("openssl")
            .args(["s_server", "-WWW", "-quiet", "-naccept", "1000"])
            .args(["-accept", &format!("127.0.0.1:{port}")])
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .current_dir(docroot)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        wait_listening(port, "openssl s_server");
        HttpsServer { child }
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS server certificate for 127.0.0.1 (NAME.pem, NAME.key.pem in `dir`), issued by the
/// CA `issuer` (its .pem and .key.pem) or, with `None`, self-signed.
pub fn tls_server_cert(dir: &Path, name: &str, issuer: Option<&Path>) -> (PathBuf, PathBuf) {
    issue_cert(
        dir,
        name,
        "/CN=127.0.0.1",
        b"basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\n\
          extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1\n",
        issuer,
    )
}

/// A certificate for `subject` (openssl -subj) with the extensions `ext` (x509v3 syntax) on
/// a new P-256 key, NAME.pem and NAME.key.pem in `dir`, valid 30 days, issued by the CA
/// `issuer` (its .pem and .key.pem) or, with `None`, self-signed.
pub fn issue_cert(
    dir: &Path,
    name: &str,
    subject: &str,
    ext: &[u8],
    issuer: Option<&Path>,
) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key.pem"));
    let cert = dir.join(format!("{name}.pem"));
    let ext = write_file(dir, &format!("{name}.ext"), ext);
    run(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&key));
    let csr = dir.join(format!("{name}.csr"));
    run(Command::new("openssl")
        .args(["req", "-new", "-subj", subject, "-key"])
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    let mut x509 = Command::new("openssl");
    x509.args(["x509", "-req", "-days", "30", "-in"])
        .arg(&csr)
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&cert);
    match issuer {
        Some(ca) => {
            let ca_key = ca.with_extension("key.pem");
            x509.arg("-CA").arg(ca).arg("-CAkey").arg(ca_key);
        }
        None => {
            x509.arg("-key").arg(&key);
        }
    }
    run(&mut x509);
    (cert, key)
}
