//! The protocol's descriptions that several ops give: a certificate of the store, a
//! validation, and the verdict over a message's signatures.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use smime_agent_proto::{
    CertInfo, CertificateCheck, CertificateStatus, ChainCert, CrlCheckInfo, RevocationResult,
    SenderStatus, SignatureStatus, SignedLayer, ValidateResult, ValidationReason, ValidityStatus,
    VerifyStatus,
};

use crate::store::StoredCert;
use crate::trust::Validation;

/// The protocol's description of a certificate in the store.
pub fn cert_info(c: &StoredCert, include_der: bool) -> CertInfo {
    let f = c.facts();
    CertInfo {
        subject: f.subject.clone(),
        issuer: f.issuer.clone(),
        serial: f.serial_hex.clone(),
        not_before: crate::certs::rfc3339(f.not_before),
        not_after: crate::certs::rfc3339(f.not_after),
        emails: f.all_emails().map(str::to_owned).collect(),
        key: f.key.name(),
        key_usage: f.key_usage_names(),
        ext_key_usage: f.ext_key_usage_names(),
        sha256: crate::certs::hex(&f.sha256),
        key_id: crate::certs::hex(&c.cert.key_id),
        token: c.token.token_ref().clone(),
        hardware: c.token.facts.hardware,
        der: include_der.then(|| f.der.clone().into()),
    }
}

/// The protocol's form of a validation.
pub fn to_result(v: &Validation, time: SystemTime) -> ValidateResult {
    ValidateResult {
        status: if v.valid {
            ValidityStatus::Valid
        } else {
            ValidityStatus::Invalid
        },
        reasons: v
            .problems
            .iter()
            .map(|p| ValidationReason {
                code: p.code.as_str().to_owned(),
                message: p.message.clone(),
            })
            .collect(),
        warnings: v.warnings.clone(),
        chain: v
            .chain
            .iter()
            .map(|l| ChainCert {
                subject: l.subject.clone(),
                issuer: l.issuer.clone(),
                serial: l.serial.clone(),
                not_before: l.not_before.clone(),
                not_after: l.not_after.clone(),
                sha256: l.sha256.clone(),
                source: l.origin.as_str().to_owned(),
            })
            .collect(),
        revocation: RevocationResult {
            status: v.revocation.status.as_str().to_owned(),
            checks: v
                .revocation
                .checks
                .iter()
                .map(|c| CrlCheckInfo {
                    subject: c.subject.clone(),
                    status: c.status.to_owned(),
                    method: c.method.map(str::to_owned),
                    crl_issuer: c.crl_issuer.clone(),
                    this_update: c.this_update.clone(),
                    next_update: c.next_update.clone(),
                    source: c.origin.map(str::to_owned),
                    url: c.url.clone(),
                    reason: c.reason.clone(),
                })
                .collect(),
        },
        time: crate::certs::rfc3339(
            UNIX_EPOCH
                + Duration::from_secs(
                    time.duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                ),
        ),
        cached: v.from_cache,
    }
}

/// The verdict over signed layers:
/// `valid` only when every signature and every certificate is, and every layer whose
/// message names a sender has a signer whose certificate names it ([`senders_match`]);
/// `pending` while a certificate is being judged and nothing is invalid yet.
pub fn overall(layers: &[SignedLayer]) -> VerifyStatus {
    let signers = || layers.iter().flat_map(|l| &l.signers);
    if !senders_match(layers)
        || signers().any(|s| {
            s.signature.status != SignatureStatus::Valid
                || matches!(
                    s.certificate.status,
                    CertificateStatus::Invalid | CertificateStatus::Unknown
                )
        })
    {
        VerifyStatus::Invalid
    } else if signers().any(|s| s.certificate.status == CertificateStatus::Pending) {
        VerifyStatus::Pending
    } else {
        VerifyStatus::Valid
    }
}

/// Whether every layer whose message has a From or Sender has a signer with a valid
/// signature whose certificate names that sender (RFC 8550 section 3). Decided by the
/// signatures alone, so it holds before the certificates are judged; the certificates must
/// be valid besides (every signer's must, for [`overall`]).
pub fn senders_match(layers: &[SignedLayer]) -> bool {
    layers.iter().all(|l| {
        let judged = l.signers.iter().any(|s| s.sender.is_some());
        !judged
            || l.signers.iter().any(|s| {
                s.signature.status == SignatureStatus::Valid
                    && s.sender
                        .as_ref()
                        .is_some_and(|m| m.status == SenderStatus::Match)
            })
    })
}

/// A certificate check with this status and nothing else to say yet.
pub(super) fn check(status: CertificateStatus) -> CertificateCheck {
    CertificateCheck {
        status,
        reasons: vec![],
        warnings: vec![],
        chain: vec![],
        revocation: None,
        added_to_contacts: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smime_agent_proto::{SignFormat, SignatureCheck, SignerResult};

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
            date_offset_secs: None,
            sender: None,
            warnings: vec![],
        }
    }

    fn from(mut s: SignerResult, status: SenderStatus) -> SignerResult {
        s.sender = Some(smime_agent_proto::SenderMatch {
            status,
            addresses: vec!["carol@example.org".into()],
            matched: None,
            reason: None,
        });
        s
    }

    #[test]
    fn a_message_whose_sender_no_signer_names_is_invalid_though_all_else_is_valid() {
        use CertificateStatus as C;
        use SenderStatus as M;
        use SignatureStatus as S;
        let good = || signer(S::Valid, C::Valid);
        assert_eq!(
            overall(&layer(vec![from(good(), M::Mismatch)])),
            VerifyStatus::Invalid
        );
        // Decided before the certificates are: no waiting for a `pending` one.
        assert_eq!(
            overall(&layer(vec![from(
                signer(S::Valid, C::Pending),
                M::Mismatch
            )])),
            VerifyStatus::Invalid
        );
        assert_eq!(
            overall(&layer(vec![from(good(), M::Match)])),
            VerifyStatus::Valid
        );
        // One signer naming the sender is enough (a co-signer need not be the author).
        assert_eq!(
            overall(&layer(vec![
                from(good(), M::Mismatch),
                from(good(), M::Match)
            ])),
            VerifyStatus::Valid
        );
        // The matching signer's signature must hold.
        assert_eq!(
            overall(&layer(vec![from(signer(S::Invalid, C::Valid), M::Match)])),
            VerifyStatus::Invalid
        );
        // No From or Sender: nothing to hold the signers against.
        assert_eq!(overall(&layer(vec![good()])), VerifyStatus::Valid);
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
