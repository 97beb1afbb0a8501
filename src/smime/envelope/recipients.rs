//! Reading an envelope's recipient infos (RFC 5652 section 6.2): who each is addressed to
//! (issuer and serial, or subject key identifier) and the private-key step it needs (RSA
//! PKCS#1 v1.5, RSA OAEP with its parameters, or ECDH with the originator's ephemeral key);
//! the kinds the agent cannot use are listed, not fatal; an issuer name that is not made of
//! strings is (OpenSSL refuses the envelope).
//!
//! Owns: [`Recipient`], [`RecipientId`], [`KeyUnwrap`] and the bound on recipient infos.
//! Must not touch: doing the private-key step (a token's), the content (`read`).

use cms::enveloped_data::{
    KeyAgreeRecipientIdentifier, KeyAgreeRecipientInfo, KeyTransRecipientInfo,
    OriginatorIdentifierOrKey, RecipientIdentifier, RecipientInfo, RecipientInfos,
};
use der::asn1::OctetString;
use spki::AlgorithmIdentifierOwned;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;

use super::ecdh::EcdhParams;
use super::encoding::OaepParams;
use crate::alg::Hash;
use crate::certs::CertFacts;
use crate::oids;
use crate::smime::{SmimeError, asn1};

/// Most recipient infos read from one envelope.
pub const MAX_RECIPIENTS: usize = 1000;

/// Who a recipient info is addressed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientId {
    IssuerSerial { issuer: Name, serial: SerialNumber },
    SubjectKeyId(Vec<u8>),
}

impl RecipientId {
    /// Whether `cert` is the one this recipient info names.
    pub fn matches(&self, cert: &CertFacts) -> bool {
        let tbs = cert.cert.tbs_certificate();
        match self {
            RecipientId::IssuerSerial { issuer, serial } => {
                tbs.serial_number() == serial && crate::certs::same_name(tbs.issuer(), issuer)
            }
            RecipientId::SubjectKeyId(id) => cert.subject_key_id.as_deref() == Some(id.as_slice()),
        }
    }
}

/// The private-key step a recipient info needs.
#[derive(Debug, Clone)]
pub enum KeyUnwrap {
    /// RSA PKCS#1 v1.5 decryption of `encrypted_key`.
    RsaPkcs1 { encrypted_key: Vec<u8> },
    /// RSA OAEP decryption.
    RsaOaep {
        encrypted_key: Vec<u8>,
        hash: Hash,
        mgf_hash: Hash,
        label: Vec<u8>,
    },
    /// ECDH with the originator's ephemeral point, then
    /// [`finish_ecdh`](crate::smime::envelope::finish_ecdh).
    Ecdh(EcdhParams),
}

/// One recipient of an envelope.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub id: RecipientId,
    pub unwrap: KeyUnwrap,
}

pub(super) fn read_recipients(
    infos: &RecipientInfos,
) -> Result<(Vec<Recipient>, Vec<String>), SmimeError> {
    if infos.0.len() > MAX_RECIPIENTS {
        return Err(SmimeError::Limit(format!(
            "the envelope has {} recipient infos; at most {MAX_RECIPIENTS} are read",
            infos.0.len()
        )));
    }
    let mut out = vec![];
    let mut skipped = vec![];
    for (n, info) in infos.0.iter().enumerate() {
        strict_names(info).map_err(|e| {
            SmimeError::Malformed(format!(
                "recipient info {}: the issuer it names: {e}",
                n + 1
            ))
        })?;
        match info {
            RecipientInfo::Ktri(k) => match ktri_unwrap(k) {
                Ok(u) => out.push(Recipient {
                    id: match &k.rid {
                        RecipientIdentifier::IssuerAndSerialNumber(i) => {
                            RecipientId::IssuerSerial {
                                issuer: i.issuer.clone(),
                                serial: i.serial_number.clone(),
                            }
                        }
                        RecipientIdentifier::SubjectKeyIdentifier(s) => {
                            RecipientId::SubjectKeyId(s.0.as_bytes().to_vec())
                        }
                    },
                    unwrap: u,
                }),
                Err(e) => skipped.push(e),
            },
            RecipientInfo::Kari(k) => match kari_params(k) {
                Ok((point, kdf, wrap)) => {
                    for rek in &k.recipient_enc_keys {
                        let id = match &rek.rid {
                            KeyAgreeRecipientIdentifier::IssuerAndSerialNumber(i) => {
                                RecipientId::IssuerSerial {
                                    issuer: i.issuer.clone(),
                                    serial: i.serial_number.clone(),
                                }
                            }
                            KeyAgreeRecipientIdentifier::RKeyId(r) => RecipientId::SubjectKeyId(
                                r.subject_key_identifier.0.as_bytes().to_vec(),
                            ),
                        };
                        out.push(Recipient {
                            id,
                            unwrap: KeyUnwrap::Ecdh(EcdhParams {
                                originator_point: point.clone(),
                                kdf,
                                wrap: wrap.clone(),
                                ukm: k.ukm.as_ref().map(|u| u.as_bytes().to_vec()),
                                wrapped_key: rek.enc_key.as_bytes().to_vec(),
                            }),
                        });
                    }
                }
                Err(e) => skipped.push(e),
            },
            RecipientInfo::Kekri(_) => skipped.push("a KEK recipient (shared key)".into()),
            RecipientInfo::Pwri(_) => skipped.push("a password recipient".into()),
            RecipientInfo::Ori(_) => skipped.push("an other-type recipient".into()),
        }
    }
    Ok((out, skipped))
}

