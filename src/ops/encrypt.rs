//! `encrypt`: find every recipient's certificate (and the sender's own), encrypt once,
//! wrap the content key for each (see [`super::enveloping`]).

use smime_agent_proto::{EncryptParams, EncryptResult};
use tracing::info;

use super::enveloping::{
    envelope_for, envelope_recipient, find_certificates, requested_algorithm, smime_type,
};
use super::{OpContext, OpError};
use crate::smime::mime;

pub async fn encrypt(ctx: &OpContext<'_>, p: EncryptParams) -> Result<EncryptResult, OpError> {
    let cfg = &ctx.services.config;
    let entity = mime::canonicalize(&p.content.0);
    mime::check_entity(&entity)?;
    if p.recipients.is_empty() {
        return Err(OpError::BadRequest("no recipient".into()));
    }
    let mut warnings = vec![];
    let sender = p
        .sender
        .clone()
        .or_else(|| cfg.identity.first().map(|i| i.address.clone()));
    if sender.is_none() {
        warnings.push(
            "no sender given and no [[identity]] configured: the sender cannot read this message"
                .to_owned(),
        );
    }
    let certs: Vec<Vec<u8>> = p.certificates.iter().map(|c| c.0.clone()).collect();
    let found = find_certificates(ctx, &p.recipients, &certs, sender.as_deref()).await?;
    let alg = match p.algorithm.as_deref() {
        Some(name) => Some(requested_algorithm(ctx, name, &found, &mut warnings)?),
        None => None,
    };
    let (der, alg) = envelope_for(ctx, &entity, &found, alg)?;
    info!(
        client = %ctx.peer,
        op = "encrypt",
        recipients = found.len(),
        algorithm = alg.as_str(),
        "message encrypted"
    );
    Ok(EncryptResult {
        mime: if p.der {
            der.into()
        } else {
            mime::pkcs7_mime(smime_type(alg), &der).into()
        },
        algorithm: alg.as_str().to_owned(),
        recipients: found
            .iter()
            .map(|f| envelope_recipient(f, cfg.policy.rsa_oaep))
            .collect(),
        warnings,
    })
}
