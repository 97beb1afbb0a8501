//! RSA key transport that an attacker shaped, for the padding-oracle tests: envelopes to a
//! recipient whose encrypted content key was replaced by one with bad PKCS#1 v1.5 padding, a
//! well-padded wrong key, or a well-padded key of the wrong length; and a measurement of what
//! the agent answers to each and how long it takes.

use std::time::{Duration, Instant};

use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use smime_agent::alg::ContentAlgorithm;
use smime_agent::certs::CertFacts;
use smime_agent::smime::envelope::{self, EncryptTo, KeyUnwrap, RsaPadding};
use smime_agent_proto::client::{Client, ClientError};

use crate::common::{decrypt_answering, pki_file};
use der::Decode;

/// One kind of envelope, and the MIME entity that carries it.
pub struct Case {
    pub name: &'static str,
    pub mime: Vec<u8>,
}

fn rng() -> impl rsa::rand_core::CryptoRng {
    rsa::rand_core::UnwrapErr(getrandom::SysRng)
}

/// `m` raised to the public exponent: what a sender computes, before any padding rules.
fn raw_encrypt(key: &rsa::RsaPublicKey, em: &[u8]) -> Vec<u8> {
    let m = rsa::BoxedUint::from_be_slice(em, key.n_bits_precision()).unwrap();
    let c = rsa::hazmat::rsa_encrypt(key, &m).unwrap();
    let bytes = c.to_be_bytes();
    bytes[bytes.len() - key.size()..].to_vec()
}

/// A PKCS#1 v1.5 block type 2 of modulus length holding `key` (random non-zero PS).
fn padded(k: usize, key: &[u8]) -> Vec<u8> {
    let mut em = vec![0u8, 2];
    while em.len() < k - key.len() - 1 {
        let mut b = [0u8];
        getrandom::fill(&mut b).unwrap();
        if b[0] != 0 {
            em.push(b[0]);
        }
    }
    em.push(0);
    em.extend_from_slice(key);
    em
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    getrandom::fill(&mut v).unwrap();
    v
}

/// Envelopes of `content` (AES-256-CBC) to the PKI's RSA certificate `recipient`: the good
/// one, and the same envelope with its encrypted key replaced by each kind of bad one.
pub fn cases(recipient: &str, content: &[u8]) -> Vec<Case> {
    let der = std::fs::read(pki_file(&format!("{recipient}.der"))).unwrap();
    let facts = CertFacts::from_der(&der).unwrap();
    let good = envelope::encrypt(
        content,
        &[EncryptTo {
            cert: &facts,
            rsa_padding: RsaPadding::Pkcs1v15,
        }],
        ContentAlgorithm::Aes256Cbc,
    )
    .unwrap();
    let env = envelope::parse(&good).unwrap();
    let KeyUnwrap::RsaPkcs1 { encrypted_key } = &env.recipients[0].unwrap else {
        panic!("not an RSA PKCS#1 v1.5 recipient");
    };
    let cert = x509_cert::Certificate::from_der(&der).unwrap();
    let spki = cert.tbs_certificate().subject_public_key_info();
    let public =
        rsa::RsaPublicKey::from_public_key_der(&der::Encode::to_der(spki).unwrap()).unwrap();
    let k = public.size();
    assert_eq!(encrypted_key.len(), k);

    // Each replacement is as long as the original, so it can be swapped in place.
    let with_key = |c: Vec<u8>| {
        assert_eq!(c.len(), k);
        let at = good
            .windows(k)
            .position(|w| w == &encrypted_key[..])
            .expect("the encrypted key in the DER");
        let mut d = good.clone();
        d[at..at + k].copy_from_slice(&c);
        smime_agent::smime::mime::pkcs7_mime("enveloped-data", &d)
    };
    let mut flipped = encrypted_key.clone();
    flipped[k / 2] ^= 0x10;
    let mut block_type_1 = padded(k, &random(32));
    block_type_1[1] = 1;
    let mut no_separator = padded(k, &random(32));
    no_separator[k - 33] = 0x5a;
    let mut short_ps = vec![0u8, 2, 1, 2, 3, 0];
    short_ps.extend(random(k - short_ps.len()));
    vec![
        Case {
            name: "good key",
            mime: smime_agent::smime::mime::pkcs7_mime("enveloped-data", &good),
        },
        Case {
            name: "one bit flipped",
            mime: with_key(flipped),
        },
        Case {
            name: "block type 1",
            mime: with_key(raw_encrypt(&public, &block_type_1)),
        },
        Case {
            name: "no zero separator",
            mime: with_key(raw_encrypt(&public, &no_separator)),
        },
        Case {
            name: "zero after 3 padding bytes",
            mime: with_key(raw_encrypt(&public, &short_ps)),
        },
        Case {
            name: "well-padded wrong key",
            mime: with_key(
                public
                    .encrypt(&mut rng(), rsa::Pkcs1v15Encrypt, &random(32))
                    .unwrap(),
            ),
        },
        Case {
            name: "well-padded 16-byte key",
            mime: with_key(
                public
                    .encrypt(&mut rng(), rsa::Pkcs1v15Encrypt, &random(16))
                    .unwrap(),
            ),
        },
    ]
}

/// What the agent answered: `Ok(content)` or the error code and message.
pub type Answer = Result<Vec<u8>, (String, String)>;

/// Decrypts `mime` through the agent, answering PIN prompts with `pin`.
pub async fn decrypt(client: &Client, mime: Vec<u8>, pin: &str) -> Answer {
    match decrypt_answering(client, mime, pin).await {
        Ok(r) => Ok(r.mime.0),
        Err(ClientError::Agent(e)) => Err((format!("{:?}", e.code), e.message)),
        Err(e) => panic!("decrypt: {e}"),
    }
}

