//! The login rules, as decisions over plain data: who may try a PIN, which PIN is never
//! sent again, and what a rejection tells the client. [`super::login`] asks these before
//! and after each call into the token, so the rules can be read (and tested) apart from
//! the PKCS#11 calls around them.
//!
//! Owns no state but the digest of the PIN rejected last ([`RejectedPin`]).

use smime_agent_proto::{PinRetries, TokenRef};

use crate::tokens::TokenError;
use crate::tokens::pin::SecretPin;

/// A request that waited for the login lock while another request tried a PIN shares
/// that attempt's failure instead of trying (and burning) another attempt itself.
/// `seen` is the attempt count when it began waiting, `now` the count once it holds the
/// lock.
pub(super) fn shared_failure(seen: u64, now: u64, last: Option<&TokenError>) -> Option<TokenError> {
    if seen != now { last.cloned() } else { None }
}

/// A locked PIN is never tried: the client hears `pin_locked` before any prompt.
pub(super) fn may_try(token: &TokenRef, retries: PinRetries) -> Result<(), TokenError> {
    match retries {
        PinRetries::Locked => Err(TokenError::PinLocked {
            token: token.clone(),
        }),
        _ => Ok(()),
    }
}

/// The PIN offered is the one the token rejected last: refused without reaching the
/// token, with the retry state as last read (never "ok": a PIN was rejected).
pub(super) fn refuse_again(
    token: &TokenRef,
    offered: &SecretPin,
    rejected: &RejectedPin,
    known: PinRetries,
) -> Result<(), TokenError> {
    if !rejected.is(offered) {
        return Ok(());
    }
    Err(TokenError::PinIncorrect {
        token: token.clone(),
        retries: after_a_rejection(known),
    })
}

/// The error a client gets for a PIN the token rejected, from the retry state read after
/// the rejection (`None`: it could not be read).
pub(super) fn rejection(token: &TokenRef, now: Option<PinRetries>) -> TokenError {
    let retries = now.unwrap_or(PinRetries::Low);
    if retries == PinRetries::Locked {
        return TokenError::PinLocked {
            token: token.clone(),
        };
    }
    TokenError::PinIncorrect {
        token: token.clone(),
        retries: after_a_rejection(retries),
    }
}

/// A token that still says "ok" after rejecting a PIN has fewer tries than it had (most
/// tokens set their low flag only near the end): the client is told "low".
fn after_a_rejection(r: PinRetries) -> PinRetries {
    match r {
        PinRetries::Ok => PinRetries::Low,
        r => r,
    }
}

/// How many tries are left, where the token's flags say exactly.
pub(super) fn retries_left(r: PinRetries) -> Option<u32> {
    match r {
        PinRetries::FinalTry => Some(1),
        PinRetries::Locked => Some(0),
        _ => None,
    }
}

/// The PIN the token rejected last, kept only as SHA-256 over a random salt (per token, in
/// memory, gone with the token): when a client offers the same PIN again (a mail client
/// re-sending the passphrase it cached, a script in a loop) it is refused without reaching
/// the token, so one wrong PIN costs one try. A different PIN is tried as usual.
#[derive(Debug, Default)]
pub(super) struct RejectedPin(Option<([u8; 16], [u8; 32])>);

