//! `decrypt`: find the recipient info addressed to one of the user's keys, have the token
//! do the private-key step, decrypt the content.

use std::sync::Arc;

use smime_agent_proto::{DecryptParams, DecryptResult, EncryptedLayer, MessageLayer, SignedLayer};
use tracing::{info, warn};
use zeroize::Zeroizing;

use super::report::overall;
use super::signed::verify_signed_layers;
use super::{OpContext, OpError, cert_info};
use crate::alg::Hash;
use crate::smime::SmimeError;
use crate::smime::envelope::{self, Envelope, KeyUnwrap, Recipient};
use crate::smime::mime::{self, Smime};
use crate::smime::unpad;
use crate::store::StoredCert;
use crate::tokens::{OaepHash, PinPolicy, PrivateOp, RsaDecrypt, TokenError};

/// Which of the user's certificates the envelope is for, best first: hardware keys before
/// software ones; with `smart_card_only`, only keys on smart cards.
fn my_recipients(ctx: &OpContext<'_>, env: &Envelope) -> Vec<(Arc<StoredCert>, Recipient)> {
    let snapshot = ctx.services.store.snapshot();
    let smart_card_only = ctx.services.config.policy.smart_card_only;
    let mut mine = vec![];
    for r in &env.recipients {
        for c in snapshot.certs() {
            let t = &c.token.facts;
            if smart_card_only && !(t.hardware && t.removable) {
                continue;
            }
            if c.cert.has_key != Some(false) && r.id.matches(c.facts()) {
                mine.push((c.clone(), r.clone()));
            }
        }
    }
    mine.sort_by_key(|m| std::cmp::Reverse(m.0.token.facts.hardware));
    mine
}

fn oaep_hash(h: Hash) -> OaepHash {
    match h {
        Hash::Sha1 => OaepHash::Sha1,
        Hash::Sha256 => OaepHash::Sha256,
        Hash::Sha384 => OaepHash::Sha384,
        Hash::Sha512 => OaepHash::Sha512,
    }
}

/// The content key, with the private-key step on the token.
///
/// RSA key transport never tells a bad padding from a good one (RFC 3218 section 2.3, and
/// Bleichenbacher's, Manger's and the Marvin attacks): where the token offers raw RSA
/// (CKM_RSA_X_509) the agent removes the padding itself in constant time; elsewhere any
/// failure of the token's own unpadding is one [`TokenError::Refused`]. Either way a
/// malformed key goes on as a random key of the right length, so the content decryption
/// fails exactly as it does for a well-formed wrong key: same answer (`decrypt_failed`),
/// same steps. Only errors that do not depend on the data (the token is gone, the PIN is
/// needed or refused, the key is missing) are reported as they are.
async fn content_key(
    ctx: &OpContext<'_>,
    env: &Envelope,
    cert: &StoredCert,
    recipient: &Recipient,
) -> Result<Zeroizing<Vec<u8>>, OpError> {
    let policy = PinPolicy {
        always_authenticate_uses_cache: ctx.services.config.pin.always_authenticate_uses_cache,
    };
    let token = &cert.token;
    let key_id = &cert.cert.key_id;
    let subject = &cert.facts().subject;
    let op = |op| token.private_op(key_id, subject, op, ctx.prompter, policy);
    // Made before the token is asked, so every path below does the same work.
    let decoy = env.decoy_key()?;
    let raw_rsa = token.facts.raw_rsa;
    let raw = |encrypted_key: &[u8]| {
        op(PrivateOp::Decrypt {
            padding: RsaDecrypt::Raw,
            data: encrypted_key.to_vec(),
        })
    };
    match &recipient.unwrap {
        KeyUnwrap::RsaPkcs1 { encrypted_key } if raw_rsa => {
            let Some(c) = as_ciphertext(cert, encrypted_key) else {
                return Ok(decoy);
            };
            let em = match raw(&c).await {
                Ok(r) => unpad::to_modulus_length(&r, c.len()),
                Err(e) => return Err(raw_failed(e)),
            };
            Ok(match em {
                Some(em) => envelope::pkcs1_v15_content_key(&em, decoy),
                None => decoy,
            })
        }
        KeyUnwrap::RsaPkcs1 { encrypted_key } => {
            let padded = op(PrivateOp::Decrypt {
                padding: RsaDecrypt::Pkcs1,
                data: encrypted_key.clone(),
            });
            match padded.await {
                // A key of the wrong length goes on as a decoy in `Envelope::decrypt`.
                Ok(k) => Ok(k),
                Err(e) => decoy_unless_reported(e, decoy),
            }
        }
        KeyUnwrap::RsaOaep {
            encrypted_key,
            hash,
            mgf_hash,
            label,
        } if raw_rsa => {
            let Some(c) = as_ciphertext(cert, encrypted_key) else {
                return Ok(decoy);
            };
            let em = match raw(&c).await {
                Ok(r) => unpad::to_modulus_length(&r, c.len()),
                Err(e) => return Err(raw_failed(e)),
            };
            Ok(em
                .and_then(|em| envelope::oaep_decode(&em, *hash, *mgf_hash, label))
                .unwrap_or(decoy))
        }
        KeyUnwrap::RsaOaep {
            encrypted_key,
            hash,
            mgf_hash,
            label,
        } => {
            // A token without raw RSA: only the OAEP it does itself (SHA-x for both hashes,
            // no label); anything else cannot be opened on it.
            if hash != mgf_hash || !label.is_empty() {
                return Err(OpError::Smime(SmimeError::Unsupported(format!(
                    "the token \"{}\" cannot open RSA-OAEP with these parameters (it has no raw RSA)",
                    token.token_ref().label
                ))));
            }
            let padded = op(PrivateOp::Decrypt {
                padding: RsaDecrypt::Oaep(oaep_hash(*hash)),
                data: encrypted_key.clone(),
            });
            match padded.await {
                Ok(k) => Ok(k),
                Err(e) => decoy_unless_reported(e, decoy),
            }
        }
        KeyUnwrap::Ecdh(p) => {
            let z = match op(PrivateOp::DeriveEcdh {
                point: p.originator_point.clone(),
            })
            .await
            {
                Ok(z) => z,
                // E.g. a key without CKA_DERIVE: say so, it is the token's configuration.
                Err(e) => return Err(e.into()),
            };
            envelope::finish_ecdh(&z, p).ok_or(OpError::Smime(SmimeError::DecryptFailed))
        }
    }
}

