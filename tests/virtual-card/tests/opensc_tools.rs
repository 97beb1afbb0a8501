//! The virtual card as OpenSC's command-line tools see it, checked against OpenSSL.
//!
//! Every test starts its own rig (private pcscd, own ports) and runs `pkcs11-tool` as a
//! child process with that rig's `PCSCLITE_CSOCK_NAME`, so the tests run in parallel.

#[path = "../../common/card_crate.rs"]
mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::{
    CARD_PIN as PIN, listed_objects, ok, openssl_dgst_verifies, path_str, pkcs11_sign, pkcs11_tool,
    pkcs11_tool_env, pki, public_key_of, rig, run, slot, tempdir,
};
use virtual_piv_card::PivSlot;

#[test]
fn pkcs11_tool_lists_the_token_and_objects_with_matching_ids_well_under_a_second() {
    let rig = rig();
    rig.insert(
        "alice",
        0,
        PIN,
        &[
            slot(PivSlot::Authentication, "alice-dual-rsa"),
            slot(PivSlot::Signature, "alice-sign-rsa"),
            slot(PivSlot::KeyManagement, "alice-enc-ec"),
            slot(PivSlot::CardAuthentication, "alice-sign-ec"),
        ],
    )
    .unwrap();

    let mut list_times = Vec::new();
    let mut object_times = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let listing = ok("pkcs11-tool -L", &pkcs11_tool(&rig, &["-L"]));
        list_times.push(start.elapsed());
        assert!(listing.contains("Virtual PCD"), "{listing}");
        assert!(
            listing.contains("token label        : Alice Example"),
            "{listing}"
        );

        let start = Instant::now();
        let objects = ok(
            "pkcs11-tool -O --login",
            &pkcs11_tool(&rig, &["-O", "--login", "--pin", PIN]),
        );
        object_times.push(start.elapsed());
        let objects = listed_objects(&objects);
        for id in ["01", "02", "03", "04"] {
            for kind in ["Certificate", "Private Key", "Public Key"] {
                assert!(
                    objects.iter().any(|(k, i)| k == kind && i == id),
                    "no {kind} with ID {id} in {objects:?}"
                );
            }
        }
    }
    println!("OpenSC enumeration: pkcs11-tool -L took {list_times:?}");
    println!("OpenSC enumeration: pkcs11-tool -O --login took {object_times:?}");
    for t in list_times.iter().chain(&object_times) {
        assert!(*t < Duration::from_secs(1), "an enumeration took {t:?}");
    }
}

#[test]
fn rsa_signatures_with_9c_verify_with_openssl() {
    let rig = rig();
    rig.insert(
        "alice",
        0,
        PIN,
        &[slot(PivSlot::Signature, "alice-sign-rsa")],
    )
    .unwrap();
    let work = tempdir();
    let data = work.path().join("data");
    fs::write(&data, b"a message signed on a virtual PIV card\n").unwrap();
    let pubkey = public_key_of(&work, "alice-sign-rsa");

    for (mechanism, openssl_opts) in [
        ("SHA256-RSA-PKCS", &[][..]),
        (
            "SHA256-RSA-PKCS-PSS",
            &[
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:-1",
            ][..],
        ),
    ] {
        let sig = work.path().join(format!("{mechanism}.sig"));
        ok(
            &format!("pkcs11-tool --sign -m {mechanism}"),
            &pkcs11_sign(&rig, mechanism, &[], &data, &sig),
        );
        assert!(openssl_dgst_verifies(
            "-sha256",
            &pubkey,
            openssl_opts,
            &sig,
            &data
        ));
    }
}

#[test]
fn ecdsa_signatures_with_9c_verify_with_openssl_p256_and_p384() {
    for (name, mechanism, digest) in [
        ("alice-sign-ec", "ECDSA-SHA256", "-sha256"),
        ("alice-sign-p384", "ECDSA-SHA384", "-sha384"),
    ] {
        let rig = rig();
        rig.insert("alice", 0, PIN, &[slot(PivSlot::Signature, name)])
            .unwrap();
        let work = tempdir();
        let data = work.path().join("data");
        fs::write(&data, b"an ECDSA signature from a virtual PIV card\n").unwrap();
        let sig = work.path().join("sig");
        ok(
            &format!("pkcs11-tool --sign -m {mechanism}"),
            &pkcs11_sign(
                &rig,
                mechanism,
                &["--signature-format", "openssl"],
                &data,
                &sig,
            ),
        );
        let pubkey = public_key_of(&work, name);
        let verified = openssl_dgst_verifies(digest, &pubkey, &[], &sig, &data);
        assert!(verified, "{name}");
    }
}

