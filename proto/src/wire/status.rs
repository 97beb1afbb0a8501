//! The result of `status`: the agent, its modules, the card readers, the tokens, the trust
//! store and the CRL cache.
//!
//! Owns what `status` reports and nothing else; how other messages name a token or describe
//! a certificate is in `token.rs`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::wire::{CertInfo, PinRetries, TokenRef};

/// Result of `status`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct StatusResult {
    pub agent: AgentInfo,
    pub modules: Vec<ModuleStatus>,
    /// Card readers (PC/SC), when the agent watches them.
    pub readers: ReadersStatus,
    pub tokens: Vec<TokenStatus>,
    /// Trust anchors, distrusted and intermediate certificates loaded.
    #[serde(default)]
    pub trust: TrustStatus,
    /// The CRLs the agent holds.
    #[serde(default)]
    pub crl_cache: CrlCacheStatus,
}

/// What the agent sees of the PC/SC card readers.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct ReadersStatus {
    /// The agent watches readers (it does when a module is not marked `software`).
    pub watched: bool,
    /// Why PC/SC is not available now (pcscd not running, ...); the agent keeps retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub readers: Vec<ReaderInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReaderInfo {
    pub name: String,
    pub card_present: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct AgentInfo {
    pub version: String,
    pub protocol_version: u32,
    pub pid: u32,
    pub socket: String,
    /// Seconds since the agent started.
    pub uptime_secs: u64,
    /// Log lines that could not be written (a full disk, a closed stderr) since the start.
    #[serde(default)]
    pub log_lines_dropped: u64,
}

/// A configured PKCS#11 module.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct ModuleStatus {
    pub path: String,
    /// `auto`, `hardware` or `software`, as configured.
    pub kind: String,
    /// The library's own description and version, when it loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
    /// Why the module is not usable, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A token present now.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct TokenStatus {
    #[serde(flatten)]
    pub token: TokenRef,
    pub manufacturer: String,
    pub model: String,
    /// The module's path.
    pub module: String,
    /// Keys on hardware (smart card, HSM) rather than in software.
    pub hardware: bool,
    /// A removable device (smart card, USB token).
    pub removable: bool,
    /// The slot's description: for smart cards, the reader's name.
    pub slot: String,
    pub pin: PinStatus,
    pub certificates: Vec<CertInfo>,
}

/// What the agent knows of a token's PIN. Never the PIN itself.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct PinStatus {
    /// A PIN for this token is held in the agent's cache.
    pub cached: bool,
    /// The token takes the PIN on its own keypad (protected authentication path).
    pub protected_path: bool,
    pub retries: PinRetries,
}

/// The CRL cache, in `status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct CrlCacheStatus {
    /// The cache directory, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// CRL downloads started since the agent started.
    pub fetches: u64,
    pub crls: Vec<CrlCacheEntry>,
}

/// A CRL in the cache.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct CrlCacheEntry {
    pub issuer: String,
    pub url: String,
    pub this_update: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_update: Option<String>,
    /// Revoked certificates listed.
    pub entries: usize,
    /// Current now (before its nextUpdate); a CRL that is not is fetched again when needed.
    pub current: bool,
}

/// The trust store, in `status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct TrustStatus {
    pub anchors: usize,
    pub untrusted: usize,
    pub intermediates: usize,
    /// Files of the trust configuration that could not be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}
