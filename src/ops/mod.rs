//! The operations: what each request does, using the store, the tokens and the S/MIME layer.
//!
//! Owns: the request-level flow of each op (one file per op), the audit log of private-key
//! operations, and the mapping of every layer's errors to the protocol's error codes.
//! Knows nothing of sockets: the server hands in an [`OpContext`], built on the
//! [`Services`] the agent wired up.

mod compose;
mod decrypt;
mod directory;
mod encrypt;
mod enveloping;
mod keys;
mod sender;
mod sign;
mod signed;
mod signing;
mod status;
mod tokens;
mod validate;
mod verify;
mod which;

mod context;
mod reload;
mod report;

pub use context::{AfterResponse, Current, FollowUp, OpContext, Peer, Services};
pub use reload::reload;
pub use report::cert_info;

use smime_agent_proto::{
    ComposeResult, DecryptResult, EncryptResult, ErrorBody, ErrorCode, ForgetResult, HelloResult,
    KeyOpResult, KeysResult, ListCertsResult, Op, ReloadResult, RescanResult, SignResult,
    StatusResult, ValidateResult, VerifyResult, WhichResult,
};

use crate::smime::SmimeError;
use crate::store::NoCertificate;
use crate::tokens::TokenError;

/// Why an op failed.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    NoCertificate(#[from] NoCertificate),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Smime(#[from] SmimeError),
    #[error("{0}")]
    Internal(String),
    /// No key of the user's is among the message's recipients; says who it is for.
    #[error("{0}")]
    NotARecipient(String),
    /// The administrator's policy forbids what the request needs.
    #[error("{0}")]
    PolicyDenied(String),
    /// Recipients without a usable certificate: (address, why).
    #[error("no usable certificate for {}", .0.iter().map(|(a, why)| format!("{a} ({why})")).collect::<Vec<_>>().join(", "))]
    RecipientsWithoutCertificate(Vec<(String, String)>),
    /// The configuration file cannot be used; the agent keeps its settings.
    #[error("{0}")]
    ConfigInvalid(String),
}

impl OpError {
    /// The protocol's view of the error: a stable code, and a message for people.
    pub fn to_error_body(&self) -> ErrorBody {
        let code = match self {
            OpError::BadRequest(_) | OpError::Smime(SmimeError::NotMime(_)) => {
                ErrorCode::BadRequest
            }
            OpError::NoCertificate(n) if n.policy_denied() => ErrorCode::PolicyDenied,
            OpError::NoCertificate(_) => ErrorCode::NoCertificate,
            OpError::PolicyDenied(_) => ErrorCode::PolicyDenied,
            OpError::Token(t) => match t {
                TokenError::Removed { .. } => ErrorCode::TokenRemoved,
                TokenError::PinIncorrect { .. } => ErrorCode::PinIncorrect,
                TokenError::PinLocked { .. } => ErrorCode::PinLocked,
                TokenError::PinCancelled { .. } => ErrorCode::PinCancelled,
                TokenError::KeyNotFound { .. }
                | TokenError::Refused { .. }
                | TokenError::Pkcs11 { .. } => ErrorCode::TokenError,
            },
            OpError::Smime(SmimeError::BadTokenSignature) => ErrorCode::TokenError,
            OpError::Smime(SmimeError::UnsupportedKey(_) | SmimeError::Unsupported(_)) => {
                ErrorCode::Unsupported
            }
            OpError::Smime(SmimeError::Malformed(_) | SmimeError::NotSigned(_)) => {
                ErrorCode::BadMessage
            }
            OpError::Smime(SmimeError::Limit(_)) => ErrorCode::LimitExceeded,
            OpError::Smime(SmimeError::DecryptFailed) => ErrorCode::DecryptFailed,
            OpError::NotARecipient(_) => ErrorCode::NotARecipient,
            OpError::RecipientsWithoutCertificate(_) => ErrorCode::RecipientWithoutCertificate,
            OpError::ConfigInvalid(_) => ErrorCode::ConfigInvalid,
            OpError::Smime(_) | OpError::Internal(_) => ErrorCode::Internal,
        };
        let mut body = ErrorBody::new(code, self.to_string());
        if let OpError::RecipientsWithoutCertificate(list) = self {
            body.recipients = Some(list.iter().map(|(a, _)| a.clone()).collect());
        }
        if let OpError::Token(t) = self {
            body.token = Some(t.token().clone());
            match t {
                TokenError::PinIncorrect { retries, .. } => {
                    body.pin_retries = Some(*retries);
                    if *retries == smime_agent_proto::PinRetries::FinalTry {
                        body.retries_left = Some(1);
                    }
                }
                TokenError::PinLocked { .. } => {
                    body.pin_retries = Some(smime_agent_proto::PinRetries::Locked);
                    body.retries_left = Some(0);
                }
                _ => {}
            }
        }
        body
    }
}

