//! Verifying signed mail through the running agent, and the signature half of the
//! interoperability matrix: OpenSSL, GnuPG's gpgsm and NSS's cmsutil sign, the agent
//! verifies; the agent signs (SoftHSM keys), gpgsm and cmsutil verify.
//!
//! Peer notes (workarounds): see `common/peers.rs`. NSS gives every certificate of one
//! subject the same nickname, so each NSS database here holds one of Alice's keys (RSA, or
//! EC for its ECDSA signatures); NSS verifies our RSA and ECDSA signatures.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::peers::{Gpgsm, Nss, run};
use common::*;
use der::{Decode, Encode};
use smime_agent::smime::mime::{self, Smime};
use smime_agent_proto::client::{BlockingClient, ClientError, EventReply};
use smime_agent_proto::{
    CertificateStatus, ErrorCode, Event, Op, SignFormat, SignatureStatus, ValidationMode,
    VerifyParams, VerifyResult, VerifyStatus,
};

/// The entity every peer signs: CRLF line ends, as S/MIME canonical form wants.
const MSG: &[u8] =
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nSigned by a peer: pay 10 EUR to Bob.\r\n";

/// An agent that verifies (no keys), trusting the test PKI, with a contacts store of its own.
fn verifier(dir: &Path, revocation: &str) -> Agent {
    Agent::start(
        &dir.join("agent"),
        AgentSpec {
            trust: Some(trust_for(pki())),
            revocation: revocation.into(),
            extra_config: format!("[contacts]\ndir = \"{}\"\n", dir.join("contacts").display()),
            ..Default::default()
        },
    )
}

fn verify(agent: &Agent, content: &[u8]) -> Result<VerifyResult, ClientError> {
    let mut c = BlockingClient::connect(&agent.socket, hello(false))?;
    c.verify(VerifyParams {
        content: content.to_vec().into(),
        validation: ValidationMode::Wait,
        ..Default::default()
    })
}

fn pretty(r: &VerifyResult) -> String {
    serde_json::to_string_pretty(r).unwrap_or_default()
}

/// Every signature and certificate valid, `signers` signers in one layer, the content back.
fn assert_valid(r: &VerifyResult, signers: usize, what: &str) {
    assert_eq!(r.status, VerifyStatus::Valid, "{what}: {}", pretty(r));
    assert_eq!(r.layers.len(), 1, "{what}");
    assert_eq!(r.layers[0].signers.len(), signers, "{what}: {}", pretty(r));
    for s in &r.layers[0].signers {
        assert_eq!(s.signature.status, SignatureStatus::Valid, "{what}");
        assert_eq!(s.certificate.status, CertificateStatus::Valid, "{what}");
        assert!(s.signing_time.is_some(), "{what}: no signing time");
    }
    assert_eq!(
        mime::canonicalize(&r.content.0),
        mime::canonicalize(MSG),
        "{what}: the content"
    );
}

fn key(name: &str) -> (PathBuf, PathBuf) {
    (
        pki_file(&format!("{name}.pem")),
        pki_file(&format!("{name}.key.pem")),
    )
}

/// `openssl cms -sign` of MSG by the named PKI keys (or (cert, key) files), with extra flags.
fn openssl_sign(dir: &Path, signers: &[(PathBuf, PathBuf)], extra: &[&str]) -> Vec<u8> {
    let input = write_file(dir, &format!("msg-{}.txt", rand_suffix()), MSG);
    let out = dir.join(format!("signed-{}", rand_suffix()));
    let mut cmd = Command::new("openssl");
    cmd.args(["cms", "-sign", "-in"]).arg(&input);
    for (cert, key) in signers {
        cmd.arg("-signer").arg(cert).arg("-inkey").arg(key);
    }
    cmd.args(extra).arg("-out").arg(&out);
    run(&mut cmd);
    std::fs::read(&out).unwrap()
}

/// Decodes an OpenSSL DER SignedData, changes it, and encodes it again.
fn edit_signed_data(der: &[u8], f: impl FnOnce(&mut cms::signed_data::SignedData)) -> Vec<u8> {
    let ci = cms::content_info::ContentInfo::from_der(der).expect("DER ContentInfo");
    let mut sd: cms::signed_data::SignedData = ci.content.decode_as().expect("SignedData");
    f(&mut sd);
    cms::content_info::ContentInfo {
        content_type: ci.content_type,
        content: der::Any::encode_from(&sd).unwrap(),
    }
    .to_der()
    .unwrap()
}

// ---------------------------------------------------------------------------------------
// OpenSSL signs, the agent verifies
// ---------------------------------------------------------------------------------------

#[test]
fn a_signer_whose_certificate_is_not_for_signing_is_not_valid_nor_kept() {
    let dir = tempdir();
    let agent = verifier(dir.path(), "disable_crl_check = true");
    // Alice's encryption certificate (keyUsage keyEncipherment only) chains to the trusted
    // root, and OpenSSL signs with its key anyway.
    let der = openssl_sign(
        dir.path(),
        &[key("alice-enc-rsa")],
        &["-nodetach", "-outform", "DER", "-noverify"],
    );
    let r = verify(&agent, &der).unwrap();
    let s = &r.layers[0].signers[0];
    assert_eq!(s.signature.status, SignatureStatus::Valid, "{}", pretty(&r));
    assert_eq!(
        s.certificate.status,
        CertificateStatus::Invalid,
        "{}",
        pretty(&r)
    );
    assert_eq!(s.certificate.reasons[0].code, "key_usage", "{}", pretty(&r));
    assert_eq!(r.status, VerifyStatus::Invalid);
    assert!(!s.certificate.added_to_contacts);
    // The same chain with a signing certificate is valid and kept: the check is the usage.
    let der = openssl_sign(
        dir.path(),
        &[key("alice-sign-rsa")],
        &["-nodetach", "-outform", "DER"],
    );
    let r = verify(&agent, &der).unwrap();
    assert_eq!(r.status, VerifyStatus::Valid, "{}", pretty(&r));
    assert!(r.layers[0].signers[0].certificate.added_to_contacts);
}

