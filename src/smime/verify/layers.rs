//! Verifying signed layers, the entry points: a signed entity (`multipart/signed`,
//! `application/pkcs7-mime`, or bare CMS in DER or PEM) split by `mime`, its SignedData
//! decoded in one pass, the bounds on signers, certificates and CRLs applied, the message's
//! certificates and CRLs kept for the caller, and every signer checked; then, while a
//! layer's content is itself signed, the next layer.
//!
//! Owns: the entry points and the bounds. Must not touch: the checks of one signer
//! (`signer`), trust in its certificate (the caller's).

use std::time::SystemTime;

use super::ber::{SignedContentInfo, check_inner_der};
use super::results::{Format, Layer};
use super::signer::{Digests, check_signer};
use crate::certs::CertFacts;
use crate::oids;
use crate::smime::SmimeError;
use crate::smime::asn1::{ber, content_type};
use crate::smime::fields;
use crate::smime::mime::{self, Smime};

/// Most signers verified in one layer; a message with more is refused (`limit_exceeded`).
pub const MAX_SIGNERS: usize = 16;
/// Most certificates read from one message.
pub const MAX_CERTIFICATES: usize = 64;
/// Most CRLs read from one message.
pub const MAX_CRLS: usize = 32;
/// Most signed layers peeled from one message (a signed entity inside a signed entity...).
pub const MAX_LAYERS: usize = 8;

/// Whether `entity` is itself a signed S/MIME entity (another layer to verify).
pub fn is_signed(entity: &[u8]) -> bool {
    match mime::read(entity) {
        Ok(Smime::ClearSigned { .. } | Smime::SignedData(_)) => true,
        Ok(Smime::Pkcs7(der)) => content_type(&der) == Some(oids::ID_SIGNED_DATA),
        _ => false,
    }
}

/// Verifies one signed layer: a `multipart/signed` or `application/pkcs7-mime` entity (or
/// bare CMS, DER or PEM), with the From, Sender and Date of its own header section. `now`
/// is the verifier's clock, for signing-time warnings.
pub fn verify_entity(entity: &[u8], now: SystemTime) -> Result<Layer, SmimeError> {
    if entity.iter().all(u8::is_ascii_whitespace) {
        return Err(SmimeError::Malformed("the message is empty".into()));
    }
    let read = mime::read(entity).map_err(|e| match e {
        SmimeError::NotMime(m) => SmimeError::Malformed(format!("not a MIME entity: {m}")),
        other => other,
    })?;
    let mut layer = match read {
        Smime::ClearSigned { signed, signature } => verify_cms(&signature, Some(&signed), now),
        Smime::SignedData(der) => verify_cms(&der, None, now),
        Smime::Pkcs7(der) => verify_cms(&der, None, now),
        Smime::Enveloped(_) => Err(SmimeError::NotSigned(
            "it is encrypted (enveloped-data): decrypt it first".into(),
        )),
        Smime::Plain => Err(SmimeError::NotSigned(
            "it is neither multipart/signed with an application/pkcs7-signature part nor \
             application/pkcs7-mime"
                .into(),
        )),
    }?;
    layer.fields = fields::read(entity);
    Ok(layer)
}

/// Verifies every signed layer of `entity`, outermost first: while a layer's content is
/// itself a signed entity, it is verified too, up to [`MAX_LAYERS`] layers.
pub fn verify_layers(entity: &[u8], now: SystemTime) -> Result<Vec<Layer>, SmimeError> {
    inner_layers(verify_entity(entity, now)?, now)
}

/// Verifies a detached signature (bare CMS SignedData without content, DER or PEM) over
/// `content`, the signed part as a clear-signed message has it, then every signed layer
/// inside as [`verify_layers`] does. The content is compared with CRLF line ends, as
/// OpenSSL does for S/MIME without `-binary`.
pub fn verify_detached(
    signature: &[u8],
    content: &[u8],
    now: SystemTime,
) -> Result<Vec<Layer>, SmimeError> {
    let der = match mime::read(signature) {
        Ok(Smime::Pkcs7(der)) => der,
        Ok(_) | Err(_) => {
            return Err(SmimeError::Malformed(
                "the detached signature is not a bare CMS SignedData (DER or PEM)".into(),
            ));
        }
    };
    let content = mime::canonicalize(content);
    inner_layers(verify_cms(&der, Some(&content), now)?, now)
}

