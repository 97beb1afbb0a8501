//! A PKCS#11 module loaded from the configuration, and reading the tokens in its slots.
//!
//! Owns: loading and initializing the library (only paths from the config file), listing
//! slots with tokens, and reading a token's certificates and key ids into a [`Token`].
//! Blocking: call from the blocking pool.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::object::{Attribute, AttributeType, CertificateType, ObjectClass};
use cryptoki::session::Session;
use cryptoki::slot::{Slot, SlotInfo, TokenInfo};
use sha2::{Digest, Sha256};
use smime_agent_proto::TokenRef;
use tracing::{debug, info, warn};

use super::facts::{TokenCert, TokenFacts, retries_of};
use super::token::Token;
use crate::certs::{CertFacts, hex};
use crate::config::{ModuleConfig, ModuleKind};

/// A token and what was read from it.
#[derive(Debug)]
pub struct ScannedToken {
    pub token: Arc<Token>,
    pub certs: Vec<TokenCert>,
}

/// What a rescan found.
#[derive(Debug, Default)]
pub struct Changes {
    pub inserted: Vec<ScannedToken>,
    /// Ids of tokens that are gone.
    pub removed: Vec<String>,
}

/// A configured module.
pub struct Module {
    pub config: ModuleConfig,
    pkcs11: Option<Pkcs11>,
    /// The tokens this module has now, by id, and their slots.
    known: Mutex<HashMap<String, Slot>>,
    /// The module reports slot events (C_WaitForSlotEvent); otherwise it is polled, and
    /// re-initialized on an explicit rescan to see tokens created after it loaded.
    pub slot_events: AtomicBool,
    /// The library's own description, e.g. "SoftHSM 2.6".
    pub library: Option<String>,
    /// Why the module is unusable.
    pub error: Option<String>,
    /// Set while a re-initialization failed: why, and when to try again. Its tokens are
    /// out of the store meanwhile; a rescan after that time initializes it again.
    down: Mutex<Option<Down>>,
}

/// A module whose C_Initialize failed after it had loaded.
#[derive(Debug, Clone)]
struct Down {
    reason: String,
    retry_at: Instant,
    backoff: Duration,
}

/// The first wait after a failed re-initialization, doubled after each failure up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("path", &self.config.path)
            .field("library", &self.library)
            .field("error", &self.error)
            .finish()
    }
}