#[test]
fn openssl_signatures_verify_clear_and_opaque_with_every_algorithm() {
    let dir = tempdir();
    let agent = verifier(dir.path(), "disable_crl_check = true");
    let rsa = key("alice-sign-rsa");
    let ec = key("alice-sign-ec");
    let p384 = key("alice-sign-p384");
    // (what, signers, openssl flags, signature algorithm, digest)
    type Case<'a> = (
        &'a str,
        Vec<(PathBuf, PathBuf)>,
        Vec<&'a str>,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "clear RSA",
            vec![rsa.clone()],
            vec![],
            "rsa-pkcs1",
            "sha256",
        ),
        (
            "opaque RSA",
            vec![rsa.clone()],
            vec!["-nodetach"],
            "rsa-pkcs1",
            "sha256",
        ),
        (
            "opaque RSA, DER, streamed (BER)",
            vec![rsa.clone()],
            vec!["-nodetach", "-outform", "DER", "-stream"],
            "rsa-pkcs1",
            "sha256",
        ),
        (
            "clear RSA-PSS",
            vec![rsa.clone()],
            vec!["-keyopt", "rsa_padding_mode:pss"],
            "rsa-pss",
            "sha256",
        ),
        (
            "opaque RSA-PSS, SHA-512",
            vec![rsa.clone()],
            vec![
                "-nodetach",
                "-md",
                "sha512",
                "-keyopt",
                "rsa_padding_mode:pss",
            ],
            "rsa-pss",
            "sha512",
        ),
        (
            "clear ECDSA P-256",
            vec![ec.clone()],
            vec![],
            "ecdsa",
            "sha256",
        ),
        (
            "opaque ECDSA P-384, SHA-384",
            vec![p384.clone()],
            vec!["-nodetach", "-md", "sha384"],
            "ecdsa",
            "sha384",
        ),
        (
            "clear ECDSA P-384, signer by subject key identifier",
            vec![p384.clone()],
            vec!["-keyid"],
            "ecdsa",
            "sha256",
        ),
    ];
    for (what, signers, extra, sig_alg, digest) in cases {
        let signed = openssl_sign(dir.path(), &signers, &extra);
        let r = verify(&agent, &signed).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_valid(&r, 1, what);
        let s = &r.layers[0].signers[0];
        assert_eq!(s.signature_algorithm, sig_alg, "{what}");
        assert_eq!(s.digest_algorithm, digest, "{what}");
        let expect_format = if extra.contains(&"-nodetach") {
            SignFormat::Opaque
        } else {
            SignFormat::Clear
        };
        assert_eq!(r.layers[0].format, expect_format, "{what}");
        let signer = s.signer.as_ref().expect("signer certificate");
        assert_eq!(signer.emails, ["alice@example.org"], "{what}");
    }
}

#[test]
fn two_signers_are_each_verified() {
    let dir = tempdir();
    let agent = verifier(dir.path(), "disable_crl_check = true");
    let signed = openssl_sign(
        dir.path(),
        &[key("alice-sign-ec"), key("bob-dual-rsa")],
        &["-nodetach"],
    );
    let r = verify(&agent, &signed).unwrap();
    assert_valid(&r, 2, "two signers");
    let mut subjects: Vec<String> = r.layers[0]
        .signers
        .iter()
        .map(|s| s.signer.as_ref().unwrap().emails[0].clone())
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["alice@example.org", "bob@example.org"]);

    // One bad signer makes the message invalid, and says which.
    let der = openssl_sign(
        dir.path(),
        &[key("alice-sign-ec"), key("bob-dual-rsa")],
        &["-nodetach", "-outform", "DER"],
    );
    let broken = edit_signed_data(&der, |sd| {
        let mut infos = sd.signer_infos.0.clone().into_vec();
        let rsa = infos
            .iter_mut()
            .find(|i| i.signature_algorithm.oid == smime_agent::oids::RSA_ENCRYPTION)
            .expect("bob's RSA signer");
        let mut sig = rsa.signature.as_bytes().to_vec();
        sig[10] ^= 0xff;
        rsa.signature = der::asn1::OctetString::new(sig).unwrap();
        sd.signer_infos = cms::signed_data::SignerInfos::try_from(infos).unwrap();
    });
    let r = verify(&agent, &broken).unwrap();
    assert_eq!(r.status, VerifyStatus::Invalid);
    let bad: Vec<_> = r.layers[0]
        .signers
        .iter()
        .filter(|s| s.signature.status == SignatureStatus::Invalid)
        .collect();
    assert_eq!(bad.len(), 1, "{}", pretty(&r));
    assert_eq!(bad[0].signature.code.as_deref(), Some("bad_signature"));
    assert_eq!(bad[0].signer.as_ref().unwrap().emails, ["bob@example.org"]);
}

// ---------------------------------------------------------------------------------------
// Tampered, wrong, truncated and garbage messages
// ---------------------------------------------------------------------------------------

fn signature_code(r: &VerifyResult) -> Option<String> {
    r.layers[0].signers[0].signature.code.clone()
}

