//! What a client sends: the [`Request`] frame, the [`Op`] it names, and each op's parameters
//! with the enums they use (some, like [`SignFormat`] and [`Purpose`], are echoed in results).
//!
//! Owns the request shapes and their strictness: every parameter struct denies unknown
//! fields. Must not hold what the agent answers; that is in the result, error and event
//! modules.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::wire::{
    Base64Bytes, KeyDecryptParams, KeyDeriveParams, KeyLoginParams, KeySignParams, KeysParams, Pin,
    RequestId,
};

/// One request frame: `{"id": .., "op": "..", ...parameters of the op}`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Request {
    pub id: RequestId,
    #[serde(flatten)]
    pub op: Op,
}

/// The operations, tagged by the `op` field.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// First request on every connection.
    Hello(HelloParams),
    /// The agent, its modules, tokens and certificates.
    Status(StatusParams),
    /// The certificates of the user's keys in the session store.
    ListCerts(ListCertsParams),
    /// Sign a MIME entity with the key of an address.
    Sign(SignParams),
    /// Answer a `pin_needed` event.
    Pin(PinParams),
    /// Receive token and reader events on this connection.
    Subscribe(SubscribeParams),
    /// Look for tokens again now (re-initializing modules that cannot report new tokens).
    Rescan(RescanParams),
    /// Wipe every cached PIN and log every token out.
    Forget(ForgetParams),
    /// Validate a certificate: chain to a trusted root, validity, revocation.
    Validate(ValidateParams),
    /// Which certificate the agent would use for an address and an operation, and why.
    Which(WhichParams),
    /// Encrypt a MIME entity to recipients' certificates (and the sender's own).
    Encrypt(EncryptParams),
    /// Decrypt an S/MIME message with one of the user's keys.
    Decrypt(DecryptParams),
    /// Turn a complete message into the message(s) to send, under the policy.
    Compose(ComposeParams),
    /// Check every signature of a signed MIME entity, and each signer's certificate.
    Verify(VerifyParams),
    /// The keys the agent would use, per token, with their certificates (for a PKCS#11
    /// module).
    Keys(KeysParams),
    /// Log a token in now, the PIN asked by the agent.
    KeyLogin(KeyLoginParams),
    /// One raw signature with a key.
    KeySign(KeySignParams),
    /// One RSA decryption with a key.
    KeyDecrypt(KeyDecryptParams),
    /// ECDH with a key.
    KeyDerive(KeyDeriveParams),
    /// Read the configuration file again; requests from now on follow it.
    Reload(ReloadParams),
}

impl Op {
    /// The `op` names the agent knows, in protocol version 1.
    pub const NAMES: &'static [&'static str] = &[
        "hello",
        "status",
        "list_certs",
        "sign",
        "pin",
        "subscribe",
        "rescan",
        "forget",
        "validate",
        "which",
        "encrypt",
        "decrypt",
        "compose",
        "verify",
        "keys",
        "key_login",
        "key_sign",
        "key_decrypt",
        "key_derive",
        "reload",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Op::Hello(_) => "hello",
            Op::Status(_) => "status",
            Op::ListCerts(_) => "list_certs",
            Op::Sign(_) => "sign",
            Op::Pin(_) => "pin",
            Op::Subscribe(_) => "subscribe",
            Op::Rescan(_) => "rescan",
            Op::Forget(_) => "forget",
            Op::Validate(_) => "validate",
            Op::Which(_) => "which",
            Op::Encrypt(_) => "encrypt",
            Op::Decrypt(_) => "decrypt",
            Op::Compose(_) => "compose",
            Op::Verify(_) => "verify",
            Op::Keys(_) => "keys",
            Op::KeyLogin(_) => "key_login",
            Op::KeySign(_) => "key_sign",
            Op::KeyDecrypt(_) => "key_decrypt",
            Op::KeyDerive(_) => "key_derive",
            Op::Reload(_) => "reload",
        }
    }
}