impl RejectedPin {
    fn digest(salt: &[u8; 16], pin: &SecretPin) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(salt);
        h.update(pin.expose());
        h.finalize().into()
    }

    pub(super) fn remember(&mut self, pin: &SecretPin) {
        let mut salt = [0u8; 16];
        if getrandom::fill(&mut salt).is_err() {
            // Without randomness nothing is kept: the token's own counter still guards.
            self.0 = None;
            return;
        }
        self.0 = Some((salt, Self::digest(&salt, pin)));
    }

    /// Whether `pin` is the one rejected last (compared in constant time).
    pub(super) fn is(&self, pin: &SecretPin) -> bool {
        use subtle::ConstantTimeEq;
        match &self.0 {
            Some((salt, digest)) => Self::digest(salt, pin).ct_eq(digest).into(),
            None => false,
        }
    }

    pub(super) fn clear(&mut self) {
        self.0 = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> TokenRef {
        TokenRef {
            id: "t".into(),
            label: "Alice".into(),
            serial: "1".into(),
        }
    }

    fn pin(s: &str) -> SecretPin {
        SecretPin::new(s.as_bytes()).expect("a PIN")
    }

    #[test]
    fn a_waiter_shares_only_a_failure_that_happened_while_it_waited() {
        let failed = TokenError::PinIncorrect {
            token: token(),
            retries: PinRetries::Low,
        };
        // An attempt failed while it waited: its answer, no try of its own.
        assert!(matches!(
            shared_failure(3, 4, Some(&failed)),
            Some(TokenError::PinIncorrect { .. })
        ));
        // A failure older than its wait is not its answer: it may try (with a new PIN).
        assert!(shared_failure(4, 4, Some(&failed)).is_none());
        // An attempt happened and succeeded meanwhile: nothing to share.
        assert!(shared_failure(3, 4, None).is_none());
    }

    #[test]
    fn a_locked_pin_is_never_tried() {
        assert!(matches!(
            may_try(&token(), PinRetries::Locked),
            Err(TokenError::PinLocked { .. })
        ));
        for r in [PinRetries::Ok, PinRetries::Low, PinRetries::FinalTry] {
            assert!(may_try(&token(), r).is_ok(), "{r:?}");
        }
    }

    #[test]
    fn the_pin_rejected_last_is_refused_without_reaching_the_token() {
        let mut rejected = RejectedPin::default();
        let wrong = pin("111111");
        assert!(refuse_again(&token(), &wrong, &rejected, PinRetries::Ok).is_ok());
        rejected.remember(&wrong);
        // The same PIN again (a mail client's cached passphrase): refused, "low" at least.
        match refuse_again(&token(), &pin("111111"), &rejected, PinRetries::Ok) {
            Err(TokenError::PinIncorrect { retries, .. }) => assert_eq!(retries, PinRetries::Low),
            other => panic!("{other:?}"),
        }
        match refuse_again(&token(), &wrong, &rejected, PinRetries::FinalTry) {
            Err(TokenError::PinIncorrect { retries, .. }) => {
                assert_eq!(retries, PinRetries::FinalTry)
            }
            other => panic!("{other:?}"),
        }
        // Another PIN is the person typing again: it goes to the token.
        assert!(refuse_again(&token(), &pin("123456"), &rejected, PinRetries::Low).is_ok());
        // A PIN that is a prefix or extension of the rejected one is another PIN.
        assert!(!rejected.is(&pin("11111")));
        assert!(!rejected.is(&pin("1111111")));
        // After a good login nothing is held against any PIN.
        rejected.clear();
        assert!(!rejected.is(&wrong));
    }

    #[test]
    fn the_rejected_pin_is_kept_salted_so_equal_pins_differ_between_tokens() {
        let (mut a, mut b) = (RejectedPin::default(), RejectedPin::default());
        let p = pin("246810");
        a.remember(&p);
        b.remember(&p);
        assert!(a.is(&p) && b.is(&p));
        let (Some((salt_a, digest_a)), Some((salt_b, digest_b))) = (a.0, b.0) else {
            panic!("nothing kept")
        };
        assert_ne!(salt_a, salt_b);
        assert_ne!(digest_a, digest_b);
    }

    #[test]
    fn a_rejection_reports_the_retry_state_after_it() {
        let t = token();
        assert!(matches!(
            rejection(&t, Some(PinRetries::Locked)),
            TokenError::PinLocked { .. }
        ));
        for (now, told) in [
            (Some(PinRetries::Ok), PinRetries::Low),
            (None, PinRetries::Low),
            (Some(PinRetries::Low), PinRetries::Low),
            (Some(PinRetries::FinalTry), PinRetries::FinalTry),
        ] {
            match rejection(&t, now) {
                TokenError::PinIncorrect { retries, .. } => assert_eq!(retries, told, "{now:?}"),
                other => panic!("{now:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn exact_tries_left_only_where_the_flags_say() {
        assert_eq!(retries_left(PinRetries::FinalTry), Some(1));
        assert_eq!(retries_left(PinRetries::Locked), Some(0));
        assert_eq!(retries_left(PinRetries::Low), None);
        assert_eq!(retries_left(PinRetries::Ok), None);
    }
}
