//! The directory: other people's certificates, aliases and distribution lists from the
//! LDAP servers of `[[directory.server]]` (ldap3 on tokio).
//!
//! Owns: asking the servers in order for an address (persons before contacts before lists),
//! the answer cache, the number of connections open at once (8), and expanding a list into its members' entries (nested lists, cycles,
//! size and time bounded). Every failure is a [`DirectoryError`] naming the server. Must not
//! touch: judging certificates or choosing a recipient's (`recipients`, and the ops that
//! call this), the ops or the server above it.
//!
//! - `connect.rs`: a connection and its bind.
//! - `filter.rs`: the address escaped and the filters.
//! - `search.rs`: one bounded search.
//! - `decode.rs`: entries, certificates and addresses out of an answer.
//! - `cache.rs`: answers kept for their time to live.
//!
//! A server's bytes on each connection are bounded by `crate::net::relay`.

mod cache;
mod connect;
mod decode;
mod filter;
mod search;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use ldap3::Scope;

use crate::config::{DirectoryConfig, DirectoryServer};

pub use filter::escape;

/// Most members (entries and plain addresses) a list expands to.
pub const MAX_LIST_MEMBERS: usize = 1000;
/// Most entries read while expanding one list (members and nested lists).
const MAX_LIST_ENTRIES: usize = 2000;
/// Deepest nesting of lists followed.
const MAX_LIST_DEPTH: usize = 8;
/// Most connections to the directory open at once, across all requests; more wait their
/// turn (each holder is bounded by its timeouts).
const MAX_CONNECTIONS: usize = 8;
/// Most bytes a server may send on the connection of one lookup (one bounded search).
const LOOKUP_BUDGET: u64 = 2 * search::MAX_ANSWER_BYTES as u64;
/// Most bytes a server may send on the connection that expands one list.
const EXPANSION_BUDGET: u64 = 32 << 20;

/// Why a server gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DirectoryError {
    #[error("directory {server}: {why}")]
    Config { server: String, why: String },
    #[error("directory {server}: cannot connect: {why}")]
    Connect { server: String, why: String },
    #[error("directory {server}: {why}")]
    Bind { server: String, why: String },
    #[error("directory {server}: no answer {what} within {ms} ms")]
    Timeout {
        server: String,
        what: &'static str,
        ms: u64,
    },
    #[error("directory {server}: the search failed: {why}")]
    Search { server: String, why: String },
    #[error("directory {server}: refused answer: {what}")]
    Limit { server: String, what: String },
    #[error("directory {server}: unreadable answer: {why}")]
    Answer { server: String, why: String },
}

/// An ldap3 failure of one operation, in words.
fn op_error(
    server: &str,
    what: &'static str,
    timeout: Duration,
    e: ldap3::LdapError,
) -> DirectoryError {
    match e {
        ldap3::LdapError::Timeout { .. } => DirectoryError::Timeout {
            server: server.to_owned(),
            what,
            ms: timeout.as_millis() as u64,
        },
        // ldap3 ends a search stream this way when its connection task stops, which it
        // also does when it cannot read the server's answer.
        ldap3::LdapError::EndOfStream => DirectoryError::Answer {
            server: server.to_owned(),
            why: format!(
                "{what}: the answer ended early (the server closed the connection, or sent \
                 what the LDAP client could not read)"
            ),
        },
        ldap3::LdapError::LdapResult { result } => DirectoryError::Search {
            server: server.to_owned(),
            why: result.to_string(),
        },
        e => DirectoryError::Connect {
            server: server.to_owned(),
            why: format!("{what}: {e}"),
        },
    }
}

/// What a panic of ldap3 on a server's answer is reported as.
const CLIENT_FAILED: &str = "the LDAP client failed on a malformed answer";

/// Runs a conversation with a server so that a panic inside ldap3 (it panics on some
/// malformed answers, e.g. a result that is not a sequence) is an error for this lookup,
/// not a request left without an answer.
async fn guarded<T>(
    server: &str,
    f: impl std::future::Future<Output = Result<T, DirectoryError>>,
) -> Result<T, DirectoryError> {
    match std::panic::AssertUnwindSafe(f).catch_unwind().await {
        Ok(r) => r,
        Err(_) => Err(DirectoryError::Answer {
            server: server.to_owned(),
            why: CLIENT_FAILED.into(),
        }),
    }
}