/// `hello`: the protocol version, and what the client can do.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HelloParams {
    /// The protocol version the client speaks ([`crate::PROTOCOL_VERSION`]).
    pub version: u32,
    /// The client's name and version, for the agent's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// True when the client answers `pin_needed` events itself (PIN source `client`).
    #[serde(default)]
    pub pin_prompt: bool,
    /// True when the client already holds the PIN (read from a file descriptor, say): the
    /// agent asks this client (`pin_needed`) whatever its configured source, except a PIN
    /// pad, which always asks on the reader. Implies `pin_prompt`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pin_from_client: bool,
    /// Where a pinentry started on behalf of this client should ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinentry: Option<PinentryEnv>,
}

/// The client's terminal and display, passed on to pinentry (Assuan `OPTION ttyname=`,
/// `OPTION ttytype=`, `OPTION display=`), as gpg-agent does.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PinentryEnv {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttyname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttytype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

impl PinentryEnv {
    /// This process's terminal (`GPG_TTY` if set, as gpg-agent reads it; else the first of
    /// stdin, stdout and stderr that is a terminal; else, under a mail client's pipes, its
    /// session's controlling terminal), its `TERM`, and its display (`DISPLAY`, else
    /// `WAYLAND_DISPLAY`): where a pinentry for it should ask.
    pub fn of_this_process() -> PinentryEnv {
        use std::io::IsTerminal;
        let gpg_tty = std::env::var("GPG_TTY").ok().filter(|t| !t.is_empty());
        let tty = gpg_tty.or_else(|| {
            [0, 1, 2].into_iter().find_map(|fd| {
                let is_tty = match fd {
                    0 => std::io::stdin().is_terminal(),
                    1 => std::io::stdout().is_terminal(),
                    _ => std::io::stderr().is_terminal(),
                };
                if !is_tty {
                    return None;
                }
                std::fs::read_link(format!("/proc/self/fd/{fd}"))
                    .ok()
                    .map(|p| p.display().to_string())
            })
        });
        // Under a mail client's pipes no descriptor is a terminal, but the session may
        // still have one: the terminal the client itself runs in.
        let tty = tty.or_else(controlling_terminal);
        PinentryEnv {
            ttyname: tty,
            ttytype: std::env::var("TERM").ok(),
            display: std::env::var("DISPLAY")
                .ok()
                .or_else(|| std::env::var("WAYLAND_DISPLAY").ok()),
        }
    }
}

/// The controlling terminal of this process's session, by the device number Linux gives in
/// `/proc/self/stat` (field 7, `tty_nr`), found among the pseudo-terminals and consoles and
/// checked by its device number. `None` without one, or elsewhere than Linux.
fn controlling_terminal() -> Option<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = &stat[stat.rfind(')')? + 1..];
    let tty_nr: u64 = after.split_whitespace().nth(4)?.parse().ok()?;
    if tty_nr == 0 {
        return None;
    }
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    let mut candidates = vec![];
    if (136..=143).contains(&major) {
        candidates.push(format!("/dev/pts/{}", (major - 136) * 256 + minor));
    }
    candidates.push(format!("/dev/tty{minor}"));
    let wanted = libc_makedev(major, minor);
    candidates.into_iter().find(|path| {
        std::fs::metadata(path)
            .map(|m| m.file_type().is_char_device() && m.rdev() == wanted)
            .unwrap_or(false)
    })
}

/// glibc's `makedev`: the `st_rdev` of device `major`:`minor`.
fn libc_makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xfffff000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffffff00) << 12)
        | (minor & 0xff)
}

/// `status` takes no parameters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusParams {}

/// `list_certs`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListCertsParams {
    /// Include each certificate's DER encoding.
    #[serde(default)]
    pub include_der: bool,
}

