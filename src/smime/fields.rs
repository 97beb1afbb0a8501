//! The header fields of a message that a verdict holds its signatures against: the sender's
//! addresses (From, Sender) and the Date (RFC 5322 section 3.6), read from an entity's own
//! header section.
//!
//! Owns: reading those fields. Must not touch: comparing them with a signer (the ops'
//! judgement), MIME structure (`mime`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailparse::{MailAddr, MailHeader};

/// What an entity's header section says about its author and its date.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFields {
    /// Whether the entity has a From or Sender field (even one without a readable address:
    /// then nobody can match it).
    pub has_sender: bool,
    /// The addresses of From, then of Sender (addr-specs, without display names).
    pub addresses: Vec<String>,
    /// The Date field: `None` when absent, `Some(Err(text))` when it cannot be read.
    pub date: Option<Result<SystemTime, String>>,
}

/// The From, Sender and Date fields of `entity`'s own header section; `None` when it has
/// none of them (a bare MIME entity such as a clear-signed part, or bare CMS).
pub fn read(entity: &[u8]) -> Option<MessageFields> {
    if entity.first() == Some(&0x30) || entity.trim_ascii_start().starts_with(b"-----BEGIN") {
        return None;
    }
    let (headers, _) = mailparse::parse_headers(entity).ok()?;
    let mut fields = MessageFields::default();
    let mut senders: Vec<&MailHeader<'_>> = vec![];
    for name in ["From", "Sender"] {
        senders.extend(
            headers
                .iter()
                .filter(|h| h.get_key_ref().eq_ignore_ascii_case(name)),
        );
    }
    for h in senders {
        fields.has_sender = true;
        if let Ok(list) = mailparse::addrparse_header(h) {
            for a in list.iter() {
                let singles = match a {
                    MailAddr::Single(s) => std::slice::from_ref(s),
                    MailAddr::Group(g) => g.addrs.as_slice(),
                };
                fields.addresses.extend(
                    singles
                        .iter()
                        .map(|s| s.addr.trim().to_owned())
                        .filter(|a| !a.is_empty()),
                );
            }
        }
    }
    fields.date = headers
        .iter()
        .find(|h| h.get_key_ref().eq_ignore_ascii_case("Date"))
        .map(|h| {
            let text = h.get_value();
            // mailparse reads what it cannot parse as the epoch: no mail is dated 1970.
            match mailparse::dateparse(&text) {
                Ok(secs) if secs > 0 => Ok(UNIX_EPOCH + Duration::from_secs(secs as u64)),
                Ok(_) | Err(_) => Err(text.trim().to_owned()),
            }
        });
    (fields.has_sender || fields.date.is_some()).then_some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_sender_and_date_are_read_from_the_header_section_only() {
        let m = b"From: Carol <carol@example.org>\r\nSender: list@example.org\r\n\
                  Date: Tue, 1 Jul 2025 10:00:00 +0200\r\nContent-Type: text/plain\r\n\r\n\
                  From: mallory@example.org\r\n";
        let f = read(m).unwrap();
        assert!(f.has_sender);
        assert_eq!(f.addresses, vec!["carol@example.org", "list@example.org"]);
        assert_eq!(
            f.date,
            Some(Ok(UNIX_EPOCH + Duration::from_secs(1_751_356_800)))
        );
    }

    #[test]
    fn a_bare_entity_or_bare_cms_has_no_fields() {
        assert_eq!(read(b"Content-Type: text/plain\r\n\r\nFrom: x@y\r\n"), None);
        assert_eq!(read(b"\x30\x80\x06\x09"), None);
        assert_eq!(
            read(b"-----BEGIN PKCS7-----\nMIIB\n-----END PKCS7-----\n"),
            None
        );
    }

    #[test]
    fn an_unreadable_from_still_counts_as_a_sender_and_a_bad_date_is_kept_as_text() {
        let f = read(b"From: <>\r\nDate: someday\r\n\r\nbody").unwrap();
        assert!(f.has_sender);
        assert!(f.addresses.is_empty(), "{:?}", f.addresses);
        assert_eq!(f.date, Some(Err("someday".to_owned())));
    }
}
