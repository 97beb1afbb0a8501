//! The workspace's test fixtures: the test PKI, temporary directories, and running the tools
//! that check results.
//!
//! Nothing here needs the agent: the virtual card crate's tests use this module too (through
//! `card_crate.rs`), so it must build with that crate's dependencies alone.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The workspace root (for `softhsm-setup/` and `tests/data/`), whichever crate's test asks.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("softhsm-setup").is_dir())
        .expect("the workspace root holds softhsm-setup/")
        .to_owned()
}

/// A fresh directory under the target dir, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new()
        .prefix("it-")
        .tempdir_in(base)
        .unwrap()
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
        ok("make-pki.sh", &out);
        if std::fs::rename(&tmp, &dir).is_err() {
            // Another process won the race; its PKI is as good.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        dir
    })
}

pub fn pki_file(name: &str) -> PathBuf {
    pki().join(name)
}

/// A path as the `&str` argument a tool takes.
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

pub fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes `data` to a file in `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(data).unwrap();
    p
}

/// Asserts that the tool `what` succeeded; returns its stdout.
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