/// The result of an op, as it goes into the response frame. Untagged: each variant
/// serializes as its result alone, and the frame is written straight from it, with no
/// `serde_json::Value` copy of a large message in between.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// Only the connection answers `hello`; it is here so that every answer has one type.
    Hello(HelloResult),
    Status(Box<StatusResult>),
    ListCerts(ListCertsResult),
    Sign(SignResult),
    Encrypt(EncryptResult),
    Decrypt(Box<DecryptResult>),
    Compose(ComposeResult),
    Rescan(RescanResult),
    Forget(ForgetResult),
    Reload(ReloadResult),
    Validate(Box<ValidateResult>),
    Which(WhichResult),
    Verify(Box<VerifyResult>),
    Keys(KeysResult),
    KeyOp(KeyOpResult),
    /// `{}`: the op has nothing to say but that it worked.
    Empty {},
}

/// Runs an op (all but `hello` and `pin`, which the connection handles itself).
pub async fn dispatch(ctx: &OpContext<'_>, op: Op) -> Result<Reply, OpError> {
    Ok(match op {
        Op::Status(_) => Reply::Status(Box::new(status::status(ctx).await)),
        Op::ListCerts(p) => Reply::ListCerts(status::list_certs(ctx, p.include_der)),
        Op::Sign(p) => Reply::Sign(sign::sign(ctx, p).await?),
        Op::Encrypt(p) => Reply::Encrypt(encrypt::encrypt(ctx, p).await?),
        Op::Decrypt(p) => Reply::Decrypt(Box::new(decrypt::decrypt(ctx, p).await?)),
        Op::Compose(p) => Reply::Compose(compose::compose(ctx, p).await?),
        Op::Rescan(_) => Reply::Rescan(tokens::rescan(ctx).await),
        Op::Forget(_) => Reply::Forget(tokens::forget(ctx).await),
        Op::Reload(_) => Reply::Reload(reload(ctx.current).await?),
        Op::Validate(p) => Reply::Validate(Box::new(validate::validate(ctx, p).await?)),
        Op::Which(p) => Reply::Which(which::which(ctx, p).await?),
        Op::Verify(p) => Reply::Verify(Box::new(verify::verify(ctx, p).await?)),
        Op::Keys(_) => Reply::Keys(keys::keys(ctx)),
        Op::KeyLogin(p) => {
            keys::key_login(ctx, p).await?;
            Reply::Empty {}
        }
        Op::KeySign(p) => Reply::KeyOp(keys::key_sign(ctx, p).await?),
        Op::KeyDecrypt(p) => Reply::KeyOp(keys::key_decrypt(ctx, p).await?),
        Op::KeyDerive(p) => Reply::KeyOp(keys::key_derive(ctx, p).await?),
        Op::Hello(_) | Op::Pin(_) | Op::Subscribe(_) => {
            return Err(OpError::Internal(format!(
                "{} is handled by the connection",
                op.name()
            )));
        }
    })
}

/// Runs work over a whole message of `len` bytes (hashing, AES, encoding). A large one
/// would hold up the runtime's other tasks (PIN answers, events, other clients) for as
/// long, so for it the worker hands its queue to another thread meanwhile; a small one runs
/// as it is, which costs less than the hand-over. The agent's runtime is multi-threaded,
/// which the hand-over needs.
pub(crate) fn cpu<T>(len: usize, f: impl FnOnce() -> T) -> T {
    const LARGE: usize = 256 * 1024;
    if len >= LARGE {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}
