//! The objects a token shows: for each of the agent's keys its certificate, its public key
//! and (when the token holds it) its private key, with the attributes NSS and OpenSSL read.
//! Private keys are sensitive and never extractable: no attribute carries key material.
//!
//! Owns turning a `keys` entry into attributes; knows nothing of sessions or the agent.

use cryptoki_sys::*;
use der::{Decode, Encode};
use smime_agent_proto::KeyEntry;
use x509_cert::Certificate;

/// The kind of key behind an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa { modulus_bytes: usize },
    Ec { field_bytes: usize },
}

/// Attribute types and their values, in the byte form PKCS#11 gives them.
pub type Attrs = Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>;

/// One object: its class, the key it belongs to, and its attributes.
#[derive(Debug, Clone)]
pub struct Object {
    pub class: CK_OBJECT_CLASS,
    /// The agent's name of the key (certificate fingerprint); empty for session objects.
    pub key: String,
    pub key_type: Option<KeyType>,
    pub private: bool,
    /// What a private key may do.
    pub sign: bool,
    pub decrypt: bool,
    pub derive: bool,
    pub attrs: Attrs,
}

impl Object {
    pub fn attr(&self, t: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|(a, _)| *a == t)
            .map(|(_, v)| &v[..])
    }

    /// Whether every attribute of `template` has the same value here.
    pub fn matches(&self, template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> bool {
        template
            .iter()
            .all(|(t, v)| self.attr(*t).is_some_and(|mine| mine == &v[..]))
    }
}

