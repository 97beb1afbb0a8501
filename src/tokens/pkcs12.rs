//! Reading PKCS#12 key files (RFC 7292): the integrity MAC, the encrypted safes, the
//! private key as PKCS#8 and the certificates beside it. Decryption only: the agent never
//! writes a key file.
//!
//! Written here, on the der 0.8 line, because no PKCS#12 reader on that line builds beside
//! the path validator: `pkcs12 0.2.0-pre.0` (and `p12-keystore 0.4`, built on it) pins
//! `cms =0.3.0-pre.1` while certval pins `cms =0.3.0-rc.0`, and `p12-keystore 0.2` drags in
//! the whole der 0.7 generation (docs/ARCHITECTURE.md, Dependencies). The structures are
//! `der` derives and `cms` types; PBES2 is the `pkcs5` crate's; what is by hand is the
//! PKCS#12 key derivation (RFC 7292 appendix B), which the MAC and the legacy
//! pbeWithSHAAnd... schemes of older files (3DES keys, RC2 certificates) use and no crate on
//! this line offers. Move to `pkcs12` once it builds beside certval.
//!
//! Bounded against a hostile file: iteration counts, nesting (a safe holds bags, never
//! safes) and sizes (the caller reads at most a few MiB).

use cbc::cipher::{BlockModeDecrypt, InnerIvInit, KeyIvInit, block_padding::Pkcs7};
use der::asn1::{Any, ObjectIdentifier, OctetString};
use der::{Decode, Encode, Sequence};
use hmac::{KeyInit, Mac};
use spki::AlgorithmIdentifierOwned;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::alg::Hash;

/// Most key-derivation iterations accepted (OpenSSL writes 2048 to 600,000).
const MAX_ITERATIONS: u32 = 10_000_000;
/// Most encrypted parts (safes and shrouded keys) one file may make the reader decrypt:
/// each costs up to three key derivations of `MAX_ITERATIONS`. OpenSSL writes two.
const MAX_DECRYPTIONS: usize = 4;

mod oid {
    use der::asn1::ObjectIdentifier as O;
    pub const DATA: O = O::new_unwrap("1.2.840.113549.1.7.1");
    pub const ENCRYPTED_DATA: O = O::new_unwrap("1.2.840.113549.1.7.6");
    pub const KEY_BAG: O = O::new_unwrap("1.2.840.113549.1.12.10.1.1");
    pub const SHROUDED_KEY_BAG: O = O::new_unwrap("1.2.840.113549.1.12.10.1.2");
    pub const CERT_BAG: O = O::new_unwrap("1.2.840.113549.1.12.10.1.3");
    pub const X509_CERTIFICATE: O = O::new_unwrap("1.2.840.113549.1.9.22.1");
    pub const PBES2: O = O::new_unwrap("1.2.840.113549.1.5.13");
    pub const PBE_SHA1_3DES: O = O::new_unwrap("1.2.840.113549.1.12.1.3");
    pub const PBE_SHA1_RC2_128: O = O::new_unwrap("1.2.840.113549.1.12.1.5");
    pub const PBE_SHA1_RC2_40: O = O::new_unwrap("1.2.840.113549.1.12.1.6");
}

/// What a key file holds.
pub(crate) struct Contents {
    /// The first private key, as PKCS#8 DER.
    pub key: Option<Zeroizing<Vec<u8>>>,
    /// Every X.509 certificate, DER, in file order.
    pub certs: Vec<Vec<u8>>,
}

/// Why a file could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Error {
    /// The MAC or a decryption failed: the passphrase is wrong (or the file was altered).
    Passphrase,
    /// Not PKCS#12, or something in it this reader does not do; says what.
    Unusable(String),
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::Unusable(format!("not a readable PKCS#12 file: {what}"))
}

#[derive(Sequence)]
struct Pfx {
    version: u8,
    auth_safe: cms::content_info::ContentInfo,
    mac_data: Option<MacData>,
}

#[derive(Sequence)]
struct MacData {
    mac: DigestInfo,
    mac_salt: OctetString,
    #[asn1(default = "one")]
    iterations: u32,
}

fn one() -> u32 {
    1
}

#[derive(Sequence)]
struct DigestInfo {
    algorithm: AlgorithmIdentifierOwned,
    digest: OctetString,
}

#[derive(Sequence)]
struct SafeBag {
    bag_id: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    bag_value: Any,
    bag_attributes: Option<Any>,
}

#[derive(Sequence)]
struct CertBag {
    cert_id: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    cert_value: OctetString,
}

#[derive(Sequence)]
struct EncryptedPrivateKeyInfo {
    algorithm: AlgorithmIdentifierOwned,
    encrypted_data: OctetString,
}

#[derive(Sequence)]
struct PbeParams {
    salt: OctetString,
    iterations: u32,
}

