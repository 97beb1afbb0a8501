//! The directory's part in finding recipients (`encrypt`, `compose`): an address the
//! request and the contacts have no usable certificate for is looked up in `[directory]`;
//! a person's or contact's certificates go through the same recipient rules; an alias
//! finds the certificate of the entry's primary address only with
//! `[policy] use_secondary_proxies`; a list is expanded into members, who are then found
//! like any recipient.
//!
//! Owns: what a directory answer means for one recipient. Must not touch: LDAP (the
//! `directory` room), the recipient rules (`recipients`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::OpContext;
use crate::certs::CertFacts;
use crate::certs::address::same_address;
use crate::directory::{Entry, EntryKind};
use crate::recipients::{self, Found, Source};

/// A list member still to be found: its address, the list, and its entry as the expansion
/// read it (none for members named by address).
#[derive(Debug)]
pub(super) struct Member {
    pub address: String,
    pub list: String,
    pub entry: Option<Entry>,
}

/// What the directory says of an address.
pub(super) enum Answer {
    Found(Found),
    /// Why no certificate is usable (the directory's own failures included).
    Missing(String),
    /// A list: its members, and what could not be expanded (a reason to list the list's
    /// address as without a usable certificate).
    List {
        members: Vec<Member>,
        unexpanded: Option<String>,
        missing: Vec<(String, String)>,
    },
}

/// Asks the directory about `address` (for which the request and contacts had nothing
/// usable; `before` says why). `None` when no directory is configured.
pub(super) async fn lookup(
    ctx: &OpContext<'_>,
    address: &str,
    before: &str,
    in_list: bool,
    now: SystemTime,
) -> Option<Answer> {
    let dir = ctx.services.directory.as_ref()?;
    let before = earlier(before);
    let found = match dir.lookup(address).await {
        Ok(Some(l)) => l,
        Ok(None) if before.is_empty() => {
            return Some(Answer::Missing(
                "no certificate known: none in the request or the contacts, and not in the \
                 directory"
                    .into(),
            ));
        }
        Ok(None) => return Some(Answer::Missing(format!("{before}not in the directory"))),
        Err(errors) => {
            let why: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return Some(Answer::Missing(format!("{before}{}", why.join("; "))));
        }
    };
    let entry = &found.entry;
    if entry.kind != EntryKind::List {
        return Some(match entry_certificate(ctx, address, entry, now).await {
            Ok(f) => Answer::Found(f),
            Err(why) => Answer::Missing(format!(
                "{before}directory {} entry {}: {why}",
                found.server, entry.dn
            )),
        });
    }
    let list = format!("distribution list {} ({})", entry.dn, found.server);
    let ms = ctx.services.config.directory.dl_expansion_timeout_ms;
    if ms == 0 {
        return Some(Answer::Missing(format!(
            "{address} is a {list}, and dl_expansion_timeout_ms = 0 forbids encrypting to \
             distribution lists: address its members instead"
        )));
    }
    if in_list {
        return Some(Answer::Missing(format!(
            "{address} is a {list} named by address inside another list; only lists named \
             by DN (member, uniqueMember) are expanded"
        )));
    }
    let ex = dir.expand(&found, Duration::from_millis(ms)).await;
    let mut members = vec![];
    let mut missing = vec![];
    let mut named: Vec<(String, Option<Entry>, String)> = vec![];
    for e in ex.members {
        match e.mails.first().cloned() {
            Some(m) => {
                let dn = e.dn.clone();
                named.push((m, Some(e), dn));
            }
            None => missing.push((
                e.dn.clone(),
                format!("member of {address} without a mail address"),
            )),
        }
    }
    named.extend(ex.addresses.into_iter().map(|a| {
        let name = a.escape_debug().to_string();
        (a, None, name)
    }));
    // A member's address comes from the directory: held to the same rules as one a client
    // gives (it ends up in the answer and in messages) before it is looked for.
    for (member, entry, name) in named {
        match crate::certs::address::check_address(&member) {
            Ok(()) => members.push(Member {
                address: member,
                list: address.to_owned(),
                entry,
            }),
            Err(e) => missing.push((
                name,
                format!("member of {address} with an address the agent does not accept: {e}"),
            )),
        }
    }
    Some(Answer::List {
        members,
        unexpanded: unexpanded(&list, &ex.problems),
        missing,
    })
}

