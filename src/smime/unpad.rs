//! RSA decryption padding removed by the agent from raw RSA results (CKM_RSA_X_509), in
//! constant time: the content key of an envelope under PKCS#1 v1.5, checked for the length
//! the content cipher needs with a decoy for anything else (`pkcs1_v15_content_key`);
//! PKCS#1 v1.5 of any length, for a PKCS#11 C_Decrypt the module forwards (`pkcs1_v15`);
//! and OAEP with MGF1 (`oaep_decode`).
//!
//! Owns: the unpadding. Must not touch: the RSA operation (a token's), and the decision to
//! go on with a decoy key (the caller's). Written by hand because the rsa crate keeps its
//! unpadding private; every check runs to the end, and only the length of a good result
//! shows, as it must.

use subtle::{ConditionallySelectable, ConstantTimeEq, ConstantTimeGreater};
use zeroize::Zeroizing;

use crate::alg::Hash;

/// A raw RSA result left-padded with zeros to the modulus length `k` (tokens may drop
/// leading zero bytes). None for a result longer than the modulus, which no token gives.
pub fn to_modulus_length(raw: &[u8], k: usize) -> Option<Zeroizing<Vec<u8>>> {
    if raw.len() > k {
        return None;
    }
    let mut em = Zeroizing::new(vec![0u8; k - raw.len()]);
    em.extend_from_slice(raw);
    Some(em)
}

/// The message in `em = 0x00 || 0x02 || PS || 0x00 || M` (RFC 8017 section 7.2.2), PS at
/// least 8 non-zero bytes; None for anything else.
pub fn pkcs1_v15(em: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let k = em.len();
    if k < 11 {
        return None;
    }
    let mut good = em[0].ct_eq(&0) & em[1].ct_eq(&2);
    // The index of the first zero after the block type, found without branching on data.
    let mut sep = 0u32;
    let mut looking = subtle::Choice::from(1);
    for (i, b) in em.iter().enumerate().skip(2) {
        let zero = b.ct_eq(&0);
        sep.conditional_assign(&(i as u32), looking & zero);
        looking &= !zero;
    }
    good &= !looking;
    // PS is at least 8 bytes: the separator is at index 10 or later.
    good &= sep.ct_gt(&9);
    if bool::from(good) {
        Some(Zeroizing::new(em[sep as usize + 1..].to_vec()))
    } else {
        None
    }
}

/// The content key in a raw RSA result under PKCS#1 v1.5 (RFC 8017 section 7.2.2):
/// `EM = 0x00 || 0x02 || PS || 0x00 || K`, PS at least 8 non-zero bytes. It is checked in
/// constant time for a key exactly as long as `decoy` (a random key of the length the
/// content cipher needs), and `decoy` comes back instead of anything malformed or of
/// another length. So a bad padding, a key of the wrong length and a good key take the same
/// steps and the same time, and the content decryption that follows fails alike (RFC 3218
/// section 2.3.2; the fixed-length check is what closes Bleichenbacher's and the Marvin
/// oracle). `em` must be as long as the modulus (left-pad a token's shorter answer).
/// Written by hand: the rsa crate's unpadding is private and answers with an error, not a
/// decoy.
pub fn pkcs1_v15_content_key(em: &[u8], decoy: Zeroizing<Vec<u8>>) -> Zeroizing<Vec<u8>> {
    use subtle::{ConditionallySelectable, ConstantTimeEq};
    let key_len = decoy.len();
    let k = em.len();
    // Lengths are public (the modulus and the content cipher).
    if k < key_len + 11 {
        return decoy;
    }
    let sep = k - key_len - 1;
    let mut good = em[0].ct_eq(&0) & em[1].ct_eq(&2) & em[sep].ct_eq(&0);
    for b in &em[2..sep] {
        good &= !b.ct_eq(&0);
    }
    let mut key = decoy;
    for (out, m) in key.iter_mut().zip(&em[sep + 1..]) {
        out.conditional_assign(m, good);
    }
    key
}

/// OAEP decoding (RFC 8017 section 7.1.2 steps 3) of a raw RSA result, for tokens that do
/// only raw RSA (CKM_RSA_X_509) or lack the OAEP parameters asked for (SoftHSM has no
/// SHA-256 OAEP). Written by hand because the rsa crate keeps its OAEP decoding private.
/// Every failure is the same error and the checks run to the end (no early return on the
/// first mismatch).
pub fn oaep_decode(
    em: &[u8],
    hash: Hash,
    mgf_hash: Hash,
    label: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let h_len = hash.output_len();
    let k = em.len();
    if k < 2 * h_len + 2 {
        return None;
    }
    let l_hash = hash.digest(label);
    let y = em[0];
    let (masked_seed, masked_db) = em[1..].split_at(h_len);
    let seed_mask = mgf1(mgf_hash, masked_db, h_len);
    let seed: Vec<u8> = masked_seed
        .iter()
        .zip(&seed_mask)
        .map(|(a, b)| a ^ b)
        .collect();
    let db_mask = mgf1(mgf_hash, &seed, k - h_len - 1);
    let db = Zeroizing::new(
        masked_db
            .iter()
            .zip(&db_mask)
            .map(|(a, b)| a ^ b)
            .collect::<Vec<u8>>(),
    );
    let mut bad = (y != 0) as u8;
    for (a, b) in db[..h_len].iter().zip(&l_hash) {
        bad |= a ^ b;
    }
    // Find the 0x01 separator after the zero padding, looking at every byte.
    let mut index = 0usize;
    let mut looking = 1u8;
    for (i, &b) in db[h_len..].iter().enumerate() {
        let is_one = (b == 1) as u8;
        let is_zero = (b == 0) as u8;
        index |= (looking & is_one) as usize * (i + 1);
        bad |= looking & (1 - is_one) & (1 - is_zero);
        looking &= 1 - is_one;
    }
    bad |= looking;
    if bad != 0 {
        return None;
    }
    Some(Zeroizing::new(db[h_len + index..].to_vec()))
}