fn reparse<T: for<'a> Decode<'a>>(any: &Any, what: &str) -> Result<T, Error> {
    let der = any.to_der().map_err(|e| bad(format!("{what}: {e}")))?;
    T::from_der(&der).map_err(|e| bad(format!("{what}: {e}")))
}

/// Output and block length of `hash`, bytes (u and v of RFC 7292 B.2).
fn sizes(hash: Hash) -> (usize, usize) {
    let block = match hash {
        Hash::Sha1 | Hash::Sha256 => 64,
        Hash::Sha384 | Hash::Sha512 => 128,
    };
    (hash.output_len(), block)
}

fn hmac(hash: Hash, key: &[u8], data: &[u8]) -> Vec<u8> {
    fn run<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC takes a key of any length.
        let Ok(mut m) = <M as KeyInit>::new_from_slice(key) else {
            return vec![];
        };
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }
    match hash {
        Hash::Sha1 => run::<hmac::Hmac<sha1::Sha1>>(key, data),
        Hash::Sha256 => run::<hmac::Hmac<sha2::Sha256>>(key, data),
        Hash::Sha384 => run::<hmac::Hmac<sha2::Sha384>>(key, data),
        Hash::Sha512 => run::<hmac::Hmac<sha2::Sha512>>(key, data),
    }
}

/// The PKCS#12 key derivation, RFC 7292 appendix B.2: `id` 1 for a key, 2 for an IV, 3
/// for a MAC key; `password` as a BMPString with its two-byte terminator.
fn kdf(
    hash: Hash,
    id: u8,
    password: &[u8],
    salt: &[u8],
    rounds: u32,
    n: usize,
) -> Zeroizing<Vec<u8>> {
    let (u, v) = sizes(hash);
    let fill = |src: &[u8]| -> Vec<u8> {
        if src.is_empty() {
            return vec![];
        }
        let len = v * src.len().div_ceil(v);
        src.iter().copied().cycle().take(len).collect()
    };
    let mut i = Zeroizing::new(fill(salt));
    i.extend_from_slice(&Zeroizing::new(fill(password)));
    let mut d = Zeroizing::new(vec![id; v]);
    let mut out = Zeroizing::new(Vec::with_capacity(n + u));
    while out.len() < n {
        d.truncate(v);
        d.extend_from_slice(&i);
        let mut a = Zeroizing::new(hash.digest(&d));
        for _ in 1..rounds {
            a = Zeroizing::new(hash.digest(&a));
        }
        out.extend_from_slice(&a);
        if out.len() >= n {
            break;
        }
        // I_j = (I_j + B + 1) mod 2^(8v), B = A repeated to v bytes.
        let b: Zeroizing<Vec<u8>> = Zeroizing::new(a.iter().copied().cycle().take(v).collect());
        for block in i.chunks_mut(v) {
            let mut carry = 1u16;
            for k in (0..v).rev() {
                let sum = u16::from(block[k]) + u16::from(b[k]) + carry;
                block[k] = sum as u8;
                carry = sum >> 8;
            }
        }
    }
    out.truncate(n);
    out
}

/// The password as the PKCS#12 key derivation takes it: UTF-16BE with a 0x0000 end.
fn bmp(password: &str) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(password.len() * 2 + 2));
    for unit in password.encode_utf16().chain([0]) {
        out.extend_from_slice(&unit.to_be_bytes());
    }
    out
}

