//! `make bench`: where the agent stands against the raw token, the CPU and the peers.
//!
//! Drives the real (release) agent over its socket, against SoftHSM tokens and the virtual
//! PIV card, and measures in the same run what it is compared with: a raw cryptoki C_Sign
//! loop on the same key, `openssl cms` with the PKCS#11 engine, `gpgsm`, and `openssl
//! speed`. Each figure is the median of several runs. Writes `bench/REPORT.md` and
//! `bench/report.json`. Speed is reported, never asserted.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use serde_json::{Value, json};
use smime_agent_proto::client::Client;
use smime_agent_proto::{
    DecryptParams, EncryptParams, SignFormat, SignParams, ValidationMode, VerifyParams,
    VerifyStatus,
};

/// Runs per figure; the median is reported.
const RUNS: usize = 3;
/// How long one throughput run lasts.
const RUN_TIME: Duration = Duration::from_secs(3);
const CONCURRENCY: [usize; 4] = [1, 2, 8, 64];

/// The median (the mean of the middle two for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// VmRSS or VmHWM of a process, in KiB.
fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time a process has used, in ms (from /proc/PID/stat, clock ticks).
fn proc_cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| f.get(*i)?.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks * 1000.0 / hz
}

/// Resets a process's peak RSS (Linux: clear_refs 5).
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let date = String::from_utf8_lossy(
        &Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default(),
    )
    .trim()
    .to_owned();
    json!({ "cpu": cpu, "nproc": nproc, "date": date })
}

// ---------------------------------------------------------------------------------------
// The agent under test
// ---------------------------------------------------------------------------------------

struct Rig {
    _dir: Option<tempfile::TempDir>,
    pki: PathBuf,
    hsm: SoftHsm,
    _crls: Option<CrlServer>,
}

/// A PKI whose CRLs a loopback server publishes, so validations find them and cache them.
async fn rig() -> Rig {
    let dir = tempdir();
    let crls = CrlServer::start().await;
    let pki = pki_in(
        &dir.path().join("pki"),
        &crls.base_url(),
        &[
            "alice-sign-rsa",
            "alice-sign-ec",
            "alice-enc-rsa",
            "bob-enc-ec",
            "bob-dual-rsa",
        ],
    );
    crls.publish("/ca.crl", make_crl(&pki, "ca", &[], 86_400));
    crls.publish("/root-ca.crl", make_crl(&pki, "root", &[], 86_400));
    // Alice signs with RSA (the per-message and large-message figures); the overhead
    // figures use agents of their own, one key each.
    let hsm = SoftHsm::new(&dir.path().join("softhsm"));
    hsm.add_token_from(&pki, "rsa", PIN, &["alice-sign-rsa", "alice-enc-rsa"]);
    Rig {
        _dir: Some(dir),
        pki,
        hsm,
        _crls: Some(crls),
    }
}

/// An agent on the rig's SoftHSM tokens, its PKI trusted, its PIN cached for the run.
fn agent(rig: &Rig, dir: &Path) -> Agent {
    Agent::start(
        dir,
        AgentSpec {
            softhsm: Some(&rig.hsm),
            trust: Some(trust_for(&rig.pki)),
            extra_config: format!(
                "[agent]\nmax_frame_bytes = 536870912\n\n[contacts]\ndir = \"{}\"\n",
                dir.join("contacts").display()
            ),
            pin_extra: "cache_ttl_secs = 86400",
            env: vec![("RUST_LOG".into(), "warn".into())],
            ..Default::default()
        },
    )
}

/// A client that has given the PIN once, so later requests do not prompt.
async fn warm_client(agent: &Agent) -> Client {
    let c = agent.client().await;
    let (r, _) = sign_answering(&c, "alice@example.org", sample_entity("warm up"), None, PIN).await;
    r.expect("warm-up signature");
    agent.client().await
}

