//! The PIV card application: turns command APDUs into response APDUs.
//!
//! Owns everything a real card keeps between APDUs: the data objects, the keys, the PIN
//! and the security status, a command chain being received and a response being sent in
//! `61 xx` pieces. It knows nothing about the transport: [`crate::vpcd`] feeds it.
//!
//! Implemented, as OpenSC 0.23's PIV driver uses them (see `/work/shared/rig/piv-card.md`
//! and NIST SP 800-73-4 part 2): SELECT, GET DATA, GET RESPONSE, VERIFY and GENERAL
//! AUTHENTICATE. Everything else gets the status word a real card would give.

use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::CardError;
use crate::apdu::{Command, Response, sw};
use crate::keys::{LoadedSlot, OpError, PivSlot, SlotKey, SlotSpec};
use crate::pin::{PaddedPin, PinState, VerifyOutcome};
use crate::tlv;

/// The ATR: a compact-TLV historical byte string carrying the PIV AID prefix. OpenSC
/// matches it to no workaround table (a PIVKey ATR would disable EC, a YubiKey ATR would
/// add GET VERSION).
pub const ATR: [u8; 16] = [
    0x3B, 0x8B, 0x80, 0x01, 0x80, 0xF9, 0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0xC8,
];

/// The full PIV application identifier; SELECT may name any prefix of it (OpenSC sends
/// nine bytes).
const PIV_AID: [u8; 11] = [
    0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
];

/// SELECT's answer: the application property template with the PIX (SP 800-73-4 3.1.1).
const APPLICATION_PROPERTY_TEMPLATE: [u8; 10] =
    [0x61, 0x08, 0x4F, 0x06, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00];

/// The discovery object: PIV AID, and PIN usage policy `40 00` (application PIN only;
/// `60 20` would make OpenSC use the global PIN).
const DISCOVERY_OBJECT: [u8; 20] = [
    0x7E, 0x12, 0x4F, 0x0B, 0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x5F,
    0x2F, 0x02, 0x40, 0x00,
];

/// FASC-N with agency code 9999: OpenSC then takes the card's serial number from the GUID.
const FASC_N_9999: [u8; 25] = [
    0xD4, 0xE7, 0x39, 0xDA, 0x73, 0x9C, 0xED, 0x39, 0xCE, 0x73, 0x9D, 0x83, 0x68, 0x58, 0x21, 0x08,
    0x42, 0x10, 0x84, 0x21, 0xC8, 0x42, 0x10, 0xC3, 0xEB,
];

const TAG_DISCOVERY: &[u8] = &[0x7E];
const TAG_CHUID: &[u8] = &[0x5F, 0xC1, 0x02];

/// The longest command chain accepted: an RSA-4096 GENERAL AUTHENTICATE with its template.
const MAX_CHAIN: usize = 1024;

/// What a card holds, as the files it is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardConfig {
    /// The application PIN (key reference 80).
    pub pin: String,
    /// Tries before the PIN blocks (PIV cards ship with 3 to 10; default 3).
    pub pin_tries: u8,
    /// Where the PIN counter survives removal; `None` keeps it only in memory.
    pub pin_state_file: Option<PathBuf>,
    /// The card's GUID (CHUID tag 34), from which OpenSC derives the token serial number.
    /// `None` derives it from `name` and the certificates, so every card differs.
    pub guid: Option<[u8; 16]>,
    /// A name for logs and for the derived GUID.
    pub name: String,
    /// The key slots; slots not listed are empty (OpenSC then shows no key for them).
    pub slots: Vec<SlotSpec>,
    /// A slow card: how long to hold the answer to a GENERAL AUTHENTICATE that used a
    /// private key (signature, decryption, ECDH), so a test can pull the card in the middle
    /// of the operation. Everything else is answered at once. The transport applies it
    /// ([`crate::vpcd::serve`] asks [`PivCard::answer_delay`]); `None` (the default) is a
    /// fast card.
    pub op_delay: Option<Duration>,
    /// A flaky card: while this file exists, a GENERAL AUTHENTICATE that would use a private
    /// key fails with 6F00 (no precise diagnosis) instead. The file holds how many such
    /// commands fail (empty: one); the card counts down and removes it at zero. `None` (the
    /// default): the card never fails so.
    pub fault_file: Option<PathBuf>,
}

