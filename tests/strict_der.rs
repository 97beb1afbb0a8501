//! Strict DER inside a signed message, as OpenSSL reads it: a SignedData's framing may be
//! BER (streaming producers write it so), but what it holds must be DER. Bytes no signature
//! covers, changed so that OpenSSL refuses the message, are refused by the agent too
//! (`bad_message`), and a change OpenSSL accepts is accepted.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use smime_agent_proto::{ErrorCode, VerifyParams, VerifyStatus};

/// A message OpenSSL signs with Alice's key file: bare CMS, DER, the content inside.
fn signed(dir: &Path) -> Vec<u8> {
    let content = write_file(dir, "m.txt", b"Content-Type: text/plain\r\n\r\nstrict\r\n");
    let out = Command::new("openssl")
        .args(["cms", "-sign", "-nodetach", "-outform", "DER", "-in"])
        .arg(&content)
        .arg("-signer")
        .arg(pki_file("alice-sign-rsa.pem"))
        .arg("-inkey")
        .arg(pki_file("alice-sign-rsa.key.pem"))
        .output()
        .unwrap();
    ok("openssl cms -sign", &out);
    out.stdout
}

/// `openssl cms -verify` of a DER message: whether OpenSSL can read it at all (the
/// certificate checks are not the point here, so `-noverify`).
fn openssl_reads(dir: &Path, der: &[u8]) -> bool {
    let path = write_file(dir, &format!("m-{}.der", rand_suffix()), der);
    Command::new("openssl")
        .args([
            "cms",
            "-verify",
            "-noverify",
            "-inform",
            "DER",
            "-out",
            "/dev/null",
            "-in",
        ])
        .arg(&path)
        .output()
        .unwrap()
        .status
        .success()
}

/// The position of the last `needle` in `hay`.
fn rfind(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .rposition(|w| w == needle)
        .expect("the pattern is in the message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_der_outside_the_signed_bytes_is_refused_as_openssl_refuses_it() {
    let dir = tempdir();
    let agent = Agent::start(
        dir.path(),
        AgentSpec {
            trust: Some(trust_for(pki())),
            ..Default::default()
        },
    );
    let client = agent.client().await;
    let good = signed(dir.path());

    // SignedData.digestAlgorithms: SEQUENCE { OID sha256 } (the first such sequence; the
    // SignerInfo's own comes after the certificate).
    let sha256 = [
        0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
    ];
    let digest_oid = good
        .windows(sha256.len())
        .position(|w| w == sha256)
        .unwrap()
        + 2;
    // The SignerInfo's issuer (the last copy of the issuing CA's name): its CN string.
    let mut cn = vec![0x0c, 27];
    cn.extend_from_slice(b"smime-agent Test Issuing CA");
    let issuer_cn = rfind(&good, &cn);

    let with = |at: usize, byte: u8| {
        let mut m = good.clone();
        m[at] = byte;
        m
    };
    let cases: [(&str, Vec<u8>, bool); 5] = [
        ("unchanged", good.clone(), true),
        (
            "digest algorithm OID tagged 0x07",
            with(digest_oid, 0x07),
            false,
        ),
        ("issuer CN as an OCTET STRING", with(issuer_cn, 0x04), false),
        ("issuer CN as an INTEGER", with(issuer_cn, 0x02), false),
        // Another string type: OpenSSL compares names by their text, so does the agent.
        (
            "issuer CN as a PrintableString",
            with(issuer_cn, 0x13),
            true,
        ),
    ];
    for (what, message, readable) in cases {
        assert_eq!(
            openssl_reads(dir.path(), &message),
            readable,
            "OpenSSL on {what}"
        );
        let res = client
            .verify(VerifyParams {
                content: message.into(),
                ..Default::default()
            })
            .await;
        match (readable, res) {
            (true, Ok(r)) => assert_eq!(r.status, VerifyStatus::Valid, "{what}"),
            (false, Err(e)) => {
                assert_eq!(e.code(), Some(ErrorCode::BadMessage), "{what}: {e}");
                println!("{what}: {e}");
            }
            (readable, res) => panic!("{what}: readable {readable}, agent: {res:?}"),
        }
    }
}
