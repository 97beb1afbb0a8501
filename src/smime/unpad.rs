//! RSA decryption padding removed by the agent, for raw RSA results (CKM_RSA_X_509): of
//! PKCS#1 v1.5 when the plaintext's length is not known beforehand (a PKCS#11 C_Decrypt
//! forwarded by the module; an envelope's content key uses the fixed-length check in
//! `envelope::pkcs1_v15_content_key` instead).
//!
//! Written by hand because the rsa crate keeps its unpadding private. Every check runs to
//! the end in constant time; only the length of a good result shows, as it must.

use subtle::{ConditionallySelectable, ConstantTimeEq, ConstantTimeGreater};
use zeroize::Zeroizing;

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
}
