//! `sign`: choose the signer's certificate, have the token sign, wrap it in S/MIME (see
//! [`super::signing`]).

use smime_agent_proto::{SignParams, SignResult};

use super::signing::{default_format, sign_entity};
use super::{OpContext, OpError};
use crate::alg::DigestAlgorithm;
use crate::smime::mime;

pub async fn sign(ctx: &OpContext<'_>, p: SignParams) -> Result<SignResult, OpError> {
    crate::certs::address::check_address(&p.signer).map_err(OpError::BadRequest)?;
    let digest = p
        .digest
        .as_deref()
        .map(|d| chosen_digest(ctx, d))
        .transpose()?;
    let entity = mime::canonicalize(&p.content.0);
    mime::check_entity(&entity)?;
    let format = p.format.unwrap_or_else(|| default_format(ctx));
    sign_entity(ctx, &p.signer, &entity, format, digest).await
}

/// The digest the client asked for, if the policy allows it: a client's choice is never
/// silently replaced (the `micalg` it writes must name the digest used).
fn chosen_digest(ctx: &OpContext<'_>, name: &str) -> Result<DigestAlgorithm, OpError> {
    let allowed = &ctx.services.config.policy.signing_algorithms;
    let names = || {
        allowed
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match DigestAlgorithm::from_name(name) {
        Some(d) if allowed.contains(&d) => Ok(d),
        Some(d) => Err(OpError::PolicyDenied(format!(
            "the digest {d} is not among the policy's signing_algorithms ({}): sign with one of \
             those, or add {d} to [policy] signing_algorithms",
            names()
        ))),
        None => Err(OpError::PolicyDenied(format!(
            "the digest \"{}\" is not one the agent signs with (the policy allows {})",
            name.escape_debug(),
            names()
        ))),
    }
}
