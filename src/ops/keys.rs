//! The raw key operations (`keys`, `key_login`, `key_sign`, `key_decrypt`, `key_derive`):
//! what the PKCS#11 module forwards for Thunderbird, Evolution and OpenSSL programs, which
//! build their own CMS and need only the private-key step.
//!
//! The agent's rules hold as for its own operations: only keys present now, only
//! smart-card keys under `smart_card_only`, only what the key usage allows, PINs by the
//! agent's own source with its caching and never-retry rules, and one audit line per use
//! naming the client's executable. `[policy] raw_key_operations = false` refuses them all.
//! RSA decryption removes the padding in the agent (raw RSA on the token) where the token
//! can, and every padding failure is the same `decrypt_failed`.

use std::sync::Arc;

use smime_agent_proto::{
    KeyDecryptMechanism, KeyDecryptParams, KeyDeriveParams, KeyEntry, KeyLoginParams, KeyOaepHash,
    KeyOpResult, KeySignMechanism, KeySignParams, KeyToken, KeysResult,
};
use tracing::info;
use zeroize::Zeroizing;

use super::{OpContext, OpError};
use crate::alg::Hash;
use crate::certs::KeyKind;
use crate::certs::usage::{Purpose, usage_allows};
use crate::smime::{SmimeError, unpad};
use crate::store::StoredCert;
use crate::tokens::{OaepHash, PinPolicy, PrivateOp, RsaDecrypt, SignMechanism, TokenError};

/// A key the policy lets the agent use: present, and on a smart card under
/// `smart_card_only`.
fn usable(ctx: &OpContext<'_>, c: &StoredCert) -> bool {
    let t = &c.token.facts;
    !ctx.services.config.policy.smart_card_only || (t.hardware && t.removable)
}

pub fn keys(ctx: &OpContext<'_>) -> KeysResult {
    let snapshot = ctx.services.store.snapshot();
    let mut tokens = vec![];
    for entry in &snapshot.tokens {
        let keys: Vec<KeyEntry> = entry
            .certs
            .iter()
            .filter(|c| usable(ctx, c))
            .map(|c| {
                let f = c.facts();
                let ec = f.key.is_ec();
                KeyEntry {
                    key: crate::certs::hex(&f.sha256),
                    key_id: c.cert.key_id.clone().into(),
                    certificate: f.der.clone().into(),
                    private_key: has_private_key(c),
                    sign: usage_allows(f, Purpose::Sign),
                    decrypt: !ec && usage_allows(f, Purpose::Decrypt),
                    derive: ec && usage_allows(f, Purpose::Decrypt),
                }
            })
            .collect();
        if keys.is_empty() {
            continue;
        }
        let t = &entry.token.facts;
        tokens.push(KeyToken {
            token: t.token.clone(),
            manufacturer: t.manufacturer.clone(),
            model: t.model.clone(),
            hardware: t.hardware,
            removable: t.removable,
            logged_in: entry.token.pin_cached(),
            keys,
        });
    }
    KeysResult {
        tokens,
        operations_allowed: ctx.services.config.policy.raw_key_operations,
    }
}

fn has_private_key(c: &StoredCert) -> bool {
    !c.cert.key_id.is_empty() && c.cert.has_key != Some(false)
}

pub async fn key_login(ctx: &OpContext<'_>, p: KeyLoginParams) -> Result<(), OpError> {
    let snapshot = ctx.services.store.snapshot();
    let entry = snapshot
        .tokens
        .iter()
        .find(|e| e.token.token_ref().id == p.token)
        .ok_or_else(|| {
            OpError::BadRequest(format!(
                "no token with id {:?} is present (see the keys op)",
                p.token
            ))
        })?;
    info!(client = %ctx.peer, token = %entry.token.token_ref().label, "key_login");
    entry.token.login(ctx.prompter).await?;
    Ok(())
}

/// The key named `fingerprint`, if the policy lets this request use it for `purpose`.
fn key_for(
    ctx: &OpContext<'_>,
    fingerprint: &str,
    purpose: Purpose,
    op: &'static str,
) -> Result<Arc<StoredCert>, OpError> {
    if !ctx.services.config.policy.raw_key_operations {
        return Err(OpError::PolicyDenied(
            "raw key operations are turned off ([policy] raw_key_operations = false)".into(),
        ));
    }
    let snapshot = ctx.services.store.snapshot();
    let cert = snapshot
        .certs()
        .find(|c| crate::certs::hex(&c.facts().sha256).eq_ignore_ascii_case(fingerprint))
        .cloned()
        .ok_or_else(|| {
            OpError::BadRequest(format!(
                "no key with certificate fingerprint {fingerprint:?} is present (its token may have been removed)"
            ))
        })?;
    if !usable(ctx, &cert) {
        return Err(OpError::PolicyDenied(format!(
            "the key of {} is not on a smart card, and policy smart_card_only is set",
            cert.facts().subject
        )));
    }
    if !has_private_key(&cert) {
        return Err(OpError::BadRequest(format!(
            "the token holds no private key for {}",
            cert.facts().subject
        )));
    }
    if !usage_allows(cert.facts(), purpose) {
        return Err(OpError::PolicyDenied(format!(
            "the key usage of {} ({}) does not allow {op}",
            cert.facts().subject,
            cert.facts().key_usage_names().join(", ")
        )));
    }
    info!(
        target: "audit",
        client = %ctx.peer,
        op,
        subject = %cert.facts().subject,
        serial = %cert.facts().serial_hex,
        token = %cert.token.token_ref().label,
        "private-key operation"
    );
    Ok(cert)
}