impl CardConfig {
    /// A card called `name` with `pin`, the default 3 tries and no state file.
    pub fn new(name: impl Into<String>, pin: impl Into<String>, slots: Vec<SlotSpec>) -> Self {
        CardConfig {
            pin: pin.into(),
            pin_tries: 3,
            pin_state_file: None,
            guid: None,
            name: name.into(),
            slots,
            op_delay: None,
            fault_file: None,
        }
    }
}

/// A command chain being received (CLA bit 0x10), SP 800-73-4 3.2.4 / ISO 7816-4 5.1.1.1.
struct Chain {
    ins: u8,
    p1: u8,
    p2: u8,
    data: Vec<u8>,
}

/// Security status: what VERIFY has granted since the last power-up.
#[derive(Default)]
struct SecurityStatus {
    /// The PIN was verified: 9A and 9D may be used.
    pin_verified: bool,
    /// A VERIFY happened since 9C's last use: 9C is "PIN Always", one use per VERIFY.
    signature_authorized: bool,
}

/// The PIV card application.
pub struct PivCard {
    name: String,
    chuid: Vec<u8>,
    slots: Vec<LoadedSlot>,
    pin: PinState,
    security: SecurityStatus,
    chain: Option<Chain>,
    /// Response bytes not yet fetched with GET RESPONSE.
    pending: Vec<u8>,
    /// See [`CardConfig::op_delay`].
    op_delay: Option<Duration>,
    /// See [`CardConfig::fault_file`].
    fault_file: Option<PathBuf>,
    /// The last command used a private key.
    used_key: bool,
}

impl PivCard {
    /// Loads the keys and certificates and reads the PIN counter.
    pub fn new(config: &CardConfig) -> Result<Self, CardError> {
        let mut slots: Vec<LoadedSlot> = Vec::new();
        for spec in &config.slots {
            if slots.iter().any(|s| s.slot == spec.slot) {
                return Err(CardError::BadSlotSpec {
                    spec: spec.slot.to_string(),
                    reason: "the slot is given twice".into(),
                });
            }
            slots.push(LoadedSlot::load(spec)?);
        }
        let pin = PinState::new(&config.pin, config.pin_tries, config.pin_state_file.clone())?;
        let guid = config
            .guid
            .unwrap_or_else(|| derive_guid(&config.name, &slots));
        Ok(PivCard {
            name: config.name.clone(),
            chuid: chuid(&guid),
            slots,
            pin,
            security: SecurityStatus::default(),
            chain: None,
            pending: Vec::new(),
            op_delay: config.op_delay,
            fault_file: config.fault_file.clone(),
            used_key: false,
        })
    }

    /// The card's name, for logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The slots that hold a key, with their certificate subjects.
    pub fn slots(&self) -> impl Iterator<Item = (PivSlot, &str)> {
        self.slots.iter().map(|s| (s.slot, s.subject.as_str()))
    }

    /// PIN tries left.
    pub fn pin_tries_left(&self) -> u8 {
        self.pin.tries_left()
    }

    /// VERIFY commands that presented a PIN since the card was made.
    pub fn pin_verifies(&self) -> u32 {
        self.pin.verifies()
    }

    /// How long the transport should hold the response [`PivCard::process`] just returned:
    /// [`CardConfig::op_delay`] when that command used a private key, else `None`.
    pub fn answer_delay(&self) -> Option<Duration> {
        self.op_delay.filter(|_| self.used_key)
    }

