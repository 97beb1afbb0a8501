//! `compose`: a complete message in, the message(s) to send out, under the policy.
//!
//! Applies `always_sign`, `always_encrypt`, `clear_sign`, `triple_wrap`, `include_chain`,
//! `signing_algorithms`, `encryption_algorithms` and `check_crl_on_send` (the last four
//! through signing, encryption and certificate selection). The message's content header
//! fields (Content-*) go inside the protected entity; the others stay outside; Bcc is
//! removed. An envelope lists the certificates it was made for, so when the message is
//! encrypted every Bcc recipient gets an envelope (and a message) of their own.

use smime_agent_proto::{
    ComposeParams, ComposeResult, EnvelopeRecipient, OutgoingMessage, SignFormat,
};

use super::enveloping::{envelope_for, envelope_recipient, find_certificates, smime_type};
use super::signing::{default_format, sign_entity};
use super::{OpContext, OpError};
use crate::certs::address::same_address;
use crate::smime::mime;

/// A message taken apart: header fields (unfolded names, raw lines) and body.
struct Message {
    fields: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

fn split(message: &[u8]) -> Result<Message, OpError> {
    let canonical = mime::canonicalize(message);
    mime::check_entity(&canonical)?;
    let end = canonical
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| OpError::BadRequest("the message has no body separator".into()))?;
    let header = &canonical[..end + 2];
    let body = canonical[end + 4..].to_vec();
    let mut fields: Vec<(String, Vec<u8>)> = vec![];
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            if let Some(last) = fields.last_mut() {
                last.1.extend_from_slice(line);
            }
            continue;
        }
        let name = line
            .iter()
            .position(|&b| b == b':')
            .map(|i| {
                String::from_utf8_lossy(&line[..i])
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        fields.push((name, line.to_vec()));
    }
    Ok(Message { fields, body })
}

/// The addresses of every field called `name`.
fn addresses(msg: &Message, name: &str) -> Result<Vec<String>, OpError> {
    let mut out = vec![];
    for (n, raw) in &msg.fields {
        if n != name {
            continue;
        }
        let (parsed, _) = mailparse::parse_header(raw)
            .map_err(|e| OpError::BadRequest(format!("the {name} field: {e}")))?;
        let list = mailparse::addrparse_header(&parsed)
            .map_err(|e| OpError::BadRequest(format!("the {name} field: {e}")))?;
        for a in list.iter() {
            match a {
                mailparse::MailAddr::Single(s) => out.push(s.addr.clone()),
                mailparse::MailAddr::Group(g) => out.extend(g.addrs.iter().map(|s| s.addr.clone())),
            }
        }
    }
    Ok(out)
}

fn is_content_field(name: &str) -> bool {
    name.starts_with("content-")
}

/// The entity to protect: the message's content fields (or the RFC 2045 default type) and
/// its body.
fn inner_entity(msg: &Message) -> Vec<u8> {
    let mut out = vec![];
    let mut typed = false;
    for (name, raw) in &msg.fields {
        if is_content_field(name) {
            typed |= name == "content-type";
            out.extend_from_slice(raw);
        }
    }
    if !typed {
        out.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&msg.body);
    out
}

/// The outgoing message: the outer header fields (never Bcc), MIME-Version, and `entity`.
fn outer_message(msg: &Message, entity: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    let mut versioned = false;
    for (name, raw) in &msg.fields {
        if is_content_field(name) || name == "bcc" {
            continue;
        }
        versioned |= name == "mime-version";
        out.extend_from_slice(raw);
    }
    if !versioned {
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    }
    out.extend_from_slice(entity);
    out
}

