//! `verify`: every signature of a signed message, then each signer's certificate (see
//! [`super::signed`]). With `validation: event` the response goes out as soon as the
//! signatures are checked and the certificates are judged afterwards (behaviour.md
//! section 4: the message is shown while the certificate is validated).

use smime_agent_proto::{
    CertificateStatus, Event, SignatureStatus, SignerValidation, ValidationDone, ValidationMode,
    VerifyParams, VerifyResult, VerifyStatus,
};
use tracing::info;

use super::report::{overall, senders_match};
use super::signed::{Checked, apply, check_signatures, judge, signer_summary};
use super::{OpContext, OpError};

pub async fn verify(ctx: &OpContext<'_>, p: VerifyParams) -> Result<VerifyResult, OpError> {
    let Checked {
        mut layers,
        signed,
        jobs,
        ..
    } = check_signatures(ctx, p.content.0, p.signature.map(|s| s.0), None).await?;
    let summary = signer_summary(&layers);
    // The innermost content, moved out rather than copied (it can be the whole message).
    let content = layers.pop().map(|l| l.content).unwrap_or_default();

    let mut result = VerifyResult {
        status: VerifyStatus::Pending,
        layers: signed,
        content: content.into(),
    };
    match p.validation {
        ValidationMode::Wait => {
            apply(&mut result.layers, judge(ctx.services.clone(), jobs).await);
            result.status = overall(&result.layers);
        }
        ValidationMode::Event => {
            result.status = overall(&result.layers);
            let services = ctx.services.clone();
            let request = ctx.request.clone();
            // The signatures (and whether a signer is the sender) decided already when one
            // is invalid; the event still follows.
            let signatures_valid = senders_match(&result.layers)
                && result
                    .layers
                    .iter()
                    .flat_map(|l| &l.signers)
                    .all(|s| s.signature.status == SignatureStatus::Valid);
            ctx.after_response.set(Box::pin(async move {
                let checks = judge(services, jobs).await;
                let all_valid = signatures_valid
                    && checks
                        .iter()
                        .all(|(_, _, c)| c.status == CertificateStatus::Valid);
                Event::ValidationDone(ValidationDone {
                    request,
                    status: if all_valid {
                        VerifyStatus::Valid
                    } else {
                        VerifyStatus::Invalid
                    },
                    signers: checks
                        .into_iter()
                        .map(|(layer, index, certificate)| SignerValidation {
                            layer: layer as u32,
                            index: index as u32,
                            certificate,
                        })
                        .collect(),
                })
            }));
        }
    }
    info!(
        client = %ctx.peer,
        op = "verify",
        layers = result.layers.len(),
        signers = %summary,
        status = ?result.status,
        "verified"
    );
    Ok(result)
}