fn sign_params(entity: Vec<u8>) -> SignParams {
    SignParams {
        signer: "alice@example.org".into(),
        content: entity.into(),
        format: Some(SignFormat::Clear),
        ..Default::default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum KeyKind {
    Rsa,
    Ec,
}

impl KeyKind {
    fn name(self) -> &'static str {
        match self {
            KeyKind::Rsa => "RSA-2048",
            KeyKind::Ec => "ECDSA P-256",
        }
    }
    fn token(self) -> &'static str {
        match self {
            KeyKind::Rsa => "rsa",
            KeyKind::Ec => "ec",
        }
    }
    fn key_label(self) -> &'static str {
        match self {
            KeyKind::Rsa => "alice-sign-rsa",
            KeyKind::Ec => "alice-sign-ec",
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. Agent overhead
// ---------------------------------------------------------------------------------------

/// Raw C_Sign on the same SoftHSM key, `threads` sessions in parallel, for RUN_TIME.
fn raw_sign(rig: &Rig, key: KeyKind, threads: usize) -> f64 {
    // SAFETY of env: SoftHSM reads SOFTHSM2_CONF only from C_Initialize, so it must be in
    // this process's environment. The runtime's other threads (its workers, the loopback
    // CRL server) are running but never read the environment, which is what set_var needs;
    // the agent, a child process, gets the variable through Command::env instead.
    unsafe { std::env::set_var("SOFTHSM2_CONF", rig.hsm.conf()) };
    c_sign(Path::new(SOFTHSM), key, threads, Some(PIN)).0
}

/// C_Sign through smime-agent's PKCS#11 module (release build) on the agent at `socket`,
/// `threads` sessions in parallel: (per second, p50 µs of one call). The agent must hold
/// the PIN already: the module's C_Login passes none.
fn module_sign(socket: &Path, key: KeyKind, threads: usize) -> (f64, f64) {
    // SAFETY of env: as in `raw_sign`; the module reads the socket at C_Initialize.
    unsafe { std::env::set_var(smime_agent_proto::SOCKET_ENV, socket) };
    let module = workspace_root().join("target/release/libsmime_agent_pkcs11.so");
    c_sign(&module, key, threads, None)
}

/// C_Sign per second on the token `key.token()` of the PKCS#11 module at `path`, with
/// `threads` sessions in parallel for RUN_TIME, and the p50 of one call in µs.
fn c_sign(path: &Path, key: KeyKind, threads: usize, pin: Option<&str>) -> (f64, f64) {
    let p = Pkcs11::new(path).expect("load the PKCS#11 module");
    let _ = p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = p
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| {
            p.get_token_info(*s)
                .map(|i| i.label().trim() == key.token())
                .unwrap_or(false)
        })
        .expect("token");
    let data: Vec<u8> = match key {
        // A SHA-256 DigestInfo, as the agent signs it.
        KeyKind::Rsa => [
            &[
                0x30u8, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                0x02, 0x01, 0x05, 0x00, 0x04, 0x20,
            ][..],
            &[7u8; 32],
        ]
        .concat(),
        KeyKind::Ec => vec![7u8; 32],
    };
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let deadline = Instant::now() + RUN_TIME;
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let p = p.clone();
            let count = count.clone();
            let latencies = latencies.clone();
            let data = data.clone();
            scope.spawn(move || {
                let (mech, key_type) = match key {
                    KeyKind::Rsa => (Mechanism::RsaPkcs, cryptoki::object::KeyType::RSA),
                    KeyKind::Ec => (Mechanism::Ecdsa, cryptoki::object::KeyType::EC),
                };
                let s = p.open_ro_session(slot).unwrap();
                let pin = pin.map(|x| AuthPin::from(x.to_string()));
                let _ = s.login(UserType::User, pin.as_ref());
                let handle = s
                    .find_objects(&[
                        Attribute::Class(ObjectClass::PRIVATE_KEY),
                        Attribute::KeyType(key_type),
                    ])
                    .unwrap()[0];
                let mut mine = vec![];
                while Instant::now() < deadline {
                    let t = Instant::now();
                    s.sign(&mech, handle, &data).unwrap();
                    mine.push(t.elapsed().as_secs_f64() * 1e6);
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if let Ok(mut l) = latencies.lock() {
                    l.extend(mine);
                }
            });
        }
    });
    let _ = p.finalize();
    let lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    (
        count.load(std::sync::atomic::Ordering::Relaxed) as f64 / RUN_TIME.as_secs_f64(),
        median(lat),
    )
}