async fn private_op(
    ctx: &OpContext<'_>,
    cert: &StoredCert,
    op: PrivateOp,
) -> Result<Zeroizing<Vec<u8>>, TokenError> {
    let policy = PinPolicy {
        always_authenticate_uses_cache: ctx.services.config.pin.always_authenticate_uses_cache,
    };
    cert.token
        .private_op(
            &cert.cert.key_id,
            &cert.facts().subject,
            op,
            ctx.prompter,
            policy,
        )
        .await
}

pub async fn key_sign(ctx: &OpContext<'_>, p: KeySignParams) -> Result<KeyOpResult, OpError> {
    let cert = key_for(ctx, &p.key, Purpose::Sign, "key_sign")?;
    let mechanism = match (p.mechanism, cert.facts().key) {
        (KeySignMechanism::RsaPkcs, KeyKind::Rsa { .. }) => SignMechanism::RsaPkcs1,
        (KeySignMechanism::Ecdsa, k) if k.is_ec() => SignMechanism::Ecdsa,
        (KeySignMechanism::RsaPss { hash, salt_len }, KeyKind::Rsa { bits }) => {
            let (h, hash) = oaep(hash);
            // RFC 8017 section 9.1.1: emLen >= hLen + sLen + 2. Checked here, before any
            // backend sizes a salt buffer from the caller's number (a key file's would
            // allocate up to 4 GiB first and fail after).
            let em_len = bits.saturating_sub(1).div_ceil(8);
            let salt_len = salt_len as usize;
            if h.output_len() + salt_len + 2 > em_len {
                return Err(OpError::BadRequest(format!(
                    "a salt of {salt_len} bytes does not fit a {bits}-bit key with {h:?}"
                )));
            }
            SignMechanism::RsaPss { hash, salt_len }
        }
        (m, k) => {
            return Err(OpError::BadRequest(format!(
                "{m:?} does not fit a {} key",
                k.name()
            )));
        }
    };
    let sig = private_op(
        ctx,
        &cert,
        PrivateOp::Sign {
            mechanism,
            data: p.data.0,
        },
    )
    .await?;
    Ok(KeyOpResult {
        data: sig.to_vec().into(),
    })
}

fn oaep(h: KeyOaepHash) -> (Hash, OaepHash) {
    match h {
        KeyOaepHash::Sha1 => (Hash::Sha1, OaepHash::Sha1),
        KeyOaepHash::Sha256 => (Hash::Sha256, OaepHash::Sha256),
        KeyOaepHash::Sha384 => (Hash::Sha384, OaepHash::Sha384),
        KeyOaepHash::Sha512 => (Hash::Sha512, OaepHash::Sha512),
    }
}

pub async fn key_decrypt(ctx: &OpContext<'_>, p: KeyDecryptParams) -> Result<KeyOpResult, OpError> {
    let cert = key_for(ctx, &p.key, Purpose::Decrypt, "key_decrypt")?;
    let KeyKind::Rsa { bits } = cert.facts().key else {
        return Err(OpError::BadRequest(
            "key_decrypt is RSA decryption; an EC key agrees a key with key_derive".into(),
        ));
    };
    let k = bits.div_ceil(8);
    if p.data.0.len() != k {
        return Err(OpError::BadRequest(format!(
            "the encrypted data is {} bytes; a {bits}-bit key decrypts exactly {k}",
            p.data.0.len()
        )));
    }
    let failed = || OpError::Smime(SmimeError::DecryptFailed);
    let plain = if cert.token.facts.raw_rsa {
        let raw = private_op(
            ctx,
            &cert,
            PrivateOp::Decrypt {
                padding: RsaDecrypt::Raw,
                data: p.data.0,
            },
        )
        .await?;
        let em = unpad::to_modulus_length(&raw, k).ok_or_else(failed)?;
        match p.mechanism {
            KeyDecryptMechanism::RsaPkcs => unpad::pkcs1_v15(&em),
            KeyDecryptMechanism::RsaOaep { hash } => {
                let (h, _) = oaep(hash);
                unpad::oaep_decode(&em, h, h, &[])
            }
        }
        .ok_or_else(failed)?
    } else {
        let padding = match p.mechanism {
            KeyDecryptMechanism::RsaPkcs => RsaDecrypt::Pkcs1,
            KeyDecryptMechanism::RsaOaep { hash } => RsaDecrypt::Oaep(oaep(hash).1),
        };
        match private_op(
            ctx,
            &cert,
            PrivateOp::Decrypt {
                padding,
                data: p.data.0,
            },
        )
        .await
        {
            Ok(plain) => plain,
            // The token layer made every data-dependent failure this one error.
            Err(TokenError::Refused { .. }) => return Err(failed()),
            Err(e) => return Err(e.into()),
        }
    };
    Ok(KeyOpResult {
        data: plain.to_vec().into(),
    })
}

pub async fn key_derive(ctx: &OpContext<'_>, p: KeyDeriveParams) -> Result<KeyOpResult, OpError> {
    let cert = key_for(ctx, &p.key, Purpose::Decrypt, "key_derive")?;
    if !cert.facts().key.is_ec() {
        return Err(OpError::BadRequest(
            "key_derive is ECDH; an RSA key decrypts with key_decrypt".into(),
        ));
    }
    let z = private_op(
        ctx,
        &cert,
        PrivateOp::DeriveEcdh {
            point: p.public_point.0,
        },
    )
    .await?;
    Ok(KeyOpResult {
        data: z.to_vec().into(),
    })
}
