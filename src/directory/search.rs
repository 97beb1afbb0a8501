//! Searching one server: the entries for an address (persons, contacts, lists) and the
//! entries a list's members name, each search bounded in entries, bytes and time.
//!
//! Owns: the searches and their bounds. Must not touch: which entry wins for a recipient
//! beyond its kind (`mod.rs`), or what the certificates are worth (the recipient rules).

use std::time::Duration;

use ldap3::{Ldap, Scope, SearchOptions};

use super::decode::{RawEntry, addresses, certificates, entry_from_tag};
use super::{DirectoryError, Entry, EntryKind, op_error};

/// Most entries one search for an address reads.
pub const MAX_ENTRIES: usize = 16;
/// Most bytes of attribute values one search reads, over all its entries.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// What is read of an entry.
const ATTRS: &[&str] = &[
    "objectClass",
    "mail",
    "proxyAddresses",
    "mailLocalAddress",
    "mailAlternateAddress",
    "userCertificate;binary",
    "userCertificate",
    "userSMIMECertificate;binary",
    "userSMIMECertificate",
    "member",
    "uniqueMember",
    "rfc822MailMember",
];

/// Asks the server to stop sending a search's entries (the handle is dropped anyway).
macro_rules! abandon {
    ($stream:expr) => {{
        let id = $stream.ldap_handle().last_id();
        let _ = $stream.ldap_handle().abandon(id).await;
    }};
}

/// Runs one search and reads its entries within the bounds.
pub async fn search(
    ldap: &mut Ldap,
    url: &str,
    base: &str,
    scope: Scope,
    filter: &str,
    timeout: Duration,
) -> Result<Vec<Entry>, DirectoryError> {
    let limit = |what: String| DirectoryError::Limit {
        server: url.to_owned(),
        what,
    };
    ldap.with_search_options(
        SearchOptions::new()
            .sizelimit(MAX_ENTRIES as i32)
            .timelimit(timeout.as_secs().max(1) as i32),
    )
    .with_timeout(timeout);
    let mut stream = ldap
        .streaming_search(base, scope, filter, ATTRS.to_vec())
        .await
        .map_err(|e| op_error(url, "searching", timeout, e))?;
    let mut entries = vec![];
    let mut bytes = 0usize;
    loop {
        let next = match stream.next().await {
            Ok(n) => n,
            Err(e) => {
                let _ = stream.finish().await;
                return Err(op_error(url, "searching", timeout, e));
            }
        };
        let Some(re) = next else { break };
        if re.is_ref() || re.is_intermediate() {
            continue;
        }
        let raw = match entry_from_tag(re.0) {
            Ok(raw) => raw,
            Err(why) => {
                abandon!(stream);
                return Err(DirectoryError::Answer {
                    server: url.to_owned(),
                    why,
                });
            }
        };
        bytes += raw
            .attrs
            .iter()
            .flat_map(|(_, v)| v.iter().map(Vec::len))
            .sum::<usize>();
        if bytes > MAX_ANSWER_BYTES {
            abandon!(stream);
            return Err(limit(format!(
                "the answer is larger than {MAX_ANSWER_BYTES} bytes"
            )));
        }
        if entries.len() == MAX_ENTRIES {
            abandon!(stream);
            return Err(limit(format!("more than {MAX_ENTRIES} entries match")));
        }
        entries.push(entry(&raw));
    }
    let done = stream.finish().await;
    match done.rc {
        0 | 32 => Ok(entries), // success, or noSuchObject (a base or member that is gone)
        4 => Err(limit(format!("more than {MAX_ENTRIES} entries match"))),
        3 => Err(DirectoryError::Timeout {
            server: url.to_owned(),
            what: "searching (the server's time limit)",
            ms: timeout.as_millis() as u64,
        }),
        _ => Err(DirectoryError::Search {
            server: url.to_owned(),
            why: done.to_string(),
        }),
    }
}

/// What an entry means for a recipient.
fn entry(raw: &RawEntry) -> Entry {
    let kind = if ["groupOfNames", "groupOfUniqueNames", "group"]
        .iter()
        .any(|c| raw.has_class(c))
    {
        EntryKind::List
    } else if raw.has_class("inetOrgPerson") || raw.has_class("user") {
        EntryKind::Person
    } else {
        EntryKind::Contact
    };
    let (mails, aliases) = addresses(raw);
    let (certs, problems) = certificates(raw);
    let member_dns = raw
        .texts("member")
        .chain(raw.texts("uniqueMember"))
        .map(|m| m.trim().to_owned())
        .collect();
    let member_addresses = raw
        .texts("rfc822MailMember")
        .map(|m| m.trim().to_owned())
        .collect();
    Entry {
        dn: raw.dn.clone(),
        kind,
        mails,
        aliases,
        certs,
        problems,
        member_dns,
        member_addresses,
        others: vec![],
    }
}