/// A failure on a connection whose relay cut it off is the server's excess, not a network
/// fault.
fn overrun_error(
    server: &str,
    overrun: &crate::net::relay::Overrun,
    budget: u64,
    e: DirectoryError,
) -> DirectoryError {
    if overrun.happened() {
        DirectoryError::Limit {
            server: server.to_owned(),
            what: format!("the server sent more than {budget} bytes on one connection"),
        }
    } else {
        e
    }
}

/// What an entry is to a sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKind {
    Person,
    Contact,
    List,
}

/// An entry, read.
#[derive(Debug, Clone)]
pub struct Entry {
    pub dn: String,
    pub kind: EntryKind,
    /// `mail`: the addresses its certificates are issued to.
    pub mails: Vec<String>,
    /// Proxy addresses and other aliases, without the primary ones.
    pub aliases: Vec<String>,
    /// DER certificates, `userCertificate` before `userSMIMECertificate`.
    pub certs: Vec<Vec<u8>>,
    /// Values that could not be used, in words.
    pub problems: Vec<String>,
    /// A list's members by DN (`member`, `uniqueMember`).
    pub member_dns: Vec<String>,
    /// A list's members by address (`rfc822MailMember`).
    pub member_addresses: Vec<String>,
    /// The DNs of further entries of the same kind that answered too (merged into this
    /// one): an alias they share names no single owner.
    pub others: Vec<String>,
}

/// The directory's answer for an address.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The URL of the server that answered.
    pub server: String,
    server_index: usize,
    /// The best entry: of the first kind found (persons, contacts, lists), with the
    /// certificates and addresses of every entry of that kind.
    pub entry: Entry,
}

/// A list expanded.
#[derive(Debug, Default)]
pub struct Expansion {
    /// Member entries (persons and contacts).
    pub members: Vec<Entry>,
    /// Members named by address only.
    pub addresses: Vec<String>,
    /// What could not be expanded, in words (a member gone, a bound, the time).
    pub problems: Vec<String>,
}

/// The configured servers and the answer cache.
#[derive(Debug)]
pub struct Directory {
    servers: Vec<DirectoryServer>,
    connect_timeout: Duration,
    op_timeout: Duration,
    cache: cache::Cache<Lookup>,
    connections: tokio::sync::Semaphore,
}

impl Directory {
    /// `None` when no server is configured.
    pub fn new(cfg: &DirectoryConfig) -> Option<Directory> {
        if cfg.server.is_empty() {
            return None;
        }
        Some(Directory {
            servers: cfg.server.clone(),
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            op_timeout: Duration::from_millis(cfg.search_timeout_ms),
            cache: cache::Cache::new(Duration::from_secs(cfg.cache_ttl_secs)),
            connections: tokio::sync::Semaphore::new(MAX_CONNECTIONS),
        })
    }

