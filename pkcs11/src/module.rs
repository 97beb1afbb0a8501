//! The module's state and every PKCS#11 operation in safe Rust: the slots (one per token
//! the agent has had, stable across removal; an agent slot when it has none), the objects of
//! the tokens present, sessions and their find, sign and decrypt operations, login through
//! the agent, and slot events.
//!
//! Owns the state behind one lock (`Inner`), never held while the agent is asked: many
//! threads of a host program sign at once, each on a connection of its own. The C ABI
//! (`abi.rs`) turns pointers into these calls.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;

use cryptoki_sys::*;
use smime_agent_proto::{
    KeyDecryptParams, KeyDeriveParams, KeyLoginParams, KeySignParams, KeyToken, Op,
};
use zeroize::Zeroizing;

use crate::agent::Agent;
use crate::error::ckr_of;
use crate::mechanism::{self, SignMech};
use crate::objects::{self, KeyType, Object};

pub type Rv<T> = Result<T, CK_RV>;

/// Most bytes a multi-part signature collects before it is signed.
const MAX_SIGN_DATA: usize = 64 * 1024 * 1024;

/// A slot: the token in it now, if any, and the one it held last (so a card put back gets
/// its slot again).
struct Slot {
    id: CK_SLOT_ID,
    token: Option<Token>,
    last_token: Option<String>,
}

struct Token {
    info: KeyToken,
    /// Logged in through this module (C_Login). Login state is per application in PKCS#11:
    /// a new process starts logged out even when the agent holds the PIN, and its C_Login
    /// then costs no prompt.
    logged_in: bool,
    mechanisms: Vec<(CK_MECHANISM_TYPE, CK_MECHANISM_INFO)>,
}

/// A sign or decrypt operation under way in a session.
enum Operation {
    Sign {
        mech: SignMech,
        key: Object,
        data: Vec<u8>,
    },
    Decrypt {
        mech: smime_agent_proto::KeyDecryptMechanism,
        key: Object,
        /// The plaintext when the caller's buffer was too small for it.
        done: Option<Zeroizing<Vec<u8>>>,
    },
}

struct Session {
    slot: CK_SLOT_ID,
    rw: bool,
    find: Option<Vec<CK_OBJECT_HANDLE>>,
    op: Option<Operation>,
}

struct Inner {
    slots: Vec<Slot>,
    /// The objects of present tokens, and session objects (derived secrets) with their
    /// session.
    objects: HashMap<CK_OBJECT_HANDLE, (CK_SLOT_ID, Option<CK_SESSION_HANDLE>, Object)>,
    /// The handle of each token object, kept while the module lives so a handle never
    /// changes meaning.
    handles: HashMap<(String, CK_OBJECT_CLASS), CK_OBJECT_HANDLE>,
    next_handle: CK_OBJECT_HANDLE,
    sessions: HashMap<CK_SESSION_HANDLE, Session>,
    next_session: CK_SESSION_HANDLE,
    /// Slots whose token came or went since C_WaitForSlotEvent last said so.
    events: Vec<CK_SLOT_ID>,
    finalized: bool,
}

/// The module between C_Initialize and C_Finalize.
pub struct Module {
    /// The process that initialized it: a child after fork must initialize its own.
    pub pid: u32,
    agent: Arc<Agent>,
    inner: Mutex<Inner>,
    slot_event: Condvar,
    stop: Arc<AtomicBool>,
    watcher: Mutex<Option<JoinHandle<()>>>,
}

impl Module {
    pub fn start() -> Arc<Module> {
        let module = Arc::new(Module {
            pid: std::process::id(),
            agent: Arc::new(Agent::from_env()),
            inner: Mutex::new(Inner {
                slots: vec![],
                objects: HashMap::new(),
                handles: HashMap::new(),
                next_handle: 1,
                sessions: HashMap::new(),
                next_session: 1,
                events: vec![],
                finalized: false,
            }),
            slot_event: Condvar::new(),
            stop: Arc::new(AtomicBool::new(false)),
            watcher: Mutex::new(None),
        });
        module.refresh();
        // What is there at the start is no event: C_GetSlotList shows it.
        module.lock().events.clear();
        let weak: Weak<Module> = Arc::downgrade(&module);
        match module.agent.watch(module.stop.clone(), move || {
            if let Some(m) = weak.upgrade() {
                m.refresh();
            }
        }) {
            Ok(h) => {
                if let Ok(mut w) = module.watcher.lock() {
                    *w = Some(h);
                }
            }
            Err(e) => eprintln!("smime-agent-pkcs11: cannot follow token events: {e}"),
        }
        module
    }

