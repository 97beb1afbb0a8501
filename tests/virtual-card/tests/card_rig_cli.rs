//! `softhsm-setup/card-rig` from a shell's point of view: up, insert, remove, down, with
//! pkcs11-tool watching through the exported socket.

#[path = "../../common/card_crate.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{ok, pki, workspace_root};
use virtual_piv_card::OPENSC_PKCS11;

/// Runs the wrapper script with the binary cargo built for this test (no nested build).
fn card_rig(args: &[&str]) -> Output {
    Command::new(workspace_root().join("softhsm-setup/card-rig"))
        .args(args)
        .env("CARD_RIG_BIN", env!("CARGO_BIN_EXE_card-rig"))
        .output()
        .expect("softhsm-setup/card-rig runs")
}

/// Stops the rig even when an assertion fails.
struct Down<'a>(&'a str);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = card_rig(&["down", self.0]);
    }
}

/// Runs `card-rig up ...`; returns the socket it exports.
fn up(args: &[&str]) -> String {
    let up = ok("card-rig up", &card_rig(args));
    up.trim()
        .strip_prefix("PCSCLITE_CSOCK_NAME=")
        .and_then(|rest| rest.strip_suffix("; export PCSCLITE_CSOCK_NAME"))
        .unwrap_or_else(|| panic!("up printed {up:?}"))
        .to_owned()
}

fn pkcs11_list(csock: &str) -> String {
    let out = Command::new("pkcs11-tool")
        .args(["--module", OPENSC_PKCS11, "-L"])
        .env("PCSCLITE_CSOCK_NAME", csock)
        .output()
        .expect("pkcs11-tool runs");
    ok("pkcs11-tool -L", &out)
}

fn key_cert(name: &str) -> String {
    let pki: PathBuf = pki().to_owned();
    format!(
        "{}:{}",
        pki.join(format!("{name}.key.pem")).display(),
        pki.join(format!("{name}.pem")).display()
    )
}

fn pid_of(state: &Path, key: &str) -> u32 {
    std::fs::read_to_string(state)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {}", state.display()))
}

#[test]
fn card_rig_command_starts_inserts_pulls_and_stops() {
    let tmp = tempfile::Builder::new()
        .prefix("card-rig-cli-")
        .tempdir_in("/tmp")
        .unwrap();
    let dir = tmp.path().join("rig");
    let dir = dir.to_str().unwrap();
    let _down = Down(dir);

    let csock = up(&["up", dir]);
    assert!(Path::new(&csock).exists(), "{csock}");
    let again = card_rig(&["up", dir]);
    assert!(
        !again.status.success(),
        "a second `up` in the same directory"
    );
    assert!(pkcs11_list(&csock).contains("(empty)"));

    ok(
        "card-rig insert",
        &card_rig(&[
            "insert",
            dir,
            "alice",
            "--reader",
            "0",
            "--pin",
            "123456",
            "--slot",
            &format!("9c={}", key_cert("alice-sign-rsa")),
            "--slot",
            &format!("9d={}", key_cert("alice-enc-rsa")),
        ]),
    );
    ok(
        "card-rig insert bob",
        &card_rig(&[
            "insert",
            dir,
            "bob",
            "--reader",
            "1",
            "--pin",
            "87654321",
            "--slot",
            &format!("9c={}", key_cert("bob-dual-rsa")),
        ]),
    );
    let busy = card_rig(&[
        "insert",
        dir,
        "carol",
        "--reader",
        "1",
        "--pin",
        "123456",
        "--slot",
        &format!("9c={}", key_cert("carol-san-rsa")),
    ]);
    assert!(!busy.status.success(), "two cards in one reader");
    let listing = pkcs11_list(&csock);
    assert!(
        listing.contains("Alice Example") && listing.contains("Bob Example"),
        "{listing}"
    );
    let status = ok("card-rig status", &card_rig(&["status", dir]));
    assert!(
        status.contains("card alice") && status.contains("card bob"),
        "{status}"
    );

    // A wrong PIN, a pull and a re-insertion: the counter is kept.
    let wrong = Command::new("pkcs11-tool")
        .args([
            "--module",
            OPENSC_PKCS11,
            "--slot-index",
            "0",
            "--login",
            "--pin",
            "000000",
            "-O",
        ])
        .env("PCSCLITE_CSOCK_NAME", &csock)
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    ok("card-rig remove", &card_rig(&["remove", dir, "alice"]));
    let listing = pkcs11_list(&csock);
    assert!(
        !listing.contains("Alice Example") && listing.contains("Bob Example"),
        "{listing}"
    );
    assert!(!card_rig(&["remove", dir, "alice"]).status.success());
    ok(
        "card-rig insert again",
        &card_rig(&[
            "insert",
            dir,
            "alice",
            "--reader",
            "0",
            "--pin",
            "123456",
            "--slot",
            &format!("9c={}", key_cert("alice-sign-rsa")),
        ]),
    );
    let status = ok("card-rig status", &card_rig(&["status", dir]));
    assert!(
        status.contains("card alice") && status.contains("PIN tries left 2"),
        "{status}"
    );
    assert!(pkcs11_list(&csock).contains("Alice Example"));

    // down stops pcscd and the cards' processes.
    let state = Path::new(dir).join("rig.state");
    let pcscd = pid_of(&state, "pcscd-pid");
    let alice = pid_of(&Path::new(dir).join("cards/alice.card"), "pid");
    ok("card-rig down", &card_rig(&["down", dir]));
    for pid in [pcscd, alice] {
        assert!(
            !virtual_piv_card::pcscd::process_alive(pid),
            "process {pid} survived `down`"
        );
    }
    assert!(!Path::new(&csock).exists());
    assert!(!card_rig(&["status", dir]).status.success());
}