pub async fn compose(ctx: &OpContext<'_>, p: ComposeParams) -> Result<ComposeResult, OpError> {
    let policy = &ctx.services.config.policy;
    let msg = split(&p.content.0)?;
    let from = addresses(&msg, "from")?;
    let [sender] = from.as_slice() else {
        return Err(OpError::BadRequest(format!(
            "the message needs exactly one From address, it has {}",
            from.len()
        )));
    };
    let to: Vec<String> = [addresses(&msg, "to")?, addresses(&msg, "cc")?].concat();
    let bcc = addresses(&msg, "bcc")?;
    if to.is_empty() && bcc.is_empty() {
        return Err(OpError::BadRequest(
            "the message has no recipient (To, Cc, Bcc)".into(),
        ));
    }
    let sign = p.sign || policy.always_sign;
    let mut encrypt = p.encrypt || policy.always_encrypt;
    let mut warnings = vec![];
    let certs: Vec<Vec<u8>> = p.certificates.iter().map(|c| c.0.clone()).collect();

    // Who can get an envelope: everyone, or the message goes unencrypted (when allowed).
    let mut groups: Vec<Vec<String>> = vec![to.clone()];
    groups.extend(bcc.iter().map(|b| vec![b.clone()]));
    groups.retain(|g| !g.is_empty());
    let mut found_groups = vec![];
    if encrypt {
        let everyone: Vec<String> = to.iter().chain(&bcc).cloned().collect();
        match find_certificates(ctx, &everyone, &certs, Some(sender)).await {
            Ok(found) => {
                // Each envelope: its group, and the sender.
                for g in &groups {
                    found_groups.push(
                        found
                            .iter()
                            .filter(|f| {
                                same_address(&f.address, sender)
                                    || g.iter().any(|a| same_address(a, &f.address))
                                    || f.list
                                        .as_deref()
                                        .is_some_and(|l| g.iter().any(|a| same_address(a, l)))
                            })
                            .cloned()
                            .collect::<Vec<_>>(),
                    );
                }
            }
            Err(OpError::RecipientsWithoutCertificate(missing))
                if p.allow_unencrypted && !policy.always_encrypt =>
            {
                warnings.push(format!(
                    "sent unencrypted, as asked, because these recipients have no usable certificate: {}",
                    missing
                        .iter()
                        .map(|(a, why)| format!("{a} ({why})"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
                encrypt = false;
            }
            Err(e) => return Err(e),
        }
    }

    let entity = inner_entity(&msg);
    let mut signer = None;
    // The inner signature covers the entity once, for every copy.
    let signed_entity = if sign {
        let format = if encrypt {
            // Inside an envelope, opaque and clear are equally safe; clear is what most
            // clients write and read.
            SignFormat::Clear
        } else {
            default_format(ctx)
        };
        let r = sign_entity(ctx, sender, &entity, format, None).await?;
        warnings.extend(r.warnings.iter().cloned());
        signer = Some(r.certificate);
        r.mime.0
    } else {
        entity
    };

    let triple_wrapped = sign && encrypt && policy.triple_wrap;
    let mut messages = vec![];
    let mut encrypted_to: Vec<EnvelopeRecipient> = vec![];
    if encrypt {
        for (group, found) in groups.iter().zip(&found_groups) {
            let (der, alg) = envelope_for(ctx, &signed_entity, found, None)?;
            let enveloped = mime::pkcs7_mime(smime_type(alg), &der);
            let out_entity = if triple_wrapped {
                sign_entity(ctx, sender, &enveloped, default_format(ctx), None)
                    .await?
                    .mime
                    .0
            } else {
                enveloped
            };
            for f in found {
                if !encrypted_to
                    .iter()
                    .any(|e| same_address(&e.address, &f.address) && e.serial == f.cert.serial_hex)
                {
                    encrypted_to.push(envelope_recipient(f, policy.rsa_oaep));
                }
            }
            tracing::debug!(
                algorithm = alg.as_str(),
                recipients = group.len(),
                "envelope"
            );
            messages.push(OutgoingMessage {
                recipients: group.clone(),
                mime: outer_message(&msg, &out_entity).into(),
            });
        }
    } else {
        let everyone: Vec<String> = to.iter().chain(&bcc).cloned().collect();
        messages.push(OutgoingMessage {
            recipients: everyone,
            mime: outer_message(&msg, &signed_entity).into(),
        });
    }
    tracing::info!(
        client = %ctx.peer,
        op = "compose",
        signed = sign,
        encrypted = encrypt,
        triple_wrapped,
        messages = messages.len(),
        "message composed"
    );
    Ok(ComposeResult {
        messages,
        signed: sign,
        encrypted: encrypt,
        triple_wrapped,
        signer,
        encrypted_to,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"From: Alice <alice@example.org>\nTo: bob@example.org, \"C\" <carol@example.org>\nBcc: dave@example.org\nSubject: hi\n folded\nContent-Type: text/plain;\n charset=utf-8\n\nbody\n";

    #[test]
    fn splits_content_fields_inside_and_drops_bcc_outside() {
        let m = split(MSG).unwrap();
        assert_eq!(
            addresses(&m, "to").unwrap(),
            ["bob@example.org", "carol@example.org"]
        );
        assert_eq!(addresses(&m, "bcc").unwrap(), ["dave@example.org"]);
        let inner = inner_entity(&m);
        assert_eq!(
            inner,
            b"Content-Type: text/plain;\r\n charset=utf-8\r\n\r\nbody\r\n"
        );
        let out = outer_message(&m, b"X-Entity: 1\r\n\r\nE");
        let text = String::from_utf8(out).unwrap();
        assert!(!text.to_ascii_lowercase().contains("bcc"), "{text}");
        assert!(text.contains("Subject: hi\r\n folded\r\n"), "{text}");
        assert!(text.contains("MIME-Version: 1.0\r\nX-Entity: 1"), "{text}");
    }

    #[test]
    fn untyped_body_gets_the_default_type() {
        let m = split(b"From: a@b\r\nTo: c@d\r\n\r\nhello").unwrap();
        assert!(
            inner_entity(&m).starts_with(b"Content-Type: text/plain; charset=us-ascii\r\n\r\n")
        );
    }
}
