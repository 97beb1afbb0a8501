//! The configuration file: every setting of `behaviour.md`, parsed and validated at start.
//!
//! Owns: the TOML schema, its defaults (the seed's defaults where the seed gives one), and
//! value checks. An unknown key or a bad value is an error that names the key and its line
//! (toml's error display carries the position; checks run inside deserialization so they
//! get it too). Does not act on any setting: the layers that enforce a setting read it
//! from here.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::alg::{ContentAlgorithm, DigestAlgorithm};

mod directory;
mod revocation;
pub use directory::{Bind, DirectoryConfig, DirectoryKind, DirectoryServer};
pub use revocation::{CrlUnavailable, RevocationConfig, RevocationSource};

/// Where the configuration is read from when `--config` is not given.
pub fn default_config_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(base.join("smime-agent").join("config.toml"))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration {path}:\n{message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub agent: AgentConfig,
    pub tokens: TokensConfig,
    pub soft_store: SoftStoreConfig,
    pub pin: PinConfig,
    pub policy: PolicyConfig,
    pub identity: Vec<IdentityConfig>,
    pub trust: TrustConfig,
    pub revocation: RevocationConfig,
    pub contacts: ContactsConfig,
    pub directory: DirectoryConfig,
}

impl Config {
    /// Parses a configuration. `origin` names it in errors; relative paths in it are
    /// resolved against `base_dir`.
    pub fn parse(text: &str, origin: &Path, base_dir: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        cfg.resolve_paths(base_dir);
        Ok(cfg)
    }

    /// Reads `path`, or the default location when `path` is `None` (a missing default file
    /// means all defaults).
    pub fn load(path: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_owned(), true),
            None => match default_config_path() {
                Some(p) => (p, false),
                None => return Ok((Config::default(), None)),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Config::default(), None));
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let base = path
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        let cfg = Config::parse(&text, &path, &base)?;
        Ok((cfg, Some(path)))
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        let fix_opt = |p: &mut Option<PathBuf>| {
            if let Some(p) = p {
                fix(p)
            }
        };
        fix_opt(&mut self.agent.socket);
        fix_opt(&mut self.soft_store.dir);
        self.trust.roots.iter_mut().for_each(fix);
        self.trust.untrusted.iter_mut().for_each(fix);
        self.trust.trusted_certs.iter_mut().for_each(fix);
        self.trust.intermediates.iter_mut().for_each(fix);
        fix_opt(&mut self.revocation.cache_dir);
        fix_opt(&mut self.contacts.dir);
        for server in &mut self.directory.server {
            server.resolve_paths(fix);
        }
    }
}

// ---------------------------------------------------------------------------------------
// [agent]
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Socket path; default `$XDG_RUNTIME_DIR/smime-agent/agent.sock`.
    pub socket: Option<PathBuf>,
    /// Log level when `RUST_LOG` is not set.
    pub log_level: LogLevel,
    /// Largest frame read from a client.
    #[serde(deserialize_with = "de_frame_bytes")]
    pub max_frame_bytes: u64,
    /// Connections served at once; more are refused with `too_many_connections`.
    #[serde(deserialize_with = "de_max_connections")]
    pub max_connections: usize,
    /// A request frame begun must go on arriving: after this many seconds without a new
    /// byte of it, the connection is closed (a stalled client holds memory and a slot).
    #[serde(deserialize_with = "de_frame_timeout")]
    pub frame_timeout_secs: u64,
    /// Bytes of unfinished request frames held across all connections; a connection whose
    /// frame would pass it is closed.
    #[serde(deserialize_with = "de_unfinished_bytes")]
    pub max_unfinished_bytes: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            socket: None,
            log_level: LogLevel::Info,
            max_frame_bytes: smime_agent_proto::DEFAULT_MAX_FRAME_BYTES,
            max_connections: 1024,
            frame_timeout_secs: 30,
            max_unfinished_bytes: 256 << 20,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

// ---------------------------------------------------------------------------------------
// [[tokens.module]]
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// The PKCS#11 modules to load. Modules load only from here, never from a request.
    pub module: Vec<ModuleConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleConfig {
    /// Absolute path of the PKCS#11 library.
    #[serde(deserialize_with = "de_module_path")]
    pub path: PathBuf,
    #[serde(default)]
    pub kind: ModuleKind,
    /// How often to look for tokens when the module cannot report slot events.
    #[serde(default = "default_poll_ms", deserialize_with = "de_poll_ms")]
    pub poll_interval_ms: u64,
}

