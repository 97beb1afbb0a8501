//! The card on its own, without a reader: key files in every accepted format, results
//! checked with OpenSSL, and random APDUs against a card that holds keys.

#[path = "../../common/card_crate.rs"]
mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{CARD_PIN as PIN, openssl_dgst_verifies, path_str, public_key_from, run, tempdir};
use virtual_piv_card::{CardConfig, CardError, PivCard, PivSlot, SlotSpec};

/// A key (PKCS#8 PEM from `openssl genpkey`) and a self-signed certificate for it.
fn key_and_cert(dir: &Path, name: &str, genpkey: &[&str]) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key.pem"));
    let cert = dir.join(format!("{name}.pem"));
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey);
    args.extend_from_slice(&["-out", path_str(&key)]);
    run("openssl", &args);
    run(
        "openssl",
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            path_str(&key),
            "-subj",
            &format!("/CN={name}"),
            "-days",
            "2",
            "-out",
            path_str(&cert),
        ],
    );
    (key, cert)
}

fn card(slots: Vec<SlotSpec>) -> Result<PivCard, CardError> {
    PivCard::new(&CardConfig::new("apdu-test", PIN, slots))
}

fn verify_pin(card: &mut PivCard) {
    let mut apdu = vec![0x00, 0x20, 0x00, 0x80, 0x08];
    apdu.extend_from_slice(PIN.as_bytes());
    apdu.resize(13, 0xFF);
    assert_eq!(card.process(&apdu), [0x90, 0x00]);
}

/// GENERAL AUTHENTICATE as OpenSC sends it (chained in 255-byte pieces), with the whole
/// response collected through GET RESPONSE. Returns (data, final status word).
fn general_authenticate(card: &mut PivCard, alg: u8, key: u8, template: &[u8]) -> (Vec<u8>, u16) {
    let chunks: Vec<&[u8]> = template.chunks(255).collect();
    let mut response = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let mut apdu = vec![
            if last { 0x00 } else { 0x10 },
            0x87,
            alg,
            key,
            chunk.len() as u8,
        ];
        apdu.extend_from_slice(chunk);
        if last {
            apdu.push(0x00);
        }
        response = card.process(&apdu);
        assert!(response.len() <= 258, "a response over 256 bytes");
        if !last {
            assert_eq!(response, [0x90, 0x00], "chained part {i}");
        }
    }
    let mut data = Vec::new();
    loop {
        let (body, sw) = response.split_at(response.len() - 2);
        data.extend_from_slice(body);
        let sw = u16::from_be_bytes([sw[0], sw[1]]);
        if sw & 0xFF00 != 0x6100 {
            return (data, sw);
        }
        response = card.process(&[0x00, 0xC0, 0x00, 0x00, sw as u8]);
        assert!(response.len() <= 258, "a response over 256 bytes");
    }
}

/// `7C { 82 00, 81 challenge }` and the value of 82 in the answer.
fn sign(card: &mut PivCard, alg: u8, key: u8, challenge: &[u8]) -> Vec<u8> {
    let mut inner = vec![0x82, 0x00];
    inner.extend_from_slice(&tlv(0x81, challenge));
    let (data, sw) = general_authenticate(card, alg, key, &tlv(0x7C, &inner));
    assert_eq!(sw, 0x9000, "GENERAL AUTHENTICATE failed");
    let inner = strip_tlv(0x7C, &data);
    strip_tlv(0x82, inner).to_vec()
}

fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match value.len() {
        n @ 0..=0x7F => out.push(n as u8),
        n @ 0x80..=0xFF => out.extend_from_slice(&[0x81, n as u8]),
        n => out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(value);
    out
}

fn strip_tlv(tag: u8, data: &[u8]) -> &[u8] {
    assert_eq!(data[0], tag);
    let (len, skip) = match data[1] {
        n @ 0..=0x7F => (n as usize, 2),
        0x81 => (data[2] as usize, 3),
        0x82 => (((data[2] as usize) << 8) | data[3] as usize, 4),
        other => panic!("length byte {other:02X}"),
    };
    assert_eq!(data.len(), skip + len, "trailing bytes after tag {tag:02X}");
    &data[skip..]
}

const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

fn sha256(dir: &Path, data: &Path) -> Vec<u8> {
    let out = dir.join("hash");
    run(
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-binary",
            "-out",
            path_str(&out),
            path_str(data),
        ],
    );
    fs::read(out).unwrap()
}

fn openssl_verifies(dir: &Path, cert: &Path, data: &Path, sig: &[u8]) -> bool {
    let pubkey = dir.join("pub.pem");
    let sig_path = dir.join("sig");
    fs::write(&sig_path, sig).unwrap();
    public_key_from(cert, &pubkey);
    openssl_dgst_verifies("-sha256", &pubkey, &[], &sig_path, data)
}

