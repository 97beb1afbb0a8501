//! Reading an envelope: a ContentInfo holding EnvelopedData (RFC 5652 section 6) or
//! AuthEnvelopedData (RFC 5083), DER or BER, decoded in one pass; then, once the caller has
//! the content key, the content decrypted, failing one way for every cause (RFC 3218).
//!
//! Owns: [`parse`] and [`Envelope`]. Must not touch: the private-key step that yields the
//! content key (the caller's, with a token), reading each recipient info (`recipients`).

use cms::authenveloped_data::AuthEnvelopedData;
use cms::enveloped_data::EnvelopedData;
use der::asn1::ObjectIdentifier;
use der::{Decode, Sequence};
use zeroize::Zeroizing;

use super::cipher::{
    ContentCipher, cbc_decrypt, content_cipher, gcm_open, random, tdes_cbc_decrypt,
};
use super::encoding::enc;
use super::recipients::{Recipient, read_recipients};
use crate::oids;
use crate::smime::{SmimeError, asn1};

/// ContentInfo with its content decoded in the same pass, so BER (indefinite lengths,
/// constructed strings, as gpgsm and streaming OpenSSL write) is read all the way down.
#[derive(Sequence)]
struct EnvelopedContentInfo {
    content_type: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    content: EnvelopedData,
}

#[derive(Sequence)]
struct AuthEnvelopedContentInfo {
    content_type: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    content: AuthEnvelopedData,
}

/// A parsed envelope, waiting for its content key.
pub struct Envelope {
    pub recipients: Vec<Recipient>,
    cipher: ContentCipher,
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
    /// AuthEnvelopedData: the tag, and the DER of the authenticated attributes (AAD).
    tag: Option<Vec<u8>>,
    aad: Vec<u8>,
    /// Some recipient infos could not be read (listed for errors).
    pub skipped: Vec<String>,
}

/// Reads a DER or BER encoded ContentInfo that holds EnvelopedData or AuthEnvelopedData.
pub fn parse(data: &[u8]) -> Result<Envelope, SmimeError> {
    let reader = || asn1::ber_reader(data).map_err(|e| SmimeError::Malformed(e.to_string()));
    // The content type first, so only the matching structure is decoded (an
    // AuthEnvelopedData tried as EnvelopedData would be read, ciphertext and all, in vain),
    // and a damaged EnvelopedData reports its own error.
    if asn1::content_type(data) == Some(oids::ID_ENVELOPED_DATA) {
        let ci = EnvelopedContentInfo::decode(&mut reader()?)
            .map_err(|e| SmimeError::Malformed(format!("not a CMS EnvelopedData: {e}")))?;
        let ed = ci.content;
        let (cipher, iv) = content_cipher(&ed.encrypted_content.content_enc_alg)?;
        let ciphertext = ed
            .encrypted_content
            .encrypted_content
            .ok_or_else(|| SmimeError::Malformed("the envelope carries no content".into()))?;
        let (recipients, skipped) = read_recipients(&ed.recip_infos)?;
        return Ok(Envelope {
            recipients,
            cipher,
            iv,
            ciphertext: ciphertext.into_bytes().into_vec(),
            tag: None,
            aad: vec![],
            skipped,
        });
    }
    let ci = AuthEnvelopedContentInfo::decode(&mut reader()?).map_err(|e| {
        SmimeError::Malformed(format!("not a CMS EnvelopedData or AuthEnvelopedData: {e}"))
    })?;
    if ci.content_type != oids::ID_CT_AUTH_ENVELOPED_DATA {
        return Err(SmimeError::Malformed(format!(
            "content type {} is not an envelope",
            ci.content_type
        )));
    }
    let aed = ci.content;
    let (cipher, iv) = content_cipher(&aed.auth_encrypted_content_info.content_enc_alg)?;
    if !matches!(cipher, ContentCipher::Gcm { .. }) {
        return Err(SmimeError::Unsupported(
            "AuthEnvelopedData with a cipher that does not authenticate".into(),
        ));
    }
    let ciphertext = aed
        .auth_encrypted_content_info
        .encrypted_content
        .ok_or_else(|| SmimeError::Malformed("the envelope carries no content".into()))?;
    // RFC 5083 2.1: the AAD is the DER of the authenticated attributes as a SET OF.
    let aad = match &aed.auth_attrs {
        Some(a) => enc(a)?,
        None => vec![],
    };
    let (recipients, skipped) = read_recipients(&aed.recip_infos)?;
    Ok(Envelope {
        recipients,
        cipher,
        iv,
        ciphertext: ciphertext.into_bytes().into_vec(),
        tag: Some(aed.mac.into_bytes().into_vec()),
        aad,
        skipped,
    })
}

impl Envelope {
    /// The size of the encrypted content.
    pub fn content_len(&self) -> usize {
        self.ciphertext.len()
    }

    /// AuthEnvelopedData: the content is integrity-protected.
    pub fn is_authenticated(&self) -> bool {
        self.tag.is_some()
    }

    /// The content key length this envelope needs.
    pub fn key_len(&self) -> usize {
        self.cipher.key_len()
    }

    /// Decrypts the content with the content key. Every failure (wrong key length, bad
    /// padding, bad tag) is the same error, so a failed RSA v1.5 unwrap that went on with a
    /// random key cannot be told apart from a wrong key (RFC 3218 section 2.3).
    /// A key of the wrong length (a well-padded RSA v1.5 block holding another length) is
    /// not refused at once: the content is decrypted with a decoy key all the same, so it
    /// takes as long as a failed unwrap (the decoy path) or a wrong key.
    pub fn decrypt(&self, cek: &[u8]) -> Result<Vec<u8>, SmimeError> {
        let decoy;
        let (key, right_len) = if cek.len() == self.key_len() {
            (cek, true)
        } else {
            decoy = self.decoy_key()?;
            (&decoy[..], false)
        };
        let out = match (self.cipher, &self.tag) {
            (ContentCipher::Cbc { .. }, _) => cbc_decrypt(key, &self.iv, &self.ciphertext),
            (ContentCipher::TdesCbc, _) => tdes_cbc_decrypt(key, &self.iv, &self.ciphertext),
            (ContentCipher::Gcm { .. }, Some(tag)) => {
                gcm_open(key, &self.iv, &self.aad, &self.ciphertext, tag)
            }
            (ContentCipher::Gcm { .. }, None) => None,
        };
        out.filter(|_| right_len).ok_or(SmimeError::DecryptFailed)
    }

    /// A random key of the right length, to go on with when an RSA v1.5 unwrap failed.
    pub fn decoy_key(&self) -> Result<Zeroizing<Vec<u8>>, SmimeError> {
        random(self.key_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_key_of_the_wrong_length_fails_like_a_wrong_key() {
        let env = Envelope {
            cipher: ContentCipher::Cbc { key_len: 32 },
            iv: vec![0; 16],
            ciphertext: vec![0; 32],
            aad: vec![],
            tag: None,
            recipients: vec![],
            skipped: vec![],
        };
        assert!(matches!(
            env.decrypt(&[1u8; 16]),
            Err(SmimeError::DecryptFailed)
        ));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for bad in [
            &b""[..],
            b"\x30\x80\x00\x00",
            b"\x30\x03\x06\x01\x00",
            &[0xa0; 64],
        ] {
            assert!(parse(bad).is_err());
        }
    }
}
