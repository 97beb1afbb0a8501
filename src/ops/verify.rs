//! `verify`: every signature of a signed message, then each signer's certificate.
//!
//! The signatures are checked on the blocking pool (hashing a large message takes a while);
//! the certificates are validated by the trust layer, concurrently, with the message's own
//! certificates as intermediates and its CRLs. With `validation: event` the response goes
//! out as soon as the signatures are checked and the certificates are judged afterwards
//! (behaviour.md section 4: the message is shown while the certificate is validated).
//! A signer whose signature and certificate are both valid is kept in the contacts store.

use std::sync::Arc;
use std::time::SystemTime;

use smime_agent_proto::{
    CertificateCheck, CertificateStatus, Event, SignFormat, SignatureCheck, SignatureStatus,
    SignedLayer, SignerCert, SignerResult, SignerValidation, ValidationDone, ValidationMode,
    ValidationReason, VerifyParams, VerifyResult, VerifyStatus,
};
use tracing::{info, warn};

use super::Services;
use super::{OpContext, OpError};
use crate::alg::ContentAlgorithm;
use crate::certs::{CertFacts, hex, rfc3339};
use crate::smime::verify::{self as cms_verify, Format, Layer, Signer};
use crate::trust::ValidationRequest;

/// A signer certificate to judge: where its answer goes, and what to ask.
struct Job {
    layer: usize,
    index: usize,
    /// The signature verified (only then is the certificate kept as a contact).
    signature_valid: bool,
    cert: Option<CertFacts>,
    request: Option<ValidationRequest>,
    /// What the signer said they can decrypt, and when (kept for encrypting to them).
    capabilities: Option<Vec<ContentAlgorithm>>,
    signing_time: Option<SystemTime>,
}