fn default_poll_ms() -> u64 {
    1000
}

/// Whether a module's keys count as hardware (preferred) or software (fallback).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModuleKind {
    /// Hardware when the slot says CKF_HW_SLOT or CKF_REMOVABLE_DEVICE.
    #[default]
    Auto,
    Hardware,
    Software,
}

impl ModuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleKind::Auto => "auto",
            ModuleKind::Hardware => "hardware",
            ModuleKind::Software => "software",
        }
    }
}

// ---------------------------------------------------------------------------------------
// [soft_store]
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SoftStoreConfig {
    /// Directory of PKCS#12 files holding software keys (fallback only).
    pub dir: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------
// [pin]
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PinConfig {
    pub source: PinSource,
    /// The pinentry program (a name on PATH or a path).
    #[serde(deserialize_with = "de_nonempty")]
    pub pinentry: String,
    /// How long a PIN stays cached per token; 0 = never cached (the token is logged out
    /// after each operation).
    #[serde(deserialize_with = "de_cache_ttl")]
    pub cache_ttl_secs: u64,
    /// How long to wait for a person to answer a PIN prompt.
    #[serde(deserialize_with = "de_prompt_timeout")]
    pub prompt_timeout_secs: u64,
    /// Whether a key that demands the PIN before every use (CKA_ALWAYS_AUTHENTICATE) may
    /// be given the cached PIN instead of asking the person again.
    pub always_authenticate_uses_cache: bool,
}

impl Default for PinConfig {
    fn default() -> Self {
        PinConfig {
            source: PinSource::Pinentry,
            pinentry: "pinentry".into(),
            cache_ttl_secs: 600,
            prompt_timeout_secs: 120,
            always_authenticate_uses_cache: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinSource {
    /// The agent runs pinentry on the client's terminal or display.
    #[default]
    Pinentry,
    /// The requesting client asks (it receives `pin_needed`).
    Client,
    /// The reader's keypad; PINs are never typed into a computer.
    Pinpad,
}

impl PinSource {
    pub fn as_str(self) -> &'static str {
        match self {
            PinSource::Pinentry => "pinentry",
            PinSource::Client => "client",
            PinSource::Pinpad => "pinpad",
        }
    }
}

// ---------------------------------------------------------------------------------------
// [policy]
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// [SmartCardOnly] Only keys on removable hardware tokens are examined.
    pub smart_card_only: bool,
    /// [AlwaysSign] Every composed message is signed.
    pub always_sign: bool,
    /// [AlwaysEncrypt] Every composed message is encrypted; no unencrypted fallback.
    pub always_encrypt: bool,
    /// [ClearSign] multipart/signed (true) or opaque signed-data (false).
    pub clear_sign: bool,
    /// [TripleWrap] Sign, encrypt, sign again when signing and encrypting.
    pub triple_wrap: bool,
    /// [IncludeCertificateChainWithoutRootCertificate] Carry the chain (without the root).
    pub include_chain: bool,
    /// [defaultSigningAlgorithms] Digest algorithms, preferred first.
    #[serde(deserialize_with = "de_digests")]
    pub signing_algorithms: Vec<DigestAlgorithm>,
    /// [EncryptionAlgorithms] Content encryption algorithms, preferred first.
    #[serde(deserialize_with = "de_ciphers")]
    pub encryption_algorithms: Vec<ContentAlgorithm>,
    /// [UseSecondaryProxiesWhenFindingCertificates] Match certificates on proxy addresses:
    /// the user's `[[identity]]` aliases, and recipients' aliases in the directory (the
    /// certificate of the entry's primary `mail`).
    pub use_secondary_proxies: bool,
    /// RSA recipients get the content key with OAEP (SHA-256) instead of PKCS#1 v1.5.
    pub rsa_oaep: bool,
    /// The raw key operations (`key_sign`, `key_decrypt`, `key_derive`) that the PKCS#11
    /// module forwards for Thunderbird, Evolution and OpenSSL programs.
    pub raw_key_operations: bool,
    /// How far a signer's signing time may be from the message's Date, either way, before
    /// `verify` and `decrypt` warn (Thunderbird's bound: one hour).
    pub signing_time_tolerance_secs: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            smart_card_only: false,
            always_sign: false,
            always_encrypt: false,
            clear_sign: true,
            triple_wrap: true,
            include_chain: false,
            signing_algorithms: vec![DigestAlgorithm::Sha256],
            encryption_algorithms: vec![ContentAlgorithm::Aes256Cbc, ContentAlgorithm::Aes128Cbc],
            use_secondary_proxies: true,
            rsa_oaep: false,
            raw_key_operations: true,
            signing_time_tolerance_secs: 3600,
        }
    }
}

