//! The soak's load: clients that sign, verify, encrypt and decrypt through the agent for a
//! bounded time, answer their own PIN prompts (as a person types them), check what they get
//! back, and count everything in a [`Tally`].
//!
//! Nothing here panics on an answer: whatever is wrong is written down as a problem, so the
//! test can report all of them with the counts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smime_agent_proto::client::Client;
use smime_agent_proto::{
    DecryptParams, DecryptResult, EncryptParams, EncryptResult, ErrorCode, Event, Op, Outcome,
    SignFormat, SignParams, SignResult, VerifyParams, VerifyResult, VerifyStatus,
};

use crate::common::card::CARD_PIN;
use crate::common::{
    PIN, hello, openssl_decrypt, openssl_signed_content, pki_file, sample_entity, write_file,
};

/// The card's label (OpenSC's PIV token), as prompts name it.
pub const CARD_LABEL: &str = "Alice Example";

/// No answer within this long counts as a lost request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// A new connection after this many requests, so connecting is part of the load too.
const REQUESTS_PER_CONNECTION: u64 = 25;

/// What a client does, and on which token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Bob signs with his SoftHSM key.
    SoftSign,
    /// Alice signs with her card (the 9C key asks for the PIN before every use).
    CardSign,
    /// A message OpenSSL signed (Alice's or Bob's key file) is verified.
    Verify,
    /// Bob encrypts to himself (his certificate is on SoftHSM).
    Encrypt,
    /// An envelope OpenSSL made for Bob is opened with his SoftHSM key.
    SoftDecrypt,
    /// An envelope OpenSSL made for Alice is opened with her card.
    CardDecrypt,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::SoftSign => "sign (SoftHSM)",
            Kind::CardSign => "sign (card)",
            Kind::Verify => "verify",
            Kind::Encrypt => "encrypt (SoftHSM)",
            Kind::SoftDecrypt => "decrypt (SoftHSM)",
            Kind::CardDecrypt => "decrypt (card)",
        }
    }

    /// The codes a request of this kind may fail with while the card comes and goes (the
    /// card may be out of its reader, its pcscd dead or restarting). SoftHSM requests
    /// never fail.
    pub fn allowed_failure(self, code: ErrorCode) -> bool {
        match self {
            // The card pulled before (no certificate of Alice's in the store), during
            // (token_removed; token_error when pcscd died and PC/SC cannot confirm a removal),
            // or a login that failed because another client typed a wrong PIN (the waiting
            // requests share that outcome: pin_incorrect, never a second try).
            Kind::CardSign => matches!(
                code,
                ErrorCode::NoCertificate
                    | ErrorCode::TokenRemoved
                    | ErrorCode::TokenError
                    | ErrorCode::PinIncorrect
            ),
            // With the card out, nobody present can open Alice's envelope. A card that fails
            // the raw RSA step itself (right after pcscd came back, say) is token_error: raw
            // RSA sees no padding, so saying so is no oracle. decrypt_failed is not allowed:
            // every envelope sent is a good one.
            Kind::CardDecrypt => matches!(
                code,
                ErrorCode::NotARecipient
                    | ErrorCode::TokenRemoved
                    | ErrorCode::TokenError
                    | ErrorCode::PinIncorrect
            ),
            _ => false,
        }
    }

    /// A weighted pick: mostly SoftHSM, about one request in five for the card.
    fn pick(roll: u64) -> Kind {
        match roll % 100 {
            0..=24 => Kind::SoftSign,
            25..=44 => Kind::Verify,
            45..=64 => Kind::Encrypt,
            65..=79 => Kind::SoftDecrypt,
            80..=91 => Kind::CardSign,
            _ => Kind::CardDecrypt,
        }
    }
}

/// The messages the clients send that were made beforehand by OpenSSL.
pub struct Inputs {
    pub dir: PathBuf,
    /// Signed by OpenSSL with Alice's and with Bob's key file.
    pub signed: Vec<Vec<u8>>,
    /// An envelope for Bob and one for Alice's card key, made by OpenSSL.
    pub envelope_bob: Vec<u8>,
    pub envelope_alice: Vec<u8>,
    /// What both envelopes hold (CRLF).
    pub enveloped: Vec<u8>,
}