/// The certificates a CMS SignedData carries (DER, BER or PEM), signature unchecked: what a
/// mail client imports from a message (`pk7out`, `get_cert`). At most
/// [`MAX_CERTIFICATES`]; attribute and other certificate choices are skipped.
pub fn carried_certificates(cms: &[u8]) -> Result<Vec<Vec<u8>>, SmimeError> {
    let der = match mime::read(cms) {
        Ok(Smime::Pkcs7(der) | Smime::SignedData(der)) => der,
        Ok(Smime::ClearSigned { signature, .. }) => signature,
        _ => {
            return Err(SmimeError::NotSigned(
                "it is neither a signed S/MIME message nor a CMS SignedData".into(),
            ));
        }
    };
    let ci: SignedContentInfo = ber(&der).map_err(|e| {
        SmimeError::Malformed(format!(
            "not a readable CMS SignedData (damaged or truncated?): {e}"
        ))
    })?;
    if ci.content_type != oids::ID_SIGNED_DATA {
        return Err(SmimeError::NotSigned(format!(
            "CMS content type {} (not SignedData)",
            ci.content_type
        )));
    }
    let items = ci.content.certificates.map(|s| s.0).unwrap_or_default();
    if items.len() > MAX_CERTIFICATES {
        return Err(SmimeError::Limit(format!(
            "the message carries {} certificates; at most {MAX_CERTIFICATES} are read",
            items.len()
        )));
    }
    Ok(items
        .into_iter()
        .filter(|c| c.first() == Some(&0x30))
        .collect())
}

/// The layers from `first` inwards: while a layer's content is itself a signed entity, it
/// is verified too, up to [`MAX_LAYERS`] layers.
fn inner_layers(first: Layer, now: SystemTime) -> Result<Vec<Layer>, SmimeError> {
    let mut layers = vec![first];
    while let Some(inner) = layers.last().map(|l| &l.content)
        && is_signed(inner)
    {
        if layers.len() >= MAX_LAYERS {
            return Err(SmimeError::Limit(format!(
                "the message nests more than {MAX_LAYERS} signed layers"
            )));
        }
        let n = layers.len() + 1;
        let layer = verify_entity(inner, now).map_err(|e| in_layer(n, e))?;
        layers.push(layer);
    }
    Ok(layers)
}

/// Says which layer an error is about.
fn in_layer(n: usize, e: SmimeError) -> SmimeError {
    match e {
        SmimeError::Malformed(m) => SmimeError::Malformed(format!("signed layer {n}: {m}")),
        SmimeError::Unsupported(m) => SmimeError::Unsupported(format!("signed layer {n}: {m}")),
        SmimeError::Limit(m) => SmimeError::Limit(format!("signed layer {n}: {m}")),
        SmimeError::NotSigned(m) => SmimeError::NotSigned(format!("signed layer {n}: {m}")),
        other => other,
    }
}

