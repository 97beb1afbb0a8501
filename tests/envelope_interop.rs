//! The envelope format against OpenSSL, below the agent: what we encrypt, `openssl cms
//! -decrypt` reads with the recipient's key; what OpenSSL encrypts, we parse, and finish
//! with the same private-key step a token would do (done here with the PKI's key files).

mod common;

use std::process::Command;

use common::*;
use smime_agent::alg::ContentAlgorithm;
use smime_agent::certs::CertFacts;
use smime_agent::smime::envelope::{self, EncryptTo, KeyUnwrap, RsaPadding};
use smime_agent::tokens::soft::SoftKey;
use smime_agent::tokens::{OaepHash, PrivateOp, RsaDecrypt};

fn cert(name: &str) -> CertFacts {
    CertFacts::from_der(&std::fs::read(pki_file(&format!("{name}.der"))).unwrap()).unwrap()
}

fn soft_key(name: &str) -> SoftKey {
    smime_agent::tokens::soft::load_pkcs8_pem(&pki_file(&format!("{name}.key.pem"))).unwrap()
}

/// Our decryption, with the private step done by a software key.
fn our_decrypt(der: &[u8], name: &str) -> Result<Vec<u8>, String> {
    let env = envelope::parse(der).map_err(|e| e.to_string())?;
    let cek = our_content_key(&env, name)?;
    env.decrypt(&cek).map_err(|e| e.to_string())
}

/// The content key of `env`, unwrapped with the PKI's key `name` (in software).
fn our_content_key(env: &envelope::Envelope, name: &str) -> Result<Vec<u8>, String> {
    let me = cert(name);
    let key = soft_key(name);
    let r = env
        .recipients
        .iter()
        .find(|r| r.id.matches(&me))
        .ok_or("not addressed to this key")?;
    let cek = match &r.unwrap {
        KeyUnwrap::RsaPkcs1 { encrypted_key } => smime_agent::tokens::soft::private_op(
            &key,
            PrivateOp::Decrypt {
                padding: RsaDecrypt::Pkcs1,
                data: encrypted_key.clone(),
            },
        )?,
        KeyUnwrap::RsaOaep {
            encrypted_key,
            hash,
            ..
        } => smime_agent::tokens::soft::private_op(
            &key,
            PrivateOp::Decrypt {
                padding: RsaDecrypt::Oaep(match hash {
                    smime_agent::alg::Hash::Sha1 => OaepHash::Sha1,
                    smime_agent::alg::Hash::Sha256 => OaepHash::Sha256,
                    smime_agent::alg::Hash::Sha384 => OaepHash::Sha384,
                    smime_agent::alg::Hash::Sha512 => OaepHash::Sha512,
                }),
                data: encrypted_key.clone(),
            },
        )?,
        KeyUnwrap::Ecdh(p) => {
            let z = smime_agent::tokens::soft::private_op(
                &key,
                PrivateOp::DeriveEcdh {
                    point: p.originator_point.clone(),
                },
            )?;
            envelope::finish_ecdh(&z, p).ok_or("the wrapped key does not unwrap")?
        }
    };
    Ok(cek.to_vec())
}

const MSG: &[u8] = b"Content-Type: text/plain\r\n\r\nsecret for the recipients\r\n";

#[test]
fn openssl_decrypts_what_we_encrypt_for_every_recipient_kind_and_cipher() {
    let dir = tempdir();
    let cases = [
        ("alice-enc-rsa", RsaPadding::Pkcs1v15),
        ("alice-enc-rsa", RsaPadding::OaepSha256),
        ("alice-enc-ec", RsaPadding::Pkcs1v15),
        ("bob-enc-ec", RsaPadding::Pkcs1v15),
    ];
    for alg in [
        ContentAlgorithm::Aes128Cbc,
        ContentAlgorithm::Aes256Cbc,
        ContentAlgorithm::Aes128Gcm,
        ContentAlgorithm::Aes256Gcm,
    ] {
        for (name, padding) in cases {
            let c = cert(name);
            let other = cert("bob-dual-rsa");
            let der = envelope::encrypt(
                MSG,
                &[
                    EncryptTo {
                        cert: &c,
                        rsa_padding: padding,
                    },
                    EncryptTo {
                        cert: &other,
                        rsa_padding: RsaPadding::Pkcs1v15,
                    },
                ],
                alg,
            )
            .unwrap();
            let plain = openssl_decrypt_der(dir.path(), &der, name)
                .unwrap_or_else(|e| panic!("{alg:?} {name} {padding:?}: {e}"));
            assert_eq!(plain, MSG, "{alg:?} {name}");
            // And the other recipient too.
            assert_eq!(
                openssl_decrypt_der(dir.path(), &der, "bob-dual-rsa").unwrap(),
                MSG
            );
            // And we read our own.
            assert_eq!(our_decrypt(&der, name).unwrap(), MSG);
        }
    }
}

