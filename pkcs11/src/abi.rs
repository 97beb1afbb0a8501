//! The C ABI: `C_GetFunctionList`, the function list, and each PKCS#11 2.40 function. Every
//! function checks its pointers, copies what it is given into Rust values, calls the
//! [`Module`], and copies the answer out; a panic never crosses into the host program (it
//! becomes CKR_GENERAL_ERROR). Functions the module does not offer answer
//! CKR_FUNCTION_NOT_SUPPORTED.
//!
//! The state lives in one `static`: C_Initialize creates it, C_Finalize ends it, and a
//! child process after fork() finds it belongs to its parent (CKR_CRYPTOKI_NOT_INITIALIZED
//! until the child initializes its own).

#![allow(unsafe_code)]
#![allow(non_snake_case)]
#![allow(clippy::missing_safety_doc)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use cryptoki_sys::*;

use crate::mechanism::HashAlg;
use crate::module::{Module, Rv};

static STATE: Mutex<Option<Arc<Module>>> = Mutex::new(None);

/// The module, if this process initialized it.
fn module() -> Rv<Arc<Module>> {
    let state = STATE.lock().unwrap_or_else(|p| p.into_inner());
    match &*state {
        Some(m) if m.pid == std::process::id() => Ok(m.clone()),
        _ => Err(CKR_CRYPTOKI_NOT_INITIALIZED),
    }
}

/// Runs `f`, turning a panic into CKR_GENERAL_ERROR.
fn guard(f: impl FnOnce() -> Rv<()>) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(rv)) => rv,
        Err(_) => CKR_GENERAL_ERROR,
    }
}

/// A slice from a C pointer and length; empty for a null pointer with length 0.
unsafe fn slice<'a, T>(p: *const T, n: CK_ULONG) -> Rv<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: the caller passes a buffer of `n` elements (PKCS#11's contract).
    Ok(unsafe { std::slice::from_raw_parts(p, n as usize) })
}

/// Writes `v` through `p`.
unsafe fn put<T>(p: *mut T, v: T) -> Rv<()> {
    if p.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-null, and the caller passes room for one `T`.
    unsafe { p.write(v) };
    Ok(())
}

/// The two-call output convention (PKCS#11 2.40 section 5.2), for bytes and for lists of
/// slots or mechanisms alike: `out` null asks for the count; too small a buffer is
/// CKR_BUFFER_TOO_SMALL with the count needed.
unsafe fn output<T: Copy>(items: &[T], out: *mut T, out_len: *mut CK_ULONG) -> Rv<()> {
    if out_len.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: checked non-null above.
    let room = unsafe { *out_len } as usize;
    unsafe { *out_len = items.len() as CK_ULONG };
    if out.is_null() {
        return Ok(());
    }
    if room < items.len() {
        return Err(CKR_BUFFER_TOO_SMALL);
    }
    // SAFETY: `out` is non-null with room for `room >= items.len()` elements.
    unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), out, items.len()) };
    Ok(())
}

/// The room the caller gives (`None` for a null buffer: a length query).
unsafe fn room(out: *mut CK_BYTE, out_len: *mut CK_ULONG) -> Rv<Option<usize>> {
    if out_len.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: checked non-null.
    Ok((!out.is_null()).then(|| unsafe { *out_len } as usize))
}