#[test]
fn tampered_content_and_signature_are_invalid_with_the_reason() {
    let dir = tempdir();
    let agent = verifier(dir.path(), "disable_crl_check = true");
    let clear = openssl_sign(dir.path(), &[key("alice-sign-rsa")], &[]);
    let tampered = String::from_utf8(clear.clone())
        .unwrap()
        .replace("10 EUR", "99 EUR");
    let r = verify(&agent, tampered.as_bytes()).unwrap();
    assert_eq!(r.status, VerifyStatus::Invalid);
    assert_eq!(signature_code(&r).as_deref(), Some("digest_mismatch"));
    assert!(
        r.layers[0].signers[0]
            .signature
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("changed"),
        "{}",
        pretty(&r)
    );

    let der = openssl_sign(
        dir.path(),
        &[key("alice-sign-rsa")],
        &["-nodetach", "-outform", "DER"],
    );
    assert_valid(&verify(&agent, &der).unwrap(), 1, "DER before tampering");
    // The last byte of this DER is the last byte of the RSA signature.
    let mut bad_sig = der.clone();
    *bad_sig.last_mut().unwrap() ^= 0x01;
    let r = verify(&agent, &bad_sig).unwrap();
    assert_eq!(signature_code(&r).as_deref(), Some("bad_signature"));
    assert_eq!(r.status, VerifyStatus::Invalid);

    // A signed attribute changed (the signing time moved by a digit): the signature over
    // the attributes fails.
    let edited = edit_signed_data(&der, |sd| {
        let mut infos = sd.signer_infos.0.clone().into_vec();
        let attrs = infos[0].signed_attrs.take().unwrap();
        let mut v = attrs.into_vec();
        for a in &mut v {
            if a.oid == smime_agent::oids::ID_SIGNING_TIME {
                let t = x509_cert::time::Time::try_from(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000),
                )
                .unwrap();
                let mut vals = der::asn1::SetOfVec::new();
                vals.insert(der::Any::encode_from(&t).unwrap()).unwrap();
                a.values = vals;
            }
        }
        infos[0].signed_attrs = Some(der::asn1::SetOfVec::try_from(v).unwrap());
        sd.signer_infos = cms::signed_data::SignerInfos::try_from(infos).unwrap();
    });
    let r = verify(&agent, &edited).unwrap();
    assert_eq!(signature_code(&r).as_deref(), Some("bad_signature"));
    assert_eq!(
        r.layers[0].signers[0].signing_time.as_deref(),
        Some("2001-09-09T01:46:40Z"),
        "the (forged) signing time is still reported"
    );

    // SHA-1: refused by rule, though the signature itself is sound.
    let sha1 = openssl_sign(dir.path(), &[key("alice-sign-rsa")], &["-md", "sha1"]);
    let r = verify(&agent, &sha1).unwrap();
    assert_eq!(signature_code(&r).as_deref(), Some("weak_algorithm"));
    assert!(
        r.layers[0].signers[0]
            .signature
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("it verifies"),
        "{}",
        pretty(&r)
    );
}

#[test]
fn a_wrong_or_missing_signer_certificate_makes_the_signature_invalid() {
    let dir = tempdir();
    let agent = verifier(dir.path(), "disable_crl_check = true");
    let der = openssl_sign(
        dir.path(),
        &[key("alice-sign-rsa")],
        &["-nodetach", "-outform", "DER"],
    );

    // Another certificate in the message: the signer's is missing.
    let bob = std::fs::read(pki_file("bob-dual-rsa.der")).unwrap();
    let swap = |sd: &mut cms::signed_data::SignedData, cert: &[u8]| {
        let c = x509_cert::Certificate::from_der(cert).unwrap();
        sd.certificates = Some(
            cms::signed_data::CertificateSet::try_from(vec![
                cms::cert::CertificateChoices::Certificate(c),
            ])
            .unwrap(),
        );
    };
    let r = verify(&agent, &edit_signed_data(&der, |sd| swap(sd, &bob))).unwrap();
    assert_eq!(r.status, VerifyStatus::Invalid);
    assert_eq!(signature_code(&r).as_deref(), Some("no_signer_certificate"));
    assert_eq!(
        r.layers[0].signers[0].certificate.status,
        CertificateStatus::Unknown
    );

    // A certificate with the signer's issuer and serial but another key (a forgery by a
    // careless CA): the signature does not verify with it.
    let serial = String::from_utf8(
        run(Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-in"])
            .arg(pki_file("alice-sign-rsa.pem")))
        .stdout,
    )
    .unwrap();
    let serial = serial.trim().trim_start_matches("serial=");
    let csr = dir.path().join("forged.csr");
    run(Command::new("openssl")
        .args([
            "req",
            "-new",
            "-subj",
            "/CN=Alice Example/emailAddress=alice@example.org",
        ])
        .arg("-key")
        .arg(pki_file("bob-dual-rsa.key.pem"))
        .arg("-out")
        .arg(&csr));
    let forged = dir.path().join("forged.der");
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "30", "-outform", "DER"])
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(pki_file("ca.pem"))
        .arg("-CAkey")
        .arg(pki_file("ca.key.pem"))
        .args(["-set_serial", &format!("0x{serial}")])
        .arg("-out")
        .arg(&forged));
    let forged = std::fs::read(&forged).unwrap();
    let r = verify(&agent, &edit_signed_data(&der, |sd| swap(sd, &forged))).unwrap();
    assert_eq!(
        signature_code(&r).as_deref(),
        Some("bad_signature"),
        "{}",
        pretty(&r)
    );
    assert_eq!(r.status, VerifyStatus::Invalid);
}

#[test]
fn truncated_garbage_and_unsigned_input_are_bad_messages_and_the_agent_goes_on() {
    let dir = tempdir();
    let agent = verifier(dir.path(), "disable_crl_check = true");
    let der = openssl_sign(
        dir.path(),
        &[key("alice-sign-ec")],
        &["-nodetach", "-outform", "DER"],
    );
    let clear = openssl_sign(dir.path(), &[key("alice-sign-ec")], &[]);
    let mut inputs: Vec<(String, Vec<u8>)> = vec![];
    for cut in [1, 2, 10, der.len() / 3, der.len() / 2, der.len() - 1] {
        inputs.push((format!("DER cut at {cut}"), der[..cut].to_vec()));
    }
    inputs.push((
        "clear-signed without its signature part".into(),
        clear[..clear.len() / 2].to_vec(),
    ));
    let mut rng_state = 0x2545_f491_4f6c_dd1du64;
    let garbage: Vec<u8> = (0..4096)
        .map(|_| {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            rng_state as u8
        })
        .collect();
    inputs.push(("random bytes".into(), garbage.clone()));
    inputs.push((
        "random bytes after a SEQUENCE tag".into(),
        [&[0x30, 0x82, 0x10, 0x00][..], &garbage].concat(),
    ));
    inputs.push(("empty".into(), vec![]));
    inputs.push(("plain text".into(), sample_entity("not signed at all")));
    inputs.push((
        "an envelope".into(),
        mime::pkcs7_mime("enveloped-data", &[0x30, 0x03, 0x02, 0x01, 0x00]),
    ));
    for (what, input) in inputs {
        let err = verify(&agent, &input).expect_err(&what);
        assert_eq!(err.code(), Some(ErrorCode::BadMessage), "{what}: {err}");
        assert!(
            matches!(&err, ClientError::Agent(b) if b.message.len() > 10),
            "{what}: the error names no problem: {err}"
        );
    }
    let err = verify(&agent, &sample_entity("x")).unwrap_err();
    assert!(err.to_string().contains("not a signed message"), "{err}");

    // The agent is still there and still verifies.
    assert_valid(&verify(&agent, &der).unwrap(), 1, "after the garbage");
}