/// Reads one value of `card-rig status`'s line for `name`, e.g. "PIN tries left".
fn status_value(dir: &str, name: &str, what: &str) -> String {
    let status = ok("card-rig status", &card_rig(&["status", dir]));
    let line = status
        .lines()
        .find(|l| l.contains(&format!("card {name} ")))
        .unwrap_or_else(|| panic!("no card {name} in {status}"));
    line.split(what)
        .nth(1)
        .and_then(|rest| rest.split([',', ')']).next())
        .unwrap_or_else(|| panic!("no {what:?} in {line:?}"))
        .trim()
        .to_owned()
}

#[test]
fn card_rig_command_kills_and_restarts_pcscd_and_inserts_slow_cards() {
    let tmp = tempfile::Builder::new()
        .prefix("card-rig-cli-")
        .tempdir_in("/tmp")
        .unwrap();
    let dir = tmp.path().join("rig");
    let dir = dir.to_str().unwrap();
    let _down = Down(dir);
    ok("card-rig up", &card_rig(&["up", dir]));
    let csock = Path::new(dir).join("pcscd.comm");
    let csock = csock.to_str().unwrap();
    ok(
        "card-rig insert --op-delay-ms",
        &card_rig(&[
            "insert",
            dir,
            "alice",
            "--pin",
            "123456",
            "--op-delay-ms",
            "1000",
            "--slot",
            &format!("9c={}", key_cert("alice-sign-ec")),
        ]),
    );
    assert_eq!(
        status_value(dir, "alice", "PIN VERIFYs since insertion"),
        "0"
    );

    // A slow signature, and the PIN attempts it took (login + context-specific login).
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    std::fs::write(&data, b"slow\n").unwrap();
    let sign = || {
        Command::new("pkcs11-tool")
            .args(["--module", OPENSC_PKCS11, "--login", "--pin", "123456"])
            .args(["--sign", "--id", "02", "-m", "ECDSA-SHA256", "-i"])
            .arg(&data)
            .arg("-o")
            .arg(work.path().join("sig"))
            .env("PCSCLITE_CSOCK_NAME", csock)
            .output()
            .unwrap()
    };
    let start = Instant::now();
    ok("pkcs11-tool --sign", &sign());
    let took = start.elapsed();
    println!("card-rig insert --op-delay-ms 1000: pkcs11-tool --sign took {took:?}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert_eq!(
        status_value(dir, "alice", "PIN VERIFYs since insertion"),
        "2"
    );
    assert_eq!(status_value(dir, "alice", "PIN tries left"), "3");

    // pcscd killed: the card waits; status says so; a second kill fails.
    let pcscd = pid_of(&Path::new(dir).join("rig.state"), "pcscd-pid");
    let card = pid_of(&Path::new(dir).join("cards/alice.card"), "pid");
    ok("card-rig kill-pcscd", &card_rig(&["kill-pcscd", dir]));
    assert!(!virtual_piv_card::pcscd::process_alive(pcscd));
    assert!(
        virtual_piv_card::pcscd::process_alive(card),
        "the card process exited"
    );
    let status = ok("card-rig status", &card_rig(&["status", dir]));
    assert!(
        status.contains("pcscd not running") && status.contains("card alice"),
        "{status}"
    );
    assert!(!card_rig(&["kill-pcscd", dir]).status.success());
    let insert_now = card_rig(&[
        "insert",
        dir,
        "bob",
        "--reader",
        "1",
        "--pin",
        "123456",
        "--slot",
        &format!("9c={}", key_cert("bob-dual-rsa")),
    ]);
    assert!(!insert_now.status.success(), "insert without pcscd");
    assert!(
        String::from_utf8_lossy(&insert_now.stderr).contains("start-pcscd"),
        "{}",
        String::from_utf8_lossy(&insert_now.stderr)
    );

    // Started again: same socket, the card is back.
    let start = Instant::now();
    let started = card_rig(&["start-pcscd", dir]);
    let back = start.elapsed();
    ok("card-rig start-pcscd", &started);
    assert!(pkcs11_list(csock).contains("Alice Example"));
    println!(
        "card-rig start-pcscd took {back:?}: {}",
        String::from_utf8_lossy(&started.stderr).trim()
    );
    assert!(!card_rig(&["start-pcscd", dir]).status.success());
    let new_pcscd = pid_of(&Path::new(dir).join("rig.state"), "pcscd-pid");
    assert_ne!(new_pcscd, pcscd);

    // restart-pcscd in one go; the card still signs, and `down` stops everything.
    ok("card-rig restart-pcscd", &card_rig(&["restart-pcscd", dir]));
    assert!(!virtual_piv_card::pcscd::process_alive(new_pcscd));
    ok("pkcs11-tool --sign after the restart", &sign());
    let last_pcscd = pid_of(&Path::new(dir).join("rig.state"), "pcscd-pid");
    ok("card-rig down", &card_rig(&["down", dir]));
    for pid in [last_pcscd, card] {
        assert!(
            !virtual_piv_card::pcscd::process_alive(pid),
            "process {pid} survived `down`"
        );
    }
}

