//! Enveloping a MIME entity: every recipient's certificate found (and the sender's own),
//! the content algorithm all of them can take, one content key wrapped for each. Shared by
//! `encrypt` and `compose`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use super::directory::{Answer, Member};
use super::{OpContext, OpError};
use crate::alg::ContentAlgorithm;
use crate::certs::CertFacts;
use crate::certs::address::same_address;
use crate::certs::usage::Purpose;
use crate::recipients::{self, Found, Source};
use crate::smime::envelope::{self, EncryptTo, RsaPadding};
use crate::store::{SelectionContext, select};

/// Most recipients of one message.
pub const MAX_RECIPIENTS: usize = 1000;

/// The certificates for `addresses` and the sender. `Err` lists every address without a
/// usable certificate, with the reason.
pub async fn find_certificates(
    ctx: &OpContext<'_>,
    addresses: &[String],
    request_certs: &[Vec<u8>],
    sender: Option<&str>,
) -> Result<Vec<Found>, OpError> {
    let (found, missing) = find_all(ctx, addresses, request_certs, sender).await?;
    if !missing.is_empty() {
        return Err(OpError::RecipientsWithoutCertificate(missing));
    }
    Ok(found)
}

/// The certificates found for `addresses` and the sender, and every address without a
/// usable one with the reason (`which` shows both).
pub async fn find_all(
    ctx: &OpContext<'_>,
    addresses: &[String],
    request_certs: &[Vec<u8>],
    sender: Option<&str>,
) -> Result<(Vec<Found>, Vec<(String, String)>), OpError> {
    let cfg = &ctx.services.config;
    let now = SystemTime::now();
    let mut wanted: Vec<&str> = vec![];
    for a in addresses.iter().map(String::as_str).chain(sender) {
        crate::certs::address::check_address(a).map_err(OpError::BadRequest)?;
        if !wanted.iter().any(|w| same_address(w, a)) {
            wanted.push(a);
        }
    }
    if wanted.len() > MAX_RECIPIENTS {
        return Err(OpError::Smime(crate::smime::SmimeError::Limit(format!(
            "{} recipients; at most {MAX_RECIPIENTS} per message",
            wanted.len()
        ))));
    }
    let mut given = vec![];
    for (i, der) in request_certs.iter().enumerate() {
        let c = CertFacts::from_der(der).map_err(|e| {
            OpError::BadRequest(format!("certificate {} of the request: {e}", i + 1))
        })?;
        given.push(Arc::new(c));
    }

    let mut found = vec![];
    let mut missing = vec![];
    let mut queue: VecDeque<Member> = wanted
        .iter()
        .map(|a| Member {
            address: (*a).to_owned(),
            list: String::new(),
            entry: None,
        })
        .collect();
    let mut count = queue.len();
    while let Some(w) = queue.pop_front() {
        let address = w.address.as_str();
        let list = (!w.list.is_empty()).then(|| w.list.clone());
        // The sender's own encryption certificate comes first from their own tokens.
        if sender.is_some_and(|s| same_address(s, address)) {
            let snapshot = ctx.services.store.snapshot();
            let own = select(
                &snapshot,
                address,
                Purpose::Encrypt,
                &SelectionContext {
                    policy: &cfg.policy,
                    identities: &cfg.identity,
                    trust: &ctx.services.trust,
                    now,
                },
            )
            .await;
            if let Ok(sel) = own {
                found.push(Found {
                    address: address.to_owned(),
                    cert: Arc::new(sel.cert.facts().clone()),
                    source: Source::Own,
                    list,
                });
                continue;
            }
        }
        let sources = vec![
            (Source::Request, given.clone()),
            (Source::Contacts, ctx.services.contacts.find(address)),
        ];
        let mut result = recipients::find(
            address,
            &sources,
            &ctx.services.trust,
            cfg.revocation.check_crl_on_send,
            now,
        )
        .await;
        // Then the directory: a list member's own entry, read by the expansion, or a lookup.
        if let Err(before) = &result {
            let answer = match &w.entry {
                Some(e) => Some(
                    match super::directory::entry_certificate(ctx, address, e, now).await {
                        Ok(f) => Answer::Found(f),
                        Err(why) => Answer::Missing(format!(
                            "{}directory entry {}: {why}",
                            super::directory::earlier(before),
                            e.dn
                        )),
                    },
                ),
                None => super::directory::lookup(ctx, address, before, list.is_some(), now).await,
            };
            match answer {
                None => {}
                Some(Answer::Found(f)) => result = Ok(f),
                Some(Answer::Missing(why)) => result = Err(why),
                Some(Answer::List {
                    members,
                    unexpanded,
                    missing: without_mail,
                }) => {
                    if let Some(why) = unexpanded {
                        missing.push((address.to_owned(), why));
                    }
                    missing.extend(without_mail);
                    for m in members {
                        let known = wanted.iter().any(|a| same_address(a, &m.address))
                            || queue.iter().any(|q| same_address(&q.address, &m.address))
                            || found
                                .iter()
                                .any(|f: &Found| same_address(&f.address, &m.address))
                            || missing.iter().any(|(a, _)| same_address(a, &m.address));
                        if known {
                            continue;
                        }
                        count += 1;
                        if count > MAX_RECIPIENTS {
                            return Err(OpError::Smime(crate::smime::SmimeError::Limit(format!(
                                "the distribution list {address} takes the message past \
                                 {MAX_RECIPIENTS} recipients"
                            ))));
                        }
                        queue.push_back(m);
                    }
                    continue;
                }
            }
        }
        let in_list = |why: String| match &list {
            Some(l) => format!("member of the distribution list {l}: {why}"),
            None => why,
        };
        match result {
            Ok(mut f) => match cannot_decrypt(ctx, &f.address) {
                Some(why) => missing.push((address.to_owned(), in_list(why))),
                None => {
                    f.list = list;
                    found.push(f)
                }
            },
            Err(why) => missing.push((address.to_owned(), in_list(why))),
        }
    }
    Ok((found, missing))
}