#[test]
fn too_many_signers_is_a_limit() {
    let dir = tempdir();
    let agent = verifier(dir.path(), "disable_crl_check = true");
    let der = openssl_sign(
        dir.path(),
        &[key("alice-sign-ec")],
        &["-nodetach", "-outform", "DER"],
    );
    let many = edit_signed_data(&der, |sd| {
        let one = sd.signer_infos.0.iter().next().unwrap().clone();
        let mut v = vec![];
        for n in 0..=smime_agent::smime::verify::MAX_SIGNERS {
            let mut si = one.clone();
            // Distinct entries (a SET OF).
            si.signature = der::asn1::OctetString::new(vec![n as u8; 8]).unwrap();
            v.push(si);
        }
        sd.signer_infos = cms::signed_data::SignerInfos::try_from(v).unwrap();
    });
    let err = verify(&agent, &many).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::LimitExceeded), "{err}");
}

#[test]
fn a_signed_message_inside_a_signed_message_is_two_layers() {
    let dir = tempdir();
    let agent = verifier(dir.path(), "disable_crl_check = true");
    let inner = openssl_sign(dir.path(), &[key("alice-sign-ec")], &[]);
    let inner_file = write_file(dir.path(), "inner.eml", &inner);
    let outer = dir.path().join("outer.eml");
    run(Command::new("openssl")
        .args(["cms", "-sign", "-nodetach", "-binary", "-in"])
        .arg(&inner_file)
        .arg("-signer")
        .arg(pki_file("bob-dual-rsa.pem"))
        .arg("-inkey")
        .arg(pki_file("bob-dual-rsa.key.pem"))
        .arg("-out")
        .arg(&outer));
    let r = verify(&agent, &std::fs::read(&outer).unwrap()).unwrap();
    assert_eq!(r.status, VerifyStatus::Valid, "{}", pretty(&r));
    assert_eq!(r.layers.len(), 2);
    assert_eq!(
        r.layers[0].signers[0].signer.as_ref().unwrap().emails,
        ["bob@example.org"]
    );
    assert_eq!(
        r.layers[1].signers[0].signer.as_ref().unwrap().emails,
        ["alice@example.org"]
    );
    assert_eq!(mime::canonicalize(&r.content.0), MSG);
}

// ---------------------------------------------------------------------------------------
// The signer's certificate
// ---------------------------------------------------------------------------------------

#[test]
fn expired_revoked_and_untrusted_signers_have_valid_signatures_and_invalid_certificates() {
    let dir = tempdir();
    let agent = verifier(dir.path(), "");

    let expired = openssl_sign(dir.path(), &[key("alice-expired")], &[]);
    let r = verify(&agent, &expired).unwrap();
    let s = &r.layers[0].signers[0];
    assert_eq!(s.signature.status, SignatureStatus::Valid, "{}", pretty(&r));
    assert_eq!(s.certificate.status, CertificateStatus::Invalid);
    assert_eq!(s.certificate.reasons[0].code, "expired");
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("outside the certificate's validity")),
        "{:?}",
        s.warnings
    );
    assert_eq!(r.status, VerifyStatus::Invalid);

    // Revoked, by CRLs the message carries (no network needed).
    let der = openssl_sign(
        dir.path(),
        &[key("alice-sign-rsa")],
        &["-nodetach", "-outform", "DER"],
    );
    let crls = [
        make_crl(pki(), "ca", &["alice-sign-rsa"], 86400),
        make_crl(pki(), "root", &[], 86400),
    ];
    let with_crls = edit_signed_data(&der, |sd| {
        let list = crls
            .iter()
            .map(|c| {
                cms::revocation::RevocationInfoChoice::Crl(
                    x509_cert::crl::CertificateList::from_der(c).unwrap(),
                )
            })
            .collect::<Vec<_>>();
        sd.crls = Some(cms::revocation::RevocationInfoChoices(
            der::asn1::SetOfVec::try_from(list).unwrap(),
        ));
    });
    let r = verify(&agent, &with_crls).unwrap();
    let s = &r.layers[0].signers[0];
    assert_eq!(s.signature.status, SignatureStatus::Valid, "{}", pretty(&r));
    assert_eq!(s.certificate.status, CertificateStatus::Invalid);
    assert_eq!(s.certificate.reasons[0].code, "revoked", "{}", pretty(&r));
    assert_eq!(
        s.certificate.revocation.as_ref().map(|x| x.status.as_str()),
        Some("revoked")
    );

    // Untrusted: a self-signed certificate no anchor vouches for.
    let self_signed = dir.path().join("self.pem");
    let self_key = dir.path().join("self.key.pem");
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=Mallory/emailAddress=mallory@example.org",
        ])
        .arg("-keyout")
        .arg(&self_key)
        .arg("-out")
        .arg(&self_signed));
    let signed = openssl_sign(dir.path(), &[(self_signed, self_key)], &[]);
    let r = verify(&agent, &signed).unwrap();
    let s = &r.layers[0].signers[0];
    assert_eq!(s.signature.status, SignatureStatus::Valid);
    assert_eq!(s.certificate.status, CertificateStatus::Invalid);
    assert_eq!(s.certificate.reasons[0].code, "no_trusted_root");

    // None of them became a contact.
    assert!(
        std::fs::read_dir(dir.path().join("contacts"))
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "an invalid signer was kept as a contact"
    );
}