impl Module {
    /// Loads and initializes the library. A module that fails to load is kept, with its
    /// error, so `status` can say why it is missing.
    pub fn load(config: &ModuleConfig) -> Module {
        let mut m = Module {
            config: config.clone(),
            pkcs11: None,
            known: Mutex::new(HashMap::new()),
            slot_events: AtomicBool::new(false),
            library: None,
            error: None,
            down: Mutex::new(None),
        };
        let pkcs11 = match Pkcs11::new(&config.path) {
            Ok(p) => p,
            Err(e) => {
                m.error = Some(format!("cannot load {}: {e}", config.path.display()));
                return m;
            }
        };
        match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => {
                m.error = Some(format!("C_Initialize failed: {e}"));
                return m;
            }
        }
        if let Ok(info) = pkcs11.get_library_info() {
            let v = info.library_version();
            m.library = Some(format!(
                "{} {}.{} ({})",
                info.library_description().trim(),
                v.major(),
                v.minor(),
                info.manufacturer_id().trim()
            ));
        }
        m.pkcs11 = Some(pkcs11);
        m
    }

    pub fn path(&self) -> &Path {
        &self.config.path
    }

    /// The loaded library, for the slot-event thread.
    pub fn pkcs11(&self) -> Option<&Pkcs11> {
        self.pkcs11.as_ref()
    }

    pub fn is_loaded(&self) -> bool {
        self.pkcs11.is_some()
    }

    /// Why the module is down now (its re-initialization failed), for `status`.
    pub fn down_reason(&self) -> Option<String> {
        self.down
            .lock()
            .ok()
            .and_then(|d| d.as_ref().map(|d| d.reason.clone()))
    }

    /// Compares the tokens present now with the ones known, and opens the new ones.
    /// Slots whose reader PC/SC reports empty count as empty even when the module still
    /// lists a token there (modules notice removals later than PC/SC does).
    pub fn rescan(
        &self,
        empty_readers: &HashSet<String>,
        pin_ttl: Duration,
    ) -> Result<Changes, String> {
        let pkcs11 = self.pkcs11.as_ref().ok_or("module not loaded")?;
        // A module that failed to initialize again is tried again once its wait is over.
        let down = self.down.lock().ok().and_then(|d| d.clone());
        if let Some(d) = down {
            if Instant::now() < d.retry_at {
                return Err(format!(
                    "the module is down ({}); it is tried again shortly",
                    d.reason
                ));
            }
            self.reinitialize()?;
        }
        // Not get_slots_with_initialized_token: it reads every token's info each time.
        let slots = pkcs11
            .get_slots_with_token()
            .map_err(|e| format!("C_GetSlotList: {e}"))?;
        let mut known = self.known.lock().map_err(|_| "module state poisoned")?;
        // Each token present, with what was read of a new one (opened below without asking
        // its slot and token again: OpenSC's C_GetTokenInfo talks to the card).
        let mut present: HashMap<String, (Slot, Option<(SlotInfo, TokenInfo)>)> = HashMap::new();
        for slot in slots {
            let Ok(slot_info) = pkcs11.get_slot_info(slot) else {
                // The token went away between the calls.
                continue;
            };
            let desc = slot_info.slot_description().trim().to_owned();
            if empty_readers.iter().any(|r| slot_is_reader(&desc, r)) {
                continue;
            }
            // A card known in this slot is still the same card: a swap passes through
            // PC/SC's removal, which forgets it. Not asking the card again keeps calls into
            // the module away from cards that may be leaving (see Token::mark_removed).
            if slot_info.removable_device()
                && let Some((id, _)) = known.iter().find(|(_, s)| **s == slot)
            {
                present.insert(id.clone(), (slot, None));
                continue;
            }
            let Ok(info) = pkcs11.get_token_info(slot) else {
                continue;
            };
            // SoftHSM always shows one empty, uninitialized token, which holds nothing.
            if !info.token_initialized() {
                continue;
            }
            let id = token_id(
                &self.config.path,
                info.serial_number().trim(),
                info.label().trim(),
            );
            present.insert(id, (slot, Some((slot_info, info))));
        }
        let mut changes = Changes::default();
        for (id, (slot, read)) in present.iter_mut() {
            if known.get(id) == Some(slot) {
                continue;
            }
            let Some((slot_info, info)) = read.take() else {
                continue;
            };
            match self.open_token(*slot, &slot_info, &info, pin_ttl) {
                Ok(t) => {
                    if known.insert(id.clone(), *slot).is_some() {
                        // Same token in another slot: the old object is stale.
                        changes.removed.push(id.clone());
                    }
                    changes.inserted.push(t);
                }
                // Not readable yet (a card still powering up): the next scan tries again.
                Err(e) => {
                    debug!(module = %self.config.path.display(), error = %e, "token not readable yet")
                }
            }
        }
        known.retain(|id, _| {
            let keep = present.contains_key(id);
            if !keep {
                changes.removed.push(id.clone());
            }
            keep
        });
        Ok(changes)
    }

    /// Ids of the tokens this module has now.
    pub fn known_ids(&self) -> Vec<String> {
        self.known
            .lock()
            .map(|k| k.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets a token without asking the module (PC/SC saw its card leave), so a card put
    /// back quickly is opened afresh.
    pub fn forget_token(&self, id: &str) {
        if let Ok(mut k) = self.known.lock() {
            k.remove(id);
        }
    }

    /// C_Finalize and C_Initialize: the only way to see tokens created by another process
    /// in modules like SoftHSM. Every session of the module dies; the caller makes sure no
    /// operation runs.
    ///
    /// A failed C_Initialize leaves the module down (see [`Module::down_reason`]) until a
    /// later rescan, after a growing wait, initializes it again: C_Finalize of a module that
    /// is not initialized (its last C_Initialize failed) is no error here.
    pub fn reinitialize(&self) -> Result<(), String> {
        let pkcs11 = self.pkcs11.as_ref().ok_or("module not loaded")?;
        match pkcs11.clone().finalize() {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiNotInitialized, _)) => {}
            Err(e) => return Err(self.went_down(format!("C_Finalize: {e}"))),
        }
        match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
                if let Ok(mut d) = self.down.lock()
                    && d.take().is_some()
                {
                    info!(module = %self.config.path.display(), "the module is initialized again");
                }
                Ok(())
            }
            Err(e) => Err(self.went_down(format!("C_Initialize: {e}"))),
        }
    }

    /// Notes a failed re-initialization: the module is down until its next try.
    fn went_down(&self, reason: String) -> String {
        if let Ok(mut d) = self.down.lock() {
            let backoff = d
                .as_ref()
                .map(|d| (d.backoff * 2).min(MAX_BACKOFF))
                .unwrap_or(FIRST_BACKOFF);
            warn!(module = %self.config.path.display(), error = %reason, retry_in = ?backoff, "the module is down");
            *d = Some(Down {
                reason: reason.clone(),
                retry_at: Instant::now() + backoff,
                backoff,
            });
        }
        // Its tokens' handles died with it: each is opened afresh when it is back.
        if let Ok(mut k) = self.known.lock() {
            k.clear();
        }
        reason
    }

    /// Reads the token in `slot` (whose slot and token info the scan read): its facts,
    /// certificates and key ids.
    fn open_token(
        &self,
        slot: Slot,
        slot_info: &SlotInfo,
        info: &TokenInfo,
        pin_ttl: Duration,
    ) -> Result<ScannedToken, String> {
        let pkcs11 = self.pkcs11.as_ref().ok_or("module not loaded")?.clone();
        let label = info.label().trim().to_owned();
        let serial = info.serial_number().trim().to_owned();
        let hardware = match self.config.kind {
            ModuleKind::Hardware => true,
            ModuleKind::Software => false,
            ModuleKind::Auto => slot_info.hardware_slot() || slot_info.removable_device(),
        };
        let removable = slot_info.removable_device();
        let token = TokenRef {
            id: token_id(&self.config.path, &serial, &label),
            label,
            serial,
        };
        let facts = TokenFacts {
            slot_description: slot_info.slot_description().trim().to_owned(),
            token,
            manufacturer: info.manufacturer_id().trim().to_owned(),
            model: info.model().trim().to_owned(),
            module_path: self.config.path.clone(),
            hardware,
            removable,
            protected_path: info.protected_authentication_path(),
            login_required: info.login_required(),
            // A token without the mechanism list says nothing: take it for "no raw RSA",
            // and decryptions use the token's own unpadding.
            raw_rsa: pkcs11
                .get_mechanism_list(slot)
                .map(|m| m.contains(&MechanismType::RSA_X_509))
                .unwrap_or(false),
        };
        let session = pkcs11
            .open_ro_session(slot)
            .map_err(|e| format!("C_OpenSession: {e}"))?;
        let certs = read_certs(&session, &facts)?;
        let retries = retries_of(info);
        // A card does one thing at a time; software tokens (and HSMs) work in parallel.
        let max_sessions = if removable {
            1
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(2)
                .clamp(2, 8)
        };
        let token = Token::new(facts, pkcs11, slot, session, max_sessions, pin_ttl);
        token.note_retries(retries);
        Ok(ScannedToken {
            token: Arc::new(token),
            certs,
        })
    }
}

