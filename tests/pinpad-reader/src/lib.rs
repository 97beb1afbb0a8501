//! Test support: a PIN-pad reader for pcscd, made of vsmartcard's virtual reader driver
//! (`libifdvpcd.so`) and a keypad that tests type on.
//!
//! pcscd loads this library as a reader driver (its `LIBPATH`). It loads the real vpcd driver
//! named by `IFD_PINPAD_DRIVER` and passes every call through, except `IFDHControl`: there it
//! announces `FEATURE_VERIFY_PIN_DIRECT` (PC/SC part 10), and when the host asks for a PIN
//! it waits for someone to "type" one, puts it into the host's VERIFY APDU and sends that
//! to the card, as a PIN-pad reader's firmware does. OpenSC then sees a reader with a PIN
//! pad, and its tokens have CKF_PROTECTED_AUTHENTICATION_PATH: the host never sees the PIN.
//!
//! The keypad is a directory, `IFD_PINPAD_KEYPAD_DIR`, with files named for the reader's
//! vpcd port:
//! - `<port>.prompt` exists while the reader waits for a PIN (written by the reader);
//! - `<port>` holds the keys a person typed, ending with OK (written by the test);
//! - `<port>.cancel` is the Cancel key (written by the test).
//!
//! The reader waits for `bTimerOut` seconds (30 when 0), or `IFD_PINPAD_TIMEOUT_MS`, and
//! answers `64 00` when nobody typed, `64 01` on Cancel, and an error when the card leaves.
//! The PIN is never logged.

use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_long, c_uchar, c_ulong};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use libloading::Library;
use zeroize::Zeroizing;

mod pin_block;

use pin_block::{SW_CANCELLED, SW_TIMEOUT, VerifyRequest};

type Dword = c_ulong;
type ResponseCode = c_long;

/// `SCARD_IO_HEADER` of pcsc-lite's ifdhandler.h.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ScardIoHeader {
    protocol: Dword,
    length: Dword,
}

const IFD_SUCCESS: ResponseCode = 0;
const IFD_COMMUNICATION_ERROR: ResponseCode = 612;
const IFD_ICC_PRESENT: ResponseCode = 615;
const IFD_NO_SUCH_DEVICE: ResponseCode = 617;
const IFD_ERROR_INSUFFICIENT_BUFFER: ResponseCode = 618;

const fn scard_ctl_code(code: Dword) -> Dword {
    0x4200_0000 + code
}
const CM_IOCTL_GET_FEATURE_REQUEST: Dword = scard_ctl_code(3400);
const FEATURE_VERIFY_PIN_DIRECT: u8 = 0x06;
/// The control code this reader gives FEATURE_VERIFY_PIN_DIRECT (libccid's numbering).
const IOCTL_VERIFY_PIN_DIRECT: Dword =
    scard_ctl_code(0x0033_0000 + FEATURE_VERIFY_PIN_DIRECT as Dword);

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(25);

type CreateByName = unsafe extern "C" fn(Dword, *const c_char) -> ResponseCode;
type CreateChannel = unsafe extern "C" fn(Dword, Dword) -> ResponseCode;
type CloseChannel = unsafe extern "C" fn(Dword) -> ResponseCode;
type GetCapabilities = unsafe extern "C" fn(Dword, Dword, *mut Dword, *mut c_uchar) -> ResponseCode;
type SetCapabilities = unsafe extern "C" fn(Dword, Dword, Dword, *mut c_uchar) -> ResponseCode;
type SetProtocol =
    unsafe extern "C" fn(Dword, Dword, c_uchar, c_uchar, c_uchar, c_uchar) -> ResponseCode;
type PowerIcc = unsafe extern "C" fn(Dword, Dword, *mut c_uchar, *mut Dword) -> ResponseCode;
type Transmit = unsafe extern "C" fn(
    Dword,
    ScardIoHeader,
    *mut c_uchar,
    Dword,
    *mut c_uchar,
    *mut Dword,
    *mut ScardIoHeader,
) -> ResponseCode;
type Presence = unsafe extern "C" fn(Dword) -> ResponseCode;
type Control = unsafe extern "C" fn(
    Dword,
    Dword,
    *mut c_uchar,
    Dword,
    *mut c_uchar,
    Dword,
    *mut Dword,
) -> ResponseCode;

/// The real reader driver's entry points.
struct Driver {
    create_by_name: CreateByName,
    create_channel: CreateChannel,
    close_channel: CloseChannel,
    get_capabilities: GetCapabilities,
    set_capabilities: SetCapabilities,
    set_protocol: SetProtocol,
    power_icc: PowerIcc,
    transmit: Transmit,
    presence: Presence,
    control: Control,
    /// Keeps the entry points above valid: the driver stays loaded for the process's life.
    _library: Library,
}

