//! Reading the signed layers of a message: every signature checked (on the blocking pool:
//! hashing a large message takes a while), then each signer's certificate validated by the
//! trust layer, concurrently, with the message's own certificates as intermediates and its
//! CRLs. Each signer is also held against the header fields its layer answers to (From or
//! Sender, Date: see [`super::sender`]). A signer whose signature and certificate are both
//! valid is kept in the contacts store. Shared by `verify` and `decrypt` (which reads a
//! message layer by layer).

use std::sync::Arc;
use std::time::SystemTime;

use smime_agent_proto::{
    CertificateCheck, CertificateStatus, SignFormat, SignatureCheck, SignatureStatus, SignedLayer,
    SignerCert, SignerResult, ValidationReason,
};
use tracing::warn;

use super::Services;
use super::report::check;
use super::sender;
use super::{OpContext, OpError};
use crate::alg::ContentAlgorithm;
use crate::certs::{CertFacts, hex, rfc3339};
use crate::smime::fields::MessageFields;
use crate::smime::verify::{self as cms_verify, Format, Layer, Signer};
use crate::trust::ValidationRequest;

/// A signer certificate to judge: where its answer goes, and what to ask.
pub(super) struct Job {
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

/// Verifies every signed layer at the top of `entity` and judges every signer certificate
/// (waiting for it); `around` are the header fields of the message `entity` came in.
/// Returns the layers, the innermost content and the header fields it answers to. Used to
/// read messages layer by layer (`decrypt`).
pub async fn verify_signed_layers(
    ctx: &OpContext<'_>,
    entity: Vec<u8>,
    around: Option<MessageFields>,
) -> Result<(Vec<SignedLayer>, Vec<u8>, Option<MessageFields>), OpError> {
    let Checked {
        mut layers,
        mut signed,
        jobs,
        fields,
    } = check_signatures(ctx, entity, None, around).await?;
    apply(&mut signed, judge(ctx.services.clone(), jobs).await);
    let content = layers.pop().map(|l| l.content).unwrap_or_default();
    Ok((signed, content, fields))
}

/// The signatures of a message, checked, with the signer certificates still to judge.
pub(super) struct Checked {
    pub(super) layers: Vec<Layer>,
    /// The layers as reported, certificates `pending`.
    pub(super) signed: Vec<SignedLayer>,
    pub(super) jobs: Vec<Job>,
    /// The header fields the innermost layer answered to.
    pub(super) fields: Option<MessageFields>,
}

/// Checks every signature of `entity` (on the blocking pool) and prepares the judging of
/// each signer certificate, with the tokens' certificates as extra intermediates. With a
/// detached `signature`, `entity` is the content it signs. `around` are the header fields
/// of the message `entity` came in (none for what a client hands over).
pub(super) async fn check_signatures(
    ctx: &OpContext<'_>,
    entity: Vec<u8>,
    signature: Option<Vec<u8>>,
    around: Option<MessageFields>,
) -> Result<Checked, OpError> {
    let now = SystemTime::now();
    let layers = tokio::task::spawn_blocking(move || match signature {
        Some(sig) => cms_verify::verify_detached(&sig, &entity, now),
        None => cms_verify::verify_layers(&entity, now),
    })
    .await
    .map_err(|e| OpError::Internal(format!("the verification task failed: {e}")))??;
    let token_certs: Vec<Vec<u8>> = ctx
        .services
        .store
        .snapshot()
        .certs()
        .map(|c| c.facts().der.clone())
        .collect();
    let tolerance = ctx.services.config.policy.signing_time_tolerance_secs;
    let mut jobs = vec![];
    let mut signed = vec![];
    let mut fields = around;
    for (n, layer) in layers.iter().enumerate() {
        fields = sender::nearest(layer.fields.as_ref(), fields.as_ref());
        let mut signers = vec![];
        for s in &layer.signers {
            jobs.push(job(n, s, layer, &token_certs));
            signers.push(signer_result(s, fields.as_ref(), tolerance));
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
        fields,
    })
}

/// Puts the judged certificates into their signers.
pub(super) fn apply(signed: &mut [SignedLayer], checks: Vec<(usize, usize, CertificateCheck)>) {
    for (layer, index, check) in checks {
        if let Some(s) = signed.get_mut(layer).and_then(|l| l.signers.get_mut(index)) {
            s.certificate = check;
        }
    }
}

pub(super) fn signer_summary(layers: &[Layer]) -> String {
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
            // A signer's certificate must be one for signing mail (the S/MIME profile), as
            // the agent asks of its own.
            profile: crate::certs::profile::ProfileRequest {
                fitness: crate::certs::profile::Fitness::Sign,
                address: None,
            },
            ..Default::default()
        }),
    }
}

/// A signer as reported, held against the header fields its layer answers to.
fn signer_result(s: &Signer, fields: Option<&MessageFields>, tolerance_secs: u64) -> SignerResult {
    let (date_offset_secs, date_warning) =
        sender::date_offset(s.signing_time, fields, tolerance_secs);
    let mut warnings = s.warnings.clone();
    warnings.extend(date_warning);
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
        date_offset_secs,
        sender: fields.and_then(|f| sender::sender_match(s.cert.as_ref(), f)),
        warnings,
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
pub(super) async fn judge(
    services: Arc<Services>,
    jobs: Vec<Job>,
) -> Vec<(usize, usize, CertificateCheck)> {
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
            let r = super::report::to_result(&v, SystemTime::now());
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