// ---------------------------------------------------------------------------------------
// [[identity]]
// ---------------------------------------------------------------------------------------

/// An address of the user and its proxy addresses (aliases).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    #[serde(deserialize_with = "de_address")]
    pub address: String,
    #[serde(default, deserialize_with = "de_addresses")]
    pub aliases: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// [trust], [revocation], [contacts], [directory]
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// Trust anchors: PEM/DER files or directories. Empty: the agent's own roots directory.
    pub roots: Vec<PathBuf>,
    /// Also trust the system CA bundle.
    pub use_system_roots: bool,
    /// Distrusted certificates: never valid, whatever their chain.
    pub untrusted: Vec<PathBuf>,
    /// Certificates trusted explicitly (cross-certified): accepted as anchors.
    pub trusted_certs: Vec<PathBuf>,
    /// The local store of intermediate CA certificates (files or directories), used to build
    /// paths when the message, the request and the tokens do not carry them.
    pub intermediates: Vec<PathBuf>,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            roots: vec![],
            use_system_roots: true,
            untrusted: vec![],
            trusted_certs: vec![],
            intermediates: vec![],
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContactsConfig {
    /// Certificates of correspondents (PEM/DER files); harvested ones are added here.
    pub dir: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------
// Value checks, run inside deserialization so errors carry the key's line.
// ---------------------------------------------------------------------------------------

pub(crate) fn in_range<'de, D: serde::Deserializer<'de>>(
    d: D,
    min: u64,
    max: u64,
    what: &str,
) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if v < min || v > max {
        return Err(serde::de::Error::custom(format!(
            "{what} must be between {min} and {max}, not {v}"
        )));
    }
    Ok(v)
}

fn de_frame_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(d, 4096, 1 << 30, "max_frame_bytes")
}

fn de_unfinished_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(d, 4096, 1 << 34, "max_unfinished_bytes")
}

fn de_frame_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(d, 1, 3600, "frame_timeout_secs")
}

fn de_max_connections<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    in_range(d, 1, 65_536, "max_connections").map(|v| v as usize)
}

fn de_poll_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(d, 50, 3_600_000, "poll_interval_ms")
}

fn de_cache_ttl<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(d, 0, 7 * 86_400, "cache_ttl_secs")
}

fn de_prompt_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(d, 1, 3600, "prompt_timeout_secs")
}

/// The seed's DWORD millisecond settings: 0 through 2147483647.
pub(crate) fn de_dword_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(d, 0, 2_147_483_647, "the timeout")
}

fn de_nonempty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Err(serde::de::Error::custom("must not be empty"));
    }
    Ok(s)
}

fn de_module_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let p = PathBuf::deserialize(d)?;
    // A bare name would be looked up by the dynamic loader's search path: only an absolute
    // path says exactly which code runs with the user's keys.
    if !p.is_absolute() {
        return Err(serde::de::Error::custom(format!(
            "module path {} must be absolute",
            p.display()
        )));
    }
    Ok(p)
}

fn nonempty_unique<T: PartialEq + fmt::Debug, E: serde::de::Error>(
    v: Vec<T>,
    what: &str,
) -> Result<Vec<T>, E> {
    if v.is_empty() {
        return Err(E::custom(format!(
            "{what} must name at least one algorithm"
        )));
    }
    for (i, a) in v.iter().enumerate() {
        if v[..i].contains(a) {
            return Err(E::custom(format!("{what} lists {a:?} twice")));
        }
    }
    Ok(v)
}

fn de_digests<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<DigestAlgorithm>, D::Error> {
    nonempty_unique(Vec::deserialize(d)?, "signing_algorithms")
}

fn de_ciphers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ContentAlgorithm>, D::Error> {
    nonempty_unique(Vec::deserialize(d)?, "encryption_algorithms")
}

fn de_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let a = String::deserialize(d)?;
    crate::certs::address::check_address(&a).map_err(serde::de::Error::custom)?;
    Ok(a)
}