impl Driver {
    fn load() -> Result<Driver, String> {
        let path = std::env::var_os("IFD_PINPAD_DRIVER")
            .ok_or("IFD_PINPAD_DRIVER (the real reader driver) is not set")?;
        // SAFETY: loading a pcscd reader driver runs its initialisers, as pcscd itself would.
        let library = unsafe { Library::new(&path) }
            .map_err(|e| format!("loading {}: {e}", Path::new(&path).display()))?;
        // SAFETY: the types are those of pcsc-lite's ifdhandler.h (API version 3).
        unsafe {
            Ok(Driver {
                create_by_name: *library
                    .get::<CreateByName>(b"IFDHCreateChannelByName\0")
                    .map_err(|e| e.to_string())?,
                create_channel: *library
                    .get::<CreateChannel>(b"IFDHCreateChannel\0")
                    .map_err(|e| e.to_string())?,
                close_channel: *library
                    .get::<CloseChannel>(b"IFDHCloseChannel\0")
                    .map_err(|e| e.to_string())?,
                get_capabilities: *library
                    .get::<GetCapabilities>(b"IFDHGetCapabilities\0")
                    .map_err(|e| e.to_string())?,
                set_capabilities: *library
                    .get::<SetCapabilities>(b"IFDHSetCapabilities\0")
                    .map_err(|e| e.to_string())?,
                set_protocol: *library
                    .get::<SetProtocol>(b"IFDHSetProtocolParameters\0")
                    .map_err(|e| e.to_string())?,
                power_icc: *library
                    .get::<PowerIcc>(b"IFDHPowerICC\0")
                    .map_err(|e| e.to_string())?,
                transmit: *library
                    .get::<Transmit>(b"IFDHTransmitToICC\0")
                    .map_err(|e| e.to_string())?,
                presence: *library
                    .get::<Presence>(b"IFDHICCPresence\0")
                    .map_err(|e| e.to_string())?,
                control: *library
                    .get::<Control>(b"IFDHControl\0")
                    .map_err(|e| e.to_string())?,
                _library: library,
            })
        }
    }
}

fn driver() -> Option<&'static Driver> {
    static DRIVER: OnceLock<Result<Driver, String>> = OnceLock::new();
    match DRIVER.get_or_init(Driver::load) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("ifd-pinpad: {e}");
            None
        }
    }
}

/// Per reader (`Lun >> 16`): the vpcd port of its first slot, from its DEVICENAME.
fn ports() -> &'static Mutex<HashMap<Dword, u16>> {
    static PORTS: OnceLock<Mutex<HashMap<Dword, u16>>> = OnceLock::new();
    PORTS.get_or_init(Default::default)
}

/// Per slot: the protocol header pcscd last sent with an APDU, reused for the VERIFY.
fn protocols() -> &'static Mutex<HashMap<Dword, ScardIoHeader>> {
    static PROTOCOLS: OnceLock<Mutex<HashMap<Dword, ScardIoHeader>>> = OnceLock::new();
    PROTOCOLS.get_or_init(Default::default)
}

/// The keypad's name for a slot: its vpcd port (vpcd gives slot N of an entry port + N).
fn keypad_name(lun: Dword) -> String {
    let base = ports()
        .lock()
        .ok()
        .and_then(|p| p.get(&(lun >> 16)).copied());
    match base.and_then(|b| u16::try_from(lun & 0xFFFF).ok()?.checked_add(b)) {
        Some(port) => port.to_string(),
        None => format!("lun-{lun:x}"),
    }
}

/// vpcd's DEVICENAME is `/dev/null:0xPORT`.
fn port_of(device: &str) -> Option<u16> {
    let hex = device.rsplit(':').next()?;
    let hex = hex.strip_prefix("0x").or_else(|| hex.strip_prefix("0X"))?;
    u16::from_str_radix(hex, 16).ok()
}

/// Runs `f`, turning a panic into a communication error: nothing may unwind into pcscd.
fn guarded(f: impl FnOnce() -> ResponseCode) -> ResponseCode {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(IFD_COMMUNICATION_ERROR)
}