#[test]
fn keys_load_from_pkcs8_pkcs1_and_sec1_pem_and_der_and_sign_as_openssl_expects() {
    let work = tempdir();
    let dir = work.path();
    let data = dir.join("data");
    fs::write(&data, b"signed without a reader").unwrap();
    let hash = sha256(dir, &data);

    let (rsa_key, rsa_cert) = key_and_cert(
        dir,
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let (ec_key, ec_cert) = key_and_cert(
        dir,
        "ec",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let rsa_cert_der = dir.join("rsa.der");
    run(
        "openssl",
        &[
            "x509",
            "-in",
            path_str(&rsa_cert),
            "-outform",
            "DER",
            "-out",
            path_str(&rsa_cert_der),
        ],
    );

    let convert = |input: &Path, tool: &str, out: &str, extra: &[&str]| -> PathBuf {
        let path = dir.join(out);
        let mut args = vec![tool, "-in", path_str(input)];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-out", path_str(&path)]);
        run("openssl", &args);
        path
    };
    let rsa_keys = [
        rsa_key.clone(),
        convert(&rsa_key, "pkey", "rsa.p8.der", &["-outform", "DER"]),
        convert(&rsa_key, "rsa", "rsa.p1.pem", &["-traditional"]),
        convert(
            &rsa_key,
            "rsa",
            "rsa.p1.der",
            &["-traditional", "-outform", "DER"],
        ),
    ];
    let ec_keys = [
        ec_key.clone(),
        convert(&ec_key, "pkey", "ec.p8.der", &["-outform", "DER"]),
        convert(&ec_key, "ec", "ec.sec1.pem", &[]),
        convert(&ec_key, "ec", "ec.sec1.der", &["-outform", "DER"]),
    ];
    for (rsa, ec) in rsa_keys.iter().zip(&ec_keys) {
        for cert in [&rsa_cert, &rsa_cert_der] {
            let mut card = card(vec![
                SlotSpec::new(PivSlot::Authentication, rsa, cert),
                SlotSpec::new(PivSlot::Signature, ec, &ec_cert),
            ])
            .unwrap_or_else(|e| panic!("{} / {}: {e}", rsa.display(), cert.display()));
            verify_pin(&mut card);

            // RSA: the card does m^d; PKCS#1 v1.5 padding is the host's job.
            let mut block = vec![0x00, 0x01];
            block.resize(256 - SHA256_DIGEST_INFO.len() - hash.len() - 1, 0xFF);
            block.push(0x00);
            block.extend_from_slice(&SHA256_DIGEST_INFO);
            block.extend_from_slice(&hash);
            let sig = sign(&mut card, 0x07, 0x9A, &block);
            assert!(
                openssl_verifies(dir, &rsa_cert, &data, &sig),
                "{}",
                rsa.display()
            );

            let sig = sign(&mut card, 0x11, 0x9C, &hash);
            assert!(
                openssl_verifies(dir, &ec_cert, &data, &sig),
                "{}",
                ec.display()
            );
        }
    }
}

#[test]
fn a_certificate_for_another_key_is_refused() {
    let work = tempdir();
    let (key, _) = key_and_cert(
        work.path(),
        "a",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let (_, other_cert) = key_and_cert(
        work.path(),
        "b",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let err = card(vec![SlotSpec::new(PivSlot::Signature, &key, &other_cert)]).err();
    assert!(
        matches!(err, Some(CardError::KeyMismatch { .. })),
        "{err:?}"
    );
}

#[test]
fn an_encrypted_key_is_refused_with_advice() {
    let work = tempdir();
    let (key, cert) = key_and_cert(
        work.path(),
        "a",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let encrypted = work.path().join("enc.pem");
    run(
        "openssl",
        &[
            "pkcs8",
            "-topk8",
            "-in",
            path_str(&key),
            "-v2",
            "aes256",
            "-passout",
            "pass:x",
            "-out",
            path_str(&encrypted),
        ],
    );
    let err = card(vec![SlotSpec::new(PivSlot::Signature, &encrypted, &cert)])
        .err()
        .expect("an encrypted key loads");
    assert!(err.to_string().contains("openssl pkey"), "{err}");
}

#[test]
fn random_general_authenticate_requests_get_status_words_not_panics() {
    let work = tempdir();
    let dir = work.path();
    let (rsa_key, rsa_cert) = key_and_cert(
        dir,
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let (ec_key, ec_cert) = key_and_cert(
        dir,
        "ec",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let mut card = card(vec![
        SlotSpec::new(PivSlot::Authentication, &rsa_key, &rsa_cert),
        SlotSpec::new(PivSlot::Signature, &ec_key, &ec_cert),
        SlotSpec::new(PivSlot::KeyManagement, &ec_key, &ec_cert),
    ])
    .unwrap();
    let mut state = 0x9E37_79B9u32;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    for _ in 0..3000 {
        if next() % 4 == 0 {
            verify_pin(&mut card);
        }
        let alg = [0x00, 0x06, 0x07, 0x11, 0x14, 0xFF][(next() % 6) as usize];
        let key = [0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x82][(next() % 6) as usize];
        let mut inner = Vec::new();
        for _ in 0..(next() % 3 + 1) {
            let tag = [0x80, 0x81, 0x82, 0x85, 0x7C][(next() % 5) as usize];
            // Mostly short values; now and then one of RSA size, which costs a private
            // operation.
            let len = match next() % 16 {
                0 => 256,
                1 => 65,
                2 => 0,
                _ => (next() % 40) as usize,
            };
            let mut value: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len == 65 {
                value[0] = 0x04;
            }
            inner.extend_from_slice(&tlv(tag, &value));
        }
        let mut template = tlv(0x7C, &inner);
        if next() % 8 == 0 {
            // Truncated or padded templates.
            let cut = (next() as usize) % (template.len() + 1);
            template.truncate(cut);
            template.extend((0..next() % 3).map(|_| next() as u8));
        }
        if template.is_empty() {
            continue;
        }
        let (data, sw) = general_authenticate(&mut card, alg, key, &template);
        assert!(
            sw == 0x9000 || data.is_empty(),
            "data with an error {sw:04X}"
        );
    }
}

#[test]
fn a_slow_card_asks_to_hold_exactly_the_answers_that_used_a_private_key() {
    let dir = tempdir();
    let (key, cert) = key_and_cert(
        dir.path(),
        "slow-ec",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let (rsa_key, rsa_cert) = key_and_cert(
        dir.path(),
        "slow-rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let delay = std::time::Duration::from_millis(1500);
    let mut config = CardConfig::new(
        "slow",
        PIN,
        vec![
            SlotSpec::new(PivSlot::CardAuthentication, &key, &cert),
            SlotSpec::new(PivSlot::Signature, &rsa_key, &rsa_cert),
        ],
    );
    config.op_delay = Some(delay);
    let mut card = PivCard::new(&config).unwrap();

    // 9E needs no PIN: a signature is held.
    sign(&mut card, 0x11, 0x9E, &[0x5A; 32]);
    assert_eq!(card.answer_delay(), Some(delay));
    // Reading a certificate, VERIFY, a refused signature: all at once.
    card.process(&[
        0x00, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x01, 0x00,
    ]);
    assert_eq!(card.answer_delay(), None);
    let mut refused = vec![0x82, 0x00];
    refused.extend_from_slice(&tlv(0x81, &[0x5A; 256]));
    let (_, sw) = general_authenticate(&mut card, 0x07, 0x9C, &tlv(0x7C, &refused));
    assert_eq!(sw, 0x6982, "9C without a PIN");
    assert_eq!(card.answer_delay(), None);
    verify_pin(&mut card);
    assert_eq!(card.answer_delay(), None);
    // A chained RSA operation: the parts go through at once, the last one is held.
    let mut digest_info = SHA256_DIGEST_INFO.to_vec();
    digest_info.extend_from_slice(&[0x11; 32]);
    let mut padded = vec![0x00, 0x01];
    padded.resize(256 - digest_info.len() - 1, 0xFF);
    padded.push(0x00);
    padded.extend_from_slice(&digest_info);
    let mut inner = vec![0x82, 0x00];
    inner.extend_from_slice(&tlv(0x81, &padded));
    let template = tlv(0x7C, &inner);
    let mut first = vec![0x10, 0x87, 0x07, 0x9C, 0xFF];
    first.extend_from_slice(&template[..255]);
    assert_eq!(card.process(&first), [0x90, 0x00]);
    assert_eq!(card.answer_delay(), None);
    let mut last = vec![0x00, 0x87, 0x07, 0x9C, (template.len() - 255) as u8];
    last.extend_from_slice(&template[255..]);
    last.push(0x00);
    let answer = card.process(&last);
    assert_eq!(
        answer[answer.len() - 2],
        0x61,
        "the signature follows in pieces"
    );
    assert_eq!(card.answer_delay(), Some(delay));
    // Fetching the rest of the answer is not another operation.
    card.process(&[0x00, 0xC0, 0x00, 0x00, 0x00]);
    assert_eq!(card.answer_delay(), None);
    // A PIN VERIFY is counted.
    assert_eq!(card.pin_verifies(), 1);
}