    /// Stops the watcher and closes every connection: nothing of the module runs after.
    pub fn finalize(&self) {
        self.stop.store(true, Ordering::SeqCst);
        {
            let mut inner = self.lock();
            inner.finalized = true;
            inner.sessions.clear();
        }
        self.slot_event.notify_all();
        let handle = self.watcher.lock().ok().and_then(|mut w| w.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
        self.agent.close();
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the agent for its tokens and keys and puts the slots in step: tokens that came
    /// get a slot (their old one if they had one), tokens that went leave theirs empty and
    /// their sessions end. A lost agent empties every slot.
    pub fn refresh(&self) {
        let keys = self.agent.keys();
        let mut inner = self.lock();
        let inner = &mut *inner;
        let tokens = match keys {
            Ok(k) => k.tokens,
            Err(_) => vec![],
        };
        let present: HashSet<&str> = tokens.iter().map(|t| t.token.id.as_str()).collect();
        let mut changed = vec![];
        for slot in &mut inner.slots {
            if let Some(t) = &slot.token
                && !present.contains(t.info.token.id.as_str())
            {
                slot.token = None;
                changed.push(slot.id);
            }
        }
        for t in tokens {
            let id = t.token.id.clone();
            let types: Vec<KeyType> = t
                .keys
                .iter()
                .filter_map(|k| objects::of_key(k).first().and_then(|o| o.key_type))
                .collect();
            let index = inner
                .slots
                .iter()
                .position(|s| s.token.as_ref().is_some_and(|x| x.info.token.id == id))
                .or_else(|| {
                    inner
                        .slots
                        .iter()
                        .position(|s| s.last_token.as_deref() == Some(&id))
                })
                .or_else(|| {
                    inner
                        .slots
                        .iter()
                        .position(|s| s.token.is_none() && s.last_token.is_none())
                });
            let index = match index {
                Some(i) => i,
                None => {
                    inner.slots.push(Slot {
                        id: inner.slots.len() as CK_SLOT_ID + 1,
                        token: None,
                        last_token: None,
                    });
                    inner.slots.len() - 1
                }
            };
            let slot = &mut inner.slots[index];
            let was_logged_in = slot.token.as_ref().is_some_and(|x| x.logged_in);
            if slot.token.is_none() {
                changed.push(slot.id);
            }
            slot.last_token = Some(id);
            slot.token = Some(Token {
                mechanisms: mechanism::offered(&types),
                info: t,
                logged_in: was_logged_in,
            });
        }
        if inner.slots.is_empty() {
            // The agent's own slot, empty, so a host program sees where tokens will come.
            inner.slots.push(Slot {
                id: 1,
                token: None,
                last_token: None,
            });
        }
        // Token objects afresh; session objects stay with their sessions.
        inner.objects.retain(|_, (_, session, _)| session.is_some());
        for slot in &inner.slots {
            let Some(t) = &slot.token else { continue };
            for entry in &t.info.keys {
                for obj in objects::of_key(entry) {
                    let key = (obj.key.clone(), obj.class);
                    let handle = *inner.handles.entry(key).or_insert_with(|| {
                        inner.next_handle += 1;
                        inner.next_handle
                    });
                    inner.objects.insert(handle, (slot.id, None, obj));
                }
            }
        }
        // Sessions of slots whose token went end with it.
        let empty: HashSet<CK_SLOT_ID> = inner
            .slots
            .iter()
            .filter(|s| s.token.is_none())
            .map(|s| s.id)
            .collect();
        inner.sessions.retain(|_, s| !empty.contains(&s.slot));
        let sessions: HashSet<CK_SESSION_HANDLE> = inner.sessions.keys().copied().collect();
        inner
            .objects
            .retain(|_, (_, session, _)| session.is_none_or(|s| sessions.contains(&s)));
        if !changed.is_empty() {
            for id in changed {
                if !inner.events.contains(&id) {
                    inner.events.push(id);
                }
            }
            self.slot_event.notify_all();
        }
    }

    pub fn slot_ids(&self, token_present: bool) -> Vec<CK_SLOT_ID> {
        self.lock()
            .slots
            .iter()
            .filter(|s| !token_present || s.token.is_some())
            .map(|s| s.id)
            .collect()
    }

    pub fn slot_info(&self, id: CK_SLOT_ID) -> Rv<CK_SLOT_INFO> {
        let inner = self.lock();
        let slot = inner
            .slots
            .iter()
            .find(|s| s.id == id)
            .ok_or(CKR_SLOT_ID_INVALID)?;
        let mut info = CK_SLOT_INFO {
            slotDescription: [b' '; 64],
            manufacturerID: [b' '; 32],
            flags: CKF_REMOVABLE_DEVICE,
            hardwareVersion: CK_VERSION { major: 0, minor: 1 },
            firmwareVersion: CK_VERSION { major: 0, minor: 1 },
        };
        let desc = match &slot.token {
            Some(t) => {
                info.flags |= CKF_TOKEN_PRESENT;
                if t.info.hardware {
                    info.flags |= CKF_HW_SLOT;
                }
                format!("smime-agent: {}", t.info.token.label)
            }
            None => "smime-agent".to_owned(),
        };
        pad(&mut info.slotDescription, &desc);
        pad(&mut info.manufacturerID, "smime-agent");
        Ok(info)
    }

    pub fn token_info(&self, id: CK_SLOT_ID) -> Rv<CK_TOKEN_INFO> {
        let inner = self.lock();
        let slot = inner
            .slots
            .iter()
            .find(|s| s.id == id)
            .ok_or(CKR_SLOT_ID_INVALID)?;
        let t = slot.token.as_ref().ok_or(CKR_TOKEN_NOT_PRESENT)?;
        let sessions = inner.sessions.values().filter(|s| s.slot == id).count() as CK_ULONG;
        let rw = inner
            .sessions
            .values()
            .filter(|s| s.slot == id && s.rw)
            .count() as CK_ULONG;
        let mut info = CK_TOKEN_INFO {
            label: [b' '; 32],
            manufacturerID: [b' '; 32],
            model: [b' '; 16],
            serialNumber: [b' '; 16],
            // PINs never pass through the module: the agent asks (pinentry or the reader's
            // keypad), so the path is protected as far as the host program is concerned.
            flags: CKF_TOKEN_INITIALIZED
                | CKF_USER_PIN_INITIALIZED
                | CKF_LOGIN_REQUIRED
                | CKF_PROTECTED_AUTHENTICATION_PATH,
            ulMaxSessionCount: CK_EFFECTIVELY_INFINITE,
            ulSessionCount: sessions,
            ulMaxRwSessionCount: CK_EFFECTIVELY_INFINITE,
            ulRwSessionCount: rw,
            ulMaxPinLen: 255,
            ulMinPinLen: 0,
            ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
            hardwareVersion: CK_VERSION { major: 0, minor: 1 },
            firmwareVersion: CK_VERSION { major: 0, minor: 1 },
            utcTime: [b' '; 16],
        };
        pad(&mut info.label, &t.info.token.label);
        pad(&mut info.manufacturerID, &t.info.manufacturer);
        pad(&mut info.model, &t.info.model);
        pad(&mut info.serialNumber, &t.info.token.serial);
        Ok(info)
    }

    pub fn mechanisms(&self, id: CK_SLOT_ID) -> Rv<Vec<(CK_MECHANISM_TYPE, CK_MECHANISM_INFO)>> {
        let inner = self.lock();
        let slot = inner
            .slots
            .iter()
            .find(|s| s.id == id)
            .ok_or(CKR_SLOT_ID_INVALID)?;
        let t = slot.token.as_ref().ok_or(CKR_TOKEN_NOT_PRESENT)?;
        Ok(t.mechanisms.clone())
    }

    pub fn open_session(&self, slot: CK_SLOT_ID, flags: CK_FLAGS) -> Rv<CK_SESSION_HANDLE> {
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(CKR_SESSION_PARALLEL_NOT_SUPPORTED);
        }
        let mut inner = self.lock();
        let s = inner
            .slots
            .iter()
            .find(|s| s.id == slot)
            .ok_or(CKR_SLOT_ID_INVALID)?;
        if s.token.is_none() {
            return Err(CKR_TOKEN_NOT_PRESENT);
        }
        let h = inner.next_session;
        inner.next_session += 1;
        inner.sessions.insert(
            h,
            Session {
                slot,
                rw: flags & CKF_RW_SESSION != 0,
                find: None,
                op: None,
            },
        );
        Ok(h)
    }

    pub fn close_session(&self, h: CK_SESSION_HANDLE) -> Rv<()> {
        let mut inner = self.lock();
        inner
            .sessions
            .remove(&h)
            .ok_or(CKR_SESSION_HANDLE_INVALID)?;
        inner.objects.retain(|_, (_, s, _)| *s != Some(h));
        Ok(())
    }

    pub fn close_all_sessions(&self, slot: CK_SLOT_ID) -> Rv<()> {
        let mut inner = self.lock();
        if !inner.slots.iter().any(|s| s.id == slot) {
            return Err(CKR_SLOT_ID_INVALID);
        }
        let gone: Vec<CK_SESSION_HANDLE> = inner
            .sessions
            .iter()
            .filter(|(_, s)| s.slot == slot)
            .map(|(h, _)| *h)
            .collect();
        for h in &gone {
            inner.sessions.remove(h);
        }
        inner
            .objects
            .retain(|_, (_, s, _)| s.is_none_or(|s| !gone.contains(&s)));
        Ok(())
    }

    /// The session's slot, and whether its token is logged in.
    fn session_slot(&self, inner: &Inner, h: CK_SESSION_HANDLE) -> Rv<(CK_SLOT_ID, bool)> {
        let s = inner.sessions.get(&h).ok_or(CKR_SESSION_HANDLE_INVALID)?;
        let logged_in = inner
            .slots
            .iter()
            .find(|x| x.id == s.slot)
            .and_then(|x| x.token.as_ref())
            .ok_or(CKR_DEVICE_REMOVED)?
            .logged_in;
        Ok((s.slot, logged_in))
    }

    pub fn session_info(&self, h: CK_SESSION_HANDLE) -> Rv<CK_SESSION_INFO> {
        let inner = self.lock();
        let (slot, logged_in) = self.session_slot(&inner, h)?;
        let rw = inner.sessions.get(&h).is_some_and(|s| s.rw);
        let state = match (rw, logged_in) {
            (false, false) => CKS_RO_PUBLIC_SESSION,
            (false, true) => CKS_RO_USER_FUNCTIONS,
            (true, false) => CKS_RW_PUBLIC_SESSION,
            (true, true) => CKS_RW_USER_FUNCTIONS,
        };
        Ok(CK_SESSION_INFO {
            slotID: slot,
            state,
            flags: CKF_SERIAL_SESSION | if rw { CKF_RW_SESSION } else { 0 },
            ulDeviceError: 0,
        })
    }

    /// C_Login: the agent logs the token in, asking for the PIN by its own source. A PIN the
    /// host program passes is not used (and never sent anywhere).
    pub fn login(&self, h: CK_SESSION_HANDLE, user: CK_USER_TYPE) -> Rv<()> {
        let token_id = {
            let inner = self.lock();
            let (slot, logged_in) = self.session_slot(&inner, h)?;
            match user {
                CKU_USER => {}
                // The agent does a key's context-specific login itself, when it signs.
                CKU_CONTEXT_SPECIFIC => return Ok(()),
                CKU_SO => return Err(CKR_USER_TYPE_INVALID),
                _ => return Err(CKR_USER_TYPE_INVALID),
            }
            if logged_in {
                return Err(CKR_USER_ALREADY_LOGGED_IN);
            }
            token_of(&inner, slot)?.info.token.id.clone()
        };
        self.agent
            .call(Op::KeyLogin(KeyLoginParams {
                token: token_id.clone(),
            }))
            .map_err(|e| ckr_of(&e))?;
        let mut inner = self.lock();
        for slot in &mut inner.slots {
            if let Some(t) = &mut slot.token
                && t.info.token.id == token_id
            {
                t.logged_in = true;
            }
        }
        Ok(())
    }

    /// C_Logout: this module stops treating the token as logged in. The agent keeps its PIN
    /// for its other clients, under its own cache rules (`smime-agent forget` wipes it).
    pub fn logout(&self, h: CK_SESSION_HANDLE) -> Rv<()> {
        let mut inner = self.lock();
        let (slot, logged_in) = self.session_slot(&inner, h)?;
        if !logged_in {
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        if let Some(t) = inner
            .slots
            .iter_mut()
            .find(|s| s.id == slot)
            .and_then(|s| s.token.as_mut())
        {
            t.logged_in = false;
        }
        Ok(())
    }

    pub fn find_init(
        &self,
        h: CK_SESSION_HANDLE,
        template: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>,
    ) -> Rv<()> {
        let mut inner = self.lock();
        let (slot, logged_in) = self.session_slot(&inner, h)?;
        if inner.sessions.get(&h).is_some_and(|s| s.find.is_some()) {
            return Err(CKR_OPERATION_ACTIVE);
        }
        let mut found: Vec<CK_OBJECT_HANDLE> = inner
            .objects
            .iter()
            .filter(|(_, (s, owner, o))| {
                *s == slot
                    && owner.is_none_or(|o| o == h)
                    && (!o.private || logged_in)
                    && o.matches(&template)
            })
            .map(|(handle, _)| *handle)
            .collect();
        found.sort_unstable();
        found.reverse();
        if let Some(s) = inner.sessions.get_mut(&h) {
            s.find = Some(found);
        }
        Ok(())
    }

    pub fn find(&self, h: CK_SESSION_HANDLE, max: usize) -> Rv<Vec<CK_OBJECT_HANDLE>> {
        let mut inner = self.lock();
        let s = inner
            .sessions
            .get_mut(&h)
            .ok_or(CKR_SESSION_HANDLE_INVALID)?;
        let list = s.find.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        let mut out = vec![];
        while out.len() < max {
            match list.pop() {
                Some(o) => out.push(o),
                None => break,
            }
        }
        Ok(out)
    }

    pub fn find_final(&self, h: CK_SESSION_HANDLE) -> Rv<()> {
        let mut inner = self.lock();
        let s = inner
            .sessions
            .get_mut(&h)
            .ok_or(CKR_SESSION_HANDLE_INVALID)?;
        s.find.take().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        Ok(())
    }

    /// The object `o` as session `h` may see it.
    pub fn object(&self, h: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) -> Rv<Object> {
        let inner = self.lock();
        let (slot, logged_in) = self.session_slot(&inner, h)?;
        match inner.objects.get(&o) {
            Some((s, owner, obj))
                if *s == slot && owner.is_none_or(|x| x == h) && (!obj.private || logged_in) =>
            {
                Ok(obj.clone())
            }
            _ => Err(CKR_OBJECT_HANDLE_INVALID),
        }
    }

    pub fn destroy_object(&self, h: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) -> Rv<()> {
        let mut inner = self.lock();
        self.session_slot(&inner, h)?;
        match inner.objects.get(&o) {
            Some((_, Some(owner), _)) if *owner == h => {
                inner.objects.remove(&o);
                Ok(())
            }
            Some(_) => Err(CKR_ACTION_PROHIBITED),
            None => Err(CKR_OBJECT_HANDLE_INVALID),
        }
    }

    /// A private key of session `h` that may do what `allowed` says.
    fn private_key(
        &self,
        h: CK_SESSION_HANDLE,
        o: CK_OBJECT_HANDLE,
        allowed: impl Fn(&Object) -> bool,
    ) -> Rv<Object> {
        let key = self.object(h, o)?;
        if key.class != CKO_PRIVATE_KEY {
            return Err(CKR_KEY_TYPE_INCONSISTENT);
        }
        if !allowed(&key) {
            return Err(CKR_KEY_FUNCTION_NOT_PERMITTED);
        }
        Ok(key)
    }

    fn set_op(&self, h: CK_SESSION_HANDLE, op: Operation) -> Rv<()> {
        let mut inner = self.lock();
        let s = inner
            .sessions
            .get_mut(&h)
            .ok_or(CKR_SESSION_HANDLE_INVALID)?;
        if s.op.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        s.op = Some(op);
        Ok(())
    }

    fn take_op(&self, h: CK_SESSION_HANDLE) -> Rv<Operation> {
        let mut inner = self.lock();
        let s = inner
            .sessions
            .get_mut(&h)
            .ok_or(CKR_SESSION_HANDLE_INVALID)?;
        s.op.take().ok_or(CKR_OPERATION_NOT_INITIALIZED)
    }

    fn put_back(&self, h: CK_SESSION_HANDLE, op: Operation) {
        if let Some(s) = self.lock().sessions.get_mut(&h) {
            s.op = Some(op);
        }
    }

    pub fn sign_init(&self, h: CK_SESSION_HANDLE, mech: SignMech, key: CK_OBJECT_HANDLE) -> Rv<()> {
        let key = self.private_key(h, key, |k| k.sign)?;
        if !key.key_type.is_some_and(|t| mech.fits(t)) {
            return Err(CKR_KEY_TYPE_INCONSISTENT);
        }
        self.set_op(
            h,
            Operation::Sign {
                mech,
                key,
                data: vec![],
            },
        )
    }

    pub fn sign_update(&self, h: CK_SESSION_HANDLE, part: &[u8]) -> Rv<()> {
        let mut inner = self.lock();
        let s = inner
            .sessions
            .get_mut(&h)
            .ok_or(CKR_SESSION_HANDLE_INVALID)?;
        match &mut s.op {
            Some(Operation::Sign { data, .. }) => {
                if data.len() + part.len() > MAX_SIGN_DATA {
                    s.op = None;
                    return Err(CKR_DATA_LEN_RANGE);
                }
                data.extend_from_slice(part);
                Ok(())
            }
            _ => Err(CKR_OPERATION_NOT_INITIALIZED),
        }
    }

    /// C_Sign / C_SignFinal. `out_len` None asks for the length only (the operation stays);
    /// a buffer too small gives `Err((CKR_BUFFER_TOO_SMALL, needed))`, the operation stays.
    pub fn sign_final(
        &self,
        h: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        out_len: Option<usize>,
    ) -> Result<Vec<u8>, (CK_RV, usize)> {
        let op = self.take_op(h).map_err(|rv| (rv, 0))?;
        let Operation::Sign {
            mech,
            key,
            data: mut collected,
        } = op
        else {
            self.put_back(h, op);
            return Err((CKR_OPERATION_NOT_INITIALIZED, 0));
        };
        let len = key.key_type.map(mechanism::signature_len).unwrap_or(0);
        if out_len.is_none_or(|n| n < len) {
            let rv = length_answer(out_len);
            self.put_back(
                h,
                Operation::Sign {
                    mech,
                    key,
                    data: collected,
                },
            );
            return Err((rv, len));
        }
        // C_Sign hands the whole data at once: it is signed where it lies, not copied.
        let whole: &[u8] = match data {
            Some(d) if collected.is_empty() => d,
            Some(d) => {
                if collected.len() + d.len() > MAX_SIGN_DATA {
                    return Err((CKR_DATA_LEN_RANGE, 0));
                }
                collected.extend_from_slice(d);
                &collected
            }
            None => &collected,
        };
        let (mechanism, data) = mech.to_agent(whole);
        self.key_op(Op::KeySign(KeySignParams {
            key: key.key.clone(),
            mechanism,
            data: data.into(),
        }))
        .map(|d| d.to_vec())
        .map_err(|rv| (rv, 0))
    }

    pub fn decrypt_init(
        &self,
        h: CK_SESSION_HANDLE,
        mech: smime_agent_proto::KeyDecryptMechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Rv<()> {
        let key = self.private_key(h, key, |k| k.decrypt)?;
        if !matches!(key.key_type, Some(KeyType::Rsa { .. })) {
            return Err(CKR_KEY_TYPE_INCONSISTENT);
        }
        self.set_op(
            h,
            Operation::Decrypt {
                mech,
                key,
                done: None,
            },
        )
    }

    /// C_Decrypt, with the same length rules as [`Module::sign_final`]. Without a buffer the
    /// length given is the modulus length, an upper bound.
    pub fn decrypt(
        &self,
        h: CK_SESSION_HANDLE,
        data: &[u8],
        out_len: Option<usize>,
    ) -> Result<Zeroizing<Vec<u8>>, (CK_RV, usize)> {
        let op = self.take_op(h).map_err(|rv| (rv, 0))?;
        let Operation::Decrypt { mech, key, done } = op else {
            self.put_back(h, op);
            return Err((CKR_OPERATION_NOT_INITIALIZED, 0));
        };
        let plain = match done {
            Some(p) => p,
            None => {
                let k = match key.key_type {
                    Some(KeyType::Rsa { modulus_bytes }) => modulus_bytes,
                    _ => 0,
                };
                if out_len.is_none() {
                    self.put_back(
                        h,
                        Operation::Decrypt {
                            mech,
                            key,
                            done: None,
                        },
                    );
                    return Err((CKR_OK, k));
                }
                if data.len() != k {
                    return Err((CKR_ENCRYPTED_DATA_LEN_RANGE, 0));
                }
                self.key_op(Op::KeyDecrypt(KeyDecryptParams {
                    key: key.key.clone(),
                    mechanism: mech,
                    data: data.to_vec().into(),
                }))
                .map_err(|rv| (rv, 0))?
            }
        };
        match out_len {
            Some(n) if n >= plain.len() => Ok(plain),
            _ => {
                let len = plain.len();
                let rv = length_answer(out_len);
                self.put_back(
                    h,
                    Operation::Decrypt {
                        mech,
                        key,
                        done: Some(plain),
                    },
                );
                Err((rv, len))
            }
        }
    }

    /// C_DeriveKey with CKM_ECDH1_DERIVE and no KDF: the shared secret as a session object.
    pub fn derive(
        &self,
        h: CK_SESSION_HANDLE,
        key: CK_OBJECT_HANDLE,
        public_point: Vec<u8>,
        value_len: Option<usize>,
    ) -> Rv<CK_OBJECT_HANDLE> {
        let key = self.private_key(h, key, |k| k.derive)?;
        if !matches!(key.key_type, Some(KeyType::Ec { .. })) {
            return Err(CKR_KEY_TYPE_INCONSISTENT);
        }
        let mut z = self
            .key_op(Op::KeyDerive(KeyDeriveParams {
                key: key.key.clone(),
                public_point: public_point.into(),
            }))?
            .to_vec();
        // CKA_VALUE_LEN asks for the leftmost bytes (PKCS#11 2.40 section 2.3.13... as NSS
        // and OpenSC read it): cut, never pad.
        if let Some(n) = value_len {
            if n > z.len() {
                return Err(CKR_TEMPLATE_INCONSISTENT);
            }
            z.truncate(n);
        }
        let mut inner = self.lock();
        let (slot, _) = self.session_slot(&inner, h)?;
        inner.next_handle += 1;
        let handle = inner.next_handle;
        inner
            .objects
            .insert(handle, (slot, Some(h), objects::secret(z)));
        Ok(handle)
    }

    /// One `key_*` request: the bytes it answers (secret ones wiped when dropped). A token
    /// the agent says is gone leaves its slot now, before the event arrives.
    fn key_op(&self, op: Op) -> Rv<Zeroizing<Vec<u8>>> {
        let r = self.agent.call(op);
        if let Err(e) = &r
            && e.code() == Some(smime_agent_proto::ErrorCode::TokenRemoved)
        {
            self.refresh();
        }
        let v = r.map_err(|e| ckr_of(&e))?;
        let r: smime_agent_proto::KeyOpResult =
            serde_json::from_value(v).map_err(|_| CKR_DEVICE_ERROR)?;
        Ok(Zeroizing::new(r.data.0))
    }

    /// C_WaitForSlotEvent: a slot whose token came or went since the last call; with
    /// `block`, waits for one (ends with CKR_CRYPTOKI_NOT_INITIALIZED at C_Finalize).
    pub fn wait_for_slot_event(&self, block: bool) -> Rv<CK_SLOT_ID> {
        let mut inner = self.lock();
        loop {
            if inner.finalized {
                return Err(CKR_CRYPTOKI_NOT_INITIALIZED);
            }
            if !inner.events.is_empty() {
                return Ok(inner.events.remove(0));
            }
            if !block {
                return Err(CKR_NO_EVENT);
            }
            inner = self
                .slot_event
                .wait(inner)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// What a call that returns no output answers: the length query (no buffer) is CKR_OK, a
/// buffer too small is CKR_BUFFER_TOO_SMALL; the length needed goes with either.
fn length_answer(out_len: Option<usize>) -> CK_RV {
    if out_len.is_none() {
        CKR_OK
    } else {
        CKR_BUFFER_TOO_SMALL
    }
}

fn token_of(inner: &Inner, slot: CK_SLOT_ID) -> Rv<&Token> {
    inner
        .slots
        .iter()
        .find(|s| s.id == slot)
        .and_then(|s| s.token.as_ref())
        .ok_or(CKR_DEVICE_REMOVED)
}

/// Copies `s` into a blank-padded PKCS#11 text field, cut at a character boundary.
fn pad(field: &mut [u8], s: &str) {
    field.fill(b' ');
    let mut end = s.len().min(field.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    field[..end].copy_from_slice(&s.as_bytes()[..end]);
}