#[test]
fn validation_event_follows_the_response_and_a_valid_signer_becomes_a_contact() {
    let dir = tempdir();
    let agent = verifier(dir.path(), "disable_crl_check = true");
    let signed = openssl_sign(dir.path(), &[key("alice-sign-ec")], &[]);
    let mut c = BlockingClient::connect(&agent.socket, hello(false)).unwrap();
    let mut early = vec![];
    let value = c
        .call(
            Op::Verify(VerifyParams {
                content: signed.clone().into(),
                validation: ValidationMode::Event,
                ..Default::default()
            }),
            &mut |ev| {
                early.push(format!("{ev:?}"));
                EventReply::Ignore
            },
        )
        .unwrap();
    assert!(
        early.is_empty(),
        "an event came before the response: {early:?}"
    );
    let r: VerifyResult = serde_json::from_value(value).unwrap();
    assert_eq!(r.status, VerifyStatus::Pending, "{}", pretty(&r));
    let s = &r.layers[0].signers[0];
    assert_eq!(s.signature.status, SignatureStatus::Valid);
    assert_eq!(s.certificate.status, CertificateStatus::Pending);
    let sha256 = s.signer.as_ref().unwrap().sha256.clone();

    let Event::ValidationDone(done) = c.next_event().unwrap() else {
        panic!("expected validation_done");
    };
    // hello was request 1 on this connection, verify request 2.
    assert_eq!(done.request, 2u64.into(), "the verify request's id");
    assert_eq!(done.status, VerifyStatus::Valid);
    assert_eq!(done.signers.len(), 1);
    assert_eq!((done.signers[0].layer, done.signers[0].index), (0, 0));
    assert_eq!(done.signers[0].certificate.status, CertificateStatus::Valid);
    assert!(done.signers[0].certificate.added_to_contacts);

    // Alice is in the contacts store now, under her certificate's fingerprint.
    let kept = dir.path().join("contacts").join(format!("{sha256}.der"));
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        std::fs::read(pki_file("alice-sign-ec.der")).unwrap()
    );
    // Seen again: valid, not added twice.
    let r = verify(&agent, &signed).unwrap();
    assert_valid(&r, 1, "again");
    assert!(!r.layers[0].signers[0].certificate.added_to_contacts);
}

