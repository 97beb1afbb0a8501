//! `sign`: choose the signer's certificate, have the token sign, wrap it in S/MIME (see
//! [`super::signing`]).

use smime_agent_proto::{SignParams, SignResult};

use super::signing::{default_format, sign_entity};
use super::{OpContext, OpError};
use crate::smime::mime;

pub async fn sign(ctx: &OpContext<'_>, p: SignParams) -> Result<SignResult, OpError> {
    crate::certs::address::check_address(&p.signer).map_err(OpError::BadRequest)?;
    let entity = mime::canonicalize(&p.content.0);
    mime::check_entity(&entity)?;
    let format = p.format.unwrap_or_else(|| default_format(ctx));
    sign_entity(ctx, &p.signer, &entity, format).await
}
