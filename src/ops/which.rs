//! `which`: the certificate the agent would use for an address and an operation, every
//! candidate, and why each rejected one was rejected; for `encrypt`, also what `encrypt`
//! would use for the address as a recipient (contacts, directory, lists), with the source.

use std::time::SystemTime;

use smime_agent_proto::{
    Candidate, Chosen, Purpose, RecipientWithout, RejectedCert, WhichParams, WhichRecipient,
    WhichResult,
};

use super::{OpContext, OpError, cert_info};
use crate::certs::usage;
use crate::store::{self, SelectionContext, Verdict};

pub async fn which(ctx: &OpContext<'_>, p: WhichParams) -> Result<WhichResult, OpError> {
    crate::certs::address::check_address(&p.address).map_err(OpError::BadRequest)?;
    let cfg = &ctx.services.config;
    let purpose = match p.purpose {
        Purpose::Sign => usage::Purpose::Sign,
        Purpose::Encrypt => usage::Purpose::Encrypt,
        Purpose::Decrypt => usage::Purpose::Decrypt,
    };
    let snapshot = ctx.services.store.snapshot();
    let e = store::explain(
        &snapshot,
        &p.address,
        purpose,
        &SelectionContext {
            policy: &cfg.policy,
            identities: &cfg.identity,
            trust: &ctx.services.trust,
            now: SystemTime::now(),
        },
    )
    .await;
    let candidates = e
        .candidates
        .iter()
        .map(|c| Candidate {
            certificate: cert_info(&c.cert, false),
            matched_by: c.matched.as_str().to_owned(),
            status: match c.verdict {
                Verdict::Chosen => "chosen",
                Verdict::Rejected { .. } => "rejected",
                Verdict::NotConsidered => "not_considered",
            }
            .to_owned(),
        })
        .collect();
    let rejected = e
        .rejected()
        .into_iter()
        .map(|r| RejectedCert {
            subject: r.subject().to_owned(),
            serial: r.serial().to_owned(),
            token: r.cert.token.token_ref().clone(),
            reason: r.reason.clone(),
            code: r.code.to_owned(),
            certificate: cert_info(&r.cert, false),
        })
        .collect();
    let chosen = e.chosen.map(|s| Chosen {
        subject: s.cert.facts().subject.clone(),
        serial: s.cert.facts().serial_hex.clone(),
        token: s.cert.token.token_ref().clone(),
        why: s.why.clone(),
        certificate: cert_info(&s.cert, false),
        warnings: s.warnings.clone(),
    });
    // For encrypt, the address as a recipient too: the contacts and the directory, lists
    // expanded, exactly as `encrypt` finds them.
    let recipient = match p.purpose {
        Purpose::Encrypt => {
            let (found, missing) =
                super::enveloping::find_all(ctx, std::slice::from_ref(&p.address), &[], None)
                    .await?;
            Some(WhichRecipient {
                found: found
                    .iter()
                    .map(|f| super::enveloping::envelope_recipient(f, cfg.policy.rsa_oaep))
                    .collect(),
                without_certificate: missing
                    .into_iter()
                    .map(|(address, reason)| RecipientWithout { address, reason })
                    .collect(),
            })
        }
        _ => None,
    };
    Ok(WhichResult {
        address: p.address,
        purpose: p.purpose,
        candidates,
        chosen,
        rejected,
        recipient,
    })
}