#[test]
fn the_cli_exits_zero_only_when_everything_is_valid() {
    let dir = tempdir();
    let agent = verifier(dir.path(), "disable_crl_check = true");
    let good = write_file(
        dir.path(),
        "good.eml",
        &openssl_sign(dir.path(), &[key("alice-sign-rsa")], &[]),
    );
    let out = dir.path().join("content.txt");
    let o = agent
        .cli()
        .args(["verify", "--in"])
        .arg(&good)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("good signature") && stderr.contains("verified"),
        "{stderr}"
    );
    assert_eq!(mime::canonicalize(&std::fs::read(&out).unwrap()), MSG);

    // An expired signer: exit 1, the reason on stderr, the content still written.
    let expired = write_file(
        dir.path(),
        "expired.eml",
        &openssl_sign(dir.path(), &[key("alice-expired")], &[]),
    );
    let o = agent
        .cli()
        .args(["verify", "--in"])
        .arg(&expired)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("NOT verified") && stderr.contains("expired"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("pay 10 EUR"));

    // Tampered: exit 1, no content.
    let tampered = String::from_utf8(std::fs::read(&good).unwrap())
        .unwrap()
        .replace("10 EUR", "99 EUR");
    let mut child = agent
        .cli()
        .args(["verify", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(tampered.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let r: VerifyResult = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(signature_code(&r).as_deref(), Some("digest_mismatch"));

    // Not signed: the agent's error, exit 1.
    let plain = write_file(dir.path(), "plain.eml", &sample_entity("hello"));
    let o = agent
        .cli()
        .args(["verify", "--in"])
        .arg(&plain)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad_message"));
}

// ---------------------------------------------------------------------------------------
// gpgsm and NSS, both ways
// ---------------------------------------------------------------------------------------

/// The NSS nickname of Alice's key (NSS names it by its subject).
const ALICE_NSS: &str = "Alice Example - smime-agent tests";

/// An agent with Alice's signing key `name` on a SoftHSM token; it also verifies.
fn signing_agent(dir: &Path, name: &str) -> (SoftHsm, Agent) {
    softhsm_agent(
        &dir.join(format!("signer-{name}")),
        "alice",
        &[name],
        AgentSpec {
            revocation: "disable_crl_check = true".into(),
            ..Default::default()
        },
    )
}

/// Our signature of MSG, and its parts: (MIME, signed content, CMS DER).
async fn our_signature(agent: &Agent, format: SignFormat) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let client = agent.client().await;
    let (res, _) = sign_answering(
        &client,
        "alice@example.org",
        MSG.to_vec(),
        Some(format),
        PIN,
    )
    .await;
    let signed = res.expect("sign").mime.0;
    match mime::read(&signed).unwrap() {
        Smime::ClearSigned {
            signed: part,
            signature,
        } => (signed, part, signature),
        Smime::SignedData(der) => (signed, MSG.to_vec(), der),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpgsm_and_the_agent_verify_each_others_rsa_signatures() {
    let dir = tempdir();
    let g = Gpgsm::new(dir.path(), &["alice-sign-rsa"], &[]);
    let (_hsm, agent) = signing_agent(dir.path(), "alice-sign-rsa");
    let client = agent.client().await;
    let verify_async = |content: Vec<u8>| {
        client.verify(VerifyParams {
            content: content.into(),
            validation: ValidationMode::Wait,
            ..Default::default()
        })
    };

    // gpgsm signs, detached: framed as multipart/signed, the agent verifies.
    let data = write_file(dir.path(), "msg.txt", MSG);
    let sig = dir.path().join("gpgsm.p7s");
    g.sign("alice@example.org", &data, &sig, true);
    let clear = mime::clear_signed(MSG, &std::fs::read(&sig).unwrap(), "sha-256").unwrap();
    let r = verify_async(clear).await.unwrap();
    assert_valid(&r, 1, "gpgsm clear-signed");
    assert_eq!(r.layers[0].format, SignFormat::Clear);

    // gpgsm signs, opaque (BER, armoured as SIGNED MESSAGE): as it comes, and as MIME.
    let opaque = dir.path().join("gpgsm.pem");
    g.sign("alice@example.org", &data, &opaque, false);
    let armoured = std::fs::read(&opaque).unwrap();
    assert!(String::from_utf8_lossy(&armoured).contains("BEGIN SIGNED MESSAGE"));
    assert_valid(
        &verify_async(armoured.clone()).await.unwrap(),
        1,
        "gpgsm opaque, armoured",
    );

    // The agent signs; gpgsm verifies, clear (over the signed part) and opaque.
    let (_, part, cms) = our_signature(&agent, SignFormat::Clear).await;
    let part_file = write_file(dir.path(), "ours-part.txt", &part);
    let cms_file = write_file(dir.path(), "ours.p7s", &cms);
    let (ok, err) = g.verify(&cms_file, Some(&part_file));
    assert!(ok, "gpgsm rejected our clear signature: {err}");
    let (_, _, cms) = our_signature(&agent, SignFormat::Opaque).await;
    let cms_file = write_file(dir.path(), "ours.p7m", &cms);
    let (ok, err) = g.verify(&cms_file, None);
    assert!(ok, "gpgsm rejected our opaque signature: {err}");

    // And gpgsm notices when our signed part is changed.
    let (_, part, cms) = our_signature(&agent, SignFormat::Clear).await;
    let cms_file = write_file(dir.path(), "ours2.p7s", &cms);
    let bad = write_file(
        dir.path(),
        "ours-part-bad.txt",
        &String::from_utf8_lossy(&part)
            .replace("10 EUR", "99 EUR")
            .into_bytes(),
    );
    let (ok, _) = g.verify(&cms_file, Some(&bad));
    assert!(
        !ok,
        "gpgsm accepted a changed part: the check proves nothing"
    );
}

/// `cmsutil` signs MSG with the only key of `nss`, detached and opaque (BER); the agent
/// verifies both, and names `algorithm` as the signature algorithm.
async fn nss_signatures_verify(
    nss: &Nss,
    client: &smime_agent_proto::client::Client,
    dir: &Path,
    algorithm: &str,
) {
    let data = write_file(dir, &format!("msg-{}.txt", rand_suffix()), MSG);
    let verify = |content: Vec<u8>| {
        client.verify(VerifyParams {
            content: content.into(),
            validation: ValidationMode::Wait,
            ..Default::default()
        })
    };
    let det = dir.join(format!("nss-{}.p7s", rand_suffix()));
    nss.sign(ALICE_NSS, &data, &det, true);
    let clear = mime::clear_signed(MSG, &std::fs::read(&det).unwrap(), "sha-256").unwrap();
    let r = verify(clear).await.unwrap();
    assert_valid(&r, 1, &format!("NSS {algorithm} detached"));
    assert_eq!(r.layers[0].signers[0].signature_algorithm, algorithm);
    assert_eq!(r.layers[0].signers[0].digest_algorithm, "sha256");
    let opq = dir.join(format!("nss-{}.p7m", rand_suffix()));
    nss.sign(ALICE_NSS, &data, &opq, false);
    let framed = mime::pkcs7_mime("signed-data", &std::fs::read(&opq).unwrap());
    let r = verify(framed).await.unwrap();
    assert_valid(&r, 1, &format!("NSS {algorithm} opaque"));
    assert_eq!(r.layers[0].format, SignFormat::Opaque);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nss_ecdsa_signatures_verify_in_the_agent() {
    // A database of its own: NSS gives all of Alice's certificates one nickname, so only
    // her EC key may be in it for cmsutil to sign with ECDSA.
    let dir = tempdir();
    let nss = Nss::new(dir.path(), &["alice-sign-ec"], &[]);
    let agent = verifier(dir.path(), "disable_crl_check = true");
    nss_signatures_verify(&nss, &agent.client().await, dir.path(), "ecdsa").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nss_and_the_agent_verify_each_others_signatures() {
    let dir = tempdir();
    let nss = Nss::new(dir.path(), &["alice-sign-rsa"], &[]);
    let (_hsm, agent) = signing_agent(dir.path(), "alice-sign-rsa");
    let client = agent.client().await;
    // NSS signs, detached and opaque (BER): the agent verifies.
    nss_signatures_verify(&nss, &client, dir.path(), "rsa-pkcs1").await;

    // The agent signs with RSA, then (another token) ECDSA P-256: NSS verifies both forms.
    let (_hsm_ec, agent_ec) = signing_agent(dir.path(), "alice-sign-ec");
    for (what, a) in [("RSA", &agent), ("ECDSA", &agent_ec)] {
        let (_, part, cms) = our_signature(a, SignFormat::Clear).await;
        let part_file = write_file(dir.path(), &format!("part-{what}.txt"), &part);
        let cms_file = write_file(dir.path(), &format!("ours-{what}.p7s"), &cms);
        let (ok, report) = nss.verify(&cms_file, Some(&part_file));
        assert!(ok, "NSS rejected our clear {what} signature: {report}");
        let bad = write_file(
            dir.path(),
            &format!("bad-{what}.txt"),
            &String::from_utf8_lossy(&part)
                .replace("10 EUR", "99 EUR")
                .into_bytes(),
        );
        let (ok, report) = nss.verify(&cms_file, Some(&bad));
        assert!(!ok, "NSS accepted a changed part ({what}): {report}");

        let (_, _, cms) = our_signature(a, SignFormat::Opaque).await;
        let cms_file = write_file(dir.path(), &format!("ours-{what}.p7m"), &cms);
        let (ok, report) = nss.verify(&cms_file, None);
        assert!(ok, "NSS rejected our opaque {what} signature: {report}");
    }
}

// ---------------------------------------------------------------------------------------
// The message's From, Sender and Date against its signers (RFC 8550 section 3)
// ---------------------------------------------------------------------------------------

/// Header fields put before a signed entity, making it a whole message.
fn with_fields(fields: &str, signed: &[u8]) -> Vec<u8> {
    let mut m = fields.replace('\n', "\r\n").into_bytes();
    m.extend_from_slice(signed);
    m
}

/// A Date header field value `offset_secs` from now (RFC 5322 form, by GNU date).
fn date_from_now(offset_secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let out = Command::new("date")
        .args(["-u", "-R", "-d"])
        .arg(format!("@{}", now + offset_secs))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Bob's clear signature over MSG, as OpenSSL writes it (an entity without From).
fn bob_signed(dir: &Path) -> Vec<u8> {
    openssl_sign(dir, &[key("bob-dual-rsa")], &[])
}

fn only_signer(r: &VerifyResult) -> &smime_agent_proto::SignerResult {
    assert_eq!(r.layers.len(), 1, "{}", pretty(r));
    &r.layers[0].signers[0]
}

#[test]
fn mail_from_carol_signed_by_bob_is_invalid_and_names_both_addresses() {
    use smime_agent_proto::SenderStatus;
    let dir = tempdir();
    let agent = verifier(dir.path(), "disable_crl_check = true");
    let signed = bob_signed(dir.path());
    let forged = with_fields(
        "From: Carol <carol@example.org>\nTo: alice@example.org\nSubject: pay Bob\n",
        &signed,
    );
    let r = verify(&agent, &forged).unwrap();
    let s = only_signer(&r);
    // The signature and Bob's certificate hold; the mail claims an author Bob is not.
    assert_eq!(s.signature.status, SignatureStatus::Valid, "{}", pretty(&r));
    assert_eq!(
        s.certificate.status,
        CertificateStatus::Valid,
        "{}",
        pretty(&r)
    );
    let m = s.sender.as_ref().expect("a sender verdict");
    assert_eq!(m.status, SenderStatus::Mismatch);
    assert_eq!(m.addresses, ["carol@example.org"]);
    let reason = m.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("carol@example.org") && reason.contains("bob@example.org"),
        "{reason}"
    );
    assert_eq!(r.status, VerifyStatus::Invalid, "{}", pretty(&r));

    // A Sender naming Bob is enough (RFC 8550: From or Sender).
    let on_behalf = with_fields(
        "From: carol@example.org\nSender: bob@example.org\n",
        &signed,
    );
    let r = verify(&agent, &on_behalf).unwrap();
    assert_eq!(r.status, VerifyStatus::Valid, "{}", pretty(&r));
}

#[test]
fn bobs_mail_from_bob_stays_valid_and_a_bare_entity_has_no_sender_verdict() {
    use smime_agent_proto::SenderStatus;
    let dir = tempdir();
    let agent = verifier(dir.path(), "disable_crl_check = true");
    let signed = bob_signed(dir.path());
    // The address compared case-insensitively.
    let mail = with_fields("From: Bob Example <Bob@Example.ORG>\n", &signed);
    let r = verify(&agent, &mail).unwrap();
    assert_eq!(r.status, VerifyStatus::Valid, "{}", pretty(&r));
    let m = only_signer(&r).sender.as_ref().expect("a sender verdict");
    assert_eq!(m.status, SenderStatus::Match);
    assert_eq!(m.matched.as_deref(), Some("bob@example.org"));

    // What NeoMutt hands over: the signed entity alone, nothing to compare.
    let r = verify(&agent, &signed).unwrap();
    assert_eq!(r.status, VerifyStatus::Valid, "{}", pretty(&r));
    assert!(only_signer(&r).sender.is_none(), "{}", pretty(&r));
}

#[test]
fn a_signed_message_inside_a_signed_message_answers_to_its_own_from() {
    use smime_agent_proto::SenderStatus;
    let dir = tempdir();
    let agent = verifier(dir.path(), "disable_crl_check = true");
    // Alice's whole message (her From), signed by her, then signed by Bob in a message of his.
    let inner = with_fields(
        "From: alice@example.org\n",
        &openssl_sign(dir.path(), &[key("alice-sign-ec")], &[]),
    );
    let inner_file = write_file(dir.path(), "inner.eml", &inner);
    let outer = dir.path().join("outer.eml");
    run(Command::new("openssl")
        .args(["cms", "-sign", "-nodetach", "-binary", "-in"])
        .arg(&inner_file)
        .arg("-signer")
        .arg(pki_file("bob-dual-rsa.pem"))
        .arg("-inkey")
        .arg(pki_file("bob-dual-rsa.key.pem"))
        .arg("-out")
        .arg(&outer));
    let outer = std::fs::read(&outer).unwrap();
    let statuses = |r: &VerifyResult| -> Vec<Option<SenderStatus>> {
        r.layers
            .iter()
            .map(|l| l.signers[0].sender.as_ref().map(|m| m.status))
            .collect()
    };
    let r = verify(&agent, &with_fields("From: bob@example.org\n", &outer)).unwrap();
    assert_eq!(r.status, VerifyStatus::Valid, "{}", pretty(&r));
    assert_eq!(
        statuses(&r),
        [Some(SenderStatus::Match), Some(SenderStatus::Match)]
    );
    // The outer message claimed to be Alice's: Bob's outer signature does not fit it, while
    // the inner layer still answers to Alice's own From.
    let r = verify(&agent, &with_fields("From: alice@example.org\n", &outer)).unwrap();
    assert_eq!(r.status, VerifyStatus::Invalid, "{}", pretty(&r));
    assert_eq!(
        statuses(&r),
        [Some(SenderStatus::Mismatch), Some(SenderStatus::Match)]
    );
}

#[test]
fn a_date_six_hours_from_the_signing_time_is_a_warning() {
    let dir = tempdir();
    let agent = verifier(dir.path(), "disable_crl_check = true");
    let signed = bob_signed(dir.path());
    let late = with_fields(
        &format!(
            "From: bob@example.org\nDate: {}\n",
            date_from_now(-6 * 3600)
        ),
        &signed,
    );
    let r = verify(&agent, &late).unwrap();
    let s = only_signer(&r);
    let offset = s.date_offset_secs.expect("the distance to Date");
    assert!(
        (6 * 3600 - 120..=6 * 3600 + 120).contains(&offset),
        "{offset}"
    );
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("Date") && w.contains("6 h")),
        "{}",
        pretty(&r)
    );
    // A warning, not a verdict.
    assert_eq!(r.status, VerifyStatus::Valid, "{}", pretty(&r));

    // A Date a minute off: reported, no warning.
    let timely = with_fields(
        &format!("From: bob@example.org\nDate: {}\n", date_from_now(60)),
        &signed,
    );
    let r = verify(&agent, &timely).unwrap();
    let s = only_signer(&r);
    assert!(
        s.date_offset_secs.is_some_and(|o| o.abs() < 300),
        "{}",
        pretty(&r)
    );
    assert!(s.warnings.is_empty(), "{}", pretty(&r));

    // The bound is the configuration's.
    let lenient = Agent::start(
        &dir.path().join("lenient"),
        AgentSpec {
            trust: Some(trust_for(pki())),
            revocation: "disable_crl_check = true".into(),
            extra_config: "[policy]\nsigning_time_tolerance_secs = 86400\n".into(),
            ..Default::default()
        },
    );
    let r = verify(&lenient, &late).unwrap();
    assert!(only_signer(&r).warnings.is_empty(), "{}", pretty(&r));
}

#[test]
fn the_cli_says_which_address_was_expected_and_which_the_certificate_has_and_exits_1() {
    let dir = tempdir();
    let agent = verifier(dir.path(), "disable_crl_check = true");
    // Bob's signature under the From `from`, through `smime-agent verify`: exit code, stderr.
    let cli_verify = |from: &str| {
        let mail = write_file(
            dir.path(),
            "mail.eml",
            &with_fields(&format!("From: {from}\n"), &bob_signed(dir.path())),
        );
        let o = agent
            .cli()
            .args(["verify", "--in"])
            .arg(&mail)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, stderr) = cli_verify("carol@example.org");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("NOT verified")
            && stderr.contains("SENDER MISMATCH: the message is from carol@example.org, the certificate has bob@example.org"),
        "{stderr}"
    );
    let (code, stderr) = cli_verify("bob@example.org");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("bob@example.org matches"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decrypt_holds_a_signed_then_encrypted_message_against_its_from() {
    use smime_agent_proto::{MessageLayer, SenderStatus};
    let dir = tempdir();
    let (_hsm, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &["alice-enc-rsa"],
        AgentSpec {
            revocation: "disable_crl_check = true".into(),
            ..Default::default()
        },
    );
    // Bob signs, OpenSSL encrypts to Alice; the From is on the envelope's message.
    let signed = write_file(dir.path(), "signed.eml", &bob_signed(dir.path()));
    let out = Command::new("openssl")
        .args(["smime", "-encrypt", "-aes256", "-in"])
        .arg(&signed)
        .arg(pki_file("alice-enc-rsa.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let encrypted = out.stdout;
    let c = agent.client().await;
    let sender_of = |r: &smime_agent_proto::DecryptResult| {
        r.layers
            .iter()
            .find_map(|l| match l {
                MessageLayer::Signed(s) => s.signers[0].sender.clone(),
                MessageLayer::Encrypted(_) => None,
            })
            .expect("a sender verdict on the inner signature")
    };
    let forged = with_fields("From: carol@example.org\n", &encrypted);
    let r = decrypt_answering(&c, forged, PIN).await.expect("decrypt");
    assert_eq!(layer_kinds(&r.layers), ["encrypted", "signed"]);
    let m = sender_of(&r);
    assert_eq!(m.status, SenderStatus::Mismatch, "{:#?}", r.layers);
    assert_eq!(m.addresses, ["carol@example.org"]);
    assert_eq!(r.signatures, Some(VerifyStatus::Invalid), "{:#?}", r.layers);

    let honest = with_fields("From: bob@example.org\n", &encrypted);
    let c = agent.client().await;
    let r = decrypt_answering(&c, honest, PIN).await.expect("decrypt");
    assert_eq!(sender_of(&r).status, SenderStatus::Match);
    assert_eq!(r.signatures, Some(VerifyStatus::Valid), "{:#?}", r.layers);
}

/// `verify` judges signers by the same S/MIME profile as `validate`: a TLS server
/// certificate, and a CA certificate, that chain to the trusted root sign nothing.
#[test]
fn a_signer_with_a_tls_or_ca_certificate_is_not_valid() {
    let dir = tempdir();
    let agent = verifier(dir.path(), "disable_crl_check = true");
    for (name, code) in [
        ("leaf-eku-server", "extended_key_usage"),
        ("leaf-ca-true", "ca_certificate"),
    ] {
        let der = openssl_sign(
            dir.path(),
            &[key(name)],
            &["-nodetach", "-outform", "DER", "-noverify"],
        );
        let r = verify(&agent, &der).unwrap();
        let s = &r.layers[0].signers[0];
        assert_eq!(s.signature.status, SignatureStatus::Valid, "{}", pretty(&r));
        assert_eq!(s.certificate.status, CertificateStatus::Invalid, "{name}");
        assert!(
            s.certificate.reasons.iter().any(|x| x.code == code),
            "{name}: {}",
            pretty(&r)
        );
        assert!(!s.certificate.added_to_contacts);
    }
}
