//! What a certificate says, read once: addresses, key, usages, validity.
//!
//! Owns: turning DER into [`CertFacts`], the facts the selection rules and the protocol
//! need. A certificate that does not parse, or whose extensions are malformed, is an error
//! here, so nothing later has to guess. Does not judge trust (that is `trust/`).

use std::time::{SystemTime, UNIX_EPOCH};

use der::asn1::Ia5StringRef;
use der::{Decode, Encode};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage, SubjectAltName};

use crate::oids;

pub mod address;
pub mod profile;
pub mod usage;

/// The public key of a certificate, as far as the agent cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { bits: usize },
    EcP256,
    EcP384,
    EcP521,
}

impl KeyKind {
    pub fn name(self) -> String {
        match self {
            KeyKind::Rsa { bits } => format!("rsa-{bits}"),
            KeyKind::EcP256 => "ec-p256".into(),
            KeyKind::EcP384 => "ec-p384".into(),
            KeyKind::EcP521 => "ec-p521".into(),
        }
    }
    pub fn is_ec(self) -> bool {
        !matches!(self, KeyKind::Rsa { .. })
    }
}

/// keyUsage bits the selection rules look at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// The extension is present (absent means every usage is allowed).
    pub present: bool,
    pub digital_signature: bool,
    pub non_repudiation: bool,
    pub key_encipherment: bool,
    pub data_encipherment: bool,
    pub key_agreement: bool,
    pub key_cert_sign: bool,
    pub crl_sign: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("not a DER X.509 certificate: {0}")]
    Parse(der::Error),
    #[error("certificate {subject}: malformed {extension} extension: {error}")]
    Extension {
        subject: String,
        extension: &'static str,
        error: der::Error,
    },
    #[error("certificate {subject}: unsupported public key ({what})")]
    Key { subject: String, what: String },
}

/// The parsed certificate and the facts read from it.
#[derive(Debug, Clone)]
pub struct CertFacts {
    pub cert: Certificate,
    pub der: Vec<u8>,
    pub subject: String,
    pub issuer: String,
    /// Serial, lowercase hex without leading zero bytes' padding.
    pub serial_hex: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Addresses in the subject: emailAddress attributes, and a CN that is an address.
    pub subject_emails: Vec<String>,
    /// subjectAltName rfc822Name entries.
    pub san_emails: Vec<String>,
    pub key: KeyKind,
    pub usage: Usage,
    /// extendedKeyUsage OIDs; `None` when the extension is absent.
    pub ext_key_usage: Option<Vec<der::asn1::ObjectIdentifier>>,
    /// subjectKeyIdentifier, when present.
    pub subject_key_id: Option<Vec<u8>>,
    pub sha256: [u8; 32],
}

impl CertFacts {
    pub fn from_der(der_bytes: &[u8]) -> Result<CertFacts, CertError> {
        let cert = Certificate::from_der(der_bytes).map_err(CertError::Parse)?;
        let tbs = cert.tbs_certificate();
        let subject = tbs.subject().to_string();
        let ext_err = |extension, error| CertError::Extension {
            subject: subject.clone(),
            extension,
            error,
        };

        let mut subject_emails = vec![];
        for atv in tbs.subject().iter() {
            if atv.oid == oids::EMAIL_ADDRESS {
                if let Ok(s) = Ia5StringRef::try_from(&atv.value) {
                    subject_emails.push(s.as_str().to_owned());
                }
            } else if atv.oid == oids::COMMON_NAME
                && let Some(cn) = any_string(&atv.value)
                && address::check_address(&cn).is_ok()
            {
                subject_emails.push(cn);
            }
        }

        let mut san_emails = vec![];
        if let Some((_, san)) = tbs
            .get_extension::<SubjectAltName>()
            .map_err(|e| ext_err("subjectAltName", e))?
        {
            for name in san.0 {
                if let GeneralName::Rfc822Name(s) = name {
                    san_emails.push(s.to_string());
                }
            }
        }

        let usage = match tbs
            .get_extension::<KeyUsage>()
            .map_err(|e| ext_err("keyUsage", e))?
        {
            None => Usage::default(),
            Some((_, ku)) => Usage {
                present: true,
                digital_signature: ku.digital_signature(),
                non_repudiation: ku.non_repudiation(),
                key_encipherment: ku.key_encipherment(),
                data_encipherment: ku.data_encipherment(),
                key_agreement: ku.key_agreement(),
                key_cert_sign: ku.key_cert_sign(),
                crl_sign: ku.crl_sign(),
            },
        };

        let ext_key_usage = tbs
            .get_extension::<ExtendedKeyUsage>()
            .map_err(|e| ext_err("extendedKeyUsage", e))?
            .map(|(_, eku)| eku.0);

        let subject_key_id = tbs
            .get_extension::<x509_cert::ext::pkix::SubjectKeyIdentifier>()
            .map_err(|e| ext_err("subjectKeyIdentifier", e))?
            .map(|(_, ski)| ski.0.as_bytes().to_vec());

        let key = key_kind(&cert).map_err(|what| CertError::Key {
            subject: subject.clone(),
            what,
        })?;

        let validity = tbs.validity();
        Ok(CertFacts {
            issuer: tbs.issuer().to_string(),
            serial_hex: hex(tbs.serial_number().as_bytes()),
            not_before: validity.not_before.to_system_time(),
            not_after: validity.not_after.to_system_time(),
            subject_emails,
            san_emails,
            key,
            usage,
            ext_key_usage,
            subject_key_id,
            sha256: Sha256::digest(der_bytes).into(),
            der: der_bytes.to_vec(),
            subject,
            cert,
        })
    }