#[test]
fn rsa_decryption_with_9d_recovers_what_openssl_encrypted() {
    let rig = rig();
    rig.insert(
        "alice",
        0,
        PIN,
        &[slot(PivSlot::KeyManagement, "alice-enc-rsa")],
    )
    .unwrap();
    let work = tempdir();
    let secret = work.path().join("secret");
    fs::write(&secret, b"a content-encryption key, say").unwrap();
    let cert = pki().join("alice-enc-rsa.pem");

    for (mechanism, extra_tool, extra_openssl) in [
        ("RSA-PKCS", &[][..], &[][..]),
        (
            "RSA-PKCS-OAEP",
            &["--hash-algorithm", "SHA256", "--mgf", "MGF1-SHA256"][..],
            &[
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                "rsa_oaep_md:sha256",
                "-pkeyopt",
                "rsa_mgf1_md:sha256",
            ][..],
        ),
    ] {
        let ct = work.path().join(format!("{mechanism}.ct"));
        let pt = work.path().join(format!("{mechanism}.pt"));
        let mut args = vec!["pkeyutl", "-encrypt", "-certin", "-inkey", path_str(&cert)];
        args.extend_from_slice(extra_openssl);
        args.extend_from_slice(&["-in", path_str(&secret), "-out", path_str(&ct)]);
        run("openssl", &args);
        let mut args = vec![
            "--login",
            "--pin",
            PIN,
            "--decrypt",
            "--id",
            "03",
            "-m",
            mechanism,
        ];
        args.extend_from_slice(extra_tool);
        args.extend_from_slice(&["-i", path_str(&ct), "-o", path_str(&pt)]);
        ok(
            &format!("pkcs11-tool --decrypt -m {mechanism}"),
            &pkcs11_tool(&rig, &args),
        );
        assert_eq!(
            fs::read(&pt).unwrap(),
            fs::read(&secret).unwrap(),
            "{mechanism}"
        );
    }
}

#[test]
fn ecdh_with_9d_matches_openssl_derive() {
    let rig = rig();
    rig.insert(
        "alice",
        0,
        PIN,
        &[slot(PivSlot::KeyManagement, "alice-enc-ec")],
    )
    .unwrap();
    let work = tempdir();
    let peer_key = work.path().join("peer.key.pem");
    let peer_pub = work.path().join("peer.pub.der");
    run(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            path_str(&peer_key),
        ],
    );
    run(
        "openssl",
        &[
            "pkey",
            "-in",
            path_str(&peer_key),
            "-pubout",
            "-outform",
            "DER",
            "-out",
            path_str(&peer_pub),
        ],
    );
    let on_card = work.path().join("card.secret");
    ok(
        "pkcs11-tool --derive -m ECDH1-DERIVE",
        &pkcs11_tool(
            &rig,
            &[
                "--login",
                "--pin",
                PIN,
                "--derive",
                "--id",
                "03",
                "-m",
                "ECDH1-DERIVE",
                "-i",
                path_str(&peer_pub),
                "-o",
                path_str(&on_card),
            ],
        ),
    );
    let card_pub = public_key_of(&work, "alice-enc-ec");
    let in_openssl = work.path().join("openssl.secret");
    run(
        "openssl",
        &[
            "pkeyutl",
            "-derive",
            "-inkey",
            path_str(&peer_key),
            "-peerkey",
            path_str(&card_pub),
            "-out",
            path_str(&in_openssl),
        ],
    );
    let secret = fs::read(&on_card).unwrap();
    assert_eq!(secret.len(), 32);
    assert_eq!(secret, fs::read(&in_openssl).unwrap());
}