/// Raw RSA (CKM_RSA_X_509) failed. The token computed c^d mod n and nothing else, on a
/// ciphertext already known to fit the modulus ([`as_ciphertext`]): the failure is the
/// token's (a card fault, pcscd restarting), not the message's, and does not depend on the
/// padding, so it is reported as it is (`token_error`: try again), not taken for a damaged
/// message.
fn raw_failed(e: TokenError) -> OpError {
    if matches!(e, TokenError::Refused { .. } | TokenError::Pkcs11 { .. }) {
        warn!(token = %e.token().label, error = %e, "raw RSA decryption failed on the token");
    }
    e.into()
}

/// `c` as an RSA ciphertext for the certificate's key: no longer than the modulus (a
/// shorter one, whose leading zero bytes a sender dropped, is zero-filled on the left), and
/// below it (RFC 8017 5.1.2). Both are public facts of the message and the certificate, so
/// answering a ciphertext that does not fit like any malformed key (the decoy) without
/// asking the token tells nothing about a padding; a ciphertext that fits is the only kind
/// the token sees.
fn as_ciphertext(cert: &StoredCert, c: &[u8]) -> Option<Vec<u8>> {
    use der::Decode as _;
    let spki = cert
        .facts()
        .cert
        .tbs_certificate()
        .subject_public_key_info();
    let Ok(key) = rsa::pkcs1::RsaPublicKey::<der::asn1::UintRef<'_>>::from_der(
        spki.subject_public_key.raw_bytes(),
    ) else {
        return None;
    };
    let n = key.modulus.as_bytes();
    let k = n.len();
    if c.len() > k {
        return None;
    }
    let mut full = vec![0u8; k - c.len()];
    full.extend_from_slice(c);
    // Big-endian, same length: below the modulus is lexicographically below it.
    (full.as_slice() < n).then_some(full)
}

/// An RSA key transport the token did not finish: the decoy key, unless the error says the
/// token is gone, the PIN is needed or was refused, or the key is missing (see
/// [`crate::tokens::PrivateOp::is_padded_decrypt`]: the token layer has already made every
/// data-dependent failure one [`TokenError::Refused`]).
fn decoy_unless_reported(
    e: TokenError,
    decoy: Zeroizing<Vec<u8>>,
) -> Result<Zeroizing<Vec<u8>>, OpError> {
    match e {
        TokenError::Refused { .. } | TokenError::Pkcs11 { .. } => Ok(decoy),
        other => Err(other.into()),
    }
}