/// Why a recipient whose signed mail said what their client decrypts can take none of the
/// policy's algorithms: such a recipient has no usable certificate (the seeds), and is
/// listed as one, so the sender may still send unencrypted where the policy lets them.
fn cannot_decrypt(ctx: &OpContext<'_>, address: &str) -> Option<String> {
    let policy = &ctx.services.config.policy.encryption_algorithms;
    let caps = ctx.services.contacts.capabilities(address)?;
    if policy.iter().any(|a| caps.contains(a)) {
        return None;
    }
    let names = |algs: &[ContentAlgorithm]| {
        algs.iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(format!(
        "their mail client decrypts {}, none of the algorithms the policy allows ({})",
        if caps.is_empty() {
            "none of the agent's algorithms".to_owned()
        } else {
            format!("only {}", names(&caps))
        },
        names(policy)
    ))
}

/// The content encryption algorithm: the first of the policy's that every recipient takes,
/// by the SMIMECapabilities their signed mail carried (RFC 8551 section 2.7.1). A
/// recipient whose capabilities are unknown, and the user, take every one of the policy's.
pub fn choose_algorithm(ctx: &OpContext<'_>, found: &[Found]) -> Result<ContentAlgorithm, OpError> {
    let policy = &ctx.services.config.policy.encryption_algorithms;
    let known: Vec<(&Found, Vec<ContentAlgorithm>)> = found
        .iter()
        .filter(|f| f.source != Source::Own)
        .filter_map(|f| Some((f, ctx.services.contacts.capabilities(&f.address)?)))
        .collect();
    if let Some(alg) = policy
        .iter()
        .find(|a| known.iter().all(|(_, caps)| caps.contains(a)))
    {
        return Ok(*alg);
    }
    let allowed: Vec<&str> = policy.iter().map(|a| a.as_str()).collect();
    let takers: Vec<String> = known
        .iter()
        .filter(|(_, caps)| !policy.iter().all(|a| caps.contains(a)))
        .map(|(f, caps)| {
            let names: Vec<&str> = caps.iter().map(|a| a.as_str()).collect();
            format!(
                "{} takes {}",
                f.address,
                if names.is_empty() {
                    "none of the agent's algorithms".to_owned()
                } else {
                    names.join(", ")
                }
            )
        })
        .collect();
    Err(OpError::PolicyDenied(format!(
        "no content encryption algorithm that the policy allows ({}) is one every recipient \
         can decrypt: {}",
        allowed.join(", "),
        takers.join("; ")
    )))
}

/// The algorithm a client named, if the policy allows it: never silently replaced. A
/// recipient whose signed mail did not list it gets a warning, not a refusal (their
/// capabilities are a preference, RFC 8551 section 2.7.1, and the client chose).
pub fn requested_algorithm(
    ctx: &OpContext<'_>,
    name: &str,
    found: &[Found],
    warnings: &mut Vec<String>,
) -> Result<ContentAlgorithm, OpError> {
    let policy = &ctx.services.config.policy.encryption_algorithms;
    let allowed = || {
        policy
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(alg) = ContentAlgorithm::from_name(name).filter(|a| policy.contains(a)) else {
        return Err(OpError::PolicyDenied(format!(
            "the content encryption algorithm \"{}\" is not among the policy's \
             encryption_algorithms ({}): encrypt with one of those",
            name.escape_debug(),
            allowed()
        )));
    };
    for f in found.iter().filter(|f| f.source != Source::Own) {
        if let Some(caps) = ctx.services.contacts.capabilities(&f.address)
            && !caps.contains(&alg)
        {
            warnings.push(format!(
                "{} did not list {} among the algorithms their mail client decrypts",
                f.address,
                alg.as_str()
            ));
        }
    }
    Ok(alg)
}

/// Encrypts a canonical entity to the found certificates with `alg` (default: the
/// policy's choice for them). Returns the CMS DER and the algorithm.
pub fn envelope_for(
    ctx: &OpContext<'_>,
    entity: &[u8],
    found: &[Found],
    alg: Option<ContentAlgorithm>,
) -> Result<(Vec<u8>, ContentAlgorithm), OpError> {
    let alg = match alg {
        Some(a) => a,
        None => choose_algorithm(ctx, found)?,
    };
    let padding = if ctx.services.config.policy.rsa_oaep {
        RsaPadding::OaepSha256
    } else {
        RsaPadding::Pkcs1v15
    };
    let to: Vec<EncryptTo<'_>> = found
        .iter()
        .map(|f| EncryptTo {
            cert: &f.cert,
            rsa_padding: padding,
        })
        .collect();
    Ok((
        super::cpu(entity.len(), || envelope::encrypt(entity, &to, alg))?,
        alg,
    ))
}

pub fn smime_type(alg: ContentAlgorithm) -> &'static str {
    match alg {
        ContentAlgorithm::Aes128Gcm | ContentAlgorithm::Aes256Gcm => "authEnveloped-data",
        _ => "enveloped-data",
    }
}

/// A found certificate as the protocol lists it.
pub fn envelope_recipient(f: &Found, oaep: bool) -> smime_agent_proto::EnvelopeRecipient {
    smime_agent_proto::EnvelopeRecipient {
        address: f.address.clone(),
        subject: f.cert.subject.clone(),
        serial: f.cert.serial_hex.clone(),
        source: f.source.as_str().to_owned(),
        key_transport: key_transport(&f.cert, oaep).to_owned(),
        list: f.list.clone(),
    }
}

pub fn key_transport(c: &CertFacts, oaep: bool) -> &'static str {
    match (c.key.is_ec(), oaep) {
        (true, _) => "ecdh",
        (false, true) => "rsa-oaep",
        (false, false) => "rsa-pkcs1",
    }
}
