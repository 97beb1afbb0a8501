//! NIST PKITS through the agent's `validate` op.
//!
//! The test data is the PyPI package `cryptography-vectors` (`x509/PKITS_data/`): 224 signed
//! S/MIME messages that carry their intermediates and CRLs, and the trust anchor. Every run of
//! `tests/data/pkits-expectations.tsv` (the 248 runs of the PKITS document, some with several
//! sets of policy inputs) is validated by a running agent with the signer's certificate, the
//! message's certificates as the chain, the message's CRLs, the run's initial-policy inputs,
//! and `on_crl_unavailable = "fail"` (PKITS treats an undetermined status as a failure), with
//! `for: path` (RFC 5280 alone: PKITS certificates are not mail certificates). The
//! table says, per run, whether the agent gets it right today (`pass`) or not (`fail`, with
//! the reason). A run marked `pass` that now disagrees with the expected outcome fails the
//! test; a `fail` run that now agrees is reported so the table can be updated.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use base64::Engine as _;
use common::*;
use smime_agent_proto::{PolicyInputs, ValidateFor, ValidateParams, ValidityStatus};

/// The validation time: inside every PKITS certificate's intended window (2011..2030), and
/// after the notAfter of the "invalid notAfter" tests.
const TIME: &str = "2021-06-01T00:00:00Z";

fn python_dir() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import cryptography_vectors, os; print(os.path.dirname(cryptography_vectors.__file__))",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    dir.join("x509/PKITS_data/smime").is_dir().then_some(dir)
}

/// The PKITS data, installing `cryptography-vectors` with pip when it is missing.
fn pkits_dir() -> PathBuf {
    if let Some(d) = python_dir() {
        return d.join("x509/PKITS_data");
    }
    let st = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "cryptography-vectors"])
        .status()
        .expect("run python3 -m pip");
    assert!(st.success(), "pip install cryptography-vectors failed");
    python_dir()
        .expect("cryptography-vectors is installed but its PKITS data is not found")
        .join("x509/PKITS_data")
}

