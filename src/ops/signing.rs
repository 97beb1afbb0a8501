//! Signing a MIME entity for one of the user's addresses: the signer's certificate chosen
//! (only one whose chain is valid), the token's signature, the S/MIME framing. Shared by
//! `sign` and `compose`.

use std::time::SystemTime;

use der::Decode;
use smime_agent_proto::{SignFormat, SignResult};
use tracing::info;
use x509_cert::Certificate;

use super::{OpContext, OpError, cert_info};
use crate::alg::DigestAlgorithm;
use crate::certs::profile::ProfileRequest;
use crate::certs::usage::Purpose;
use crate::smime::{mime, sign as cms_sign};
use crate::store::{SelectionContext, select};
use crate::tokens::{PinPolicy, SignMechanism};
use crate::trust::ValidationRequest;

/// Signs a canonical MIME entity as `signer`: selection (only a certificate with a valid
/// chain), signed attributes, the token's signature, MIME framing. With `include_chain`
/// the validated chain, without its root, goes into the message. `digest` is one the policy
/// allows (the caller checked); `None` takes the policy's first.
pub async fn sign_entity(
    ctx: &OpContext<'_>,
    signer: &str,
    entity: &[u8],
    format: SignFormat,
    digest: Option<DigestAlgorithm>,
) -> Result<SignResult, OpError> {
    let cfg = &ctx.services.config;
    let now = SystemTime::now();
    let snapshot = ctx.services.store.snapshot();
    // Only a certificate whose chain is valid signs (behaviour.md section 2, rule 5).
    let chosen = select(
        &snapshot,
        signer,
        Purpose::Sign,
        &SelectionContext {
            policy: &cfg.policy,
            identities: &cfg.identity,
            trust: &ctx.services.trust,
            now,
        },
    )
    .await?;
    for w in &chosen.warnings {
        tracing::warn!(signer = %signer, warning = %w, "signing despite a validation warning");
    }
    let cert = &chosen.cert;
    let facts = cert.facts();
    // The config guarantees at least one algorithm.
    let digest = digest.unwrap_or(cfg.policy.signing_algorithms[0]);

    let mut extra_certs = vec![];
    if cfg.policy.include_chain {
        // Answered from the validation cache: selection has just validated it.
        let v = ctx
            .services
            .trust
            .validate(&ValidationRequest {
                cert: facts.der.clone(),
                token_certs: snapshot.certs().map(|c| c.facts().der.clone()).collect(),
                time: Some(now),
                // The question selection asked, so the answer comes from the cache.
                profile: ProfileRequest {
                    fitness: Purpose::Sign.fitness(),
                    address: None,
                },
                ..Default::default()
            })
            .await;
        // The chain without the signer (first) and the root (last).
        let n = v.chain.len();
        for link in v.chain.iter().take(n.saturating_sub(1)).skip(1) {
            if let Ok(c) = Certificate::from_der(&link.der) {
                extra_certs.push(c);
            }
        }
    }

    let prepared = super::cpu(entity.len(), || {
        cms_sign::prepare(&cms_sign::SignRequest {
            content: entity,
            signer: facts,
            extra_certs: &extra_certs,
            digest,
            signing_time: now,
            capabilities: &cfg.policy.encryption_algorithms,
            embed_content: format == SignFormat::Opaque,
        })
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
    let out = super::cpu(entity.len(), || -> Result<Vec<u8>, OpError> {
        let cms = prepared.finish(&raw)?;
        Ok(match format {
            SignFormat::Clear => mime::clear_signed(entity, &cms, cms_sign::micalg(digest))?,
            SignFormat::Opaque => mime::pkcs7_mime("signed-data", &cms),
            SignFormat::Detached => cms,
        })
    })?;
    Ok(SignResult {
        mime: out.into(),
        format,
        digest_algorithm: digest.as_str().to_owned(),
        certificate: cert_info(cert, false),
        why: chosen.why.clone(),
        warnings: chosen.warnings.clone(),
    })
}

/// The policy's packaging unless the request says otherwise.
pub fn default_format(ctx: &OpContext<'_>) -> SignFormat {
    if ctx.services.config.policy.clear_sign {
        SignFormat::Clear
    } else {
        SignFormat::Opaque
    }
}
