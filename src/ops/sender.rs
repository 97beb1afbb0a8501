//! What a signed message claims against who signed it: the From or Sender its signer's
//! certificate must name (RFC 8550 section 3), and the Date its signing time should be near.
//! Shared by `verify` and `decrypt` through `signed`.
//!
//! Owns: which header fields a signed layer answers to, and these two comparisons. Must not
//! touch: reading the fields (`smime::fields`), the verdict over a message (`report`).

use std::time::SystemTime;

use smime_agent_proto::{SenderMatch, SenderStatus};

use crate::certs::CertFacts;
use crate::certs::address::same_address;
use crate::certs::rfc3339;
use crate::smime::fields::MessageFields;

/// The header fields a signed layer answers to: its own entity's, each of sender and date
/// falling back to those of the nearest message around it (the message an envelope or an
/// outer signature came in), so the inner signature of a signed-then-encrypted message is
/// held against the message's From, while an inner entity that carries its own From
/// answers to that.
pub(super) fn nearest(
    own: Option<&MessageFields>,
    around: Option<&MessageFields>,
) -> Option<MessageFields> {
    let pick =
        |f: &dyn Fn(&MessageFields) -> bool| own.filter(|o| f(o)).or(around.filter(|a| f(a)));
    let sender = pick(&|f| f.has_sender);
    let date = pick(&|f| f.date.is_some());
    if sender.is_none() && date.is_none() {
        return None;
    }
    Some(MessageFields {
        has_sender: sender.is_some(),
        addresses: sender.map(|s| s.addresses.clone()).unwrap_or_default(),
        date: date.and_then(|d| d.date.clone()),
    })
}

/// Whether `cert` names one of the message's sender addresses; `None` when the message has
/// no From or Sender (a bare entity: the client compares addresses itself).
pub(super) fn sender_match(
    cert: Option<&CertFacts>,
    fields: &MessageFields,
) -> Option<SenderMatch> {
    if !fields.has_sender {
        return None;
    }
    let expected = if fields.addresses.is_empty() {
        "a From field without a readable address".to_owned()
    } else {
        fields.addresses.join(", ")
    };
    let mismatch = |reason: String| {
        Some(SenderMatch {
            status: SenderStatus::Mismatch,
            addresses: fields.addresses.clone(),
            matched: None,
            reason: Some(reason),
        })
    };
    let Some(cert) = cert else {
        return mismatch(format!(
            "the message is from {expected}, and it does not carry the signer's certificate \
             to show that the signer is"
        ));
    };
    let mut own: Vec<&str> = vec![];
    for a in cert.all_emails() {
        if !own.iter().any(|o| same_address(o, a)) {
            own.push(a);
        }
    }
    let matched = own
        .iter()
        .find(|a| fields.addresses.iter().any(|m| same_address(m, a)));
    match matched {
        Some(a) => Some(SenderMatch {
            status: SenderStatus::Match,
            addresses: fields.addresses.clone(),
            matched: Some((*a).to_owned()),
            reason: None,
        }),
        None if own.is_empty() => mismatch(format!(
            "the message is from {expected}, but the signer's certificate \
             ({}) names no address",
            cert.subject
        )),
        None => mismatch(format!(
            "the message is from {expected}, but the signer's certificate \
             is for {}",
            own.join(", ")
        )),
    }
}

/// The signing time minus the message's Date in seconds, and a warning when they are more
/// than `tolerance_secs` apart (or the Date cannot be read).
pub(super) fn date_offset(
    signing_time: Option<SystemTime>,
    fields: Option<&MessageFields>,
    tolerance_secs: u64,
) -> (Option<i64>, Option<String>) {
    let (Some(signed), Some(date)) = (signing_time, fields.and_then(|f| f.date.as_ref())) else {
        return (None, None);
    };
    let date = match date {
        Ok(d) => *d,
        Err(text) => {
            return (
                None,
                Some(format!(
                    "the message's Date ({text:?}) cannot be read, so the signing time {} \
                     cannot be compared with it",
                    rfc3339(signed)
                )),
            );
        }
    };
    let offset = match signed.duration_since(date) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs())
            .map(|s| -s)
            .unwrap_or(i64::MIN),
    };
    let warning = (offset.unsigned_abs() > tolerance_secs).then(|| {
        format!(
            "the signing time {} is {} {} the message's Date ({}), more than the {} allowed \
             ([policy] signing_time_tolerance_secs)",
            rfc3339(signed),
            span(offset.unsigned_abs()),
            if offset > 0 { "after" } else { "before" },
            rfc3339(date),
            span(tolerance_secs)
        )
    });
    (Some(offset), warning)
}

/// A duration for people: `6 h 5 min`, `12 min 3 s`, `40 s`.
fn span(secs: u64) -> String {
    match secs {
        3600.. => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        60.. => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{secs} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn fields(addresses: &[&str], date: Option<u64>) -> MessageFields {
        MessageFields {
            has_sender: !addresses.is_empty(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            date: date.map(|d| Ok(UNIX_EPOCH + Duration::from_secs(d))),
        }
    }

    #[test]
    fn own_fields_win_and_each_missing_one_comes_from_around() {
        let outer = fields(&["alice@example.org"], Some(1000));
        let own_date_only = fields(&[], Some(2000));
        let n = nearest(Some(&own_date_only), Some(&outer)).unwrap();
        assert_eq!(n.addresses, vec!["alice@example.org"]);
        assert_eq!(n.date, Some(Ok(UNIX_EPOCH + Duration::from_secs(2000))));
        let own = fields(&["bob@example.org"], None);
        let n = nearest(Some(&own), Some(&outer)).unwrap();
        assert_eq!(n.addresses, vec!["bob@example.org"]);
        assert_eq!(n.date, Some(Ok(UNIX_EPOCH + Duration::from_secs(1000))));
        assert_eq!(nearest(None, None), None);
    }

    #[test]
    fn a_message_without_from_or_sender_has_no_sender_verdict() {
        assert_eq!(sender_match(None, &fields(&[], Some(1))), None);
    }

    #[test]
    fn a_missing_certificate_cannot_match_the_sender() {
        let m = sender_match(None, &fields(&["carol@example.org"], None)).unwrap();
        assert_eq!(m.status, SenderStatus::Mismatch);
        assert!(m.reason.unwrap().contains("carol@example.org"));
    }

    #[test]
    fn dates_within_the_tolerance_are_quiet_and_beyond_it_warn_either_way() {
        let f = fields(&[], Some(100_000));
        let at = |s| Some(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(date_offset(at(100_060), Some(&f), 3600), (Some(60), None));
        let (o, w) = date_offset(at(100_000 - 6 * 3600), Some(&f), 3600);
        assert_eq!(o, Some(-6 * 3600));
        assert!(w.unwrap().contains("6 h 0 min before"));
        let (o, w) = date_offset(at(100_000 + 7200), Some(&f), 3600);
        assert_eq!(o, Some(7200));
        assert!(w.unwrap().contains("after"));
        assert_eq!(date_offset(None, Some(&f), 3600), (None, None));
        assert_eq!(date_offset(at(1), None, 3600), (None, None));
    }
}