#[test]
fn card_rig_command_gives_readers_pin_pads_and_types_on_them() {
    let tmp = tempfile::Builder::new()
        .prefix("card-rig-pinpad-")
        .tempdir_in("/tmp")
        .unwrap();
    let dir = tmp.path().join("rig");
    let dir = dir.to_str().unwrap();
    let _down = Down(dir);
    let csock = up(&["up", dir, "--pinpad"]);
    let slot = format!("9c={}", key_cert("alice-sign-rsa"));
    ok(
        "card-rig insert",
        &card_rig(&["insert", dir, "alice", "--pin", "123456", "--slot", &slot]),
    );
    let status = ok("card-rig status", &card_rig(&["status", dir]));
    assert!(status.contains("readers with PIN pads"), "{status}");
    assert!(pkcs11_list(&csock).contains("PIN pad present"));

    // A login with no PIN given waits for the keypad; `keypad` types when the reader asks.
    let mut login = Command::new("pkcs11-tool")
        .args(["--module", OPENSC_PKCS11, "--login", "--list-objects"])
        .env("PCSCLITE_CSOCK_NAME", &csock)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("pkcs11-tool runs");
    ok(
        "card-rig keypad",
        &card_rig(&["keypad", dir, "--reader", "0", "123456", "--timeout", "10"]),
    );
    let status = login.wait().unwrap();
    assert!(status.success(), "the login with the typed PIN failed");
    let status = ok("card-rig status", &card_rig(&["status", dir]));
    assert!(status.contains("PIN VERIFYs since insertion 1"), "{status}");

    // Nobody asks: `keypad` gives up after its timeout and says so.
    let idle = card_rig(&["keypad", dir, "123456", "--timeout", "1"]);
    assert!(!idle.status.success());
    assert!(
        String::from_utf8_lossy(&idle.stderr).contains("did not ask for a PIN"),
        "{}",
        String::from_utf8_lossy(&idle.stderr)
    );
}