    /// The answer to reset.
    pub fn atr(&self) -> &'static [u8] {
        &ATR
    }

    /// Power off, power on, warm reset: all end the session. The security status, any
    /// command chain and any unfetched response are gone; the PIN counter is not.
    pub fn reset(&mut self) {
        self.security = SecurityStatus::default();
        self.chain = None;
        self.pending.clear();
    }

    /// Processes one command APDU and returns the response APDU. Never panics, whatever
    /// the bytes.
    pub fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        self.used_key = false;
        self.respond(apdu).into_bytes()
    }

    fn respond(&mut self, apdu: &[u8]) -> Response {
        let Ok(cmd) = Command::parse(apdu) else {
            self.chain = None;
            self.pending.clear();
            return Response::status(sw::WRONG_LENGTH);
        };
        if cmd.cla & 0x80 != 0 || cmd.cla & 0x60 != 0 {
            return Response::status(sw::CLA_NOT_SUPPORTED);
        }
        if cmd.cla & 0x03 != 0 {
            return Response::status(sw::LOGICAL_CHANNEL_NOT_SUPPORTED);
        }
        if cmd.cla & 0x0C != 0 {
            return Response::status(sw::SECURE_MESSAGING_NOT_SUPPORTED);
        }
        if cmd.ins == 0xC0 {
            return self.get_response(&cmd);
        }
        // Any other command abandons an unfetched response.
        self.pending.clear();

        // Command chaining: collect the parts, then process the whole as one command.
        let continues_chain = self
            .chain
            .as_ref()
            .is_some_and(|c| (c.ins, c.p1, c.p2) == (cmd.ins, cmd.p1, cmd.p2));
        if !continues_chain {
            // A different command ends a chain the host abandoned.
            self.chain = None;
        }
        if cmd.is_chained() {
            if cmd.ins != 0x87 {
                return Response::status(sw::CHAINING_NOT_SUPPORTED);
            }
            let chain = self.chain.get_or_insert_with(|| Chain {
                ins: cmd.ins,
                p1: cmd.p1,
                p2: cmd.p2,
                data: Vec::new(),
            });
            if chain.data.len() + cmd.data.len() > MAX_CHAIN {
                self.chain = None;
                return Response::status(sw::WRONG_DATA);
            }
            chain.data.extend_from_slice(cmd.data);
            return Response::status(sw::OK);
        }
        let chained_data;
        let cmd = match self.chain.take() {
            Some(mut chain) => {
                chain.data.extend_from_slice(cmd.data);
                chained_data = chain.data;
                Command {
                    data: &chained_data,
                    ..cmd
                }
            }
            None => cmd,
        };

        let response = match cmd.ins {
            0xA4 => self.select(&cmd),
            0xCB => self.get_data(&cmd),
            0x20 => self.verify(&cmd),
            0x87 => self.general_authenticate(&cmd),
            _ => Response::status(sw::INS_NOT_SUPPORTED),
        };
        self.send(response, cmd.le)
    }

    /// Sends at most `le` (and never more than 256) bytes; the rest waits for GET RESPONSE
    /// behind `61 xx`. pcscd fails with SCARD_E_INSUFFICIENT_BUFFER on longer answers.
    fn send(&mut self, response: Response, le: Option<usize>) -> Response {
        if response.sw != sw::OK {
            return response;
        }
        let chunk = le.unwrap_or(256).min(256);
        if response.data.len() <= chunk {
            return response;
        }
        let mut data = response.data;
        self.pending = data.split_off(chunk);
        Response {
            data,
            sw: more_data_sw(self.pending.len()),
        }
    }

    /// GET RESPONSE `00 C0 00 00 Le`.
    fn get_response(&mut self, cmd: &Command) -> Response {
        if (cmd.p1, cmd.p2) != (0, 0) {
            return Response::status(sw::WRONG_P1P2);
        }
        if !cmd.data.is_empty() {
            return Response::status(sw::WRONG_LENGTH);
        }
        if self.pending.is_empty() {
            return Response::status(sw::CONDITIONS_NOT_SATISFIED);
        }
        let chunk = cmd.le.unwrap_or(256).min(256).min(self.pending.len());
        let rest = self.pending.split_off(chunk);
        let data = std::mem::replace(&mut self.pending, rest);
        let sw = if self.pending.is_empty() {
            sw::OK
        } else {
            more_data_sw(self.pending.len())
        };
        Response { data, sw }
    }

    /// SELECT `00 A4 04 00 Lc AID`: only the PIV application exists on this card.
    fn select(&mut self, cmd: &Command) -> Response {
        if cmd.p1 != 0x04 {
            // Selection by file id or path: this card has no file system.
            return Response::status(sw::NOT_FOUND);
        }
        if cmd.p2 & !0x0C != 0 {
            return Response::status(sw::WRONG_P1P2);
        }
        let aid = cmd.data;
        if aid.len() >= 5 && PIV_AID.starts_with(aid) {
            // Re-selecting the application keeps the security status (SP 800-73-4 3.1.1).
            Response::ok(APPLICATION_PROPERTY_TEMPLATE.to_vec())
        } else {
            Response::status(sw::NOT_FOUND)
        }
    }

    /// GET DATA `00 CB 3F FF Lc 5C len tag`.
    fn get_data(&mut self, cmd: &Command) -> Response {
        if (cmd.p1, cmd.p2) != (0x3F, 0xFF) {
            return Response::status(sw::WRONG_P1P2);
        }
        let tag = match tlv::parse_exact(cmd.data) {
            Ok(t) if t.tag == [0x5C] && (1..=3).contains(&t.value.len()) => t.value,
            _ => return Response::status(sw::WRONG_DATA),
        };
        if tag == TAG_DISCOVERY {
            return Response::ok(DISCOVERY_OBJECT.to_vec());
        }
        if tag == TAG_CHUID {
            return Response::ok(self.chuid.clone());
        }
        if let Some(slot) = self.slots.iter().find(|s| s.slot.cert_object_tag() == tag) {
            return Response::ok(cert_object(&slot.cert_der));
        }
        let is_piv_tag = match tag {
            [0x7F, 0x61] => true,
            [0x5F, 0xC1, n] => (0x01..=0x23).contains(n),
            [0x5F, 0xFF, n] => (0x01..=0x15).contains(n),
            _ => false,
        };
        // Objects a real card may leave empty (CCC, key history, printed information...)
        // are simply not found; tags outside the PIV namespace are malformed requests.
        if is_piv_tag {
            Response::status(sw::NOT_FOUND)
        } else {
            Response::status(sw::WRONG_DATA)
        }
    }

    /// VERIFY `00 20 00 80 [08 PIN]`, and `00 20 FF 80` to reset the security status.
    fn verify(&mut self, cmd: &Command) -> Response {
        if cmd.p2 != 0x80 {
            // 00 (global PIN) and 81 (PUK, RESET RETRY COUNTER only) are not verifiable here.
            return Response::status(sw::REFERENCE_NOT_FOUND);
        }
        match (cmd.p1, cmd.data.len()) {
            (0xFF, 0) => {
                self.security = SecurityStatus::default();
                Response::status(sw::OK)
            }
            (0x00, 0) => {
                if self.security.pin_verified {
                    Response::status(sw::OK)
                } else if self.pin.is_blocked() {
                    Response::status(sw::AUTH_METHOD_BLOCKED)
                } else {
                    Response::status(sw::VERIFY_FAILED | u16::from(self.pin.tries_left()))
                }
            }
            (0x00, 8) => {
                let mut candidate: PaddedPin = [0; 8];
                candidate.copy_from_slice(cmd.data);
                let outcome = self.pin.verify(&candidate);
                candidate.fill(0);
                match outcome {
                    Ok(VerifyOutcome::Correct) => {
                        self.security.pin_verified = true;
                        self.security.signature_authorized = true;
                        Response::status(sw::OK)
                    }
                    Ok(VerifyOutcome::Wrong { tries_left }) => {
                        self.security = SecurityStatus::default();
                        Response::status(sw::VERIFY_FAILED | u16::from(tries_left))
                    }
                    Ok(VerifyOutcome::Blocked) => {
                        self.security = SecurityStatus::default();
                        Response::status(sw::AUTH_METHOD_BLOCKED)
                    }
                    Err(_) => {
                        self.security = SecurityStatus::default();
                        Response::status(sw::MEMORY_FAILURE)
                    }
                }
            }
            (0x00 | 0xFF, _) => Response::status(sw::WRONG_DATA),
            _ => Response::status(sw::WRONG_P1P2),
        }
    }

    /// GENERAL AUTHENTICATE `00 87 alg key 7C{...}`.
    fn general_authenticate(&mut self, cmd: &Command) -> Response {
        let (alg, key_ref) = (cmd.p1, cmd.p2);
        let Ok(template) = tlv::parse_exact(cmd.data) else {
            return Response::status(sw::WRONG_DATA);
        };
        if template.tag != [0x7C] {
            return Response::status(sw::WRONG_DATA);
        }
        let Some(request) = AuthRequest::parse(template.value) else {
            return Response::status(sw::WRONG_DATA);
        };

        if key_ref == 0x9B {
            return management_key_challenge(alg, &request);
        }
        let Some(slot) = PivSlot::from_key_ref(key_ref) else {
            return Response::status(sw::REFERENCE_NOT_FOUND);
        };
        let Some(index) = self.slots.iter().position(|s| s.slot == slot) else {
            return Response::status(sw::REFERENCE_NOT_FOUND);
        };
        if self.slots[index].key.algorithm_id() != Some(alg) {
            return Response::status(sw::WRONG_P1P2);
        }
        let key: &SlotKey = &self.slots[index].key;
        let operation = match request {
            AuthRequest::Sign { challenge } => Operation::PrivateKey(challenge),
            AuthRequest::KeyAgreement { point } if slot == PivSlot::KeyManagement => {
                Operation::KeyAgreement(point)
            }
            _ => return Response::status(sw::WRONG_DATA),
        };

        // Access rules (SP 800-73-4 table 4b): 9E always, 9A/9D after VERIFY, 9C once per
        // VERIFY ("PIN Always").
        let allowed = match slot {
            PivSlot::CardAuthentication => true,
            PivSlot::Authentication | PivSlot::KeyManagement => self.security.pin_verified,
            PivSlot::Signature => self.security.pin_verified && self.security.signature_authorized,
        };
        if !allowed {
            return Response::status(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        if slot == PivSlot::Signature {
            self.security.signature_authorized = false;
        }

        if let Some(f) = &self.fault_file
            && let Ok(text) = std::fs::read_to_string(f)
        {
            let left = text.trim().parse::<u32>().unwrap_or(1).saturating_sub(1);
            let _ = if left == 0 {
                std::fs::remove_file(f)
            } else {
                std::fs::write(f, left.to_string())
            };
            return Response::status(sw::NO_PRECISE_DIAGNOSIS);
        }
        self.used_key = true;
        let result = match operation {
            Operation::PrivateKey(input) => match key {
                SlotKey::Rsa(_) => key.rsa_raw(input),
                SlotKey::P256(_) | SlotKey::P384(_) => key.ecdsa_sign_prehash(input),
            },
            Operation::KeyAgreement(point) => key.ecdh(point),
        };
        match result {
            Ok(out) => Response::ok(tlv::encode(&[0x7C], &tlv::encode(&[0x82], &out))),
            Err(OpError::BadInput | OpError::WrongKeyType) => Response::status(sw::WRONG_DATA),
        }
    }
}

/// What a GENERAL AUTHENTICATE template asks for.
enum AuthRequest<'a> {
    /// `82 00 81 L data`: sign or decrypt `data` (the response goes in 82).
    Sign { challenge: &'a [u8] },
    /// `82 00 85 L point`: key agreement with the peer's point.
    KeyAgreement { point: &'a [u8] },
    /// `81 00`: the card is asked for a challenge (witness for external authentication).
    ChallengeRequest,
}

impl<'a> AuthRequest<'a> {
    fn parse(template: &'a [u8]) -> Option<Self> {
        let items = tlv::parse_all(template).ok()?;
        let get = |tag: u8| -> Option<&'a [u8]> {
            let mut found = items.iter().filter(|t| t.tag == [tag]);
            let first = found.next()?;
            Some(first.value)
        };
        for t in &items {
            let known = matches!(t.tag, [0x80 | 0x81 | 0x82 | 0x85]);
            let repeated = items.iter().filter(|u| u.tag == t.tag).count() > 1;
            if !known || repeated {
                return None;
            }
        }
        match (get(0x80), get(0x81), get(0x82), get(0x85)) {
            (None, Some(c), Some([]), None) if !c.is_empty() => {
                Some(AuthRequest::Sign { challenge: c })
            }
            (None, None, Some([]), Some(p)) if !p.is_empty() => {
                Some(AuthRequest::KeyAgreement { point: p })
            }
            (None, Some([]), None, None) => Some(AuthRequest::ChallengeRequest),
            _ => None,
        }
    }
}

enum Operation<'a> {
    PrivateKey(&'a [u8]),
    KeyAgreement(&'a [u8]),
}

/// The management key's challenge, which OpenSC uses as its random number generator. The
/// card cannot complete a management-key authentication (it has no management key), but
/// handing out the challenge needs no PIN on a real card either.
fn management_key_challenge(alg: u8, request: &AuthRequest) -> Response {
    let len = match alg {
        0x00 | 0x03 => 8,
        0x08 | 0x0A | 0x0C => 16,
        _ => return Response::status(sw::WRONG_P1P2),
    };
    if !matches!(request, AuthRequest::ChallengeRequest) {
        return Response::status(sw::SECURITY_STATUS_NOT_SATISFIED);
    }
    let mut challenge = vec![0u8; len];
    if getrandom::fill(&mut challenge).is_err() {
        return Response::status(sw::MEMORY_FAILURE);
    }
    Response::ok(tlv::encode(&[0x7C], &tlv::encode(&[0x81], &challenge)))
}

/// `61 xx`: xx bytes remain, 00 meaning 256 or more.
fn more_data_sw(remaining: usize) -> u16 {
    sw::MORE_DATA | (remaining.min(256) & 0xFF) as u16
}

/// A certificate object: `53 { 70 cert, 71 00 (not compressed), FE (no LRC) }`.
fn cert_object(cert_der: &[u8]) -> Vec<u8> {
    let mut body = tlv::encode(&[0x70], cert_der);
    body.extend_from_slice(&[0x71, 0x01, 0x00, 0xFE, 0x00]);
    tlv::encode(&[0x53], &body)
}

/// The CHUID: FASC-N (agency 9999), GUID, expiration date, empty signature, no LRC.
fn chuid(guid: &[u8; 16]) -> Vec<u8> {
    let mut body = Vec::new();
    tlv::push(&mut body, &[0x30], &FASC_N_9999);
    tlv::push(&mut body, &[0x34], guid);
    tlv::push(&mut body, &[0x35], b"20991231");
    tlv::push(&mut body, &[0x3E], &[]);
    tlv::push(&mut body, &[0xFE], &[]);
    tlv::encode(&[0x53], &body)
}

/// A GUID that is the same whenever the same card (name and certificates) is inserted
/// again, and differs between cards: OpenSC shows it as the token serial number.
fn derive_guid(name: &str, slots: &[LoadedSlot]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"virtual-piv-card guid\0");
    h.update(name.as_bytes());
    for s in slots {
        h.update([0, s.slot.key_ref()]);
        h.update(&s.cert_der);
    }
    let digest = h.finalize();
    let mut guid = [0u8; 16];
    guid.copy_from_slice(&digest[..16]);
    guid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bare_card() -> PivCard {
        PivCard::new(&CardConfig::new("test", "123456", Vec::new())).unwrap()
    }

    fn sw_of(resp: &[u8]) -> u16 {
        let n = resp.len();
        u16::from_be_bytes([resp[n - 2], resp[n - 1]])
    }

    #[test]
    fn select_matches_the_truncated_aid_only() {
        let mut card = bare_card();
        let r = card.process(&[
            0x00, 0xA4, 0x04, 0x00, 0x09, 0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00,
            0x00,
        ]);
        assert_eq!(
            r,
            [&APPLICATION_PROPERTY_TEMPLATE[..], &[0x90, 0x00]].concat()
        );
        let r = card.process(&[0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x01, 0x16]);
        assert_eq!(r, [0x6A, 0x82]);
    }

    #[test]
    fn long_objects_are_chained_in_pieces_of_at_most_256() {
        let mut card = bare_card();
        card.chuid = vec![0x42; 700];
        let r = card.process(&[
            0x00, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x02, 0x08,
        ]);
        assert_eq!(r.len(), 8 + 2);
        assert_eq!(sw_of(&r), 0x6100);
        let r = card.process(&[
            0x00, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x02, 0x00,
        ]);
        assert_eq!((r.len(), sw_of(&r)), (258, 0x6100));
        let r = card.process(&[0x00, 0xC0, 0x00, 0x00, 0x00]);
        assert_eq!((r.len(), sw_of(&r)), (258, 0x61BC));
        let r = card.process(&[0x00, 0xC0, 0x00, 0x00, 0xBC]);
        assert_eq!((r.len(), sw_of(&r)), (0xBC + 2, 0x9000));
        let r = card.process(&[0x00, 0xC0, 0x00, 0x00, 0x00]);
        assert_eq!(r, [0x69, 0x85]);
    }

    #[test]
    fn absent_and_foreign_objects_are_told_apart() {
        let mut card = bare_card();
        let ccc = [
            0x00, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x07, 0x00,
        ];
        assert_eq!(card.process(&ccc), [0x6A, 0x82]);
        let foreign = [
            0x00, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F, 0xC2, 0x07, 0x00,
        ];
        assert_eq!(card.process(&foreign), [0x6A, 0x80]);
        let discovery = [0x00, 0xCB, 0x3F, 0xFF, 0x03, 0x5C, 0x01, 0x7E, 0x00];
        let r = card.process(&discovery);
        assert_eq!(&r[..r.len() - 2], &DISCOVERY_OBJECT);
    }

    #[test]
    fn verify_counts_down_blocks_and_reset_clears_the_status() {
        let mut card = bare_card();
        let mut verify = |pin: &[u8]| {
            let mut apdu = vec![0x00, 0x20, 0x00, 0x80];
            if !pin.is_empty() {
                apdu.push(8);
                apdu.extend_from_slice(pin);
                apdu.resize(13, 0xFF);
            }
            card.process(&apdu)
        };
        assert_eq!(verify(b""), [0x63, 0xC3]);
        assert_eq!(verify(b"123456"), [0x90, 0x00]);
        assert_eq!(verify(b""), [0x90, 0x00]);
        assert_eq!(verify(b"000000"), [0x63, 0xC2]);
        assert_eq!(verify(b""), [0x63, 0xC2]);
        assert_eq!(verify(b"000000"), [0x63, 0xC1]);
        assert_eq!(verify(b"000000"), [0x63, 0xC0]);
        assert_eq!(verify(b"123456"), [0x69, 0x83]);
        assert_eq!(verify(b""), [0x69, 0x83]);

        let mut card = bare_card();
        let mut pin = vec![0x00, 0x20, 0x00, 0x80, 0x08];
        pin.extend_from_slice(b"123456\xFF\xFF");
        assert_eq!(card.process(&pin), [0x90, 0x00]);
        card.reset();
        assert_eq!(card.process(&[0x00, 0x20, 0x00, 0x80]), [0x63, 0xC3]);
        assert_eq!(card.process(&pin), [0x90, 0x00]);
        assert_eq!(card.process(&[0x00, 0x20, 0xFF, 0x80]), [0x90, 0x00]);
        assert_eq!(card.process(&[0x00, 0x20, 0x00, 0x80]), [0x63, 0xC3]);
    }

    #[test]
    fn command_chains_are_reassembled_and_bounded() {
        let mut card = bare_card();
        // A chained request for a challenge from the management key.
        assert_eq!(
            card.process(&[0x10, 0x87, 0x00, 0x9B, 0x02, 0x7C, 0x02]),
            [0x90, 0x00]
        );
        let r = card.process(&[0x00, 0x87, 0x00, 0x9B, 0x02, 0x81, 0x00, 0x00]);
        assert_eq!(&r[..4], &[0x7C, 0x0A, 0x81, 0x08]);
        assert_eq!(sw_of(&r), 0x9000);
        // Chaining for an instruction that does not support it.
        assert_eq!(
            card.process(&[0x10, 0xCB, 0x3F, 0xFF, 0x01, 0x5C]),
            [0x68, 0x84]
        );
        // An endless chain is cut off.
        let mut part = vec![0x10, 0x87, 0x07, 0x9A, 0xFF];
        part.extend_from_slice(&[0u8; 255]);
        let answers: Vec<_> = (0..5).map(|_| card.process(&part)).collect();
        assert!(answers.contains(&vec![0x6A, 0x80]), "{answers:02X?}");
    }

    #[test]
    fn general_authenticate_needs_a_key_and_a_well_formed_template() {
        let mut card = bare_card();
        let sign = [
            0x00, 0x87, 0x11, 0x9C, 0x08, 0x7C, 0x06, 0x82, 0x00, 0x81, 0x02, 0x01, 0x02, 0x00,
        ];
        assert_eq!(card.process(&sign), [0x6A, 0x88]);
        let bad = [0x00, 0x87, 0x11, 0x9C, 0x04, 0x7C, 0x05, 0x82, 0x00, 0x00];
        assert_eq!(card.process(&bad), [0x6A, 0x80]);
    }

    #[test]
    fn malformed_apdus_get_status_words_not_panics() {
        let mut card = bare_card();
        assert_eq!(card.process(&[]), [0x67, 0x00]);
        assert_eq!(card.process(&[0x00, 0xA4]), [0x67, 0x00]);
        assert_eq!(card.process(&[0x80, 0xA4, 0x04, 0x00]), [0x6E, 0x00]);
        assert_eq!(card.process(&[0x0C, 0xA4, 0x04, 0x00]), [0x68, 0x82]);
        assert_eq!(card.process(&[0x00, 0xFD, 0x00, 0x00, 0x03]), [0x6D, 0x00]);
        // Every short APDU shape with a few interesting bytes, through every instruction.
        let mut state = 0x1234_5678u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for _ in 0..20000 {
            let len = (next() % 300) as usize;
            let mut apdu: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len >= 4 {
                apdu[0] &= 0x10;
                apdu[1] = [0xA4, 0xCB, 0x20, 0x87, 0xC0][(next() % 5) as usize];
                apdu[3] = [0x80, 0x9A, 0x9B, 0x9C, 0x9D, 0xFF][(next() % 6) as usize];
            }
            if len >= 5 && next() % 2 == 0 {
                apdu[4] = (len - 5) as u8;
            }
            let r = card.process(&apdu);
            assert!(r.len() >= 2 && r.len() <= 258);
        }
    }
}