/// Opens an envelope (DER or BER). Returns the content and the certificate used.
pub async fn open(
    ctx: &OpContext<'_>,
    der: &[u8],
) -> Result<(Vec<u8>, Arc<StoredCert>, bool), OpError> {
    let env = envelope::parse(der)?;
    let mine = my_recipients(ctx, &env);
    let Some((cert, recipient)) = mine.into_iter().next() else {
        let names: Vec<String> = env
            .recipients
            .iter()
            .map(|r| match &r.id {
                envelope::RecipientId::IssuerSerial { issuer, serial } => {
                    format!("serial {} from {issuer}", envelope::serial_hex(serial))
                }
                envelope::RecipientId::SubjectKeyId(id) => {
                    format!("key id {}", crate::certs::hex(id))
                }
            })
            .collect();
        let mut msg = format!(
            "the message is for {} recipient(s), and none of their keys is on a present token: {}",
            env.recipients.len(),
            names.join("; ")
        );
        if !env.skipped.is_empty() {
            msg.push_str(&format!(" (also unreadable: {})", env.skipped.join(", ")));
        }
        return Err(OpError::NotARecipient(msg));
    };
    info!(
        target: "audit",
        client = %ctx.peer,
        op = "decrypt",
        subject = %cert.facts().subject,
        serial = %cert.facts().serial_hex,
        token = %cert.token.token_ref().label,
        "private-key operation"
    );
    let cek = content_key(ctx, &env, &cert, &recipient).await?;
    let content = super::cpu(env.content_len(), || env.decrypt(&cek))?;
    Ok((content, cert, env.is_authenticated()))
}

/// Most layers (signed or encrypted) read from one message.
pub const MAX_LAYERS: usize = 8;

pub async fn decrypt(ctx: &OpContext<'_>, p: DecryptParams) -> Result<DecryptResult, OpError> {
    let mut entity = p.content.0;
    // The header fields the next signed layer answers to when it has none of its own: the
    // message's, then those of any entity an envelope held that carries its own.
    let mut fields = crate::smime::fields::read(&entity);
    let mut layers: Vec<MessageLayer> = vec![];
    let mut first: Option<(Arc<StoredCert>, bool)> = None;
    // Unwrap every layer: signed (triple wrap outside), encrypted, signed inside, ...
    loop {
        if layers.len() >= MAX_LAYERS {
            return Err(SmimeError::Limit(format!(
                "the message nests more than {MAX_LAYERS} signed or encrypted layers"
            ))
            .into());
        }
        let kind = match mime::read(&entity) {
            Ok(kind) => kind,
            Err(e) if layers.is_empty() => return Err(e.into()),
            // What an envelope or signature held need not be S/MIME (or even MIME): it is
            // the content, handed back as it is.
            Err(_) => break,
        };
        let cms_type = |d: &[u8]| crate::smime::asn1::content_type(d);
        let signed = match &kind {
            Smime::ClearSigned { .. } | Smime::SignedData(_) => true,
            Smime::Pkcs7(d) => cms_type(d) == Some(crate::oids::ID_SIGNED_DATA),
            _ => false,
        };
        let envelope = match kind {
            Smime::Enveloped(d) => Some(d),
            Smime::Pkcs7(d)
                if matches!(
                    cms_type(&d),
                    Some(t) if t == crate::oids::ID_ENVELOPED_DATA
                        || t == crate::oids::ID_CT_AUTH_ENVELOPED_DATA
                ) =>
            {
                Some(d)
            }
            _ => None,
        };
        if let Some(der) = envelope {
            let (content, cert, authenticated) = open(ctx, &der).await?;
            layers.push(MessageLayer::Encrypted(EncryptedLayer {
                certificate: Box::new(cert_info(&cert, false)),
                authenticated,
            }));
            first.get_or_insert((cert, authenticated));
            entity = content;
            fields = super::sender::nearest(
                crate::smime::fields::read(&entity).as_ref(),
                fields.as_ref(),
            );
            if p.outer_only {
                break;
            }
            continue;
        }
        if signed {
            let (signed_layers, content, answered) =
                verify_signed_layers(ctx, entity, fields.take()).await?;
            layers.extend(signed_layers.into_iter().map(MessageLayer::Signed));
            entity = content;
            fields = answered;
            continue;
        }
        if layers.is_empty() {
            return Err(OpError::BadRequest(
                "not an encrypted S/MIME message (no application/pkcs7-mime part)".into(),
            ));
        }
        break;
    }
    let Some((cert, authenticated)) = first else {
        return Err(OpError::BadRequest(
            "this is a signed message, not an encrypted one: use verify".into(),
        ));
    };
    let signed: Vec<SignedLayer> = layers
        .iter()
        .filter_map(|l| match l {
            MessageLayer::Signed(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    Ok(DecryptResult {
        mime: entity.into(),
        certificate: cert_info(&cert, false),
        authenticated,
        signatures: (!signed.is_empty()).then(|| overall(&signed)),
        layers,
    })
}