pub fn ulong(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

pub fn bool_attr(b: bool) -> Vec<u8> {
    vec![if b { CK_TRUE } else { CK_FALSE }]
}

/// A secret made by C_DeriveKey (ECDH), kept as a session object the caller reads back.
pub fn secret(value: Vec<u8>) -> Object {
    let len = value.len() as CK_ULONG;
    Object {
        class: CKO_SECRET_KEY,
        key: String::new(),
        key_type: None,
        private: false,
        sign: false,
        decrypt: false,
        derive: false,
        attrs: vec![
            (CKA_CLASS, ulong(CKO_SECRET_KEY)),
            (CKA_KEY_TYPE, ulong(CKK_GENERIC_SECRET)),
            (CKA_TOKEN, bool_attr(false)),
            (CKA_PRIVATE, bool_attr(false)),
            (CKA_SENSITIVE, bool_attr(false)),
            (CKA_EXTRACTABLE, bool_attr(true)),
            (CKA_VALUE_LEN, ulong(len)),
            (CKA_VALUE, value),
        ],
    }
}

/// The certificate, public key and private key objects of `entry`; nothing for a
/// certificate the module cannot read (it is skipped, not guessed at).
pub fn of_key(entry: &KeyEntry) -> Vec<Object> {
    let Ok(cert) = Certificate::from_der(&entry.certificate.0) else {
        eprintln!(
            "smime-agent-pkcs11: skipping a certificate that does not parse ({})",
            entry.key
        );
        return vec![];
    };
    let tbs = cert.tbs_certificate();
    let (Ok(subject), Ok(issuer), Ok(serial)) = (
        tbs.subject().to_der(),
        tbs.issuer().to_der(),
        tbs.serial_number().to_der(),
    ) else {
        return vec![];
    };
    let label = common_name(&cert).unwrap_or_else(|| entry.key.chars().take(16).collect());
    let id = entry.key_id.0.clone();
    let spki = tbs.subject_public_key_info();
    let Some((key_type, key_attrs)) = public_key_attrs(spki) else {
        eprintln!("smime-agent-pkcs11: skipping {label}: a key type the module does not show");
        return vec![];
    };
    let common = |class: CK_OBJECT_CLASS, private: bool| {
        vec![
            (CKA_CLASS, ulong(class)),
            (CKA_TOKEN, bool_attr(true)),
            (CKA_PRIVATE, bool_attr(private)),
            (CKA_MODIFIABLE, bool_attr(false)),
            (CKA_LABEL, label.clone().into_bytes()),
            (CKA_ID, id.clone()),
        ]
    };
    let mut out = vec![];

    let mut attrs = common(CKO_CERTIFICATE, false);
    attrs.extend([
        (CKA_CERTIFICATE_TYPE, ulong(CKC_X_509)),
        (CKA_TRUSTED, bool_attr(false)),
        (CKA_CERTIFICATE_CATEGORY, ulong(1)), // token user
        (CKA_SUBJECT, subject.clone()),
        (CKA_ISSUER, issuer),
        (CKA_SERIAL_NUMBER, serial),
        (CKA_VALUE, entry.certificate.0.clone()),
    ]);
    out.push(Object {
        class: CKO_CERTIFICATE,
        key: entry.key.clone(),
        key_type: Some(key_type),
        private: false,
        sign: false,
        decrypt: false,
        derive: false,
        attrs,
    });

    let key_type_attr = match key_type {
        KeyType::Rsa { .. } => CKK_RSA,
        KeyType::Ec { .. } => CKK_EC,
    };
    let mut attrs = common(CKO_PUBLIC_KEY, false);
    attrs.extend([
        (CKA_KEY_TYPE, ulong(key_type_attr)),
        (CKA_SUBJECT, subject.clone()),
        (CKA_VERIFY, bool_attr(entry.sign)),
        (CKA_ENCRYPT, bool_attr(entry.decrypt)),
        (CKA_WRAP, bool_attr(false)),
        (CKA_DERIVE, bool_attr(false)),
        (CKA_LOCAL, bool_attr(false)),
    ]);
    attrs.extend(key_attrs.iter().cloned());
    out.push(Object {
        class: CKO_PUBLIC_KEY,
        key: entry.key.clone(),
        key_type: Some(key_type),
        private: false,
        sign: false,
        decrypt: false,
        derive: false,
        attrs,
    });

    if entry.private_key {
        let mut attrs = common(CKO_PRIVATE_KEY, true);
        attrs.extend([
            (CKA_KEY_TYPE, ulong(key_type_attr)),
            (CKA_SUBJECT, subject),
            (CKA_SENSITIVE, bool_attr(true)),
            (CKA_ALWAYS_SENSITIVE, bool_attr(true)),
            (CKA_EXTRACTABLE, bool_attr(false)),
            (CKA_NEVER_EXTRACTABLE, bool_attr(true)),
            (CKA_SIGN, bool_attr(entry.sign)),
            (CKA_SIGN_RECOVER, bool_attr(false)),
            (CKA_DECRYPT, bool_attr(entry.decrypt)),
            (CKA_UNWRAP, bool_attr(false)),
            (CKA_DERIVE, bool_attr(entry.derive)),
            (CKA_ALWAYS_AUTHENTICATE, bool_attr(false)),
            (CKA_LOCAL, bool_attr(false)),
        ]);
        // The public parts a host program reads from the private key too (NSS: the modulus
        // to size its buffers, the EC parameters to pick a curve).
        attrs.extend(key_attrs);
        out.push(Object {
            class: CKO_PRIVATE_KEY,
            key: entry.key.clone(),
            key_type: Some(key_type),
            private: true,
            sign: entry.sign,
            decrypt: entry.decrypt,
            derive: entry.derive,
            attrs,
        });
    }
    out
}

fn common_name(cert: &Certificate) -> Option<String> {
    let cn = cert.tbs_certificate().subject().common_name().ok()??;
    Some(cn.value().into_owned())
}

/// The key type and the attributes of a public key: modulus and exponent, or the curve
/// (as a named-curve OID) and the point (as an OCTET STRING, as PKCS#11 2.40 says).
fn public_key_attrs(spki: &spki::SubjectPublicKeyInfoOwned) -> Option<(KeyType, Attrs)> {
    let bits = spki.subject_public_key.raw_bytes();
    if spki.algorithm.oid == const_oid::db::rfc5912::RSA_ENCRYPTION {
        let k: rsa::pkcs1::RsaPublicKey<der::asn1::UintRef<'_>> =
            rsa::pkcs1::RsaPublicKey::from_der(bits).ok()?;
        let n = k.modulus.as_bytes().to_vec();
        let e = k.public_exponent.as_bytes().to_vec();
        let len = n.len();
        let attrs = vec![
            (CKA_MODULUS, n),
            (CKA_PUBLIC_EXPONENT, e),
            (CKA_MODULUS_BITS, ulong((len * 8) as CK_ULONG)),
        ];
        return Some((KeyType::Rsa { modulus_bytes: len }, attrs));
    }
    if spki.algorithm.oid == const_oid::db::rfc5912::ID_EC_PUBLIC_KEY {
        let curve: const_oid::ObjectIdentifier =
            spki.algorithm.parameters.as_ref()?.decode_as().ok()?;
        let field_bytes = if curve == const_oid::db::rfc5912::SECP_256_R_1 {
            32
        } else if curve == const_oid::db::rfc5912::SECP_384_R_1 {
            48
        } else if curve == const_oid::db::rfc5912::SECP_521_R_1 {
            66
        } else {
            return None;
        };
        let params = curve.to_der().ok()?;
        let point = der::asn1::OctetStringRef::new(bits).ok()?.to_der().ok()?;
        let attrs = vec![(CKA_EC_PARAMS, params), (CKA_EC_POINT, point)];
        return Some((KeyType::Ec { field_bytes }, attrs));
    }
    None
}