pub async fn verify(ctx: &OpContext<'_>, p: VerifyParams) -> Result<VerifyResult, OpError> {
    let Checked {
        mut layers,
        signed,
        jobs,
    } = check_signatures(ctx, p.content.0).await?;
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
            // The signatures decided already when one is invalid; the event still follows.
            let signatures_valid = result
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

/// Verifies every signed layer at the top of `entity` and judges every signer certificate
/// (waiting for it). Returns the layers and the innermost content. Used to read messages
/// layer by layer (`decrypt`).
pub async fn verify_signed_layers(
    ctx: &OpContext<'_>,
    entity: Vec<u8>,
) -> Result<(Vec<SignedLayer>, Vec<u8>), OpError> {
    let Checked {
        mut layers,
        mut signed,
        jobs,
    } = check_signatures(ctx, entity).await?;
    apply(&mut signed, judge(ctx.services.clone(), jobs).await);
    let content = layers.pop().map(|l| l.content).unwrap_or_default();
    Ok((signed, content))
}

/// The signatures of a message, checked, with the signer certificates still to judge.
struct Checked {
    layers: Vec<Layer>,
    /// The layers as reported, certificates `pending`.
    signed: Vec<SignedLayer>,
    jobs: Vec<Job>,
}

/// Checks every signature of `entity` (on the blocking pool) and prepares the judging of
/// each signer certificate, with the tokens' certificates as extra intermediates.
async fn check_signatures(ctx: &OpContext<'_>, entity: Vec<u8>) -> Result<Checked, OpError> {
    let now = SystemTime::now();
    let layers = tokio::task::spawn_blocking(move || cms_verify::verify_layers(&entity, now))
        .await
        .map_err(|e| OpError::Internal(format!("the verification task failed: {e}")))??;
    let token_certs: Vec<Vec<u8>> = ctx
        .services
        .store
        .snapshot()
        .certs()
        .map(|c| c.facts().der.clone())
        .collect();
    let mut jobs = vec![];
    let mut signed = vec![];
    for (n, layer) in layers.iter().enumerate() {
        let mut signers = vec![];
        for s in &layer.signers {
            jobs.push(job(n, s, layer, &token_certs));
            signers.push(signer_result(s));
        }
        signed.push(SignedLayer {
            format: match layer.format {
                Format::Clear => SignFormat::Clear,
                Format::Opaque => SignFormat::Opaque,
            },
            content_type: if layer.content_type == crate::oids::ID_DATA {
                "data".to_owned()
            } else {
                layer.content_type.to_string()
            },
            signers,
        });
    }
    Ok(Checked {
        layers,
        signed,
        jobs,
    })
}

/// Puts the judged certificates into their signers.
fn apply(signed: &mut [SignedLayer], checks: Vec<(usize, usize, CertificateCheck)>) {
    for (layer, index, check) in checks {
        if let Some(s) = signed.get_mut(layer).and_then(|l| l.signers.get_mut(index)) {
            s.certificate = check;
        }
    }
}

/// Over signed layers: see [`overall`].
/// `valid` only when every signature and every certificate is; `pending` while a
/// certificate is being judged and nothing is invalid yet.
pub fn overall(layers: &[SignedLayer]) -> VerifyStatus {
    let signers = || layers.iter().flat_map(|l| &l.signers);
    if signers().any(|s| {
        s.signature.status != SignatureStatus::Valid
            || matches!(
                s.certificate.status,
                CertificateStatus::Invalid | CertificateStatus::Unknown
            )
    }) {
        VerifyStatus::Invalid
    } else if signers().any(|s| s.certificate.status == CertificateStatus::Pending) {
        VerifyStatus::Pending
    } else {
        VerifyStatus::Valid
    }
}

fn signer_summary(layers: &[Layer]) -> String {
    layers
        .iter()
        .flat_map(|l| &l.signers)
        .map(|s| {
            format!(
                "{} ({})",
                s.cert
                    .as_ref()
                    .map(|c| c.subject.as_str())
                    .unwrap_or(&s.signer_id),
                match &s.outcome {
                    Ok(()) => "valid",
                    Err(p) => p.code.as_str(),
                }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn job(layer: usize, s: &Signer, l: &Layer, token_certs: &[Vec<u8>]) -> Job {
    Job {
        layer,
        index: s.index,
        signature_valid: s.valid(),
        cert: s.cert.clone(),
        capabilities: s.capabilities.clone(),
        signing_time: s.signing_time,
        request: s.cert.as_ref().map(|c| ValidationRequest {
            cert: c.der.clone(),
            chain: l.certificates.clone(),
            crls: l.crls.clone(),
            token_certs: token_certs.to_vec(),
            ..Default::default()
        }),
    }
}

fn signer_result(s: &Signer) -> SignerResult {
    SignerResult {
        index: s.index as u32,
        signer_id: s.signer_id.clone(),
        signer: s.cert.as_ref().map(|c| SignerCert {
            subject: c.subject.clone(),
            issuer: c.issuer.clone(),
            serial: c.serial_hex.clone(),
            not_before: rfc3339(c.not_before),
            not_after: rfc3339(c.not_after),
            emails: {
                let mut e: Vec<String> = vec![];
                for a in c.all_emails() {
                    if !e.iter().any(|x| x.eq_ignore_ascii_case(a)) {
                        e.push(a.to_owned());
                    }
                }
                e
            },
            key: c.key.name(),
            sha256: hex(&c.sha256),
        }),
        digest_algorithm: s.digest_algorithm.clone(),
        signature_algorithm: s.signature_algorithm.clone(),
        signing_time: s.signing_time.map(rfc3339),
        signature: match &s.outcome {
            Ok(()) => SignatureCheck {
                status: SignatureStatus::Valid,
                code: None,
                reason: None,
            },
            Err(p) => SignatureCheck {
                status: SignatureStatus::Invalid,
                code: Some(p.code.as_str().to_owned()),
                reason: Some(p.message.clone()),
            },
        },
        certificate: match &s.cert {
            Some(_) => check(CertificateStatus::Pending),
            None => unknown(s),
        },
        warnings: s.warnings.clone(),
    }
}

fn check(status: CertificateStatus) -> CertificateCheck {
    CertificateCheck {
        status,
        reasons: vec![],
        warnings: vec![],
        chain: vec![],
        revocation: None,
        added_to_contacts: false,
    }
}

fn unknown(s: &Signer) -> CertificateCheck {
    CertificateCheck {
        reasons: vec![ValidationReason {
            code: "no_signer_certificate".into(),
            message: format!(
                "the message does not carry the signer's certificate ({})",
                s.signer_id
            ),
        }],
        ..check(CertificateStatus::Unknown)
    }
}

/// Validates every signer certificate, concurrently, and keeps valid signers as contacts.
/// Returns (layer, index, status) for every signer.
async fn judge(services: Arc<Services>, jobs: Vec<Job>) -> Vec<(usize, usize, CertificateCheck)> {
    let mut set = tokio::task::JoinSet::new();
    let mut out = vec![];
    for job in jobs {
        let Some(req) = job.request else {
            out.push((
                job.layer,
                job.index,
                CertificateCheck {
                    reasons: vec![ValidationReason {
                        code: "no_signer_certificate".into(),
                        message: "the message does not carry the signer's certificate".into(),
                    }],
                    ..check(CertificateStatus::Unknown)
                },
            ));
            continue;
        };
        let services = services.clone();
        set.spawn(async move {
            let v = services.trust.validate(&req).await;
            let r = super::validate::to_result(&v, SystemTime::now());
            let mut c = CertificateCheck {
                status: if v.valid {
                    CertificateStatus::Valid
                } else {
                    CertificateStatus::Invalid
                },
                reasons: r.reasons,
                warnings: r.warnings,
                chain: r.chain,
                revocation: Some(r.revocation),
                added_to_contacts: false,
            };
            // A chain to a trusted root is not enough: the certificate must be one for
            // signing mail (key usage, extended key usage), as the agent asks of its own.
            let usage = job.cert.as_ref().and_then(|cert| {
                crate::certs::usage::usage_forbids(cert, crate::certs::usage::Purpose::Sign)
            });
            if let Some((code, message)) = usage {
                c.status = CertificateStatus::Invalid;
                c.reasons.insert(
                    0,
                    ValidationReason {
                        code: code.to_owned(),
                        message: format!("not a certificate for signing mail: {message}"),
                    },
                );
            }
            if v.valid
                && c.status == CertificateStatus::Valid
                && job.signature_valid
                && let Some(cert) = &job.cert
            {
                match services.contacts.add(cert) {
                    Ok(added) => c.added_to_contacts = added,
                    Err(e) => warn!(
                        subject = %cert.subject,
                        error = %e,
                        "cannot keep a verified signer's certificate in the contacts store"
                    ),
                }
                if let Some(caps) = &job.capabilities
                    && let Err(e) =
                        services
                            .contacts
                            .remember_capabilities(cert, job.signing_time, caps)
                {
                    warn!(
                        subject = %cert.subject,
                        error = %e,
                        "cannot keep a verified signer's SMIMECapabilities"
                    );
                }
            }
            (job.layer, job.index, c)
        });
    }
    while let Some(r) = set.join_next().await {
        match r {
            Ok(x) => out.push(x),
            Err(e) => warn!(error = %e, "a certificate validation task failed"),
        }
    }
    out.sort_by_key(|(l, i, _)| (*l, *i));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(sig: SignatureStatus, cert: CertificateStatus) -> SignerResult {
        SignerResult {
            index: 0,
            signer_id: String::new(),
            signer: None,
            digest_algorithm: String::new(),
            signature_algorithm: String::new(),
            signing_time: None,
            signature: SignatureCheck {
                status: sig,
                code: None,
                reason: None,
            },
            certificate: check(cert),
            warnings: vec![],
        }
    }

    fn layer(signers: Vec<SignerResult>) -> Vec<SignedLayer> {
        vec![SignedLayer {
            format: SignFormat::Clear,
            content_type: "data".into(),
            signers,
        }]
    }

    #[test]
    fn the_message_is_valid_only_when_every_signature_and_certificate_is() {
        use CertificateStatus as C;
        use SignatureStatus as S;
        assert_eq!(
            overall(&layer(vec![signer(S::Valid, C::Valid)])),
            VerifyStatus::Valid
        );
        assert_eq!(
            overall(&layer(vec![
                signer(S::Valid, C::Valid),
                signer(S::Valid, C::Pending)
            ])),
            VerifyStatus::Pending
        );
        for bad in [
            signer(S::Invalid, C::Valid),
            signer(S::Valid, C::Invalid),
            signer(S::Valid, C::Unknown),
            signer(S::Invalid, C::Pending),
        ] {
            assert_eq!(
                overall(&layer(vec![signer(S::Valid, C::Valid), bad])),
                VerifyStatus::Invalid
            );
        }
    }
}