fn de_addresses<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    for a in &v {
        crate::certs::address::check_address(a).map_err(serde::de::Error::custom)?;
    }
    Ok(v)
}

// ---------------------------------------------------------------------------------------
// `smime-agent config --defaults`
// ---------------------------------------------------------------------------------------

/// The default configuration, commented. A test checks that it parses to
/// `Config::default()`, so it cannot drift from the code.
pub const DEFAULT_CONFIG_TOML: &str = r#"# smime-agent configuration
# Location: $XDG_CONFIG_HOME/smime-agent/config.toml (or --config FILE).
# Every key is shown with its default. Unknown keys are errors.
# Relative paths are resolved against this file's directory.

[agent]
# Socket path. Default: $XDG_RUNTIME_DIR/smime-agent/agent.sock, else
# /tmp/smime-agent-$UID/agent.sock.
# socket = "/run/user/1000/smime-agent/agent.sock"
# Log level when RUST_LOG is not set: error, warn, info, debug, trace.
log_level = "info"
# Largest request frame (one JSON line) accepted, in bytes (4096 .. 1 GiB).
max_frame_bytes = 67108864
# Connections served at once (1 .. 65536); more are refused.
max_connections = 1024
# A request begun must go on arriving: seconds without a new byte of an unfinished frame
# before the connection is closed with limit_exceeded (1 .. 3600).
frame_timeout_secs = 30
# Bytes of unfinished request frames held across all connections (4096 .. 16 GiB); a
# connection whose frame would pass it is closed with limit_exceeded.
max_unfinished_bytes = 268435456

# PKCS#11 modules, one [[tokens.module]] table each. Modules load only from this file.
# [[tokens.module]]
# path = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"   # absolute path
# kind = "auto"            # auto | hardware | software; auto: hardware when the slot is
#                          # a hardware slot or a removable device
# poll_interval_ms = 1000  # token polling when the module cannot report slot events

[soft_store]
# Directory of PKCS#12 files with software keys (a fallback; hardware keys win).
# dir = "/home/me/.local/share/smime-agent/keys"

[pin]
# Where PINs come from: "pinentry" (the agent runs pinentry on the client's terminal or
# display), "client" (the requesting client asks), "pinpad" (the reader's keypad).
source = "pinentry"
# The pinentry program.
pinentry = "pinentry"
# Seconds a PIN stays cached per token; 0 = never (log out after each operation).
cache_ttl_secs = 600
# Seconds to wait for an answer to a PIN prompt.
prompt_timeout_secs = 120
# Keys that demand the PIN before every use (CKA_ALWAYS_AUTHENTICATE): may the cached PIN
# be used instead of asking again?
always_authenticate_uses_cache = false

[policy]
# Only keys on smart cards (removable hardware tokens) are used.    [SmartCardOnly]
smart_card_only = false
# Every composed message is signed.                                  [AlwaysSign]
always_sign = false
# Every composed message is encrypted; no unencrypted fallback.      [AlwaysEncrypt]
always_encrypt = false
# Clear-signed multipart/signed (true) or opaque signed-data (false). [ClearSign]
clear_sign = true
# Sign, encrypt and sign again when signing and encrypting.          [TripleWrap]
triple_wrap = true
# Include the certificate chain (without the root) in messages.
#                                   [IncludeCertificateChainWithoutRootCertificate]
include_chain = false
# Digest algorithms, preferred first: sha256, sha384, sha512.       [defaultSigningAlgorithms]
signing_algorithms = ["sha256"]
# Content encryption, preferred first: aes256-cbc, aes128-cbc, aes256-gcm, aes128-gcm.
# A message gets the first one every recipient can decrypt, by the SMIMECapabilities of
# their signed mail; the list is also what the agent's signatures advertise.
#                                                                    [EncryptionAlgorithms]
encryption_algorithms = ["aes256-cbc", "aes128-cbc"]
# Match certificates on an address's proxy addresses (aliases): your own [[identity]]
# aliases, and a recipient's aliases in the [directory] (their primary mail's certificate).
#                                   [UseSecondaryProxiesWhenFindingCertificates]
use_secondary_proxies = true
# RSA recipients get the content key with RSA-OAEP (SHA-256) rather than PKCS#1 v1.5, which
# every S/MIME client reads but which is the weaker scheme.
rsa_oaep = false
# Raw key operations for the PKCS#11 module (libsmime_agent_pkcs11.so), through which
# Thunderbird, Evolution and OpenSSL programs sign and decrypt with the keys the agent holds
# (key usage, smart_card_only, PIN rules and the audit log apply). false: the module lists
# the certificates but every private-key operation is refused (policy_denied).
raw_key_operations = true
# Seconds a signer's signing time may be from the message's Date header, either way, before
# verify and decrypt warn (a message written offline and sent later shows a gap; a large
# one suggests an old signature put on a new message). Thunderbird warns past one hour.
signing_time_tolerance_secs = 3600