    /// Asks the servers in order for `address`. `Ok(None)`: no server knows it (and none
    /// failed); `Err`: none knows it and these failed.
    pub async fn lookup(&self, address: &str) -> Result<Option<Arc<Lookup>>, Vec<DirectoryError>> {
        let mut errors = vec![];
        for (i, server) in self.servers.iter().enumerate() {
            let key = format!("{i}\n{}", address.to_lowercase());
            let answer = match self.cache.get(&key) {
                Some(kept) => kept,
                None => match self.lookup_on(i, server, address).await {
                    Ok(found) => {
                        let found = found.map(Arc::new);
                        self.cache.put(key, found.clone());
                        found
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "directory lookup failed");
                        errors.push(e);
                        continue;
                    }
                },
            };
            if answer.is_some() {
                return Ok(answer);
            }
        }
        if errors.is_empty() {
            Ok(None)
        } else {
            Err(errors)
        }
    }

    async fn lookup_on(
        &self,
        index: usize,
        server: &DirectoryServer,
        address: &str,
    ) -> Result<Option<Lookup>, DirectoryError> {
        let _turn = self.connections.acquire().await;
        guarded(&server.url, self.converse(index, server, address)).await
    }

    /// One lookup's conversation with a server.
    async fn converse(
        &self,
        index: usize,
        server: &DirectoryServer,
        address: &str,
    ) -> Result<Option<Lookup>, DirectoryError> {
        let (mut ldap, overrun) =
            connect::open(server, self.connect_timeout, self.op_timeout, LOOKUP_BUDGET).await?;
        let filter = filter::lookup_filter(server, address);
        let entries = search::search(
            &mut ldap,
            &server.url,
            &server.base_dn,
            Scope::Subtree,
            &filter,
            self.op_timeout,
        )
        .await
        .map_err(|e| overrun_error(&server.url, &overrun, LOOKUP_BUDGET, e));
        let _ = ldap.unbind().await;
        let mut entries = entries?;
        entries.sort_by_key(|e| e.kind);
        let mut it = entries.into_iter();
        let Some(mut best) = it.next() else {
            return Ok(None);
        };
        // Several entries of the best kind (a person twice): every certificate is a
        // candidate, and the recipient rules choose.
        for e in it.filter(|e| e.kind == best.kind) {
            for c in e.certs {
                if !best.certs.contains(&c) {
                    best.certs.push(c);
                }
            }
            best.mails.extend(e.mails);
            best.aliases.extend(e.aliases);
            best.problems.extend(e.problems);
            best.member_dns.extend(e.member_dns);
            best.member_addresses.extend(e.member_addresses);
            best.others.push(e.dn);
        }
        Ok(Some(Lookup {
            server: server.url.clone(),
            server_index: index,
            entry: best,
        }))
    }

    /// Expands a list found by [`Directory::lookup`] on its own server: members by DN are
    /// read (lists among them expanded in turn, each entry once), within `timeout`. What
    /// could not be reached in time or within the bounds is named in `problems`.
    pub async fn expand(&self, list: &Lookup, timeout: Duration) -> Expansion {
        let mut out = Expansion::default();
        let Some(server) = self.servers.get(list.server_index) else {
            out.problems
                .push("its server is no longer configured".into());
            return out;
        };
        let mut seen: HashSet<String> = HashSet::from([list.entry.dn.to_lowercase()]);
        let mut queue: VecDeque<(String, usize)> = list
            .entry
            .member_dns
            .iter()
            .map(|d| (d.clone(), 1))
            .collect();
        out.addresses = list.entry.member_addresses.clone();
        let mut read = 0usize;
        let run = async {
            let _turn = self.connections.acquire().await;
            let opened = connect::open(
                server,
                self.connect_timeout,
                self.op_timeout,
                EXPANSION_BUDGET,
            )
            .await;
            let (mut ldap, overrun) = match opened {
                Ok(l) => l,
                Err(e) => {
                    out.problems.push(e.to_string());
                    return;
                }
            };
            while let Some((dn, depth)) = queue.pop_front() {
                if !seen.insert(dn.to_lowercase()) {
                    continue; // a cycle, or a member of two nested lists
                }
                if out.members.len() + out.addresses.len() >= MAX_LIST_MEMBERS
                    || read >= MAX_LIST_ENTRIES
                {
                    out.problems.push(format!(
                        "more than {MAX_LIST_MEMBERS} members; {} not expanded",
                        queue.len() + 1
                    ));
                    queue.clear();
                    break;
                }
                read += 1;
                let found = search::search(
                    &mut ldap,
                    &server.url,
                    &dn,
                    Scope::Base,
                    "(objectClass=*)",
                    self.op_timeout,
                )
                .await;
                match found.map(|mut v| v.pop()) {
                    Err(e) if overrun.happened() => {
                        let e = overrun_error(&server.url, &overrun, EXPANSION_BUDGET, e);
                        out.problems.push(format!("at member {dn}: {e}"));
                        queue.clear();
                        break;
                    }
                    Err(e) => out.problems.push(format!("member {dn}: {e}")),
                    Ok(None) => out.problems.push(format!("member {dn}: no such entry")),
                    Ok(Some(e)) if e.kind == EntryKind::List => {
                        if depth >= MAX_LIST_DEPTH {
                            out.problems.push(format!(
                                "member {dn}: lists nested deeper than {MAX_LIST_DEPTH} are not expanded"
                            ));
                            continue;
                        }
                        queue.extend(e.member_dns.iter().map(|d| (d.clone(), depth + 1)));
                        out.addresses.extend(e.member_addresses);
                    }
                    Ok(Some(e)) => out.members.push(e),
                }
            }
            let _ = ldap.unbind().await;
        };
        let guarded_run = std::panic::AssertUnwindSafe(run).catch_unwind();
        let outcome = tokio::time::timeout(timeout, guarded_run).await;
        if let Ok(Err(_panic)) = outcome {
            out.problems.push(format!(
                "{}",
                DirectoryError::Answer {
                    server: server.url.clone(),
                    why: CLIENT_FAILED.into(),
                }
            ));
        } else if outcome.is_err() {
            out.problems.push(format!(
                "not expanded within dl_expansion_timeout_ms ({} ms): {} member entries not read",
                timeout.as_millis(),
                queue.len().max(1)
            ));
        }
        out.addresses.truncate(MAX_LIST_MEMBERS);
        out
    }
}