/// Decrypts one encrypted safe or key.
fn decrypt(
    alg: &AlgorithmIdentifierOwned,
    data: &[u8],
    password: &str,
    bmp_password: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let params = alg
        .parameters
        .as_ref()
        .ok_or_else(|| bad("encryption without parameters"))?;
    match alg.oid {
        oid::PBES2 => {
            let der = alg.to_der().map_err(bad)?;
            let scheme = pkcs5::EncryptionScheme::from_der(&der).map_err(bad)?;
            let pkcs5::EncryptionScheme::Pbes2(p) = &scheme else {
                return Err(bad("PBES1 encryption"));
            };
            match &p.kdf {
                pkcs5::pbes2::Kdf::Pbkdf2(k) if k.iteration_count <= MAX_ITERATIONS => {}
                pkcs5::pbes2::Kdf::Pbkdf2(k) => {
                    return Err(bad(format!("{} PBKDF2 iterations", k.iteration_count)));
                }
                _ => {
                    return Err(Error::Unusable(
                        "PBES2 with a key derivation other than PBKDF2 is not read".into(),
                    ));
                }
            }
            // PBES2 takes the passphrase's UTF-8 bytes, as OpenSSL writes it.
            scheme
                .decrypt(password.as_bytes(), data)
                .map(Zeroizing::new)
                .map_err(|_| Error::Passphrase)
        }
        oid::PBE_SHA1_3DES | oid::PBE_SHA1_RC2_128 | oid::PBE_SHA1_RC2_40 => {
            let p: PbeParams = reparse(params, "PBE parameters")?;
            if p.iterations == 0 || p.iterations > MAX_ITERATIONS {
                return Err(bad(format!("{} PBE iterations", p.iterations)));
            }
            let salt = p.salt.as_bytes();
            let key_len = match alg.oid {
                oid::PBE_SHA1_3DES => 24,
                oid::PBE_SHA1_RC2_128 => 16,
                _ => 5,
            };
            let key = kdf(Hash::Sha1, 1, bmp_password, salt, p.iterations, key_len);
            let iv = kdf(Hash::Sha1, 2, bmp_password, salt, p.iterations, 8);
            let r = match alg.oid {
                oid::PBE_SHA1_3DES => cbc::Decryptor::<des::TdesEde3>::new_from_slices(&key, &iv)
                    .map_err(bad)?
                    .decrypt_padded_vec::<Pkcs7>(data),
                _ => {
                    let cipher = rc2::Rc2::new_with_eff_key_len(&key, key_len * 8);
                    cbc::Decryptor::<rc2::Rc2>::inner_iv_slice_init(cipher, &iv)
                        .map_err(bad)?
                        .decrypt_padded_vec::<Pkcs7>(data)
                }
            };
            r.map(Zeroizing::new).map_err(|_| Error::Passphrase)
        }
        other => Err(Error::Unusable(format!(
            "the PKCS#12 file is encrypted with {other}, which is not read"
        ))),
    }
}

/// Checks the integrity MAC; returns the BMP form of the passphrase that matched (an
/// empty passphrase is written both as 0x0000 and as nothing, depending on the program).
fn check_mac(mac: &MacData, content: &[u8], password: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
    let hash = Hash::from_oid(&mac.mac.algorithm.oid)
        .ok_or_else(|| Error::Unusable(format!("MAC with {}", mac.mac.algorithm.oid)))?;
    if mac.iterations == 0 || mac.iterations > MAX_ITERATIONS {
        return Err(bad(format!("{} MAC iterations", mac.iterations)));
    }
    let mut candidates = vec![bmp(password)];
    if password.is_empty() {
        candidates.push(Zeroizing::new(vec![]));
    }
    let (u, _) = sizes(hash);
    for candidate in candidates {
        let key = kdf(
            hash,
            3,
            &candidate,
            mac.mac_salt.as_bytes(),
            mac.iterations,
            u,
        );
        let tag = hmac(hash, &key, content);
        if bool::from(tag.ct_eq(mac.mac.digest.as_bytes())) {
            return Ok(candidate);
        }
    }
    Err(Error::Passphrase)
}