/// The issuer names a recipient info holds must be made of strings, as OpenSSL reads them
/// (`asn1::strict_name`): the decoder takes any value there.
fn strict_names(info: &RecipientInfo) -> Result<(), String> {
    match info {
        RecipientInfo::Ktri(KeyTransRecipientInfo {
            rid: RecipientIdentifier::IssuerAndSerialNumber(i),
            ..
        }) => asn1::strict_name(&i.issuer),
        RecipientInfo::Kari(k) => k
            .recipient_enc_keys
            .iter()
            .try_for_each(|rek| match &rek.rid {
                KeyAgreeRecipientIdentifier::IssuerAndSerialNumber(i) => {
                    asn1::strict_name(&i.issuer)
                }
                KeyAgreeRecipientIdentifier::RKeyId(_) => Ok(()),
            }),
        _ => Ok(()),
    }
}

fn ktri_unwrap(k: &KeyTransRecipientInfo) -> Result<KeyUnwrap, String> {
    let encrypted_key = k.enc_key.as_bytes().to_vec();
    let alg = &k.key_enc_alg;
    if alg.oid == oids::RSA_ENCRYPTION {
        return Ok(KeyUnwrap::RsaPkcs1 { encrypted_key });
    }
    if alg.oid != oids::ID_RSAES_OAEP {
        return Err(format!("key transport algorithm {}", alg.oid));
    }
    let params = match &alg.parameters {
        Some(p) => p
            .decode_as::<OaepParams>()
            .map_err(|e| format!("OAEP parameters: {e}"))?,
        None => OaepParams::default(),
    };
    let hash = match &params.hash {
        Some(h) => Hash::from_oid(&h.oid).ok_or_else(|| format!("OAEP hash {}", h.oid))?,
        None => Hash::Sha1,
    };
    let mgf_hash = match &params.mgf {
        Some(m) if m.oid == oids::ID_MGF1 => {
            let inner = m
                .parameters
                .as_ref()
                .ok_or("MGF1 without a hash")?
                .decode_as::<AlgorithmIdentifierOwned>()
                .map_err(|e| format!("MGF1 hash: {e}"))?;
            Hash::from_oid(&inner.oid).ok_or_else(|| format!("MGF1 hash {}", inner.oid))?
        }
        Some(m) => return Err(format!("mask generation {}", m.oid)),
        None => Hash::Sha1,
    };
    let label = match &params.p_source {
        Some(p) if p.oid == oids::ID_P_SPECIFIED => match &p.parameters {
            Some(l) => l
                .decode_as::<OctetString>()
                .map_err(|e| format!("OAEP label: {e}"))?
                .into_bytes()
                .into_vec(),
            None => vec![],
        },
        Some(p) => return Err(format!("OAEP label source {}", p.oid)),
        None => vec![],
    };
    Ok(KeyUnwrap::RsaOaep {
        encrypted_key,
        hash,
        mgf_hash,
        label,
    })
}

fn kari_params(
    k: &KeyAgreeRecipientInfo,
) -> Result<(Vec<u8>, Hash, AlgorithmIdentifierOwned), String> {
    let OriginatorIdentifierOrKey::OriginatorKey(key) = &k.originator else {
        return Err("key agreement with a static originator key".into());
    };
    let point = key
        .public_key
        .as_bytes()
        .ok_or("originator key with unused bits")?
        .to_vec();
    let kdf = match k.key_enc_alg.oid {
        o if o == oids::DH_SINGLE_PASS_STD_DH_SHA1KDF => Hash::Sha1,
        o if o == oids::DH_SINGLE_PASS_STD_DH_SHA256KDF => Hash::Sha256,
        o if o == oids::DH_SINGLE_PASS_STD_DH_SHA384KDF => Hash::Sha384,
        o if o == oids::DH_SINGLE_PASS_STD_DH_SHA512KDF => Hash::Sha512,
        o => return Err(format!("key agreement algorithm {o}")),
    };
    let wrap = k
        .key_enc_alg
        .parameters
        .as_ref()
        .ok_or("key agreement without a key wrap algorithm")?
        .decode_as::<AlgorithmIdentifierOwned>()
        .map_err(|e| format!("key wrap algorithm: {e}"))?;
    if ![
        oids::ID_AES128_WRAP,
        oids::ID_AES192_WRAP,
        oids::ID_AES256_WRAP,
    ]
    .contains(&wrap.oid)
    {
        return Err(format!("key wrap algorithm {}", wrap.oid));
    }
    Ok((point, kdf, wrap))
}

/// The integer value of a serial number, for messages.
pub fn serial_hex(serial: &SerialNumber) -> String {
    crate::certs::hex(serial.as_bytes())
}