unsafe fn template(p: *const CK_ATTRIBUTE, n: CK_ULONG) -> Rv<Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>> {
    let attrs = unsafe { slice(p, n)? };
    attrs
        .iter()
        .map(|a| {
            let v = unsafe { slice(a.pValue as *const u8, a.ulValueLen)? };
            Ok((a.type_, v.to_vec()))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// General
// ---------------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Initialize(args: *mut std::ffi::c_void) -> CK_RV {
    guard(|| {
        if !args.is_null() {
            // SAFETY: a non-null argument is a CK_C_INITIALIZE_ARGS (PKCS#11 2.40 5.4).
            let a = unsafe { &*(args as *const CK_C_INITIALIZE_ARGS) };
            if !a.pReserved.is_null() {
                return Err(CKR_ARGUMENTS_BAD);
            }
            let own_locks = a.CreateMutex.is_some()
                || a.DestroyMutex.is_some()
                || a.LockMutex.is_some()
                || a.UnlockMutex.is_some();
            // The module locks with the OS's primitives; it cannot use the caller's.
            if own_locks && a.flags & CKF_OS_LOCKING_OK == 0 {
                return Err(CKR_CANT_LOCK);
            }
        }
        let mut state = STATE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = &*state {
            if m.pid == std::process::id() {
                return Err(CKR_CRYPTOKI_ALREADY_INITIALIZED);
            }
            // The parent's state, copied by fork(): its threads do not exist here and its
            // connections are the parent's. Left alone, never touched.
            if let Some(old) = state.take() {
                std::mem::forget(old);
            }
        }
        *state = Some(Module::start());
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Finalize(reserved: *mut std::ffi::c_void) -> CK_RV {
    guard(|| {
        if !reserved.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let m = module()?;
        STATE.lock().unwrap_or_else(|p| p.into_inner()).take();
        m.finalize();
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetInfo(info: *mut CK_INFO) -> CK_RV {
    guard(|| {
        module()?;
        let mut i = CK_INFO {
            cryptokiVersion: CK_VERSION {
                major: 2,
                minor: 40,
            },
            manufacturerID: [b' '; 32],
            flags: 0,
            libraryDescription: [b' '; 32],
            libraryVersion: CK_VERSION {
                major: env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0),
                minor: env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0),
            },
        };
        i.manufacturerID[..11].copy_from_slice(b"smime-agent");
        i.libraryDescription[..18].copy_from_slice(b"smime-agent PKCS11");
        unsafe { put(info, i) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    guard(|| unsafe {
        put(
            list,
            &FUNCTION_LIST as *const CK_FUNCTION_LIST as *mut CK_FUNCTION_LIST,
        )
    })
}

// ---------------------------------------------------------------------------------------
// Slots and tokens
// ---------------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetSlotList(
    token_present: CK_BBOOL,
    list: *mut CK_SLOT_ID,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let ids = module()?.slot_ids(token_present != CK_FALSE);
        unsafe { output(&ids, list, count) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetSlotInfo(slot: CK_SLOT_ID, info: *mut CK_SLOT_INFO) -> CK_RV {
    guard(|| {
        let i = module()?.slot_info(slot)?;
        unsafe { put(info, i) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetTokenInfo(slot: CK_SLOT_ID, info: *mut CK_TOKEN_INFO) -> CK_RV {
    guard(|| {
        let i = module()?.token_info(slot)?;
        unsafe { put(info, i) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_WaitForSlotEvent(
    flags: CK_FLAGS,
    slot: *mut CK_SLOT_ID,
    reserved: *mut std::ffi::c_void,
) -> CK_RV {
    guard(|| {
        if !reserved.is_null() || slot.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let id = module()?.wait_for_slot_event(flags & CKF_DONT_BLOCK == 0)?;
        unsafe { put(slot, id) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetMechanismList(
    slot: CK_SLOT_ID,
    list: *mut CK_MECHANISM_TYPE,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let mechs: Vec<CK_MECHANISM_TYPE> = module()?
            .mechanisms(slot)?
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        unsafe { output(&mechs, list, count) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetMechanismInfo(
    slot: CK_SLOT_ID,
    mech: CK_MECHANISM_TYPE,
    info: *mut CK_MECHANISM_INFO,
) -> CK_RV {
    guard(|| {
        let i = module()?
            .mechanisms(slot)?
            .into_iter()
            .find(|(m, _)| *m == mech)
            .map(|(_, i)| i)
            .ok_or(CKR_MECHANISM_INVALID)?;
        unsafe { put(info, i) }
    })
}

// ---------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_OpenSession(
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    _application: *mut std::ffi::c_void,
    _notify: CK_NOTIFY,
    session: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    guard(|| {
        if session.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let h = module()?.open_session(slot, flags)?;
        unsafe { put(session, h) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_CloseSession(session: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| module()?.close_session(session))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_CloseAllSessions(slot: CK_SLOT_ID) -> CK_RV {
    guard(|| module()?.close_all_sessions(slot))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetSessionInfo(
    session: CK_SESSION_HANDLE,
    info: *mut CK_SESSION_INFO,
) -> CK_RV {
    guard(|| {
        let i = module()?.session_info(session)?;
        unsafe { put(info, i) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Login(
    session: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    _pin: *mut CK_UTF8CHAR,
    _pin_len: CK_ULONG,
) -> CK_RV {
    // A PIN passed here is not read: the agent asks for it by its own source.
    guard(|| module()?.login(session, user))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Logout(session: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| module()?.logout(session))
}

// ---------------------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------------------

/// Attributes of a private key that hold key material: never given out.
const SENSITIVE: [CK_ATTRIBUTE_TYPE; 7] = [
    CKA_VALUE,
    CKA_PRIVATE_EXPONENT,
    CKA_PRIME_1,
    CKA_PRIME_2,
    CKA_EXPONENT_1,
    CKA_EXPONENT_2,
    CKA_COEFFICIENT,
];

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetAttributeValue(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let obj = module()?.object(session, object)?;
        if count > 0 && template.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let mut rv = CKR_OK;
        for i in 0..count as usize {
            // SAFETY: `template` holds `count` attributes.
            let a = unsafe { &mut *template.add(i) };
            let value = obj.attr(a.type_);
            let sensitive = obj.class == CKO_PRIVATE_KEY && SENSITIVE.contains(&a.type_);
            match value {
                _ if sensitive => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    rv = if rv == CKR_OK {
                        CKR_ATTRIBUTE_SENSITIVE
                    } else {
                        rv
                    };
                }
                None => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    rv = if rv == CKR_OK {
                        CKR_ATTRIBUTE_TYPE_INVALID
                    } else {
                        rv
                    };
                }
                Some(v) if a.pValue.is_null() => a.ulValueLen = v.len() as CK_ULONG,
                Some(v) if (a.ulValueLen as usize) < v.len() => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    rv = if rv == CKR_OK {
                        CKR_BUFFER_TOO_SMALL
                    } else {
                        rv
                    };
                }
                Some(v) => {
                    // SAFETY: `pValue` has room for `ulValueLen >= v.len()` bytes.
                    unsafe {
                        std::ptr::copy_nonoverlapping(v.as_ptr(), a.pValue as *mut u8, v.len())
                    };
                    a.ulValueLen = v.len() as CK_ULONG;
                }
            }
        }
        if rv == CKR_OK { Ok(()) } else { Err(rv) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetObjectSize(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    size: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let obj = module()?.object(session, object)?;
        let n: usize = obj.attrs.iter().map(|(_, v)| v.len()).sum();
        unsafe { put(size, n as CK_ULONG) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_FindObjectsInit(
    session: CK_SESSION_HANDLE,
    attrs: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let t = unsafe { template(attrs, count)? };
        module()?.find_init(session, t)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_FindObjects(
    session: CK_SESSION_HANDLE,
    objects: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        if count.is_null() || (objects.is_null() && max > 0) {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let found = module()?.find(session, max as usize)?;
        if !found.is_empty() {
            // SAFETY: `objects` is non-null (max > 0) with room for `max >= found.len()`
            // handles; a null `objects` with `max` 0 is never written.
            unsafe { std::ptr::copy_nonoverlapping(found.as_ptr(), objects, found.len()) };
        }
        unsafe { put(count, found.len() as CK_ULONG) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_FindObjectsFinal(session: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| module()?.find_final(session))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_DestroyObject(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| module()?.destroy_object(session, object))
}

// ---------------------------------------------------------------------------------------
// Signing, decryption, derivation
// ---------------------------------------------------------------------------------------

unsafe fn mechanism<'a>(m: *const CK_MECHANISM) -> Rv<&'a CK_MECHANISM> {
    if m.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-null, a CK_MECHANISM by the caller's contract.
    Ok(unsafe { &*m })
}

/// The parameter block of a mechanism, checked to be a `T`.
unsafe fn param<'a, T>(m: &CK_MECHANISM) -> Rv<&'a T> {
    if m.pParameter.is_null() || m.ulParameterLen as usize != std::mem::size_of::<T>() {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    // SAFETY: a block of the size of `T` (checked), as the mechanism defines.
    Ok(unsafe { &*(m.pParameter as *const T) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_SignInit(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let m = unsafe { mechanism(mech)? };
        let pss = if matches!(
            m.mechanism,
            CKM_RSA_PKCS_PSS
                | CKM_SHA1_RSA_PKCS_PSS
                | CKM_SHA256_RSA_PKCS_PSS
                | CKM_SHA384_RSA_PKCS_PSS
                | CKM_SHA512_RSA_PKCS_PSS
        ) {
            let p: &CK_RSA_PKCS_PSS_PARAMS = unsafe { param(m)? };
            Some((p.hashAlg, p.mgf, p.sLen))
        } else {
            None
        };
        let mech = crate::mechanism::SignMech::of(m.mechanism, pss).ok_or(if pss.is_some() {
            CKR_MECHANISM_PARAM_INVALID
        } else {
            CKR_MECHANISM_INVALID
        })?;
        module()?.sign_init(session, mech, key)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Sign(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    sig: *mut CK_BYTE,
    sig_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| unsafe { sign_out(session, Some(slice(data, data_len)?), sig, sig_len) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_SignUpdate(
    session: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let part = unsafe { slice(part, len)? };
        module()?.sign_update(session, part)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_SignFinal(
    session: CK_SESSION_HANDLE,
    sig: *mut CK_BYTE,
    sig_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| unsafe { sign_out(session, None, sig, sig_len) })
}

unsafe fn sign_out(
    session: CK_SESSION_HANDLE,
    data: Option<&[u8]>,
    sig: *mut CK_BYTE,
    sig_len: *mut CK_ULONG,
) -> Rv<()> {
    let room = unsafe { room(sig, sig_len)? };
    let r = module()?.sign_final(session, data, room);
    unsafe { deliver(r.as_deref(), sig, sig_len) }
}

/// Hands an operation's result to the caller under the two-call convention: the bytes, or
/// (`Err((rv, needed))`) the length asked for (rv CKR_OK) or needed (CKR_BUFFER_TOO_SMALL),
/// or the failure.
unsafe fn deliver(
    r: Result<&[u8], &(CK_RV, usize)>,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> Rv<()> {
    match r {
        Ok(bytes) => unsafe { output(bytes, out, out_len) },
        Err(&(rv, needed)) => {
            if rv == CKR_OK || rv == CKR_BUFFER_TOO_SMALL {
                // SAFETY: `room` checked `out_len` before the operation ran.
                unsafe { *out_len = needed as CK_ULONG };
            }
            if rv == CKR_OK { Ok(()) } else { Err(rv) }
        }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_DecryptInit(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let m = unsafe { mechanism(mech)? };
        let oaep_hash = if m.mechanism == CKM_RSA_PKCS_OAEP {
            let p: &CK_RSA_PKCS_OAEP_PARAMS = unsafe { param(m)? };
            let h = HashAlg::of_mechanism(p.hashAlg).ok_or(CKR_MECHANISM_PARAM_INVALID)?;
            let mgf = match h {
                HashAlg::Sha1 => CKG_MGF1_SHA1,
                HashAlg::Sha256 => CKG_MGF1_SHA256,
                HashAlg::Sha384 => CKG_MGF1_SHA384,
                HashAlg::Sha512 => CKG_MGF1_SHA512,
            };
            // The agent does OAEP with one hash for both and an empty label.
            if p.mgf != mgf || p.ulSourceDataLen != 0 {
                return Err(CKR_MECHANISM_PARAM_INVALID);
            }
            Some(h)
        } else {
            None
        };
        let mech =
            crate::mechanism::decrypt_mech(m.mechanism, oaep_hash).ok_or(CKR_MECHANISM_INVALID)?;
        module()?.decrypt_init(session, mech, key)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Decrypt(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let data = unsafe { slice(data, data_len)? };
        let room = unsafe { room(out, out_len)? };
        let r = module()?.decrypt(session, data, room);
        unsafe { deliver(r.as_ref().map(|p| &p[..]), out, out_len) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_DeriveKey(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    base: CK_OBJECT_HANDLE,
    attrs: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let m = unsafe { mechanism(mech)? };
        if m.mechanism != CKM_ECDH1_DERIVE {
            return Err(CKR_MECHANISM_INVALID);
        }
        let p: &CK_ECDH1_DERIVE_PARAMS = unsafe { param(m)? };
        if p.kdf != CKD_NULL || p.ulSharedDataLen != 0 {
            return Err(CKR_MECHANISM_PARAM_INVALID);
        }
        let public = unsafe { slice(p.pPublicData, p.ulPublicDataLen)? };
        let point = unwrap_point(public);
        let t = unsafe { template(attrs, count)? };
        let value_len = t
            .iter()
            .find(|(a, _)| *a == CKA_VALUE_LEN)
            .and_then(|(_, v)| <[u8; 8]>::try_from(&v[..]).ok())
            .map(|b| CK_ULONG::from_ne_bytes(b) as usize);
        if key.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let h = module()?.derive(session, base, point, value_len)?;
        unsafe { put(key, h) }
    })
}

/// The peer's point, as SEC1 bytes: some callers wrap it in a DER OCTET STRING (as
/// CKA_EC_POINT is), others pass it bare. A bare uncompressed point has odd length.
fn unwrap_point(p: &[u8]) -> Vec<u8> {
    use der::Decode;
    if p.len().is_multiple_of(2)
        && let Ok(os) = der::asn1::OctetString::from_der(p)
    {
        return os.into_bytes().into_vec();
    }
    p.to_vec()
}

// ---------------------------------------------------------------------------------------
// What the module does not offer
// ---------------------------------------------------------------------------------------

/// Defines functions that answer CKR_FUNCTION_NOT_SUPPORTED (after the init check).
macro_rules! not_supported {
    ($($name:ident($($arg:ty),*);)*) => {
        $(
            unsafe extern "C" fn $name($(_: $arg),*) -> CK_RV {
                guard(|| {
                    module()?;
                    Err(CKR_FUNCTION_NOT_SUPPORTED)
                })
            }
        )*
    };
}

type Bytes = *mut CK_BYTE;
type Len = *mut CK_ULONG;
type Attrs = *mut CK_ATTRIBUTE;
type Mech = *mut CK_MECHANISM;
type S = CK_SESSION_HANDLE;
type O = CK_OBJECT_HANDLE;

not_supported! {
    InitToken(CK_SLOT_ID, *mut CK_UTF8CHAR, CK_ULONG, *mut CK_UTF8CHAR);
    InitPIN(S, *mut CK_UTF8CHAR, CK_ULONG);
    SetPIN(S, *mut CK_UTF8CHAR, CK_ULONG, *mut CK_UTF8CHAR, CK_ULONG);
    GetOperationState(S, Bytes, Len);
    SetOperationState(S, Bytes, CK_ULONG, O, O);
    CreateObject(S, Attrs, CK_ULONG, *mut O);
    CopyObject(S, O, Attrs, CK_ULONG, *mut O);
    SetAttributeValue(S, O, Attrs, CK_ULONG);
    EncryptInit(S, Mech, O);
    Encrypt(S, Bytes, CK_ULONG, Bytes, Len);
    EncryptUpdate(S, Bytes, CK_ULONG, Bytes, Len);
    EncryptFinal(S, Bytes, Len);
    DecryptUpdate(S, Bytes, CK_ULONG, Bytes, Len);
    DecryptFinal(S, Bytes, Len);
    DigestInit(S, Mech);
    Digest(S, Bytes, CK_ULONG, Bytes, Len);
    DigestUpdate(S, Bytes, CK_ULONG);
    DigestKey(S, O);
    DigestFinal(S, Bytes, Len);
    SignRecoverInit(S, Mech, O);
    SignRecover(S, Bytes, CK_ULONG, Bytes, Len);
    VerifyInit(S, Mech, O);
    Verify(S, Bytes, CK_ULONG, Bytes, CK_ULONG);
    VerifyUpdate(S, Bytes, CK_ULONG);
    VerifyFinal(S, Bytes, CK_ULONG);
    VerifyRecoverInit(S, Mech, O);
    VerifyRecover(S, Bytes, CK_ULONG, Bytes, Len);
    DigestEncryptUpdate(S, Bytes, CK_ULONG, Bytes, Len);
    DecryptDigestUpdate(S, Bytes, CK_ULONG, Bytes, Len);
    SignEncryptUpdate(S, Bytes, CK_ULONG, Bytes, Len);
    DecryptVerifyUpdate(S, Bytes, CK_ULONG, Bytes, Len);
    GenerateKey(S, Mech, Attrs, CK_ULONG, *mut O);
    GenerateKeyPair(S, Mech, Attrs, CK_ULONG, Attrs, CK_ULONG, *mut O, *mut O);
    WrapKey(S, Mech, O, O, Bytes, Len);
    UnwrapKey(S, Mech, O, Bytes, CK_ULONG, Attrs, CK_ULONG, *mut O);
    SeedRandom(S, Bytes, CK_ULONG);
    GenerateRandom(S, Bytes, CK_ULONG);
}

/// Legacy functions: PKCS#11 says they answer CKR_FUNCTION_NOT_PARALLEL.
unsafe extern "C" fn GetFunctionStatus(_: S) -> CK_RV {
    guard(|| {
        module()?;
        Err(CKR_FUNCTION_NOT_PARALLEL)
    })
}

unsafe extern "C" fn CancelFunction(_: S) -> CK_RV {
    guard(|| {
        module()?;
        Err(CKR_FUNCTION_NOT_PARALLEL)
    })
}

static FUNCTION_LIST: CK_FUNCTION_LIST = CK_FUNCTION_LIST {
    version: CK_VERSION {
        major: 2,
        minor: 40,
    },
    C_Initialize: Some(C_Initialize),
    C_Finalize: Some(C_Finalize),
    C_GetInfo: Some(C_GetInfo),
    C_GetFunctionList: Some(C_GetFunctionList),
    C_GetSlotList: Some(C_GetSlotList),
    C_GetSlotInfo: Some(C_GetSlotInfo),
    C_GetTokenInfo: Some(C_GetTokenInfo),
    C_GetMechanismList: Some(C_GetMechanismList),
    C_GetMechanismInfo: Some(C_GetMechanismInfo),
    C_InitToken: Some(InitToken),
    C_InitPIN: Some(InitPIN),
    C_SetPIN: Some(SetPIN),
    C_OpenSession: Some(C_OpenSession),
    C_CloseSession: Some(C_CloseSession),
    C_CloseAllSessions: Some(C_CloseAllSessions),
    C_GetSessionInfo: Some(C_GetSessionInfo),
    C_GetOperationState: Some(GetOperationState),
    C_SetOperationState: Some(SetOperationState),
    C_Login: Some(C_Login),
    C_Logout: Some(C_Logout),
    C_CreateObject: Some(CreateObject),
    C_CopyObject: Some(CopyObject),
    C_DestroyObject: Some(C_DestroyObject),
    C_GetObjectSize: Some(C_GetObjectSize),
    C_GetAttributeValue: Some(C_GetAttributeValue),
    C_SetAttributeValue: Some(SetAttributeValue),
    C_FindObjectsInit: Some(C_FindObjectsInit),
    C_FindObjects: Some(C_FindObjects),
    C_FindObjectsFinal: Some(C_FindObjectsFinal),
    C_EncryptInit: Some(EncryptInit),
    C_Encrypt: Some(Encrypt),
    C_EncryptUpdate: Some(EncryptUpdate),
    C_EncryptFinal: Some(EncryptFinal),
    C_DecryptInit: Some(C_DecryptInit),
    C_Decrypt: Some(C_Decrypt),
    C_DecryptUpdate: Some(DecryptUpdate),
    C_DecryptFinal: Some(DecryptFinal),
    C_DigestInit: Some(DigestInit),
    C_Digest: Some(Digest),
    C_DigestUpdate: Some(DigestUpdate),
    C_DigestKey: Some(DigestKey),
    C_DigestFinal: Some(DigestFinal),
    C_SignInit: Some(C_SignInit),
    C_Sign: Some(C_Sign),
    C_SignUpdate: Some(C_SignUpdate),
    C_SignFinal: Some(C_SignFinal),
    C_SignRecoverInit: Some(SignRecoverInit),
    C_SignRecover: Some(SignRecover),
    C_VerifyInit: Some(VerifyInit),
    C_Verify: Some(Verify),
    C_VerifyUpdate: Some(VerifyUpdate),
    C_VerifyFinal: Some(VerifyFinal),
    C_VerifyRecoverInit: Some(VerifyRecoverInit),
    C_VerifyRecover: Some(VerifyRecover),
    C_DigestEncryptUpdate: Some(DigestEncryptUpdate),
    C_DecryptDigestUpdate: Some(DecryptDigestUpdate),
    C_SignEncryptUpdate: Some(SignEncryptUpdate),
    C_DecryptVerifyUpdate: Some(DecryptVerifyUpdate),
    C_GenerateKey: Some(GenerateKey),
    C_GenerateKeyPair: Some(GenerateKeyPair),
    C_WrapKey: Some(WrapKey),
    C_UnwrapKey: Some(UnwrapKey),
    C_DeriveKey: Some(C_DeriveKey),
    C_SeedRandom: Some(SeedRandom),
    C_GenerateRandom: Some(GenerateRandom),
    C_GetFunctionStatus: Some(GetFunctionStatus),
    C_CancelFunction: Some(CancelFunction),
    C_WaitForSlotEvent: Some(C_WaitForSlotEvent),
};