impl Inputs {
    pub fn make(dir: &Path) -> Inputs {
        let enveloped = b"Content-Type: text/plain\r\n\r\nsoak: opened\r\n".to_vec();
        let plain = write_file(dir, "enveloped.txt", &enveloped);
        let openssl = |args: &[&str]| -> Vec<u8> {
            let out = std::process::Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        let path = |name: &str| pki_file(name).display().to_string();
        let plain = plain.display().to_string();
        let mut signed = vec![];
        for name in ["alice-sign-rsa", "bob-dual-rsa"] {
            let (cert, key) = (
                path(&format!("{name}.pem")),
                path(&format!("{name}.key.pem")),
            );
            signed.push(openssl(&[
                "cms",
                "-sign",
                "-in",
                &plain,
                "-signer",
                &cert,
                "-inkey",
                &key,
                "-certfile",
                &path("ca.pem"),
            ]));
        }
        let envelope = |name: &str| {
            openssl(&[
                "cms",
                "-encrypt",
                "-aes-256-cbc",
                "-in",
                &plain,
                "-recip",
                &path(&format!("{name}.pem")),
            ])
        };
        Inputs {
            dir: dir.to_owned(),
            signed,
            envelope_bob: envelope("bob-dual-rsa"),
            envelope_alice: envelope("alice-enc-rsa"),
            enveloped,
        }
    }
}

/// Everything the clients counted.
#[derive(Debug, Default)]
pub struct Tally {
    /// Requests sent (the operations and the `pin` answers) and answers received for them.
    pub sent: u64,
    pub answered: u64,
    pub connections: u64,
    pub ok: BTreeMap<Kind, u64>,
    pub failed: BTreeMap<(Kind, &'static str), u64>,
    /// The first message of each failure code, for the report.
    pub first_message: BTreeMap<&'static str, String>,
    /// Successes checked against OpenSSL (signatures verified, envelopes decrypted) or
    /// against the content sent.
    pub checked: BTreeMap<Kind, u64>,
    /// PINs typed (prompts answered), on the card and on SoftHSM; wrong ones on the card.
    pub typed_card: u64,
    pub typed_card_wrong: u64,
    pub typed_soft: u64,
    /// `pin` answers that came after their request had ended (the card was pulled while
    /// it waited): `bad_request`, as the protocol says.
    pub late_pin_answers: u64,
    /// Anything that breaks a promise: the test fails and lists them.
    pub problems: Vec<String>,
}

impl Tally {
    fn problem(&mut self, p: String) {
        if self.problems.len() < 200 {
            self.problems.push(p);
        }
    }
}

/// What every client shares.
pub struct Load {
    pub socket: PathBuf,
    pub inputs: Inputs,
    pub tally: Mutex<Tally>,
    /// Check every Nth signature and encryption with OpenSSL (1: all of them).
    pub check_every: u64,
    checks: AtomicU64,
    /// Held (read) by every card request while it runs; the card chaos takes it (write) to
    /// pull the card or kill pcscd only between card operations (see `chaos.rs`).
    pub card_gate: Arc<tokio::sync::RwLock<()>>,
}

impl Load {
    pub fn new(socket: PathBuf, inputs: Inputs, check_every: u64) -> Arc<Load> {
        Arc::new(Load {
            socket,
            inputs,
            tally: Mutex::default(),
            check_every: check_every.max(1),
            checks: AtomicU64::new(0),
            card_gate: Arc::default(),
        })
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Client `index` until `deadline`. Client 0 types a wrong PIN for the card now and
    /// then (never twice before a right one worked, so the card never locks).
    pub async fn client(self: Arc<Load>, index: u64, deadline: Instant) {
        let mut rng = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut n = 0u64;
        let mut owe_right_pin = false;
        while Instant::now() < deadline {
            let client = match Client::connect(&self.socket, hello(true)).await {
                Ok(c) => c,
                Err(e) => {
                    self.tally()
                        .problem(format!("client {index}: connecting failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            self.tally().connections += 1;
            let Some(mut events) = client.take_events() else {
                return;
            };
            for _ in 0..REQUESTS_PER_CONNECTION {
                if Instant::now() >= deadline {
                    break;
                }
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let kind = Kind::pick(rng >> 11);
                let wrong_pin =
                    index == 0 && kind == Kind::CardSign && !owe_right_pin && n % 4 == 3;
                let Some((ok, typed_wrong)) = self
                    .request(&client, &mut events, kind, index, n, wrong_pin)
                    .await
                else {
                    break; // the connection is gone (and that was written down)
                };
                if typed_wrong {
                    owe_right_pin = true;
                } else if ok && kind == Kind::CardSign {
                    owe_right_pin = false;
                }
                n += 1;
            }
            // Each request was answered once: nothing may be left over on this connection.
            if let Ok(Some(extra)) =
                tokio::time::timeout(Duration::from_millis(50), client.next_unmatched()).await
            {
                self.tally().problem(format!(
                    "client {index}: an answer nobody asked for: {extra:?}"
                ));
            }
        }
    }

    /// One request and its prompts: whether it succeeded, and whether a wrong PIN was typed;
    /// `None` when it could not be sent or got no answer (the connection is not used again).
    async fn request(
        &self,
        client: &Client,
        events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
        kind: Kind,
        index: u64,
        n: u64,
        wrong_pin: bool,
    ) -> Option<(bool, bool)> {
        let text = format!("soak: client {index}, request {n}");
        let op = match kind {
            Kind::SoftSign | Kind::CardSign => Op::Sign(SignParams {
                signer: if kind == Kind::CardSign {
                    "alice@example.org"
                } else {
                    "bob@example.org"
                }
                .into(),
                content: sample_entity(&text).into(),
                format: Some(if n.is_multiple_of(2) {
                    SignFormat::Clear
                } else {
                    SignFormat::Opaque
                }),
                ..Default::default()
            }),
            Kind::Verify => Op::Verify(VerifyParams {
                content: self.inputs.signed[(n % 2) as usize].clone().into(),
                ..Default::default()
            }),
            Kind::Encrypt => Op::Encrypt(EncryptParams {
                recipients: vec!["bob@example.org".into()],
                sender: Some("bob@example.org".into()),
                content: sample_entity(&text).into(),
                ..Default::default()
            }),
            Kind::SoftDecrypt | Kind::CardDecrypt => Op::Decrypt(DecryptParams {
                content: if kind == Kind::CardDecrypt {
                    self.inputs.envelope_alice.clone()
                } else {
                    self.inputs.envelope_bob.clone()
                }
                .into(),
                ..Default::default()
            }),
        };
        let _card_turn = match kind {
            Kind::CardSign | Kind::CardDecrypt => Some(self.card_gate.read().await),
            _ => None,
        };
        self.tally().sent += 1;
        let (id, mut rx) = match client.start(op).await {
            Ok(started) => started,
            Err(e) => {
                self.tally().problem(format!(
                    "client {index}: sending {} failed: {e}",
                    kind.name()
                ));
                return None;
            }
        };
        let mut typed_wrong = false;
        let mut give_up = Box::pin(tokio::time::sleep(ANSWER_TIMEOUT));
        let outcome = loop {
            tokio::select! {
                out = &mut rx => break out.ok(),
                () = &mut give_up => break None,
                ev = events.recv() => {
                    let Some(Event::PinNeeded(p)) = ev else { continue };
                    if p.request != id {
                        continue; // a prompt of an earlier request that ended meanwhile
                    }
                    let card = p.token.label == CARD_LABEL;
                    let pin = match (card, wrong_pin) {
                        (true, true) => "999999",
                        (true, false) => CARD_PIN,
                        (false, _) => PIN,
                    };
                    {
                        let mut t = self.tally();
                        t.sent += 1;
                        match (card, wrong_pin) {
                            (true, true) => {
                                t.typed_card_wrong += 1;
                                typed_wrong = true;
                            }
                            (true, false) => t.typed_card += 1,
                            (false, _) => t.typed_soft += 1,
                        }
                    }
                    let answer = client.pin(p.prompt, Some(smime_agent_proto::Pin::new(pin))).await;
                    let mut t = self.tally();
                    match answer {
                        Ok(()) => t.answered += 1,
                        Err(e) if e.code() == Some(ErrorCode::BadRequest) => {
                            t.answered += 1;
                            t.late_pin_answers += 1;
                        }
                        Err(e) => t.problem(format!("client {index}: pin answer: {e}")),
                    }
                }
            }
        };
        let Some(outcome) = outcome else {
            self.tally().problem(format!(
                "client {index}: {} request {n} got no answer (the connection closed, or \
                 {ANSWER_TIMEOUT:?} passed)",
                kind.name()
            ));
            return None;
        };
        self.tally().answered += 1;
        match outcome {
            Outcome::Error(e) => {
                let mut t = self.tally();
                *t.failed.entry((kind, e.code.as_str())).or_default() += 1;
                t.first_message
                    .entry(e.code.as_str())
                    .or_insert_with(|| e.message.clone());
                let expected_wrong = typed_wrong && e.code == ErrorCode::PinIncorrect;
                if !expected_wrong && !kind.allowed_failure(e.code) {
                    t.problem(format!("client {index}: {} failed: {e}", kind.name()));
                }
                Some((false, typed_wrong))
            }
            Outcome::Ok(value) => {
                let checked = self.check(kind, value, &text).await;
                let mut t = self.tally();
                *t.ok.entry(kind).or_default() += 1;
                match checked {
                    Ok(true) => *t.checked.entry(kind).or_default() += 1,
                    Ok(false) => {}
                    Err(e) => t.problem(format!("client {index}: {}: {e}", kind.name())),
                }
                if typed_wrong {
                    t.problem(format!("client {index}: a wrong card PIN was accepted"));
                }
                Some((true, typed_wrong))
            }
        }
    }

    /// Whether a success holds what it should: Ok(true) when it was checked, Ok(false) when
    /// it was not this time (sampled), Err when it is wrong.
    async fn check(
        &self,
        kind: Kind,
        value: serde_json::Value,
        text: &str,
    ) -> Result<bool, String> {
        let sent = sample_entity(text);
        match kind {
            Kind::SoftSign | Kind::CardSign => {
                let r: SignResult = decode(value)?;
                if r.certificate.hardware != (kind == Kind::CardSign) {
                    return Err(format!("signed with the wrong token: {:?}", r.certificate));
                }
                if !self.sampled() {
                    return Ok(false);
                }
                let dir = self.inputs.dir.clone();
                let content = tokio::task::spawn_blocking(move || {
                    openssl_signed_content("cms", &r.mime.0, &dir)
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("openssl cms -verify refused the signature: {e}"))?;
                same_text(&content, &sent).map(|()| true)
            }
            Kind::Encrypt => {
                let r: EncryptResult = decode(value)?;
                if !self.sampled() {
                    return Ok(false);
                }
                let dir = self.inputs.dir.clone();
                let content = tokio::task::spawn_blocking(move || {
                    openssl_decrypt(&dir, &r.mime.0, "bob-dual-rsa")
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("openssl cms -decrypt refused the envelope: {e}"))?;
                same_text(&content, &sent).map(|()| true)
            }
            Kind::Verify => {
                let r: VerifyResult = decode(value)?;
                if r.status != VerifyStatus::Valid {
                    return Err(format!("an OpenSSL signature judged {:?}", r.status));
                }
                same_text(&r.content.0, &self.inputs.enveloped).map(|()| true)
            }
            Kind::SoftDecrypt | Kind::CardDecrypt => {
                let r: DecryptResult = decode(value)?;
                if r.certificate.hardware != (kind == Kind::CardDecrypt) {
                    return Err(format!("opened with the wrong token: {:?}", r.certificate));
                }
                same_text(&r.mime.0, &self.inputs.enveloped).map(|()| true)
            }
        }
    }

    fn sampled(&self) -> bool {
        self.checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(self.check_every)
    }
}

fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("a result that does not parse: {e}"))
}

/// The same text, line ends aside (the agent signs and encrypts the canonical CRLF form).
fn same_text(got: &[u8], sent: &[u8]) -> Result<(), String> {
    let plain = |b: &[u8]| -> Vec<u8> {
        let mut v: Vec<u8> = b.iter().copied().filter(|c| *c != b'\r').collect();
        while v.last() == Some(&b'\n') {
            v.pop();
        }
        v
    };
    if plain(got) == plain(sent) {
        Ok(())
    } else {
        Err(format!(
            "other content than was sent: {:?}",
            String::from_utf8_lossy(got)
        ))
    }
}