fn mgf1(hash: Hash, seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + hash.output_len());
    let mut counter = 0u32;
    while out.len() < len {
        let mut input = seed.to_vec();
        input.extend_from_slice(&counter.to_be_bytes());
        out.extend_from_slice(&hash.digest(&input));
        counter += 1;
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(k: usize, m: &[u8]) -> Vec<u8> {
        let mut em = vec![0u8, 2];
        em.resize(k - m.len() - 1, 0x33);
        em.push(0);
        em.extend_from_slice(m);
        em
    }

    #[test]
    fn a_good_block_gives_its_message_of_any_length() {
        for len in [0, 1, 16, 32, 245] {
            let m = vec![0x42u8; len];
            assert_eq!(pkcs1_v15(&block(256, &m)).as_deref(), Some(&m), "{len}");
        }
    }

    #[test]
    fn malformed_blocks_give_nothing() {
        let good = block(256, &[1u8; 32]);
        let mut cases = vec![];
        let mut b = good.clone();
        b[0] = 1;
        cases.push(b);
        let mut b = good.clone();
        b[1] = 1;
        cases.push(b);
        let mut b = good.clone();
        b[256 - 33] = 7;
        cases.push(b); // no separator
        let mut b = good.clone();
        b[5] = 0;
        cases.push(b); // padding of 3 bytes
        cases.push(vec![0, 2, 0]);
        for (i, c) in cases.iter().enumerate() {
            assert!(pkcs1_v15(c).is_none(), "case {i}");
        }
    }

    #[test]
    fn short_results_are_padded_to_the_modulus() {
        assert_eq!(&to_modulus_length(&[2, 3], 4).unwrap()[..], &[0, 0, 2, 3]);
        assert!(to_modulus_length(&[1; 5], 4).is_none());
    }

    /// A PKCS#1 v1.5 block of `k` bytes around `key`, with a non-zero padding string.
    fn em(k: usize, key: &[u8]) -> Vec<u8> {
        let mut em = vec![0u8, 2];
        em.resize(k - key.len() - 1, 0x5a);
        em.push(0);
        em.extend_from_slice(key);
        em
    }

    #[test]
    fn a_well_formed_pkcs1_block_gives_its_key_and_anything_else_the_decoy() {
        let decoy = || Zeroizing::new(vec![0xd0u8; 32]);
        let key = [0x11u8; 32];
        let good = em(256, &key);
        assert_eq!(&pkcs1_v15_content_key(&good, decoy())[..], &key);
        let mut cases: Vec<(&str, Vec<u8>)> = vec![];
        let mut b = good.clone();
        b[0] = 1;
        cases.push(("first byte not zero", b));
        let mut b = good.clone();
        b[1] = 1;
        cases.push(("block type 1", b));
        let mut b = good.clone();
        b[256 - 33] = 0x5a;
        cases.push(("no zero before the key", b));
        let mut b = good.clone();
        b[5] = 0;
        cases.push(("a zero inside the padding (a longer key)", b));
        cases.push(("a 16-byte key", em(256, &[0x11u8; 16])));
        cases.push(("a 48-byte key", em(256, &[0x11u8; 48])));
        cases.push(("a modulus too short for the key", em(40, &key)));
        for (what, block) in cases {
            assert_eq!(
                &pkcs1_v15_content_key(&block, decoy())[..],
                &[0xd0u8; 32],
                "{what}"
            );
        }
    }

    #[test]
    fn oaep_decode_round_trips_with_the_rsa_crate() {
        use rsa::traits::PublicKeyParts;
        let mut rng = rsa::rand_core::UnwrapErr(getrandom::SysRng);
        let key = rsa::RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let public = key.to_public_key();
        let ct = public
            .encrypt(
                &mut rng,
                rsa::Oaep::<sha2::Sha256>::new(),
                b"content key 32 bytes long.......",
            )
            .unwrap();
        // Raw RSA as a token's CKM_RSA_X_509 would give it.
        let c = rsa::BoxedUint::from_be_slice(&ct, key.n().bits()).unwrap();
        let m = rsa::hazmat::rsa_decrypt_and_check(
            &key,
            None::<&mut rsa::rand_core::UnwrapErr<getrandom::SysRng>>,
            &c,
        )
        .unwrap();
        let mut em = m.to_be_bytes().to_vec();
        while em.len() < public.size() {
            em.insert(0, 0);
        }
        let k = em.len() - public.size();
        let em = &em[k..];
        let out = oaep_decode(em, Hash::Sha256, Hash::Sha256, b"").unwrap();
        assert_eq!(&out[..], b"content key 32 bytes long.......");
        let mut tampered = em.to_vec();
        tampered[5] ^= 1;
        assert!(oaep_decode(&tampered, Hash::Sha256, Hash::Sha256, b"").is_none());
        assert!(oaep_decode(em, Hash::Sha1, Hash::Sha1, b"").is_none());
    }
}