/// # Safety
/// Called by pcscd with a NUL-terminated device name.
#[unsafe(no_mangle)]
#[allow(non_snake_case)]
pub unsafe extern "C" fn IFDHCreateChannelByName(
    lun: Dword,
    device: *const c_char,
) -> ResponseCode {
    guarded(|| {
        let Some(d) = driver() else {
            return IFD_NO_SUCH_DEVICE;
        };
        if !device.is_null() {
            // SAFETY: pcscd passes a NUL-terminated string.
            let name = unsafe { CStr::from_ptr(device) }.to_string_lossy();
            if let (Some(port), Ok(mut p)) = (port_of(&name), ports().lock()) {
                p.insert(lun >> 16, port);
            }
        }
        // SAFETY: pass-through of pcscd's arguments.
        unsafe { (d.create_by_name)(lun, device) }
    })
}

/// # Safety
/// Called by pcscd.
#[unsafe(no_mangle)]
#[allow(non_snake_case)]
pub unsafe extern "C" fn IFDHCreateChannel(lun: Dword, channel: Dword) -> ResponseCode {
    guarded(|| match driver() {
        // SAFETY: pass-through of pcscd's arguments.
        Some(d) => unsafe { (d.create_channel)(lun, channel) },
        None => IFD_NO_SUCH_DEVICE,
    })
}

/// # Safety
/// Called by pcscd.
#[unsafe(no_mangle)]
#[allow(non_snake_case)]
pub unsafe extern "C" fn IFDHCloseChannel(lun: Dword) -> ResponseCode {
    guarded(|| match driver() {
        // SAFETY: pass-through of pcscd's arguments.
        Some(d) => unsafe { (d.close_channel)(lun) },
        None => IFD_COMMUNICATION_ERROR,
    })
}

/// # Safety
/// Called by pcscd with valid buffers.
#[unsafe(no_mangle)]
#[allow(non_snake_case)]
pub unsafe extern "C" fn IFDHGetCapabilities(
    lun: Dword,
    tag: Dword,
    length: *mut Dword,
    value: *mut c_uchar,
) -> ResponseCode {
    guarded(|| match driver() {
        // SAFETY: pass-through of pcscd's arguments.
        Some(d) => unsafe { (d.get_capabilities)(lun, tag, length, value) },
        None => IFD_COMMUNICATION_ERROR,
    })
}

/// # Safety
/// Called by pcscd with valid buffers.
#[unsafe(no_mangle)]
#[allow(non_snake_case)]
pub unsafe extern "C" fn IFDHSetCapabilities(
    lun: Dword,
    tag: Dword,
    length: Dword,
    value: *mut c_uchar,
) -> ResponseCode {
    guarded(|| match driver() {
        // SAFETY: pass-through of pcscd's arguments.
        Some(d) => unsafe { (d.set_capabilities)(lun, tag, length, value) },
        None => IFD_COMMUNICATION_ERROR,
    })
}

/// # Safety
/// Called by pcscd.
#[unsafe(no_mangle)]
#[allow(non_snake_case)]
pub unsafe extern "C" fn IFDHSetProtocolParameters(
    lun: Dword,
    protocol: Dword,
    flags: c_uchar,
    pts1: c_uchar,
    pts2: c_uchar,
    pts3: c_uchar,
) -> ResponseCode {
    guarded(|| match driver() {
        // SAFETY: pass-through of pcscd's arguments.
        Some(d) => unsafe { (d.set_protocol)(lun, protocol, flags, pts1, pts2, pts3) },
        None => IFD_COMMUNICATION_ERROR,
    })
}

/// # Safety
/// Called by pcscd with valid buffers.
#[unsafe(no_mangle)]
#[allow(non_snake_case)]
pub unsafe extern "C" fn IFDHPowerICC(
    lun: Dword,
    action: Dword,
    atr: *mut c_uchar,
    atr_length: *mut Dword,
) -> ResponseCode {
    guarded(|| match driver() {
        // SAFETY: pass-through of pcscd's arguments.
        Some(d) => unsafe { (d.power_icc)(lun, action, atr, atr_length) },
        None => IFD_COMMUNICATION_ERROR,
    })
}

/// # Safety
/// Called by pcscd with valid buffers.
#[unsafe(no_mangle)]
#[allow(non_snake_case)]
pub unsafe extern "C" fn IFDHTransmitToICC(
    lun: Dword,
    send_pci: ScardIoHeader,
    tx: *mut c_uchar,
    tx_length: Dword,
    rx: *mut c_uchar,
    rx_length: *mut Dword,
    recv_pci: *mut ScardIoHeader,
) -> ResponseCode {
    guarded(|| {
        let Some(d) = driver() else {
            return IFD_COMMUNICATION_ERROR;
        };
        if let Ok(mut p) = protocols().lock() {
            p.insert(lun, send_pci);
        }
        // SAFETY: pass-through of pcscd's arguments.
        unsafe { (d.transmit)(lun, send_pci, tx, tx_length, rx, rx_length, recv_pci) }
    })
}