/// `sign`: sign a MIME entity (headers, blank line, body) with the key of `signer`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignParams {
    /// The signer's e-mail address; the agent selects the certificate.
    pub signer: String,
    /// The MIME entity to sign. Line ends are canonicalized to CRLF before signing.
    pub content: Base64Bytes,
    /// `clear` (multipart/signed), `opaque` (application/pkcs7-mime) or `detached` (the
    /// bare signature). Default: the policy's `clear_sign`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<SignFormat>,
    /// The digest algorithm: `sha256`, `sha384` or `sha512`, one of the policy's
    /// `signing_algorithms` (else `policy_denied`; never silently replaced). Default: the
    /// policy's first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// How a signed message is packaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignFormat {
    /// `multipart/signed` with a detached `application/pkcs7-signature` part: readable by
    /// clients without S/MIME.
    Clear,
    /// `application/pkcs7-mime; smime-type=signed-data`: the content inside the CMS object.
    Opaque,
    /// `sign` only: the bare CMS SignedData (DER) without the content, the body of an
    /// `application/pkcs7-signature` part, for a client that builds `multipart/signed`
    /// itself (NeoMutt). The signature covers the entity with CRLF line ends: the client
    /// must send exactly the entity it gave.
    Detached,
}

/// `pin`: the answer to a `pin_needed` event. Exactly one of `pin` and `cancel`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PinParams {
    /// The `prompt` number of the `pin_needed` event being answered.
    pub prompt: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<Pin>,
    /// The person declined: the waiting request ends with `pin_cancelled`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel: bool,
}

/// `subscribe` takes no parameters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeParams {}

/// `rescan` takes no parameters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RescanParams {}

/// `reload` takes no parameters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReloadParams {}

/// `forget` takes no parameters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetParams {}

/// `validate`: validate a certificate as of `time` (default now).
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateParams {
    /// The certificate, DER (or PEM).
    pub certificate: Base64Bytes,
    /// Intermediate certificates to build the chain with (from a message, say), DER or PEM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<Base64Bytes>,
    /// CRLs to check revocation with before any is fetched (from a message, say), DER.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crls: Vec<Base64Bytes>,
    /// The validation time, RFC 3339 (e.g. `2024-05-01T12:00:00Z`). Default: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// RFC 5280 6.1.1 policy inputs. Default: any policy, nothing required or inhibited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyInputs>,
    /// The certificate must carry this mail address (subject emailAddress or subjectAltName
    /// rfc822Name); else `address_mismatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// What the certificate must be fit for under the S/MIME profile. Default: signing or
    /// encryption, whichever its key usage allows.
    #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
    pub fitness: Option<ValidateFor>,
}

/// What `validate` judges a certificate fit for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ValidateFor {
    /// Signing mail: key usage digitalSignature or nonRepudiation.
    Sign,
    /// Encrypting mail to it: keyEncipherment (RSA) or keyAgreement (EC).
    Encrypt,
    /// The path alone (RFC 5280 and the strict checks), without the S/MIME profile: for
    /// suites of path validation tests whose certificates are not mail certificates.
    Path,
}

/// The certificate policy inputs of RFC 5280 section 6.1.1.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyInputs {
    /// user-initial-policy-set, dotted OIDs; empty means anyPolicy.
    #[serde(default)]
    pub initial_policy_set: Vec<String>,
    #[serde(default)]
    pub initial_explicit_policy: bool,
    #[serde(default)]
    pub initial_policy_mapping_inhibit: bool,
    #[serde(default)]
    pub initial_inhibit_any_policy: bool,
}

/// The operation a certificate is chosen for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Sign,
    Encrypt,
    Decrypt,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Sign => "sign",
            Purpose::Encrypt => "encrypt",
            Purpose::Decrypt => "decrypt",
        }
    }
}

/// `which`: the certificate selection for `address` and an operation, explained.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WhichParams {
    pub address: String,
    /// `sign`, `encrypt` or `decrypt`.
    #[serde(rename = "for")]
    pub purpose: Purpose,
}