/// Verifies a CMS ContentInfo(SignedData), DER or BER. `detached` is the content of a
/// detached signature (the signed part of a `multipart/signed`).
pub fn verify_cms(
    cms: &[u8],
    detached: Option<&[u8]>,
    now: SystemTime,
) -> Result<Layer, SmimeError> {
    let ci: SignedContentInfo = match ber(cms) {
        Ok(ci) => ci,
        Err(e) => {
            return Err(match content_type(cms) {
                Some(ct)
                    if ct == oids::ID_ENVELOPED_DATA || ct == oids::ID_CT_AUTH_ENVELOPED_DATA =>
                {
                    SmimeError::NotSigned(
                        "the CMS object is encrypted (enveloped-data): decrypt it first".into(),
                    )
                }
                Some(ct) if ct != oids::ID_SIGNED_DATA => {
                    SmimeError::Unsupported(format!("CMS content type {ct} (not SignedData)"))
                }
                _ => SmimeError::Malformed(format!(
                    "the signature is not a readable CMS SignedData (damaged or truncated?): {e}"
                )),
            });
        }
    };
    if ci.content_type != oids::ID_SIGNED_DATA {
        return Err(SmimeError::Unsupported(format!(
            "CMS content type {} (not SignedData)",
            ci.content_type
        )));
    }
    let sd = ci.content;
    let econtent = sd
        .encap_content_info
        .econtent
        .map(|o| o.into_bytes().into_vec());
    let (content, format) = match (detached, econtent) {
        (Some(d), None) => (d.to_vec(), Format::Clear),
        (Some(_), Some(_)) => {
            return Err(SmimeError::Malformed(
                "the detached signature of a multipart/signed carries content of its own".into(),
            ));
        }
        (None, Some(c)) => (c, Format::Opaque),
        (None, None) => {
            return Err(SmimeError::Malformed(
                "the SignedData carries no content: it is a detached signature without the \
                 signed part (or a certificates-only message)"
                    .into(),
            ));
        }
    };

    let cert_items = sd.certificates.map(|s| s.0).unwrap_or_default();
    if cert_items.len() > MAX_CERTIFICATES {
        return Err(SmimeError::Limit(format!(
            "the message carries {} certificates; at most {MAX_CERTIFICATES} are read",
            cert_items.len()
        )));
    }
    let crl_items = sd.crls.map(|s| s.0).unwrap_or_default();
    if crl_items.len() > MAX_CRLS {
        return Err(SmimeError::Limit(format!(
            "the message carries {} CRLs; at most {MAX_CRLS} are read",
            crl_items.len()
        )));
    }
    let signer_items = sd.signer_infos.0;
    if signer_items.is_empty() {
        return Err(SmimeError::Malformed(
            "the SignedData has no signer (nothing is signed)".into(),
        ));
    }
    if signer_items.len() > MAX_SIGNERS {
        return Err(SmimeError::Limit(format!(
            "the message has {} signers; at most {MAX_SIGNERS} are verified",
            signer_items.len()
        )));
    }
    check_inner_der(&sd.digest_algorithms.0, &signer_items, &crl_items)
        .map_err(SmimeError::Malformed)?;

    // CertificateChoices: only the plain certificate (a SEQUENCE) is used; attribute and
    // other certificates ([1], [2], [3]) are skipped. Likewise CRLs (not [1] other).
    let mut certificates = vec![];
    let mut certs = vec![];
    let mut certificate_problems = vec![];
    for (n, der) in cert_items.into_iter().enumerate() {
        if der.first() != Some(&0x30) {
            continue;
        }
        match CertFacts::from_der(&der) {
            Ok(c) => certs.push(c),
            Err(e) => certificate_problems.push(format!("certificate {}: {e}", n + 1)),
        }
        certificates.push(der);
    }
    let crls = crl_items
        .into_iter()
        .filter(|c| c.first() == Some(&0x30))
        .collect();

    let mut digests = Digests::new(&content);
    let signers = signer_items
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            check_signer(
                index,
                raw,
                &sd.encap_content_info.econtent_type,
                &mut digests,
                &certs,
                &certificate_problems,
                now,
            )
        })
        .collect();
    Ok(Layer {
        format,
        content_type: sd.encap_content_info.econtent_type,
        content,
        signers,
        certificates,
        crls,
        certificate_problems,
        fields: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::results::SignatureCode;
    use super::*;
    use crate::alg::ContentAlgorithm;

    /// `openssl cms -sign -nodetach` with a self-signed P-256 certificate (tests/data/verify).
    const EC_OPAQUE: &[u8] = include_bytes!("../../../tests/data/verify/ec-opaque.der");

    fn now() -> SystemTime {
        SystemTime::now()
    }

    #[test]
    fn an_openssl_opaque_signature_verifies_and_gives_the_content() {
        let layer = verify_cms(EC_OPAQUE, None, now()).unwrap();
        assert_eq!(layer.format, Format::Opaque);
        assert_eq!(layer.signers.len(), 1);
        let s = &layer.signers[0];
        assert!(s.valid(), "{:?}", s.outcome);
        assert_eq!(s.signature_algorithm, "ecdsa");
        assert_eq!(s.digest_algorithm, "sha256");
        assert!(s.signing_time.is_some());
        // OpenSSL's list: aes-256-cbc, aes-192-cbc, aes-128-cbc, des-ede3-cbc, rc2, des.
        assert_eq!(
            s.capabilities,
            Some(vec![
                ContentAlgorithm::Aes256Cbc,
                ContentAlgorithm::Aes128Cbc
            ])
        );
        assert_eq!(
            s.cert.as_ref().map(|c| c.subject_emails.clone()),
            Some(vec!["fixture@example.org".to_owned()])
        );
        assert!(String::from_utf8_lossy(&layer.content).contains("A fixture for the verifier."));
        assert_eq!(layer.certificates.len(), 1);
        // The same, framed as MIME.
        let entity = mime::pkcs7_mime("signed-data", EC_OPAQUE);
        assert!(is_signed(&entity));
        assert!(verify_entity(&entity, now()).unwrap().signers[0].valid());
    }

    #[test]
    fn changed_content_is_a_digest_mismatch() {
        let pos = EC_OPAQUE.windows(7).position(|w| w == b"fixture").unwrap();
        let mut m = EC_OPAQUE.to_vec();
        m[pos] = b'F';
        let layer = verify_cms(&m, None, now()).unwrap();
        let err = layer.signers[0].outcome.clone().unwrap_err();
        assert_eq!(err.code, SignatureCode::DigestMismatch, "{}", err.message);
    }

    #[test]
    fn a_changed_signature_is_a_bad_signature() {
        // The signature is the last OCTET STRING of the SignerInfo: flip its last byte
        // (the s of ECDSA) - the DER stays well-formed.
        let mut m = EC_OPAQUE.to_vec();
        let last = m.len() - 1;
        m[last] ^= 0x01;
        let layer = verify_cms(&m, None, now()).unwrap();
        let err = layer.signers[0].outcome.clone().unwrap_err();
        assert_eq!(err.code, SignatureCode::BadSignature, "{}", err.message);
    }

    #[test]
    fn truncations_and_garbage_are_errors_never_panics() {
        for n in 0..EC_OPAQUE.len() {
            let cut = &EC_OPAQUE[..n];
            assert!(
                verify_cms(cut, None, now()).is_err(),
                "a cut at {n} was accepted"
            );
            let _ = verify_entity(cut, now());
        }
        // Bit flips anywhere (sampled): an error or a result, never a panic.
        for pos in (0..EC_OPAQUE.len()).step_by(13) {
            let mut m = EC_OPAQUE.to_vec();
            m[pos] ^= 0x5a;
            if let Ok(layer) = verify_cms(&m, None, now()) {
                assert_eq!(layer.signers.len(), 1);
            }
        }
        for junk in [
            &b""[..],
            b"\x30",
            b"\x30\x80",
            b"\x30\x80\x00\x00",
            b"hello world",
            b"Content-Type: text/plain\r\n\r\nnot signed",
            b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=x\r\n\r\n--x\r\n\r\nbody\r\n--x--\r\n",
            b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\r\n",
        ] {
            assert!(verify_entity(junk, now()).is_err(), "{junk:?} was accepted");
        }
    }

    #[test]
    fn the_layer_is_read_from_pem_and_from_bare_der() {
        use base64::Engine as _;
        let pem = format!(
            "-----BEGIN SIGNED MESSAGE-----\n{}\n-----END SIGNED MESSAGE-----\n",
            base64::engine::general_purpose::STANDARD.encode(EC_OPAQUE)
        );
        assert!(verify_entity(pem.as_bytes(), now()).unwrap().signers[0].valid());
        assert!(verify_entity(EC_OPAQUE, now()).unwrap().signers[0].valid());
    }
}
