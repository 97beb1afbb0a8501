//! What the agent's answers mean to a PKCS#11 caller: each protocol error code (and a lost
//! agent) as the CK_RV a host program acts on.

use cryptoki_sys::*;
use smime_agent_proto::ErrorCode;
use smime_agent_proto::client::ClientError;

/// The CK_RV for a failed call to the agent. The agent's message goes to stderr (the host
/// program's log), since PKCS#11 has no place for it; it names no PIN and no content.
pub fn ckr_of(e: &ClientError) -> CK_RV {
    let rv = match e.code() {
        Some(ErrorCode::TokenRemoved) => CKR_DEVICE_REMOVED,
        Some(ErrorCode::PinIncorrect) => CKR_PIN_INCORRECT,
        Some(ErrorCode::PinLocked) => CKR_PIN_LOCKED,
        Some(ErrorCode::PinCancelled) => CKR_FUNCTION_CANCELED,
        Some(ErrorCode::DecryptFailed) => CKR_ENCRYPTED_DATA_INVALID,
        Some(ErrorCode::PolicyDenied) => CKR_KEY_FUNCTION_NOT_PERMITTED,
        Some(ErrorCode::BadRequest) => CKR_ARGUMENTS_BAD,
        Some(ErrorCode::LimitExceeded) | Some(ErrorCode::FrameTooLarge) => CKR_DATA_LEN_RANGE,
        Some(_) => CKR_DEVICE_ERROR,
        // No agent, or the connection broke.
        None => CKR_DEVICE_ERROR,
    };
    eprintln!("smime-agent-pkcs11: {e}");
    rv
}
