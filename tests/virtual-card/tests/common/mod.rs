//! Shared by the integration tests: the project's test PKI, rigs in temporary directories,
//! and running OpenSC's and OpenSSL's tools.

#![allow(dead_code)] // Each test binary uses a different part.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use virtual_piv_card::{CardRig, OPENSC_PKCS11, PivSlot, RigOptions, SlotSpec};

/// The workspace root (for `softhsm-setup/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The test PKI from `softhsm-setup/make-pki.sh`, made once and kept under the target
/// directory; a changed script gives a new directory.
pub fn pki() -> &'static Path {
    static PKI: OnceLock<PathBuf> = OnceLock::new();
    PKI.get_or_init(|| {
        let script = workspace_root().join("softhsm-setup/make-pki.sh");
        let text = std::fs::read(&script).expect("softhsm-setup/make-pki.sh is readable");
        let hash: String = Sha256::digest(&text)[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pki-{hash}"));
        if dir.join("users.tsv").exists() {
            return dir;
        }
        // Made aside and renamed into place, so parallel test processes never see half a PKI.
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("pki-{hash}.tmp{}", std::process::id()));
        let out = Command::new("bash")
            .arg(&script)
            .arg(&tmp)
            .output()
            .expect("bash runs make-pki.sh");
        assert!(
            out.status.success(),
            "make-pki.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if std::fs::rename(&tmp, &dir).is_err() {
            // Another process won the race; its PKI is as good.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        dir
    })
}

/// Slot `slot` holding the PKI's key and certificate `name` (e.g. `alice-sign-rsa`).
pub fn slot(slot: PivSlot, name: &str) -> SlotSpec {
    let pki = pki();
    SlotSpec::new(
        slot,
        pki.join(format!("{name}.key.pem")),
        pki.join(format!("{name}.pem")),
    )
}

/// A rig in a fresh temporary directory, removed with the rig.
pub fn rig() -> CardRig {
    CardRig::start_in_tempdir(RigOptions::default()).expect("card rig starts")
}

/// A scratch directory for a test's files.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

/// Runs `pkcs11-tool --module opensc-pkcs11.so ARGS` against the rig.
pub fn pkcs11_tool(rig: &CardRig, args: &[&str]) -> Output {
    pkcs11_tool_env(rig, args, &[])
}

/// The same with extra environment (e.g. `OPENSC_DEBUG`).
pub fn pkcs11_tool_env(rig: &CardRig, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new("pkcs11-tool")
        .arg("--module")
        .arg(OPENSC_PKCS11)
        .args(args)
        .envs(rig.env())
        .envs(env.iter().copied())
        .output()
        .expect("pkcs11-tool runs (Debian package opensc)")
}

/// Asserts success and returns stdout.
pub fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and asserts it succeeds; returns stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    ok(&format!("{program} {}", args.join(" ")), &out)
}

/// Polls `f` every 10 ms until it is true; returns how long that took, or `None` after
/// `limit`.
pub fn time_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The objects `pkcs11-tool -O` lists, as (kind, id): kind is the text before the first
/// `;` or ` Object` ("Private Key", "Public Key", "Certificate").
pub fn listed_objects(listing: &str) -> Vec<(String, String)> {
    let mut objects = Vec::new();
    let mut kind: Option<String> = None;
    for line in listing.lines() {
        if let Some(k) = line
            .split(" Object")
            .next()
            .filter(|_| line.contains(" Object"))
        {
            kind = Some(k.trim().to_owned());
        } else if let Some(id) = line.trim().strip_prefix("ID:")
            && let Some(k) = kind.take()
        {
            objects.push((k, id.trim().to_owned()));
        }
    }
    objects
}

/// The public key of the PKI's certificate `name`, as a PEM file in `work`.
pub fn public_key_of(work: &tempfile::TempDir, name: &str) -> PathBuf {
    let out = work.path().join(format!("{name}.pub.pem"));
    let cert = pki().join(format!("{name}.pem"));
    let (cert, out_str) = (
        cert.to_str().expect("test paths are UTF-8"),
        out.to_str().expect("test paths are UTF-8"),
    );
    run(
        "openssl",
        &["x509", "-in", cert, "-pubkey", "-noout", "-out", out_str],
    );
    out
}