# The user's addresses and their proxy addresses, one [[identity]] table each.
# [[identity]]
# address = "alice@example.org"
# aliases = ["a.example@example.org"]

[trust]
# Trust anchors: PEM or DER files, or directories of them. Empty: the agent's own roots
# directory, $XDG_CONFIG_HOME/smime-agent/roots.
roots = []
# Also trust the system CA bundle.
use_system_roots = true
# Distrusted certificates: never valid, whatever their chain.
untrusted = []
# Certificates trusted explicitly (cross-certified), accepted as anchors.
trusted_certs = []
# Intermediate CA certificates (files or directories) for building chains the message and
# the tokens do not carry.
intermediates = []

[revocation]
# Do not check revocation at all.                                    [DisableCRLCheck]
disable_crl_check = false
# When no revocation status can be obtained (neither OCSP nor a CRL): "allow" (use the
# certificate), "warn" (use it and report the failure), "fail" (do not use it). Also
# spelled on_revocation_unavailable.
on_crl_unavailable = "allow"
# Where to ask when no current answer is cached (a cached OCSP response or CRL is always
# used first): the OCSP responder a certificate names, then its CRL distribution points.
# ["crl"] never asks a responder (which learns which certificates you look at).
order = ["ocsp", "crl"]
# Send a nonce with each OCSP request; a response that echoes another nonce is refused.
ocsp_nonce = true
# Refuse to sign or encrypt when a CRL of the sender's chain is unreachable. [CheckCRLOnSend]
check_crl_on_send = false
# Per CRL, OCSP or AIA connection, ms; below 5000 means the default. [CRLConnectionTimeout]
crl_connection_timeout_ms = 60000
# All CRL, OCSP and AIA fetches of one validation, ms.               [CRLRetrievalTimeout]
crl_retrieval_timeout_ms = 10000
# CRL cache. Default: $XDG_CACHE_HOME/smime-agent/crls.
# cache_dir = "/home/me/.cache/smime-agent/crls"
# Largest CRL download accepted, bytes.
max_crl_bytes = 33554432
# HTTP proxy for CRL and AIA downloads, and the hosts reached without it (curl's syntax:
# names, .domains, addresses, CIDR ranges, *). Unset: the http_proxy and no_proxy
# environment variables, as curl reads them; http_proxy = "" means no proxy at all.
# http_proxy = "http://proxy.example.com:3128"
# no_proxy = "localhost,127.0.0.1,.example.com"

[contacts]
# Certificates of correspondents (PEM/DER files).
# dir = "/home/me/.local/share/smime-agent/contacts"

[directory]
# Time to expand a distribution list when encrypting, ms; 0 disables encrypting to
# distribution lists.                                                [DLExpansionTimeout]
dl_expansion_timeout_ms = 60000
# Connecting to one LDAP server (TCP, TLS, StartTLS), ms (100 .. 600000).
connect_timeout_ms = 5000
# Each bind or search once connected, ms (100 .. 600000).
search_timeout_ms = 10000
# Seconds an answer (found or not found) is reused; 0 = ask every time. Failures are not kept.
cache_ttl_secs = 600
# Aliases of recipients (proxyAddresses, mailLocalAddress, mailAlternateAddress) find the
# certificate of the entry's primary mail only with [policy] use_secondary_proxies.