#[test]
fn wrong_pins_are_counted_down_by_opensc_and_the_third_blocks_the_pin() {
    let rig = rig();
    rig.insert(
        "alice",
        0,
        PIN,
        &[slot(PivSlot::Signature, "alice-sign-rsa")],
    )
    .unwrap();

    for (tries_left, flag) in [
        (2, None),
        (1, Some("final user PIN try")),
        (0, Some("user PIN locked")),
    ] {
        let out = wrong_login(&rig);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(log.contains("CKR_PIN_INCORRECT"), "{log}");
        // OpenSC's own account of the card's 63 Cx answer.
        assert!(
            log.contains(&format!("PIN not verified (remaining tries: {tries_left})")),
            "OpenSC did not report {tries_left} tries left:\n{log}"
        );
        let listing = ok("pkcs11-tool -L", &pkcs11_tool(&rig, &["-L"]));
        let flags = token_flags(&listing);
        for f in ["final user PIN try", "user PIN locked"] {
            assert_eq!(
                flags.contains(f),
                flag == Some(f),
                "after {tries_left} left: {flags}"
            );
        }
    }
    let out = pkcs11_tool(&rig, &["--login", "--pin", PIN, "-O"]);
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("CKR_PIN_LOCKED"),
        "the right PIN after blocking: {log}"
    );
}

#[test]
fn the_pin_counter_survives_removal_and_reinsertion() {
    let rig = rig();
    let slots = [slot(PivSlot::Signature, "alice-sign-rsa")];
    rig.insert("alice", 0, PIN, &slots).unwrap();
    assert!(String::from_utf8_lossy(&wrong_login(&rig).stderr).contains("remaining tries: 2"));
    rig.remove("alice").unwrap();
    let listing = ok("pkcs11-tool -L", &pkcs11_tool(&rig, &["-L"]));
    assert!(
        !listing.contains("token label"),
        "card still listed: {listing}"
    );

    rig.insert("alice", 1, PIN, &slots).unwrap();
    let log = String::from_utf8_lossy(&wrong_login(&rig).stderr).into_owned();
    assert!(log.contains("remaining tries: 1"), "{log}");
    let flags = token_flags(&ok("pkcs11-tool -L", &pkcs11_tool(&rig, &["-L"])));
    assert!(flags.contains("final user PIN try"), "{flags}");

    // The right PIN resets the counter, which also survives removal.
    ok(
        "login",
        &pkcs11_tool(&rig, &["--login", "--pin", PIN, "-O"]),
    );
    rig.remove("alice").unwrap();
    rig.insert("alice", 0, PIN, &slots).unwrap();
    let log = String::from_utf8_lossy(&wrong_login(&rig).stderr).into_owned();
    assert!(log.contains("remaining tries: 2"), "{log}");
}

#[test]
fn two_rigs_side_by_side_see_only_their_own_cards() {
    let rig1 = rig();
    let rig2 = rig();
    rig1.insert(
        "alice",
        0,
        PIN,
        &[slot(PivSlot::Signature, "alice-sign-rsa")],
    )
    .unwrap();
    rig2.insert("bob", 1, PIN, &[slot(PivSlot::Signature, "bob-dual-rsa")])
        .unwrap();
    let l1 = ok("pkcs11-tool -L", &pkcs11_tool(&rig1, &["-L"]));
    let l2 = ok("pkcs11-tool -L", &pkcs11_tool(&rig2, &["-L"]));
    assert!(
        l1.contains("Alice Example") && !l1.contains("Bob Example"),
        "{l1}"
    );
    assert!(
        l2.contains("Bob Example") && !l2.contains("Alice Example"),
        "{l2}"
    );
}

/// A login with a wrong PIN, with OpenSC's debug log on stderr.
fn wrong_login(rig: &virtual_piv_card::CardRig) -> std::process::Output {
    let out = pkcs11_tool_env(
        rig,
        &["--login", "--pin", "999999", "-O"],
        &[("OPENSC_DEBUG", "9")],
    );
    assert!(!out.status.success(), "a wrong PIN was accepted");
    out
}

fn token_flags(listing: &str) -> String {
    listing
        .lines()
        .find(|l| l.contains("token flags"))
        .unwrap_or_else(|| panic!("no token in {listing}"))
        .to_owned()
}