    /// Inside notBefore..=notAfter at `now`.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// The extended key usage allows S/MIME (absent, emailProtection, or anyExtendedKeyUsage).
    pub fn eku_allows_email(&self) -> bool {
        match &self.ext_key_usage {
            None => true,
            Some(list) => list
                .iter()
                .any(|o| *o == oids::ID_KP_EMAIL_PROTECTION || *o == oids::ANY_EXTENDED_KEY_USAGE),
        }
    }

    /// The key usage allows signing (digitalSignature or nonRepudiation; absent = any).
    pub fn can_sign(&self) -> bool {
        !self.usage.present || self.usage.digital_signature || self.usage.non_repudiation
    }

    /// keyUsage names, RFC 5280 spelling.
    pub fn key_usage_names(&self) -> Vec<String> {
        let u = &self.usage;
        [
            (u.digital_signature, "digitalSignature"),
            (u.non_repudiation, "nonRepudiation"),
            (u.key_encipherment, "keyEncipherment"),
            (u.data_encipherment, "dataEncipherment"),
            (u.key_agreement, "keyAgreement"),
            (u.key_cert_sign, "keyCertSign"),
            (u.crl_sign, "cRLSign"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| (*n).to_owned())
        .collect()
    }

    pub fn ext_key_usage_names(&self) -> Vec<String> {
        let name = |o: &der::asn1::ObjectIdentifier| -> String {
            let known = [
                (oids::ID_KP_EMAIL_PROTECTION, "emailProtection"),
                (oids::ID_KP_SERVER_AUTH, "serverAuth"),
                (oids::ID_KP_CLIENT_AUTH, "clientAuth"),
                (oids::ID_KP_CODE_SIGNING, "codeSigning"),
                (oids::ID_KP_TIME_STAMPING, "timeStamping"),
                (oids::ID_KP_OCSP_SIGNING, "OCSPSigning"),
                (oids::ANY_EXTENDED_KEY_USAGE, "anyExtendedKeyUsage"),
            ];
            known
                .iter()
                .find(|(k, _)| k == o)
                .map(|(_, n)| (*n).to_owned())
                .unwrap_or_else(|| o.to_string())
        };
        self.ext_key_usage.iter().flatten().map(name).collect()
    }

    pub fn all_emails(&self) -> impl Iterator<Item = &str> {
        self.subject_emails
            .iter()
            .chain(&self.san_emails)
            .map(String::as_str)
    }
}

/// Reads a DirectoryString-like attribute value (UTF8String, PrintableString, IA5String).
pub(super) fn any_string(value: &der::Any) -> Option<String> {
    use der::{Tag, Tagged};
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::TeletexString => {
            std::str::from_utf8(value.value()).ok().map(str::to_owned)
        }
        _ => None,
    }
}

fn key_kind(cert: &Certificate) -> Result<KeyKind, String> {
    let spki = cert.tbs_certificate().subject_public_key_info();
    if spki.algorithm.oid == oids::RSA_ENCRYPTION {
        use rsa::pkcs8::DecodePublicKey;
        use rsa::traits::PublicKeyParts;
        let der = spki
            .to_der()
            .map_err(|e| format!("cannot encode the key: {e}"))?;
        let key = rsa::RsaPublicKey::from_public_key_der(&der)
            .map_err(|e| format!("malformed RSA public key: {e}"))?;
        let bits = key.n().bits() as usize;
        return Ok(KeyKind::Rsa { bits });
    }
    if spki.algorithm.oid == oids::ID_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok())
            .ok_or("EC key without a named curve")?;
        return match curve {
            c if c == oids::SECP256R1 => Ok(KeyKind::EcP256),
            c if c == oids::SECP384R1 => Ok(KeyKind::EcP384),
            c if c == oids::SECP521R1 => Ok(KeyKind::EcP521),
            c => Err(format!("EC curve {c}")),
        };
    }
    Err(format!("algorithm {}", spki.algorithm.oid))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// RFC 3339 UTC, from a certificate time.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    der::DateTime::from_unix_duration(std::time::Duration::from_secs(secs))
        .map(|d| d.to_string())
        .unwrap_or_else(|_| format!("@{secs}"))
}

/// Whether two names are the same name: equal encodings, or equal under RFC 5280's
/// comparison rules (another string type or letter case), as peers encode names
/// differently.
pub fn same_name(a: &x509_cert::name::Name, b: &x509_cert::name::Name) -> bool {
    a == b || certval::compare_names(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0x00, 0x0a, 0xff]), "000aff");
    }

    #[test]
    fn garbage_is_a_parse_error_not_a_panic() {
        for bad in [&b""[..], b"\x30", b"\x30\x03\x02\x01\x01", &[0xff; 100]] {
            assert!(CertFacts::from_der(bad).is_err());
        }
    }

    #[test]
    fn rfc3339_formats_utc() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
    }
}