/// Whether a slot description names a PC/SC reader. OpenSC describes a slot by its
/// reader's name, cut to the 64 bytes of CK_SLOT_INFO.
pub fn slot_is_reader(slot_description: &str, reader: &str) -> bool {
    let d = slot_description.trim();
    !d.is_empty() && (d == reader || (d.len() >= 60 && reader.starts_with(d)))
}

/// Tokens are identified by (module, serial, label), never by slot id, which changes.
pub fn token_id(module: &Path, serial: &str, label: &str) -> String {
    let mut h = Sha256::new();
    h.update(module.as_os_str().as_encoded_bytes());
    h.update([0]);
    h.update(serial.as_bytes());
    h.update([0]);
    h.update(label.as_bytes());
    hex(&h.finalize()[..8])
}

/// The X.509 certificates on the token and which of them have a private key.
fn read_certs(session: &Session, facts: &TokenFacts) -> Result<Vec<TokenCert>, String> {
    let handles = session
        .find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(CertificateType::X_509),
        ])
        .map_err(|e| format!("C_FindObjects: {e}"))?;
    // Private keys visible without login (tokens that make them public objects).
    let visible_keys: HashSet<Vec<u8>> = session
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .unwrap_or_default()
        .into_iter()
        .filter_map(|h| {
            session
                .get_attributes(h, &[AttributeType::Id])
                .ok()?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::Id(id) => Some(id),
                    _ => None,
                })
        })
        .collect();

    let mut out = vec![];
    for h in handles {
        let attrs = match session.get_attributes(h, &[AttributeType::Value, AttributeType::Id]) {
            Ok(a) => a,
            Err(e) => {
                warn!(token = %facts.token.label, error = %e, "cannot read a certificate object");
                continue;
            }
        };
        let mut value = None;
        let mut id = vec![];
        for a in attrs {
            match a {
                Attribute::Value(v) => value = Some(v),
                Attribute::Id(i) => id = i,
                _ => {}
            }
        }
        let Some(value) = value else { continue };
        let cert = match CertFacts::from_der(&value) {
            Ok(c) => c,
            Err(e) => {
                warn!(token = %facts.token.label, error = %e, "skipping a certificate that does not parse");
                continue;
            }
        };
        let has_key = if id.is_empty() {
            Some(false)
        } else if visible_keys.contains(&id) {
            Some(true)
        } else if facts.login_required {
            None
        } else {
            Some(false)
        };
        debug!(token = %facts.token.label, subject = %cert.subject, key_id = %hex(&id), ?has_key, "certificate");
        out.push(TokenCert {
            facts: cert,
            key_id: id,
            has_key,
        });
    }
    Ok(out)
}