/// Signatures through the agent with `clients` concurrent clients: (per second, p50 ms,
/// p99 ms, agent CPU ms per signature).
async fn agent_sign(agent: &Agent, clients: usize) -> (f64, f64, f64, f64) {
    let cpu_before = proc_cpu_ms(agent.pid());
    let mut tasks = vec![];
    let deadline = Instant::now() + RUN_TIME;
    for _ in 0..clients {
        let c = Client::connect(&agent.socket, hello(true)).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut lat = vec![];
            let entity = sample_entity("a short message to sign");
            while Instant::now() < deadline {
                let t = Instant::now();
                c.sign(sign_params(entity.clone())).await.expect("sign");
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut lat = vec![];
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let cpu = proc_cpu_ms(agent.pid()) - cpu_before;
    lat.sort_by(|a, b| a.total_cmp(b));
    (
        lat.len() as f64 / RUN_TIME.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        cpu / lat.len().max(1) as f64,
    )
}

/// What verifying one signature costs in the agent (it checks every signature the token
/// makes before it uses it): microseconds per verification, measured in this process with
/// the agent's calls (ring, over the signed attributes, the key as the certificate's
/// subjectPublicKey): (RSA-2048 PKCS#1 v1.5, ECDSA P-256).
fn self_verify_us(pki: &Path) -> (f64, f64) {
    use ring::signature as rs;
    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::pkcs8::DecodePrivateKey;
    use sha2::Digest;
    use signature::hazmat::PrehashSigner;
    let n = 1000;
    // About the size of the signed attributes the agent's signatures cover.
    let message = [0x31u8; 220];
    let hashed = sha2::Sha256::digest(message);
    let pem = std::fs::read_to_string(pki.join("alice-sign-rsa.key.pem")).unwrap();
    let sk = rsa::RsaPrivateKey::from_pkcs8_pem(&pem).unwrap();
    let public = sk.to_public_key().to_pkcs1_der().unwrap();
    let sig = sk
        .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &hashed)
        .unwrap();
    let t = Instant::now();
    for _ in 0..n {
        rs::UnparsedPublicKey::new(&rs::RSA_PKCS1_2048_8192_SHA256, public.as_bytes())
            .verify(&message, &sig)
            .unwrap();
    }
    let rsa_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let sk = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    let sig: p256::ecdsa::Signature = sk.sign_prehash(&hashed).unwrap();
    let point = sk.verifying_key().to_sec1_point(false);
    let raw = sig.to_bytes();
    let t = Instant::now();
    for _ in 0..n {
        rs::UnparsedPublicKey::new(&rs::ECDSA_P256_SHA256_FIXED, point.as_bytes())
            .verify(&message, &raw)
            .unwrap();
    }
    let ec_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    (rsa_us, ec_us)
}

/// `openssl speed ecdsap256`: verifications per second.
fn openssl_speed_p256_verify() -> Option<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "2", "-mr", "ecdsap256"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "+F4:<n>:256:<sign/s>:<verify/s>"
    let l = text.lines().find(|l| l.starts_with("+F4:"))?;
    l.split(':').nth(4)?.parse().ok()
}