/// `encrypt`: encrypt a MIME entity to recipients.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EncryptParams {
    /// Recipient addresses (To, Cc and Bcc alike).
    pub recipients: Vec<String>,
    /// Recipient certificates the client has (DER), looked at before the contacts store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<Base64Bytes>,
    /// The sender's address: always a recipient too, with their own encryption
    /// certificate, so they can read their sent mail. Default: the first `[[identity]]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// The MIME entity to encrypt. Line ends are canonicalized to CRLF.
    pub content: Base64Bytes,
    /// The content encryption algorithm (`aes256-cbc`, ...), one of the policy's
    /// `encryption_algorithms` (else `policy_denied`; never silently replaced). Default:
    /// the policy's first that every recipient takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// Answer the bare CMS EnvelopedData (DER) in `mime` instead of an
    /// `application/pkcs7-mime` entity (for a client that builds the MIME part itself).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub der: bool,
}

/// `decrypt`: open an encrypted S/MIME message.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecryptParams {
    /// The message: an `application/pkcs7-mime` entity, or bare CMS (DER or PEM).
    pub content: Base64Bytes,
    /// Stop after the first envelope: `mime` is what it held, signed layers inside left as
    /// they are, for a client that verifies inner signatures itself (NeoMutt). Signed
    /// layers outside it are verified as always.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outer_only: bool,
}

/// `compose`: a complete RFC 5322 message in, the message(s) to send out.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComposeParams {
    /// The message: header fields (From, To, Cc, Bcc, Subject, ...), an empty line, the body.
    pub content: Base64Bytes,
    /// Sign (also when the policy's `always_sign` is off).
    #[serde(default)]
    pub sign: bool,
    /// Encrypt (also when the policy's `always_encrypt` is off).
    #[serde(default)]
    pub encrypt: bool,
    /// When some recipients have no usable certificate, send unencrypted rather than fail.
    /// Refused when the policy's `always_encrypt` is on.
    #[serde(default)]
    pub allow_unencrypted: bool,
    /// Recipient certificates the client has (DER).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<Base64Bytes>,
}

/// `verify`: check every signature of a signed MIME entity and each signer's certificate.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyParams {
    /// The signed entity: `multipart/signed`, `application/pkcs7-mime;
    /// smime-type=signed-data`, or bare CMS (DER, or PEM `PKCS7` / `CMS` / `SIGNED MESSAGE`).
    /// With `signature`: the content that was signed (a MIME entity, compared with CRLF
    /// line ends as in a clear-signed message).
    pub content: Base64Bytes,
    /// A detached signature over `content`: a CMS SignedData without content (DER or PEM),
    /// as the two parts of a `multipart/signed` arrive separately at some clients (NeoMutt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Base64Bytes>,
    /// `wait` (default): the response carries each signer certificate's status. `event`:
    /// the response comes once the signatures are checked, with certificate status
    /// `pending`, and a `validation_done` event follows on this connection.
    #[serde(default)]
    pub validation: ValidationMode,
}

/// When `verify` reports the signer certificates' status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ValidationMode {
    /// In the response.
    #[default]
    Wait,
    /// In a `validation_done` event after the response.
    Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_with_flattened_op() {
        let req = Request {
            id: 7.into(),
            op: Op::Sign(SignParams {
                signer: "a@b".into(),
                content: Base64Bytes(b"hi".to_vec()),
                format: Some(SignFormat::Opaque),
                ..Default::default()
            }),
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            r#"{"id":7,"op":"sign","signer":"a@b","content":"aGk=","format":"opaque"}"#
        );
        let back: Request = serde_json::from_str(&json).unwrap();
        assert_eq!(back.op.name(), "sign");
    }

    #[test]
    fn unknown_parameter_is_rejected() {
        let err = serde_json::from_str::<Request>(r#"{"id":1,"op":"status","verbose":true}"#)
            .unwrap_err();
        assert!(err.to_string().contains("verbose"), "{err}");
    }
}