/// What the request and the contacts said, to stand before the directory's reason: nothing
/// when they simply had no certificate for the address.
pub(super) fn earlier(before: &str) -> String {
    if before == recipients::NONE_KNOWN {
        String::new()
    } else {
        format!("{before}; ")
    }
}

/// What could not be expanded of a list, in one reason: the time or bound first (the last
/// problem found), then the first few members that failed.
fn unexpanded(list: &str, problems: &[String]) -> Option<String> {
    const SHOWN: usize = 5;
    let (last, members) = problems.split_last()?;
    let mut why = format!("{list}: {last}");
    if !members.is_empty() {
        let shown: Vec<&str> = members.iter().take(SHOWN).map(String::as_str).collect();
        why.push_str(&format!("; {}", shown.join("; ")));
        if members.len() > SHOWN {
            why.push_str(&format!("; and {} more", members.len() - SHOWN));
        }
    }
    Some(why)
}

/// The certificate of a directory entry for `address`: one issued to the address itself,
/// else (the address an alias, `use_secondary_proxies` on) one issued to a primary `mail`.
pub(super) async fn entry_certificate(
    ctx: &OpContext<'_>,
    address: &str,
    entry: &Entry,
    now: SystemTime,
) -> Result<Found, String> {
    let mut reasons = vec![];
    let mut certs = vec![];
    for (i, der) in entry.certs.iter().enumerate() {
        match CertFacts::from_der(der) {
            Ok(c) => certs.push(Arc::new(c)),
            Err(e) => reasons.push(format!("certificate {}: {e}", i + 1)),
        }
    }
    reasons.extend(entry.problems.iter().cloned());
    if certs.is_empty() {
        reasons.insert(
            0,
            "no certificate (userCertificate, userSMIMECertificate)".into(),
        );
        return Err(reasons.join("; "));
    }
    let sources = [(Source::Directory, certs)];
    let mut why = match find(ctx, address, &sources, now).await {
        Ok(f) => return Ok(f),
        Err(why) if why == recipients::NONE_KNOWN => {
            vec![format!("none of its certificates is issued to {address}")]
        }
        Err(why) => vec![why],
    };
    let is_primary = entry.mails.iter().any(|m| same_address(m, address));
    if !is_primary && !entry.mails.is_empty() {
        if !ctx.services.config.policy.use_secondary_proxies {
            why.push(format!(
                "{address} is an alias of {}, whose certificate is used for it only with \
                 [policy] use_secondary_proxies = true",
                entry.mails.join(", ")
            ));
        } else if !entry.others.is_empty() {
            // Two people claim the alias: encrypting to either could hand the mail to the
            // wrong one, so the directory's answer is not used.
            why.push(format!(
                "{address} is an alias of several entries ({}, {}); the agent does not choose \
                 between them",
                entry.dn,
                entry.others.join(", ")
            ));
        } else {
            for m in &entry.mails {
                match find(ctx, m, &sources, now).await {
                    Ok(mut f) => {
                        f.address = address.to_owned();
                        return Ok(f);
                    }
                    Err(e) => why.push(format!("for its primary address {m}: {e}")),
                }
            }
        }
    }
    why.extend(reasons);
    Err(why.join("; "))
}

async fn find(
    ctx: &OpContext<'_>,
    address: &str,
    sources: &[(Source, Vec<Arc<CertFacts>>)],
    now: SystemTime,
) -> Result<Found, String> {
    recipients::find(
        address,
        sources,
        &ctx.services.trust,
        ctx.services.config.revocation.check_crl_on_send,
        now,
    )
    .await
}