/// # Safety
/// Called by pcscd.
#[unsafe(no_mangle)]
#[allow(non_snake_case)]
pub unsafe extern "C" fn IFDHICCPresence(lun: Dword) -> ResponseCode {
    guarded(|| match driver() {
        // SAFETY: pass-through of pcscd's arguments.
        Some(d) => unsafe { (d.presence)(lun) },
        None => IFD_COMMUNICATION_ERROR,
    })
}

/// # Safety
/// Called by pcscd with `tx` holding `tx_length` bytes and `rx` room for `rx_length`.
#[unsafe(no_mangle)]
#[allow(non_snake_case)]
pub unsafe extern "C" fn IFDHControl(
    lun: Dword,
    code: Dword,
    tx: *mut c_uchar,
    tx_length: Dword,
    rx: *mut c_uchar,
    rx_length: Dword,
    returned: *mut Dword,
) -> ResponseCode {
    guarded(|| {
        let Some(d) = driver() else {
            return IFD_COMMUNICATION_ERROR;
        };
        let answer = match code {
            CM_IOCTL_GET_FEATURE_REQUEST => {
                // One PCSC_TLV_STRUCTURE: tag, length 4, the control code big-endian.
                let ioctl = u32::try_from(IOCTL_VERIFY_PIN_DIRECT).unwrap_or(0);
                let mut tlv = vec![FEATURE_VERIFY_PIN_DIRECT, 4];
                tlv.extend_from_slice(&ioctl.to_be_bytes());
                tlv
            }
            IOCTL_VERIFY_PIN_DIRECT => {
                // Room for the status word first: a PIN entry whose answer cannot be given
                // back would spend one of the card's tries for nothing.
                if rx.is_null() || returned.is_null() || rx_length < 2 {
                    return IFD_ERROR_INSUFFICIENT_BUFFER;
                }
                let block = if tx.is_null() || tx_length == 0 {
                    &[][..]
                } else {
                    // SAFETY: pcscd passes `tx_length` readable bytes at `tx`.
                    unsafe { std::slice::from_raw_parts(tx, tx_length as usize) }
                };
                match verify_pin_direct(d, lun, block) {
                    Ok(answer) => answer,
                    Err(rc) => return rc,
                }
            }
            // SAFETY: pass-through of pcscd's arguments.
            _ => return unsafe { (d.control)(lun, code, tx, tx_length, rx, rx_length, returned) },
        };
        if rx.is_null() || returned.is_null() || (rx_length as usize) < answer.len() {
            return IFD_ERROR_INSUFFICIENT_BUFFER;
        }
        // SAFETY: pcscd gave `rx_length` writable bytes at `rx` and a place for the count.
        unsafe {
            std::ptr::copy_nonoverlapping(answer.as_ptr(), rx, answer.len());
            *returned = answer.len() as Dword;
        }
        IFD_SUCCESS
    })
}

/// What came from the keypad.
enum Keys {
    Typed(Zeroizing<Vec<u8>>),
    Cancelled,
    TimedOut,
    CardGone,
}

fn keypad_dir() -> Option<PathBuf> {
    std::env::var_os("IFD_PINPAD_KEYPAD_DIR").map(PathBuf::from)
}