/// Verifications of `message` through the agent with `clients` concurrent clients, each
/// answer checked: (per second, p50 ms).
async fn agent_verify(agent: &Agent, message: &[u8], clients: usize) -> (f64, f64) {
    let mut tasks = vec![];
    let deadline = Instant::now() + RUN_TIME;
    for _ in 0..clients {
        let c = Client::connect(&agent.socket, hello(false)).await.unwrap();
        let message = message.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut lat = vec![];
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = c
                    .verify(VerifyParams {
                        content: message.clone().into(),
                        validation: ValidationMode::Wait,
                        ..Default::default()
                    })
                    .await
                    .expect("verify");
                assert_eq!(r.status, VerifyStatus::Valid);
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut lat = vec![];
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    (
        lat.len() as f64 / RUN_TIME.as_secs_f64(),
        percentile(&lat, 0.5),
    )
}

// ---------------------------------------------------------------------------------------
// 2. Per message, against the processes a mail client would otherwise spawn
// ---------------------------------------------------------------------------------------

/// Median wall time of `n` runs of a command, ms.
fn time_command(n: usize, mut make: impl FnMut() -> Command) -> Option<f64> {
    let mut times = vec![];
    for _ in 0..n {
        let t = Instant::now();
        let out = make().output().ok()?;
        if !out.status.success() {
            eprintln!("bench: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Some(median(times))
}

fn openssl_engine_sign(rig: &Rig, dir: &Path) -> Option<f64> {
    let msg = write_file(dir, "engine-msg.txt", &sample_entity("per message"));
    let cert = rig.pki.join("alice-sign-rsa.pem");
    time_command(20, || {
        let mut c = Command::new("openssl");
        c.args([
            "cms", "-sign", "-engine", "pkcs11", "-keyform", "engine", "-inkey",
        ])
        .arg(format!(
            "pkcs11:token=rsa;object=alice-sign-rsa;type=private;pin-value={PIN}"
        ))
        .arg("-signer")
        .arg(&cert)
        .arg("-in")
        .arg(&msg)
        .arg("-out")
        .arg(dir.join("engine-out.eml"))
        .env("SOFTHSM2_CONF", rig.hsm.conf())
        .env("PKCS11_MODULE_PATH", SOFTHSM);
        c
    })
}

/// `gpgsm --detach-sign` with Alice's RSA key as a software key (gpg-agent running, its
/// passphrase cached), one process per message.
fn gpgsm_sign(rig: &Rig, dir: &Path) -> Option<f64> {
    let g = common::peers::Gpgsm::with_pki(&rig.pki, dir, &["alice-sign-rsa"], &[]);
    let msg = write_file(dir, "gpgsm-msg.txt", &sample_entity("per message"));
    let out = dir.join("gpgsm-out.p7s");
    // The first run starts gpg-agent and caches the passphrase; measure the ones after.
    g.sign("alice@example.org", &msg, &out, true);
    time_command(20, || {
        let _ = std::fs::remove_file(&out);
        let mut c = g.cmd();
        c.args(["-u", "alice@example.org", "--detach-sign", "-o"])
            .arg(&out)
            .arg(&msg);
        c
    })
}

fn cli_sign(agent: &Agent, dir: &Path) -> Option<f64> {
    let msg = write_file(dir, "cli-msg.txt", &sample_entity("per message"));
    time_command(20, || {
        let mut c = agent.cli();
        c.args(["sign", "--signer", "alice@example.org", "--in"])
            .arg(&msg)
            .arg("--out")
            .arg(dir.join("cli-out.eml"));
        c
    })
}

// ---------------------------------------------------------------------------------------
// 4. Large messages, and openssl speed
// ---------------------------------------------------------------------------------------

/// `openssl speed -evp ALG -bytes 1048576`: MiB/s.
fn openssl_speed_evp(alg: &str) -> Option<f64> {
    let out = Command::new("openssl")
        .args([
            "speed", "-evp", alg, "-bytes", "1048576", "-seconds", "2", "-mr",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "+F:<n>:<alg>:<bytes per second>"
    let bps: f64 = text
        .lines()
        .find(|l| l.starts_with("+F:"))?
        .rsplit(':')
        .next()?
        .parse()
        .ok()?;
    Some(bps / 1048576.0)
}

/// `openssl speed rsa2048`: (sign/s, verify/s).
fn openssl_speed_rsa() -> Option<(f64, f64)> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "2", "-mr", "rsa2048"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // OpenSSL 3: "+F2:<n>:2048:<sign/s>:<verify/s>" (rates; 1.1 printed seconds per op).
    let l = text.lines().find(|l| l.starts_with("+F2:"))?;
    let parts: Vec<&str> = l.split(':').collect();
    let s: f64 = parts.get(3)?.parse().ok()?;
    let v: f64 = parts.get(4)?.parse().ok()?;
    Some((s, v))
}

// ---------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------

fn fmt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "n/a".into(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; anything else is not ours to read.
    smime_agent::sys::raise_nofile_limit();
    let out_dir = workspace_root().join("bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut report = serde_json::Map::new();
    report.insert("machine".into(), machine());
    let mut md = String::new();
    let m = &report["machine"];
    md.push_str(&format!(
        "# smime-agent benchmark report\n\nMachine: {} ({} CPUs), {}. Reproduce with `make bench`.\n\
         Each figure is the median of {RUNS} runs of {} s (throughput) or 20 runs (per message).\n\n",
        m["cpu"].as_str().unwrap_or(""),
        m["nproc"],
        m["date"].as_str().unwrap_or(""),
        RUN_TIME.as_secs()
    ));

    let rig = rig().await;
    let work = tempdir();

    // BENCH_ONLY=overhead runs only the first section (for profiling the agent under load).
    let only_overhead = std::env::var("BENCH_ONLY").is_ok_and(|v| v == "overhead");
    // 1. Agent overhead.
    md.push_str("## 1. Agent overhead: CMS signatures through the agent vs raw C_Sign on the same SoftHSM key\n\n");
    md.push_str("| key | raw C_Sign/s (1 thread) | raw C_Sign/s (2 threads) | clients | agent sig/s | ratio to raw (best) | p50 ms | p99 ms | p50 added ms | agent CPU ms/sig |\n|---|---|---|---|---|---|---|---|---|---|\n");
    let mut overhead = vec![];
    let mut module_rows = String::new();
    let mut module_json = vec![];
    // Raw C_Sign per second, one thread: RSA, then ECDSA.
    let mut raw_single = vec![];
    for key in [KeyKind::Rsa, KeyKind::Ec] {
        // One agent per key: only its token is configured under alice's address.
        let dir = work.path().join(format!("agent-{}", key.token()));
        let hsm = SoftHsm::new(&dir.join("softhsm"));
        hsm.add_token_from(&rig.pki, key.token(), PIN, &[key.key_label()]);
        let keyrig = Rig {
            _dir: None,
            pki: rig.pki.clone(),
            hsm,
            _crls: None,
        };
        let raw1 = median((0..RUNS).map(|_| raw_sign(&keyrig, key, 1)).collect());
        let raw2 = median((0..RUNS).map(|_| raw_sign(&keyrig, key, 2)).collect());
        raw_single.push(raw1);
        let a = agent(&keyrig, &dir.join("agent"));
        let _warm = warm_client(&a).await;
        // The PKCS#11 module on the same key and agent, against the token loaded directly.
        for threads in [1usize, 8] {
            let raw = median(
                (0..RUNS)
                    .map(|_| raw_sign(&keyrig, key, threads).max(0.0))
                    .collect(),
            );
            let runs: Vec<(f64, f64)> = (0..RUNS)
                .map(|_| module_sign(&a.socket, key, threads))
                .collect();
            let through = median(runs.iter().map(|r| r.0).collect());
            let p50 = median(runs.iter().map(|r| r.1).collect());
            let raw_p50 = 1e6 / raw1;
            module_rows.push_str(&format!(
                "| {} | {threads} | {raw:.0} | {through:.0} | {:.2} | {p50:.0} | {:.0} |\n",
                key.name(),
                through / raw,
                (p50 - raw_p50).max(0.0)
            ));
            module_json.push(json!({"key": key.name(), "threads": threads, "direct_per_s": raw, "module_per_s": through, "ratio": through / raw, "p50_us": p50}));
        }
        for clients in CONCURRENCY {
            let mut runs = vec![];
            for _ in 0..RUNS {
                runs.push(agent_sign(&a, clients).await);
            }
            // Each column's own median, not the figures of the run with the median
            // throughput.
            let col = |f: fn(&(f64, f64, f64, f64)) -> f64| median(runs.iter().map(f).collect());
            let (tput, p50, p99, cpu) = (col(|r| r.0), col(|r| r.1), col(|r| r.2), col(|r| r.3));
            let best_raw = raw1.max(raw2);
            let added = p50 - 1000.0 / raw1;
            md.push_str(&format!(
                "| {} | {raw1:.0} | {raw2:.0} | {clients} | {tput:.0} | {:.2} | {p50:.3} | {p99:.3} | {added:.3} | {cpu:.3} |\n",
                key.name(),
                tput / best_raw
            ));
            overhead.push(json!({"key": key.name(), "raw_1": raw1, "raw_2": raw2, "clients": clients,
                "agent_per_s": tput, "ratio": tput / best_raw, "p50_ms": p50, "p99_ms": p99, "p50_added_ms": added,
                "agent_cpu_ms_per_sig": cpu}));
        }
    }
    report.insert("overhead".into(), Value::Array(overhead));
    let module_md = format!(
        "\n## 7. The PKCS#11 module: C_Sign through libsmime_agent_pkcs11.so vs C_Sign on SoftHSM loaded directly, same key\n\n\
         | key | threads | direct C_Sign/s | through the module C_Sign/s | ratio | p50 µs per call | p50 added µs |\n|---|---|---|---|---|---|---|\n{module_rows}\n\
         Target: at least 0.8 of direct with 8 threads. Each module call is one `key_sign` request on a pooled connection to the agent, which signs on the token and verifies the signature before answering.\n"
    );
    report.insert("pkcs11_module".into(), Value::Array(module_json));
    if std::env::var("BENCH_ONLY").is_ok_and(|v| v == "module") {
        println!("{module_md}");
        return;
    }
    md.push_str(
        "\nTargets: at least 90% of the raw token's throughput, at most 0.3 ms added at p50. \
         \"p50 added\" is the p50 latency less one raw C_Sign (1 thread); \"agent CPU\" is the \
         agent process's user + system time per signature (the token's work included: SoftHSM \
         signs inside the agent).\n\n",
    );
    // What every signature costs on top of the token's work: the agent verifies it.
    let (rsa_us, ec_us) = self_verify_us(&rig.pki);
    let ossl_rsa = openssl_speed_rsa();
    let ossl_ec = openssl_speed_p256_verify();
    md.push_str(&format!(
        "The agent verifies every signature a token returns before using it (a faulty RSA-CRT \
         signature would give the key away; a wrong key would sign what no one can verify). \
         What that costs, measured in this run with the agent's verifier (ring) in one thread:\n\n\
         | key | one raw C_Sign µs | one verification µs (the agent's, ring) | `openssl speed` verification µs |\n|---|---|---|---|\n\
         | RSA-2048 | {:.0} | {rsa_us:.0} | {} |\n| ECDSA P-256 | {:.0} | {ec_us:.0} | {} |\n\n",
        1e6 / raw_single[0],
        fmt(ossl_rsa.map(|r| 1e6 / r.1), 0),
        1e6 / raw_single[1],
        fmt(ossl_ec.map(|v| 1e6 / v), 0),
    ));
    report.insert(
        "self_verify_us".into(),
        json!({"rsa2048": rsa_us, "p256": ec_us, "openssl_rsa2048": ossl_rsa.map(|r| 1e6 / r.1), "openssl_p256": ossl_ec.map(|v| 1e6 / v)}),
    );
    if only_overhead {
        println!("{md}");
        return;
    }

    // 2. Per message.
    let a = agent(&rig, &work.path().join("agent-main"));
    let client = warm_client(&a).await;
    let mut one = vec![];
    for _ in 0..20 {
        let t = Instant::now();
        client
            .sign(sign_params(sample_entity("per message")))
            .await
            .unwrap();
        one.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let agent_ms = median(one);
    // The floor of any request: a `status` round trip (socket, JSON, no token, no crypto).
    let mut floor = vec![];
    for _ in 0..200 {
        let t = Instant::now();
        client.status().await.unwrap();
        floor.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let floor_ms = median(floor);
    let cli_ms = cli_sign(&a, work.path());
    let engine_ms = openssl_engine_sign(&rig, work.path());
    let gpgsm_ms = gpgsm_sign(&rig, work.path());
    md.push_str("## 2. One signed message, against the process a mail client would otherwise spawn\n\n| how | ms per message | ratio to one agent request |\n|---|---|---|\n");
    for (how, v) in [
        (
            "one request to the running agent (RSA, SoftHSM)",
            Some(agent_ms),
        ),
        (
            "`smime-agent sign` CLI process (connect, hello, sign)",
            cli_ms,
        ),
        (
            "`openssl cms -sign` with the PKCS#11 engine, same SoftHSM key",
            engine_ms,
        ),
        ("`gpgsm --sign`, software key, gpg-agent running", gpgsm_ms),
        (
            "for scale: a `status` round trip (socket and JSON, no token)",
            Some(floor_ms),
        ),
    ] {
        md.push_str(&format!(
            "| {how} | {} | {} |\n",
            fmt(v, 2),
            fmt(v.map(|x| x / agent_ms), 1)
        ));
    }
    report.insert(
        "per_message_ms".into(),
        json!({"agent": agent_ms, "cli": cli_ms, "openssl_engine": engine_ms, "gpgsm": gpgsm_ms, "status_round_trip": floor_ms}),
    );

    // 3. Verify: an RSA-signed message whose chain and CRLs the agent has cached (the
    // first verification fetched them), against `openssl speed rsa2048` verifications.
    let signed_msg = client
        .sign(sign_params(sample_entity("verify me")))
        .await
        .expect("sign for verify")
        .mime
        .0;
    let _ = agent_verify(&a, &signed_msg, 1).await;
    // The figure section 1 measured in this run: one measurement, one value in the report.
    let rsa = ossl_rsa;
    md.push_str("\n## 3. Verify: a clear-signed RSA-2048 message, chain and CRLs cached\n\n| clients | agent verifications/s | p50 ms | `openssl speed rsa2048` verify/s (1 process) | ratio |\n|---|---|---|---|---|\n");
    let mut verify_rows = vec![];
    for clients in [1usize, 2] {
        let mut runs = vec![];
        for _ in 0..RUNS {
            runs.push(agent_verify(&a, &signed_msg, clients).await);
        }
        let tput = median(runs.iter().map(|r| r.0).collect());
        let p50 = median(runs.iter().map(|r| r.1).collect());
        let ossl = rsa.map(|r| r.1);
        md.push_str(&format!(
            "| {clients} | {tput:.0} | {p50:.3} | {} | {} |\n",
            fmt(ossl, 0),
            fmt(ossl.map(|o| tput / o), 3)
        ));
        verify_rows.push(json!({"clients": clients, "agent_per_s": tput, "p50_ms": p50}));
    }
    report.insert(
        "verify".into(),
        json!({"rows": verify_rows, "openssl_rsa2048_sign_per_s": rsa.map(|r| r.0), "openssl_rsa2048_verify_per_s": rsa.map(|r| r.1)}),
    );

    // 4. Large messages.
    let big_mib = 100usize;
    let line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd\r\n";
    let mut big = b"Content-Type: text/plain\r\n\r\n".to_vec();
    while big.len() < big_mib << 20 {
        big.extend_from_slice(line.as_bytes());
    }
    let mib = big.len() as f64 / 1048576.0;
    let pid = a.pid();
    let mut rows = vec![];
    reset_peak(pid);
    let t = Instant::now();
    let signed = client
        .sign(sign_params(big.clone()))
        .await
        .expect("sign 100 MiB");
    rows.push((
        "sign (clear)",
        mib / t.elapsed().as_secs_f64(),
        proc_kib(pid, "VmHWM"),
    ));
    reset_peak(pid);
    let t = Instant::now();
    let verified = client
        .verify(VerifyParams {
            content: signed.mime,
            validation: ValidationMode::Wait,
            ..Default::default()
        })
        .await
        .expect("verify 100 MiB");
    rows.push((
        "verify (clear)",
        mib / t.elapsed().as_secs_f64(),
        proc_kib(pid, "VmHWM"),
    ));
    assert_eq!(verified.status, VerifyStatus::Valid);
    drop(verified);
    reset_peak(pid);
    let t = Instant::now();
    let enc = client
        .encrypt(EncryptParams {
            recipients: vec!["bob@example.org".into()],
            certificates: vec![
                std::fs::read(rig.pki.join("bob-enc-ec.der"))
                    .unwrap()
                    .into(),
            ],
            sender: Some("alice@example.org".into()),
            content: big.clone().into(),
            ..Default::default()
        })
        .await
        .expect("encrypt 100 MiB");
    rows.push((
        "encrypt (AES-256-CBC)",
        mib / t.elapsed().as_secs_f64(),
        proc_kib(pid, "VmHWM"),
    ));
    reset_peak(pid);
    let t = Instant::now();
    let dec = client
        .decrypt(DecryptParams {
            content: enc.mime,
            ..Default::default()
        })
        .await
        .expect("decrypt 100 MiB");
    rows.push((
        "decrypt (AES-256-CBC)",
        mib / t.elapsed().as_secs_f64(),
        proc_kib(pid, "VmHWM"),
    ));
    assert_eq!(dec.mime.0.len(), big.len());
    let sha = openssl_speed_evp("sha256");
    let aes = openssl_speed_evp("aes-256-cbc");
    md.push_str(&format!(
        "\n## 4. Large messages ({mib:.0} MiB, through the socket, base64 both ways)\n\n| operation | MiB/s | agent peak RSS MiB | openssl speed, 1 MiB blocks |\n|---|---|---|---|\n"
    ));
    for (op, speed, hwm) in &rows {
        let cmp = if op.starts_with("sign") || op.starts_with("verify") {
            format!("sha256 {} MiB/s", fmt(sha, 0))
        } else {
            format!("aes-256-cbc {} MiB/s", fmt(aes, 0))
        };
        md.push_str(&format!(
            "| {op} | {speed:.1} | {:.0} | {cmp} |\n",
            *hwm as f64 / 1024.0
        ));
    }
    md.push_str(
        "\nThe RSS column is the agent's high-water mark at the end of each operation; freed \
         memory stays with the allocator, so a row cannot read lower than the one before it.\n",
    );
    report.insert("large".into(), json!({"mib": mib, "rows": rows.iter().map(|(o, s, h)| json!({"op": o, "mib_per_s": s, "peak_rss_kib": h})).collect::<Vec<_>>(), "openssl_sha256_mib_s": sha, "openssl_aes256cbc_mib_s": aes}));

    // 5. Card life cycle.
    let card = card_life_cycle(&rig, work.path()).await;
    md.push_str(&format!(
        "\n## 5. Card life cycle (virtual PIV card, vpcd, private pcscd, OpenSC)\n\n| figure | median |\n|---|---|\n| insertion (reader has taken the card) to certificates usable | {} ms |\n| removal to certificates gone | {} ms |\n\nThe virtual reader's driver (pcscd) polls the card every 400 ms: insertion is measured from \
         the moment the reader reports the card, removal from the moment it is pulled.\n",
        fmt(card.map(|c| c.0), 1),
        fmt(card.map(|c| c.1), 1)
    ));
    report.insert(
        "card".into(),
        json!({"insert_ms": card.map(|c| c.0), "remove_ms": card.map(|c| c.1)}),
    );

    // 6. Footprint.
    let mut ready = vec![];
    for i in 0..5 {
        let t = Instant::now();
        let x = agent(&rig, &work.path().join(format!("footprint-{i}")));
        ready.push(t.elapsed().as_secs_f64() * 1000.0);
        drop(x);
    }
    let idle = agent(&rig, &work.path().join("idle"));
    let idle_kib = proc_kib(idle.pid(), "VmRSS");
    let mut conns = vec![];
    for _ in 0..1000 {
        conns.push(
            Client::connect(&idle.socket, hello(false))
                .await
                .expect("connection"),
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy_kib = proc_kib(idle.pid(), "VmRSS");
    drop(conns);
    md.push_str(&format!(
        "\n## 6. Footprint\n\n| figure | value |\n|---|---|\n| `serve` to socket ready (1 SoftHSM module, 2 tokens) | {:.1} ms |\n| idle RSS | {:.1} MiB |\n| RSS with 1000 idle connections | {:.1} MiB ({:.1} KiB per connection) |\n",
        median(ready.clone()),
        idle_kib as f64 / 1024.0,
        busy_kib as f64 / 1024.0,
        (busy_kib.saturating_sub(idle_kib)) as f64 / 1000.0
    ));
    report.insert("footprint".into(), json!({"ready_ms": median(ready), "idle_rss_kib": idle_kib, "rss_1000_conns_kib": busy_kib}));

    md.push_str(&module_md);
    // The build's cost is measured apart (bench/build-cost.sh, a clean release build) and
    // kept with the report.
    if let Ok(build) = std::fs::read_to_string(out_dir.join("BUILD.md")) {
        md.push('\n');
        md.push_str(&build);
    }

    std::fs::write(
        out_dir.join("report.json"),
        serde_json::to_string_pretty(&Value::Object(report)).unwrap(),
    )
    .unwrap();
    std::fs::write(out_dir.join("REPORT.md"), &md).unwrap();
    println!("{md}");
    println!("wrote {}", out_dir.join("REPORT.md").display());
}

async fn card_life_cycle(rig: &Rig, dir: &Path) -> Option<(f64, f64)> {
    use virtual_piv_card::{CardRig, OPENSC_PKCS11, PivSlot, RigOptions, SlotSpec};
    let card_rig = CardRig::start_in_tempdir(RigOptions::default()).ok()?;
    let a = Agent::start(
        &dir.join("card-agent"),
        AgentSpec {
            extra_config: format!("[[tokens.module]]\npath = \"{OPENSC_PKCS11}\"\n"),
            trust: Some(trust_for(&rig.pki)),
            env: card_rig
                .env()
                .iter()
                .map(|(k, v)| (k.to_string(), v.display().to_string()))
                .chain([("RUST_LOG".to_string(), "warn".to_string())])
                .collect(),
            ..Default::default()
        },
    );
    let c = a.client().await;
    let slots = [SlotSpec::new(
        PivSlot::Signature,
        rig.pki.join("alice-sign-rsa.key.pem"),
        rig.pki.join("alice-sign-rsa.pem"),
    )];
    let (mut ins, mut rem) = (vec![], vec![]);
    for _ in 0..5 {
        card_rig.insert("bench", 0, "123456", &slots).ok()?;
        let t = Instant::now();
        while c.status().await.ok()?.tokens.is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        ins.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        card_rig.remove("bench").ok()?;
        while !c.status().await.ok()?.tokens.is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        rem.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Some((median(ins), median(rem)))
}