/// Reads a PKCS#12 file with `password`.
pub(crate) fn read(data: &[u8], password: &str) -> Result<Contents, Error> {
    let pfx = Pfx::from_der(data).map_err(bad)?;
    if pfx.version != 3 {
        return Err(bad(format!("version {}", pfx.version)));
    }
    if pfx.auth_safe.content_type != oid::DATA {
        return Err(Error::Unusable(
            "a PKCS#12 file protected by a public key is not read".into(),
        ));
    }
    let content: OctetString = reparse(&pfx.auth_safe.content, "authSafe")?;
    let (bmp_password, mac_verified) = match &pfx.mac_data {
        Some(mac) => (check_mac(mac, content.as_bytes(), password)?, true),
        None => (bmp(password), false),
    };
    // What decrypted bytes fail to be: with a verified MAC the passphrase was right and the
    // file is damaged; without a MAC nothing tells a wrong passphrase from damage, and no
    // detail is given, as a detail that depends on decrypted bytes would be a padding oracle.
    let after_decrypt = |what: &str| {
        if mac_verified {
            Error::Unusable(format!("the PKCS#12 file is damaged ({what})"))
        } else {
            Error::Passphrase
        }
    };
    let mut decryptions = 0;
    let mut decrypt_once = |alg: &AlgorithmIdentifierOwned, ct: &[u8], what: &str| {
        decryptions += 1;
        if decryptions > MAX_DECRYPTIONS {
            return Err(bad(format!("more than {MAX_DECRYPTIONS} encrypted parts")));
        }
        decrypt(alg, ct, password, &bmp_password).map_err(|e| match e {
            Error::Passphrase => after_decrypt(what),
            other => other,
        })
    };
    let safes = Vec::<cms::content_info::ContentInfo>::from_der(content.as_bytes()).map_err(bad)?;
    let mut out = Contents {
        key: None,
        certs: vec![],
    };
    for safe in &safes {
        let (bags, decrypted): (Zeroizing<Vec<u8>>, bool) = match safe.content_type {
            oid::DATA => (
                Zeroizing::new(
                    reparse::<OctetString>(&safe.content, "safe")?
                        .into_bytes()
                        .into_vec(),
                ),
                false,
            ),
            oid::ENCRYPTED_DATA => {
                let ed: cms::encrypted_data::EncryptedData =
                    reparse(&safe.content, "encrypted safe")?;
                let info = &ed.enc_content_info;
                let Some(ct) = &info.encrypted_content else {
                    continue;
                };
                (
                    decrypt_once(&info.content_enc_alg, ct.as_bytes(), "an encrypted safe")?,
                    true,
                )
            }
            other => {
                return Err(Error::Unusable(format!(
                    "a safe of type {other} (public-key encrypted?) is not read"
                )));
            }
        };
        // A parse error in bytes that came out of a decryption is classified like it.
        let unreadable = |e: Error, what: &str| if decrypted { after_decrypt(what) } else { e };
        let bag_list = Vec::<SafeBag>::from_der(&bags)
            .map_err(|e| unreadable(bad(e), "its bags do not parse"))?;
        for bag in bag_list {
            match bag.bag_id {
                oid::KEY_BAG if out.key.is_none() => {
                    let key = Zeroizing::new(bag.bag_value.to_der().map_err(bad)?);
                    if !is_private_key_info(&key) {
                        return Err(unreadable(bad("a key bag is not PKCS#8"), "a key"));
                    }
                    out.key = Some(key);
                }
                oid::SHROUDED_KEY_BAG if out.key.is_none() => {
                    let epki: EncryptedPrivateKeyInfo = reparse(&bag.bag_value, "shrouded key")
                        .map_err(|e| unreadable(e, "a shrouded key"))?;
                    let key = decrypt_once(
                        &epki.algorithm,
                        epki.encrypted_data.as_bytes(),
                        "a shrouded key",
                    )?;
                    if !is_private_key_info(&key) {
                        return Err(after_decrypt("the decrypted key is not PKCS#8"));
                    }
                    out.key = Some(key);
                }
                oid::CERT_BAG => {
                    let cb: CertBag = reparse(&bag.bag_value, "certificate bag")
                        .map_err(|e| unreadable(e, "a certificate bag"))?;
                    if cb.cert_id == oid::X509_CERTIFICATE {
                        out.certs.push(cb.cert_value.into_bytes().into_vec());
                    }
                }
                // CRLs, secrets, further keys: not the agent's business.
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Whether `der` is a PKCS#8 PrivateKeyInfo (what a key bag holds).
fn is_private_key_info(der: &[u8]) -> bool {
    rsa::pkcs8::PrivateKeyInfoRef::from_der(der).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_derivation_gives_the_published_values() {
        // Test vectors from BouncyCastle's PKCS12 KDF tests (SHA-1, password "smeg").
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let pw = bmp("smeg");
        let salt = hex("0A58CF64530D823F");
        assert_eq!(
            kdf(Hash::Sha1, 1, &pw, &salt, 1, 24).as_slice(),
            hex("8AAAE6297B6CB04642AB5B077851284EB7128F1A2A7FBCA3").as_slice()
        );
        assert_eq!(
            kdf(Hash::Sha1, 2, &pw, &salt, 1, 8).as_slice(),
            hex("79993DFE048D3B76").as_slice()
        );
        let salt = hex("642B99AB44FB4B1F");
        assert_eq!(
            kdf(Hash::Sha1, 1, &pw, &salt, 1, 24).as_slice(),
            hex("F3A95FEC48D7711E985CFE67908C5AB79FA3D7C5CAA5D966").as_slice()
        );
        let pw = bmp("queeg");
        let salt = hex("05DEC959ACFF72F7");
        assert_eq!(
            kdf(Hash::Sha1, 1, &pw, &salt, 1000, 24).as_slice(),
            hex("ED2034E36328830FF09DF1E1A07DD357185DAC0D4F9EB3D4").as_slice()
        );
        assert_eq!(
            kdf(Hash::Sha1, 2, &pw, &salt, 1000, 8).as_slice(),
            hex("11DEDAD7758D4860").as_slice()
        );
    }

    #[test]
    fn passwords_go_into_the_kdf_as_terminated_utf16be() {
        assert_eq!(bmp("").as_slice(), [0, 0]);
        assert_eq!(bmp("Ab").as_slice(), [0, b'A', 0, b'b', 0, 0]);
        assert_eq!(bmp("é").as_slice(), [0, 0xe9, 0, 0]);
    }

    #[test]
    fn garbage_is_unusable_not_a_wrong_passphrase_and_never_a_panic() {
        for data in [
            &b""[..],
            b"\x30\x03\x02\x01\x03",
            b"\x30\x80\x00\x00",
            &[0x30; 64],
        ] {
            assert!(
                matches!(read(data, "x"), Err(Error::Unusable(_))),
                "{data:?}"
            );
        }
    }
}