/// Each case's answers and times over `rounds` interleaved rounds.
pub struct Measured {
    pub name: &'static str,
    pub answers: Vec<Answer>,
    pub times: Vec<Duration>,
}

impl Measured {
    pub fn median(&self) -> Duration {
        let mut t = self.times.clone();
        t.sort();
        t[t.len() / 2]
    }

    pub fn quartiles(&self) -> (Duration, Duration) {
        let mut t = self.times.clone();
        t.sort();
        (t[t.len() / 4], t[3 * t.len() / 4])
    }
}

/// Sends every case `rounds` times, interleaved (case order rotating each round) so that a
/// slow moment of the machine falls on all cases alike. `connect` gives a fresh client (the
/// events of one client can be taken once).
pub async fn measure<F, Fut>(cases: &[Case], rounds: usize, pin: &str, connect: F) -> Vec<Measured>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Client>,
{
    let mut out: Vec<Measured> = cases
        .iter()
        .map(|c| Measured {
            name: c.name,
            answers: vec![],
            times: vec![],
        })
        .collect();
    for round in 0..rounds {
        for i in 0..cases.len() {
            let i = (i + round) % cases.len();
            let client = connect().await;
            let start = Instant::now();
            let a = decrypt(&client, cases[i].mime.clone(), pin).await;
            out[i].times.push(start.elapsed());
            out[i].answers.push(a);
        }
    }
    out
}

/// The checks every token must pass: the good key opens the envelope; every other case gets
/// `decrypt_failed` with one and the same message (or, rarely, random bytes: see below); and
/// no failing case's lower-quartile time is further than `tolerance` (a factor) from the
/// well-padded wrong key's (a wait, a second token call or a skipped content decryption would
/// show). Returns the table it measured.
pub fn assert_no_oracle(measured: &[Measured], content: &[u8], tolerance: f64) -> String {
    let mut table = String::new();
    for m in measured {
        let (q1, q3) = m.quartiles();
        table.push_str(&format!(
            "{:<28} median {:>8.2?}  quartiles {:>8.2?} .. {:>8.2?}\n",
            m.name,
            m.median(),
            q1,
            q3
        ));
    }
    eprintln!("{table}");
    let good = &measured[0];
    for a in &good.answers {
        assert_eq!(a.as_deref().ok(), Some(content), "the good key: {a:?}");
    }
    let reference = measured
        .iter()
        .find(|m| m.name == "well-padded wrong key")
        .expect("the wrong-key case");
    let expected = reference
        .answers
        .iter()
        .find_map(|a| a.clone().err())
        .expect("a wrong key always opened it");
    assert_eq!(expected.0, "DecryptFailed", "{expected:?}");
    for m in measured {
        if m.name != good.name {
            // AES-CBC has no integrity check: a random key gives a valid-looking padding
            // about once in 256, and the envelope "opens" to random bytes. That happens
            // alike to a wrong key and to the decoy that replaces a malformed one, so it
            // tells an attacker nothing; the test only bounds how often it happens.
            let mut garbage = 0;
            for a in &m.answers {
                match a {
                    Ok(bytes) => {
                        assert_ne!(&bytes[..], content, "{}: opened with the real key", m.name);
                        garbage += 1;
                    }
                    Err(e) => assert_eq!(e, &expected, "{}", m.name),
                }
            }
            assert!(
                garbage * 10 <= m.answers.len(),
                "{}: {garbage} of {} opened to random bytes",
                m.name,
                m.answers.len()
            );
        }
        if m.name == good.name {
            // Reported, not compared: a success sends the content back and reads it for
            // inner layers, which a failure does not; that difference is the answer itself.
            continue;
        }
        // The lower quartile: a systematic difference (a wait, a second token call, a
        // skipped content decryption) moves it as it moves the median, and a busy machine's
        // stalls, which fall on single rounds, move it least.
        let ratio = m.quartiles().0.as_secs_f64() / reference.quartiles().0.as_secs_f64();
        assert!(
            (1.0 / tolerance..=tolerance).contains(&ratio),
            "{}: lower quartile {:?} against {:?} for a well-padded wrong key\n{table}",
            m.name,
            m.quartiles().0,
            reference.quartiles().0
        );
    }
    table
}

/// An envelope to `recipient` whose RSA "ciphertext" is all 0xff bytes: as long as the
/// modulus but above it, so no RSA ciphertext at all.
pub fn above_modulus(recipient: &str, content: &[u8]) -> Vec<u8> {
    let der = std::fs::read(pki_file(&format!("{recipient}.der"))).unwrap();
    let facts = CertFacts::from_der(&der).unwrap();
    let mut env = envelope::encrypt(
        content,
        &[EncryptTo {
            cert: &facts,
            rsa_padding: RsaPadding::Pkcs1v15,
        }],
        ContentAlgorithm::Aes256Cbc,
    )
    .unwrap();
    let parsed = envelope::parse(&env).unwrap();
    let KeyUnwrap::RsaPkcs1 { encrypted_key } = &parsed.recipients[0].unwrap else {
        panic!("not an RSA PKCS#1 v1.5 recipient");
    };
    let k = encrypted_key.len();
    let at = env
        .windows(k)
        .position(|w| w == &encrypted_key[..])
        .expect("the encrypted key in the DER");
    env[at..at + k].fill(0xff);
    smime_agent::smime::mime::pkcs7_mime("enveloped-data", &env)
}