#[test]
fn we_decrypt_what_openssl_encrypts() {
    let dir = tempdir();
    let input = write_file(dir.path(), "msg.txt", MSG);
    let cases: &[(&str, &[&str])] = &[
        ("alice-enc-rsa", &["-aes-256-cbc"]),
        (
            "alice-enc-rsa",
            &["-aes-128-cbc", "-keyopt", "rsa_padding_mode:oaep"],
        ),
        (
            "alice-enc-rsa",
            &[
                "-aes-256-cbc",
                "-keyopt",
                "rsa_padding_mode:oaep",
                "-keyopt",
                "rsa_oaep_md:sha256",
            ],
        ),
        ("alice-enc-rsa", &["-aes-256-gcm"]),
        ("alice-enc-ec", &["-aes-256-cbc"]),
        ("alice-enc-ec", &["-aes-128-gcm"]),
        ("bob-enc-ec", &["-aes-192-cbc"]),
        ("alice-enc-rsa", &["-des3"]),
    ];
    for (name, opts) in cases {
        let out = Command::new("openssl")
            .args(["cms", "-encrypt", "-binary", "-outform", "DER", "-in"])
            .arg(&input)
            .arg("-recip")
            .arg(pki_file(&format!("{name}.pem")))
            .args(*opts)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let plain =
            our_decrypt(&out.stdout, name).unwrap_or_else(|e| panic!("{name} {opts:?}: {e}"));
        assert_eq!(plain, MSG, "{name} {opts:?}");
        // Streamed BER (indefinite lengths) reads the same.
        let out = Command::new("openssl")
            .args([
                "cms", "-encrypt", "-binary", "-stream", "-outform", "DER", "-in",
            ])
            .arg(&input)
            .arg("-recip")
            .arg(pki_file(&format!("{name}.pem")))
            .args(*opts)
            .output()
            .unwrap();
        assert!(out.status.success());
        let plain =
            our_decrypt(&out.stdout, name).unwrap_or_else(|e| panic!("BER {name} {opts:?}: {e}"));
        assert_eq!(plain, MSG);
    }
}

#[test]
fn an_ec_recipient_info_does_not_open_with_an_all_zero_key() {
    // The cms crate's KeyAgreeRecipientInfoBuilder wrapped under a zero key; ours must not.
    let c = cert("alice-enc-ec");
    let der = envelope::encrypt(
        MSG,
        &[EncryptTo {
            cert: &c,
            rsa_padding: RsaPadding::Pkcs1v15,
        }],
        ContentAlgorithm::Aes256Cbc,
    )
    .unwrap();
    let env = envelope::parse(&der).unwrap();
    let KeyUnwrap::Ecdh(p) = &env.recipients[0].unwrap else {
        panic!("not a key agreement")
    };
    for z in [vec![0u8; 32], vec![0u8; 0]] {
        assert!(
            envelope::finish_ecdh(&z, p).is_none(),
            "a zero secret unwrapped the key"
        );
    }
    assert!(
        envelope::unwrap_with_kek(p, &[0u8; 32]).is_none(),
        "a zero KEK unwrapped the key"
    );
    assert!(envelope::unwrap_with_kek(p, &[0u8; 16]).is_none());
    // The right key does.
    assert_eq!(our_decrypt(&der, "alice-enc-ec").unwrap(), MSG);
}

#[test]
fn a_wrong_key_and_a_tampered_envelope_fail_the_same_way() {
    let c = cert("alice-enc-rsa");
    let der = envelope::encrypt(
        MSG,
        &[EncryptTo {
            cert: &c,
            rsa_padding: RsaPadding::Pkcs1v15,
        }],
        ContentAlgorithm::Aes256Cbc,
    )
    .unwrap();
    let env = envelope::parse(&der).unwrap();
    // The right key opens it: the failures below are the key's or the content's.
    let cek = our_content_key(&env, "alice-enc-rsa").unwrap();
    assert_eq!(env.decrypt(&cek).unwrap(), MSG);
    let wrong = env.decoy_key().unwrap();
    let e1 = env.decrypt(&wrong).unwrap_err().to_string();
    let e2 = env.decrypt(&[0u8; 5]).unwrap_err().to_string();
    assert_eq!(e1, e2);
    // The content changed: the last byte of its next-to-last cipher block, which flips the
    // last padding byte (9 becomes 8, with 9s before it: MSG is 55 bytes), so the padding
    // check fails every time. The right key fails exactly as a wrong one does.
    assert_eq!(MSG.len() % 16, 7);
    let mut tampered = der.clone();
    let at = tampered.len() - 17;
    tampered[at] ^= 0x01;
    let env = envelope::parse(&tampered).unwrap();
    let e3 = env.decrypt(&cek).unwrap_err().to_string();
    assert_eq!(e1, e3);
}

#[test]
fn a_recipient_issuer_name_holding_no_string_is_refused_as_openssl_refuses_it() {
    let dir = tempdir();
    let input = write_file(dir.path(), "msg.txt", MSG);
    for name in ["alice-enc-rsa", "alice-enc-ec"] {
        let out = Command::new("openssl")
            .args([
                "cms",
                "-encrypt",
                "-binary",
                "-aes-256-cbc",
                "-outform",
                "DER",
                "-in",
            ])
            .arg(&input)
            .arg("-recip")
            .arg(pki_file(&format!("{name}.pem")))
            .output()
            .unwrap();
        assert!(out.status.success());
        // The recipient info's issuer: the issuing CA's CN, a UTF8String.
        let mut cn = vec![0x0c, 27];
        cn.extend_from_slice(b"smime-agent Test Issuing CA");
        let at = out
            .stdout
            .windows(cn.len())
            .position(|w| w == cn)
            .expect("the issuer's CN");
        for (tag, readable) in [(0x04, false), (0x02, false), (0x13, true)] {
            let mut der = out.stdout.clone();
            der[at] = tag;
            let theirs = openssl_decrypt_der(dir.path(), &der, name);
            let ours = our_decrypt(&der, name);

            assert_eq!(theirs.is_ok(), readable, "OpenSSL, {name}, tag {tag:#x}");
            match (readable, ours) {
                (true, Ok(plain)) => assert_eq!(plain, MSG),
                (false, Err(e)) => assert!(
                    e.contains("the issuer it names"),
                    "{name}, tag {tag:#x}: {e}"
                ),
                (r, ours) => panic!("{name}, tag {tag:#x}: readable {r}, ours {ours:?}"),
            }
        }
    }
}