/// FEATURE_VERIFY_PIN_DIRECT: the card's answer to the VERIFY with the typed PIN, or the
/// PIN pad's own status word.
fn verify_pin_direct(d: &Driver, lun: Dword, block: &[u8]) -> Result<Vec<u8>, ResponseCode> {
    let req = match VerifyRequest::parse(block) {
        Ok(r) => r,
        Err(refusal) => return Ok(refusal.status_word().to_vec()),
    };
    let Some(dir) = keypad_dir() else {
        eprintln!("ifd-pinpad: IFD_PINPAD_KEYPAD_DIR is not set; nobody can type");
        return Ok(SW_TIMEOUT.to_vec());
    };
    let timeout = std::env::var("IFD_PINPAD_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(match req.timeout_secs {
            0 => DEFAULT_TIMEOUT,
            s => Duration::from_secs(u64::from(s)),
        });
    let name = keypad_name(lun);
    eprintln!("ifd-pinpad: reader {name} asks for the PIN on its keypad");
    let keys = wait_for_keys(&dir, &name, timeout, || {
        // SAFETY: a pass-through call for the slot pcscd is talking to.
        unsafe { (d.presence)(lun) == IFD_ICC_PRESENT }
    });
    let typed = match keys {
        Keys::Typed(t) => t,
        Keys::Cancelled => {
            eprintln!("ifd-pinpad: reader {name}: Cancel pressed");
            return Ok(SW_CANCELLED.to_vec());
        }
        Keys::TimedOut => {
            eprintln!("ifd-pinpad: reader {name}: nobody typed a PIN");
            return Ok(SW_TIMEOUT.to_vec());
        }
        Keys::CardGone => {
            eprintln!("ifd-pinpad: reader {name}: the card was removed during PIN entry");
            return Err(IFD_COMMUNICATION_ERROR);
        }
    };
    let mut apdu = match req.fill(&typed) {
        Ok(a) => Zeroizing::new(a),
        Err(refusal) => return Ok(refusal.status_word().to_vec()),
    };
    let pci = protocols()
        .lock()
        .ok()
        .and_then(|p| p.get(&lun).copied())
        .unwrap_or(ScardIoHeader {
            protocol: 1,
            length: 0,
        });
    let mut response = [0u8; 258];
    let mut response_len = response.len() as Dword;
    let mut recv_pci = pci;
    // SAFETY: the buffers are ours, writable, and their lengths are given.
    let rc = unsafe {
        (d.transmit)(
            lun,
            pci,
            apdu.as_mut_ptr(),
            apdu.len() as Dword,
            response.as_mut_ptr(),
            &mut response_len,
            &mut recv_pci,
        )
    };
    if rc != IFD_SUCCESS {
        return Err(rc);
    }
    let n = (response_len as usize).min(response.len());
    eprintln!(
        "ifd-pinpad: reader {name}: PIN sent to the card, which answered {:02X?}",
        &response[n.saturating_sub(2)..n]
    );
    Ok(response[..n].to_vec())
}

/// Waits for `<name>` (the keys) or `<name>.cancel` in `dir`, announcing the wait with
/// `<name>.prompt`. Each is consumed when read.
fn wait_for_keys(
    dir: &Path,
    name: &str,
    timeout: Duration,
    card_present: impl Fn() -> bool,
) -> Keys {
    let keys = dir.join(name);
    let cancel = dir.join(format!("{name}.cancel"));
    let prompt = dir.join(format!("{name}.prompt"));
    let _ = fs::write(&prompt, b"verify\n");
    let deadline = Instant::now() + timeout;
    // The prompt goes before the keys or the Cancel are consumed: whoever sees them gone
    // knows this entry is over, and a prompt seen after that is the next one.
    let result = loop {
        if cancel.exists() {
            let _ = fs::remove_file(&prompt);
            let _ = fs::remove_file(&cancel);
            break Keys::Cancelled;
        }
        if let Ok(typed) = fs::read(&keys) {
            let _ = fs::remove_file(&prompt);
            let _ = fs::remove_file(&keys);
            let mut typed = Zeroizing::new(typed);
            while typed.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                typed.pop();
            }
            break Keys::Typed(typed);
        }
        if !card_present() {
            break Keys::CardGone;
        }
        if Instant::now() >= deadline {
            break Keys::TimedOut;
        }
        std::thread::sleep(POLL);
    };
    let _ = fs::remove_file(&prompt);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpcd_device_names_give_their_port() {
        assert_eq!(port_of("/dev/null:0x8C7B"), Some(0x8C7B));
        assert_eq!(port_of("/dev/null"), None);
        assert_eq!(port_of("/dev/null:0xZZ"), None);
    }

    #[test]
    fn the_keypad_reads_keys_cancel_and_times_out() {
        let dir = std::env::temp_dir().join(format!("ifd-pinpad-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("1"), b"123456\n").unwrap();
        match wait_for_keys(&dir, "1", Duration::from_secs(1), || true) {
            Keys::Typed(t) => assert_eq!(&t[..], b"123456"),
            _ => panic!("the typed keys were not read"),
        }
        assert!(!dir.join("1").exists(), "the keys are consumed");
        assert!(
            !dir.join("1.prompt").exists(),
            "the prompt is gone after entry"
        );
        fs::write(dir.join("1.cancel"), b"").unwrap();
        assert!(matches!(
            wait_for_keys(&dir, "1", Duration::from_secs(1), || true),
            Keys::Cancelled
        ));
        assert!(matches!(
            wait_for_keys(&dir, "1", Duration::from_millis(60), || true),
            Keys::TimedOut
        ));
        assert!(matches!(
            wait_for_keys(&dir, "1", Duration::from_secs(5), || false),
            Keys::CardGone
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
