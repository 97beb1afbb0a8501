//! `sign`: choose the signer's certificate, have the token sign, wrap it in S/MIME.

use std::time::SystemTime;

use smime_agent_proto::{SignFormat, SignParams, SignResult};
use tracing::info;

use super::{OpContext, OpError, cert_info};
use crate::smime::{mime, sign as cms_sign};
use crate::store::{Purpose, SelectionContext, select};
use crate::tokens::{PinPolicy, SignMechanism};

pub async fn sign(ctx: &OpContext<'_>, p: SignParams) -> Result<SignResult, OpError> {
    let cfg = &ctx.agent.config;
    crate::config::check_address(&p.signer).map_err(OpError::BadRequest)?;
    let entity = mime::canonicalize(&p.content.0);
    mime::check_entity(&entity)?;
    let format = p.format.unwrap_or(if cfg.policy.clear_sign {
        SignFormat::Clear
    } else {
        SignFormat::Opaque
    });

    let now = SystemTime::now();
    let snapshot = ctx.agent.store.snapshot();
    // Only a certificate whose chain is valid signs (behaviour.md section 2, rule 5).
    let chosen = select(
        &snapshot,
        &p.signer,
        Purpose::Sign,
        &SelectionContext {
            policy: &cfg.policy,
            identities: &cfg.identity,
            trust: &ctx.agent.trust,
            now,
        },
    )
    .await?;
    for w in &chosen.warnings {
        tracing::warn!(signer = %p.signer, warning = %w, "signing despite a validation warning");
    }
    let cert = &chosen.cert;
    let facts = cert.facts();
    // The config guarantees at least one algorithm.
    let digest = cfg.policy.signing_algorithms[0];

    let prepared = cms_sign::prepare(&cms_sign::SignRequest {
        content: &entity,
        signer: facts,
        extra_certs: &[],
        digest,
        signing_time: now,
        capabilities: &cfg.policy.encryption_algorithms,
        embed_content: format == SignFormat::Opaque,
    })?;
    let mechanism = match prepared.raw {
        cms_sign::RawSign::RsaPkcs1DigestInfo(_) => SignMechanism::RsaPkcs1,
        cms_sign::RawSign::EcdsaHash(_) => SignMechanism::Ecdsa,
    };

    info!(
        target: "audit",
        client = %ctx.peer,
        op = "sign",
        subject = %facts.subject,
        serial = %facts.serial_hex,
        token = %cert.token.token_ref().label,
        why = %chosen.why,
        "private-key operation"
    );
    let raw = cert
        .token
        .sign(
            &cert.cert.key_id,
            &facts.subject,
            mechanism,
            prepared.raw.data().to_vec(),
            ctx.prompter,
            PinPolicy {
                always_authenticate_uses_cache: cfg.pin.always_authenticate_uses_cache,
            },
        )
        .await?;
    let cms = prepared.finish(&raw)?;
    let out = match format {
        SignFormat::Clear => mime::clear_signed(&entity, &cms, cms_sign::micalg(digest))?,
        SignFormat::Opaque => mime::pkcs7_mime("signed-data", &cms),
    };
    Ok(SignResult {
        mime: out.into(),
        format,
        digest_algorithm: digest.as_str().to_owned(),
        certificate: cert_info(cert, false),
        why: chosen.why.clone(),
        warnings: chosen.warnings.clone(),
    })
}