# LDAP servers, one [[directory.server]] table each, asked in order after the request's
# certificates and the contacts: person entries, then contacts, then lists.
# [[directory.server]]
# url = "ldaps://ldap.example.org"     # ldap://, ldaps:// or ldapi://%2Frun%2Fslapd%2Fldapi
# base_dn = "dc=example,dc=org"
# kind = "openldap"        # openldap | ad: which default filters apply
# bind = "anonymous"       # anonymous | simple (bind_dn, password_file) | sasl_external (ldapi)
# bind_dn = "cn=mail-agent,ou=services,dc=example,dc=org"
# password_file = "/home/me/.config/smime-agent/ldap-password"
# starttls = false         # StartTLS on an ldap:// URL
# ca_file = "/etc/ssl/certs/example-ca.pem"   # CAs for the server's TLS certificate
# person_filter = "(&(objectClass=inetOrgPerson)(mail={address}))"   # {address}: escaped
# contact_filter = "..."
# list_filter = "..."
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("test.toml"), Path::new("/base")).map_err(|e| e.to_string())
    }

    #[test]
    fn commented_defaults_parse_to_the_defaults() {
        assert_eq!(parse(DEFAULT_CONFIG_TOML).unwrap(), Config::default());
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = parse("[agent]\nlog_level = \"info\"\nsockett = \"/x\"\n").unwrap_err();
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("sockett"), "{e}");
    }

    #[test]
    fn unknown_table_is_an_error() {
        let e = parse("[polcy]\nalways_sign = true\n").unwrap_err();
        assert!(e.contains("polcy") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn bad_values_are_named_with_their_line() {
        let cases = [
            ("[pin]\nsource = \"smoke-signals\"\n", "line 2"),
            ("[agent]\n\nmax_frame_bytes = 10\n", "line 3"),
            ("[policy]\nsigning_algorithms = [\"md5\"]\n", "line 2"),
            ("[policy]\nencryption_algorithms = []\n", "line 2"),
            ("[[tokens.module]]\npath = \"libsofthsm2.so\"\n", "line 2"),
            ("[[identity]]\naddress = \"not an address\"\n", "line 2"),
            (
                "[revocation]\ncrl_retrieval_timeout_ms = 2147483648\n",
                "line 2",
            ),
            ("[revocation]\non_crl_unavailable = \"maybe\"\n", "line 2"),
            ("[revocation]\norder = []\n", "line 2"),
            ("[revocation]\norder = [\"crl\", \"crl\"]\n", "line 2"),
            ("[revocation]\norder = [\"ocsp\", \"ldap\"]\n", "line 2"),
            (
                "[[tokens.module]]\npath = \"/x.so\"\nkind = \"usb\"\n",
                "line 3",
            ),
        ];
        for (text, line) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(line), "{text:?} gave {e}");
        }
    }

    #[test]
    fn modules_and_identities_parse() {
        let c = parse(
            r#"
[[tokens.module]]
path = "/usr/lib/softhsm/libsofthsm2.so"
kind = "software"

[[tokens.module]]
path = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
poll_interval_ms = 250

[[identity]]
address = "alice@example.org"
aliases = ["a@example.org"]
"#,
        )
        .unwrap();
        assert_eq!(c.tokens.module.len(), 2);
        assert_eq!(c.tokens.module[0].kind, ModuleKind::Software);
        assert_eq!(c.tokens.module[1].kind, ModuleKind::Auto);
        assert_eq!(c.tokens.module[1].poll_interval_ms, 250);
        assert_eq!(c.identity[0].aliases, vec!["a@example.org"]);
    }

    #[test]
    fn on_revocation_unavailable_is_the_same_setting() {
        let c = parse("[revocation]\non_revocation_unavailable = \"fail\"\n").unwrap();
        assert_eq!(c.revocation.on_crl_unavailable, CrlUnavailable::Fail);
        // Both names at once is one setting given twice.
        let e = parse(
            "[revocation]\non_crl_unavailable = \"warn\"\non_revocation_unavailable = \"fail\"\n",
        )
        .unwrap_err();
        assert!(e.contains("on_crl_unavailable"), "{e}");
    }

    #[test]
    fn crl_connection_timeout_below_5000_means_the_default() {
        let c = parse("[revocation]\ncrl_connection_timeout_ms = 4999\n").unwrap();
        assert_eq!(c.revocation.effective_connection_timeout_ms(), 60_000);
        let c = parse("[revocation]\ncrl_connection_timeout_ms = 5000\n").unwrap();
        assert_eq!(c.revocation.effective_connection_timeout_ms(), 5000);
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let c = parse("[contacts]\ndir = \"contacts\"\n").unwrap();
        assert_eq!(c.contacts.dir, Some(PathBuf::from("/base/contacts")));
    }
}