/// One DER TLV: (tag byte, header length, total length).
fn tlv(b: &[u8]) -> Option<(u8, usize, usize)> {
    let tag = *b.first()?;
    let l0 = *b.get(1)? as usize;
    let (len, hdr) = if l0 < 0x80 {
        (l0, 2)
    } else {
        let n = l0 & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    (b.len() >= hdr + len).then_some((tag, hdr, hdr + len))
}

/// The TLVs inside a constructed TLV.
fn children(b: &[u8]) -> Vec<&[u8]> {
    let Some((_, hdr, total)) = tlv(b) else {
        return vec![];
    };
    let mut out = vec![];
    let mut rest = &b[hdr..total];
    while let Some((_, _, t)) = tlv(rest) {
        out.push(&rest[..t]);
        rest = &rest[t..];
    }
    out
}

/// What a signed message carries: the signer's certificate, the other certificates, CRLs.
struct Signed {
    signer: Vec<u8>,
    certs: Vec<Vec<u8>>,
    crls: Vec<Vec<u8>>,
}

/// Walks ContentInfo / SignedData by hand: certificates with negative serial numbers and the
/// like must reach the validator as they are, not be refused by a strict decoder here.
fn parse_signed(p7: &[u8]) -> Option<Signed> {
    let ci = children(p7);
    let sd = children(ci.get(1)?).into_iter().next()?;
    let parts = children(sd);
    let mut certs = vec![];
    let mut crls = vec![];
    let mut signer_infos = None;
    for part in &parts[3..] {
        match part[0] {
            0xa0 => certs = children(part).iter().map(|c| c.to_vec()).collect(),
            0xa1 => crls = children(part).iter().map(|c| c.to_vec()).collect(),
            0x31 => signer_infos = Some(*part),
            _ => {}
        }
    }
    let si = children(signer_infos?).into_iter().next()?;
    let sid = children(si).get(1).copied()?;
    let signer = if sid[0] == 0x30 {
        let ias = children(sid);
        let (issuer, serial) = (*ias.first()?, *ias.get(1)?);
        certs.iter().find(|c| {
            let tbs = children(c).into_iter().next().unwrap_or_default();
            let f = children(tbs);
            let off = usize::from(f.first().is_some_and(|x| x[0] == 0xa0));
            f.get(off) == Some(&serial) && f.get(off + 2) == Some(&issuer)
        })?
    } else {
        // [0] SubjectKeyIdentifier: the certificate whose extension carries those bytes.
        let (_, hdr, _) = tlv(sid)?;
        let skid = &sid[hdr..];
        certs
            .iter()
            .find(|c| c.windows(skid.len()).any(|w| w == skid))?
    }
    .clone();
    Some(Signed {
        signer,
        certs,
        crls,
    })
}

fn p7s_of(eml: &str) -> Option<Vec<u8>> {
    let lower = eml.to_ascii_lowercase();
    // The part's own Content-Type (the top-level one names the protocol in a parameter).
    let at = lower
        .find("content-type: application/pkcs7")
        .or_else(|| lower.find("content-type: application/x-pkcs7"))?;
    let body_start = eml[at..]
        .find("\n\n")
        .or_else(|| eml[at..].find("\r\n\r\n"))?
        + at;
    let b64: String = eml[body_start..]
        .trim_start()
        .lines()
        .take_while(|l| !l.starts_with("--") && !l.trim().is_empty())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
}

struct Row {
    file: String,
    section: String,
    expected: String,
    policy: PolicyInputs,
    known: String,
    reason: String,
}

fn load_table(path: &Path) -> (String, Vec<Row>) {
    let text = std::fs::read_to_string(path).expect("read the expectations table");
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default().to_owned();
    let rows = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let flag = |i: usize| f.get(i) == Some(&"1");
            let set = f.get(4).copied().unwrap_or("anyPolicy");
            Row {
                file: f[0].to_owned(),
                section: f[1].to_owned(),
                expected: f[3].to_owned(),
                policy: PolicyInputs {
                    initial_policy_set: if set == "anyPolicy" {
                        vec![]
                    } else {
                        set.split(',').map(str::to_owned).collect()
                    },
                    initial_explicit_policy: flag(5),
                    initial_policy_mapping_inhibit: flag(6),
                    initial_inhibit_any_policy: flag(7),
                },
                known: f.get(8).copied().unwrap_or("pass").to_owned(),
                reason: f.get(9).copied().unwrap_or("").to_owned(),
            }
        })
        .collect();
    (header, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nist_pkits_runs_give_the_expected_outcome() {
    let pkits = pkits_dir();
    let table = workspace_root().join("tests/data/pkits-expectations.tsv");
    let (header, rows) = load_table(&table);
    assert_eq!(rows.len(), 248, "the table has every PKITS run");

    let dir = tempdir();
    let agent = Agent::start(
        dir.path(),
        AgentSpec {
            trust: Some(format!(
                "roots = [\"{}\"]\nuse_system_roots = false\n",
                pkits.join("certs/TrustAnchorRootCertificate.crt").display()
            )),
            revocation: "on_crl_unavailable = \"fail\"\n".into(),
            ..Default::default()
        },
    );
    let client = Arc::new(agent.client().await);

    let mut tasks = vec![];
    for (i, row) in rows.iter().enumerate() {
        let eml = std::fs::read(pkits.join("smime").join(&row.file))
            .unwrap_or_else(|e| panic!("{}: {e}", row.file));
        let signed = p7s_of(&String::from_utf8_lossy(&eml))
            .and_then(|p7| parse_signed(&p7))
            .unwrap_or_else(|| panic!("{}: no signer certificate found", row.file));
        let client = client.clone();
        let policy = row.policy.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .validate(ValidateParams {
                    certificate: signed.signer.into(),
                    chain: signed.certs.into_iter().map(Into::into).collect(),
                    crls: signed.crls.into_iter().map(Into::into).collect(),
                    time: Some(TIME.into()),
                    policy: Some(policy),
                    // PKITS tests RFC 5280 path validation; its certificates are not mail
                    // certificates (no address, no S/MIME usages), so the S/MIME profile is
                    // not asked; the strict checks still apply.
                    fitness: Some(ValidateFor::Path),
                    ..Default::default()
                })
                .await;
            (i, r)
        }));
    }
    let mut outcome: HashMap<usize, (String, String)> = HashMap::new();
    for t in tasks {
        let (i, r) = t.await.unwrap();
        let got = match r {
            Ok(v) if v.status == ValidityStatus::Valid => ("valid".to_owned(), String::new()),
            Ok(v) => (
                "invalid".to_owned(),
                v.reasons
                    .iter()
                    .map(|r| format!("{}: {}", r.code, r.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            Err(e) => ("error".to_owned(), e.to_string()),
        };
        outcome.insert(i, got);
    }

    let mut right = 0;
    let mut regressions = vec![];
    let mut improvements = vec![];
    let mut wrong = vec![];
    let mut results = format!("{header}\n");
    for (i, row) in rows.iter().enumerate() {
        let (got, why) = &outcome[&i];
        let ok = *got == row.expected;
        if ok {
            right += 1;
        } else {
            wrong.push(format!(
                "{} {} expected {} got {got}: {why}",
                row.section, row.file, row.expected
            ));
        }
        match (row.known.as_str(), ok) {
            ("pass", false) => regressions.push(format!(
                "{} {}: expected {}, the agent now says {got} ({why})",
                row.section, row.file, row.expected
            )),
            ("fail", true) => improvements.push(format!("{} {}", row.section, row.file)),
            _ => {}
        }
        let line = std::fs::read_to_string(&table)
            .unwrap_or_default()
            .lines()
            .nth(i + 1)
            .unwrap_or_default()
            .split('\t')
            .take(8)
            .collect::<Vec<_>>()
            .join("\t");
        let reason = if ok {
            String::new()
        } else {
            format!("{got}: {why}")
        };
        results.push_str(&format!(
            "{line}\t{}\t{}\n",
            if ok { "pass" } else { "fail" },
            reason.replace('\t', " ")
        ));
        let _ = &row.reason;
    }
    // The run's own table, for updating the checked-in one.
    let _ = std::fs::write(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pkits-results.tsv"),
        &results,
    );
    println!("PKITS: the agent gets {right} of {} runs right", rows.len());
    for w in &wrong {
        println!("  not right: {w}");
    }
    for imp in &improvements {
        println!("  now right (mark it pass in the table): {imp}");
    }
    assert!(
        regressions.is_empty(),
        "PKITS runs that passed before fail now:\n{}",
        regressions.join("\n")
    );
}
