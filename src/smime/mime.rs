//! MIME framing of S/MIME messages (RFC 8551 section 3): canonical form, clear-signed
//! `multipart/signed` and opaque `application/pkcs7-mime`.
//!
//! Owns: checking that input is a MIME entity, converting it to canonical CRLF form,
//! wrapping CMS output in MIME, and reading S/MIME entities back ([`read`]). Builds MIME by
//! hand: the structures are a few fixed headers, and what matters is byte-exactness of the
//! signed part, which a general MIME writer would not guarantee. Reads MIME with
//! `mailparse`.

use std::borrow::Cow;

use base64::Engine as _;

use super::SmimeError;

/// Converts line ends to CRLF (a lone LF or lone CR becomes CRLF). Input whose line ends
/// are all CRLF already (what most mail clients hand over) is borrowed, not copied: a large
/// message is not duplicated for nothing.
pub fn canonicalize(input: &[u8]) -> Cow<'_, [u8]> {
    if is_canonical(input) {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len() + input.len() / 32);
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if input.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// Every CR is followed by LF and every LF preceded by CR.
fn is_canonical(input: &[u8]) -> bool {
    memchr::memchr2_iter(b'\r', b'\n', input).all(|i| match input[i] {
        b'\r' => input.get(i + 1) == Some(&b'\n'),
        _ => i > 0 && input[i - 1] == b'\r',
    })
}

/// Checks that canonical `entity` is a MIME entity: header fields, an empty line, a body.
pub fn check_entity(entity: &[u8]) -> Result<(), SmimeError> {
    let bad = |why: &str| SmimeError::NotMime(why.to_owned());
    let end = find(entity, b"\r\n\r\n").ok_or_else(|| {
        bad("no empty line after the header fields (send headers, an empty line, then the body)")
    })?;
    let headers = &entity[..end];
    if headers.is_empty() {
        return Err(bad("no header fields (at least Content-Type is expected)"));
    }
    for (n, line) in headers.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            if n == 0 {
                return Err(bad("the first header line is a continuation line"));
            }
            continue;
        }
        let colon = line.iter().position(|&b| b == b':');
        let name_ok = colon.is_some_and(|c| {
            c > 0
                && line[..c]
                    .iter()
                    .all(|&b| (33..=126).contains(&b) && b != b':')
        });
        if !name_ok {
            return Err(bad(&format!(
                "header line {} is not a \"Name: value\" field",
                n + 1
            )));
        }
    }
    Ok(())
}

/// The first place `needle` occurs in `hay` (memchr's substring search: a window-by-window
/// comparison took two thirds of the time of clear-signing a large message).
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Base64 in lines of 76 characters, CRLF line ends (RFC 2045 section 6.8).
pub fn base64_lines(data: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / 38 + 2);
    for chunk in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A boundary that does not occur in `content`.
fn boundary(content: &[u8]) -> Result<String, SmimeError> {
    loop {
        let mut rnd = [0u8; 16];
        getrandom::fill(&mut rnd).map_err(|e| SmimeError::Internal(format!("getrandom: {e}")))?;
        let b = format!("----smime-agent-{}", crate::certs::hex(&rnd));
        if find(content, b.as_bytes()).is_none() {
            return Ok(b);
        }
    }
}

/// `multipart/signed` around the canonical entity and its detached signature.
pub fn clear_signed(
    entity: &[u8],
    signature_der: &[u8],
    micalg: &str,
) -> Result<Vec<u8>, SmimeError> {
    let b = boundary(entity)?;
    let mut out = Vec::with_capacity(entity.len() + signature_der.len() * 2 + 512);
    out.extend_from_slice(
        format!(
            "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";\r\n\
             \tmicalg={micalg}; boundary=\"{b}\"\r\n\
             \r\n\
             This is a cryptographically signed message in MIME format.\r\n\
             \r\n\
             --{b}\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(entity);
    // The CRLF before a delimiter belongs to the delimiter, not to the signed part.
    out.extend_from_slice(
        format!(
            "\r\n--{b}\r\n\
             Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\
             Content-Description: S/MIME Cryptographic Signature\r\n\
             \r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(&base64_lines(signature_der));
    out.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    Ok(out)
}

/// `application/pkcs7-mime` around a CMS object.
pub fn pkcs7_mime(smime_type: &str, cms_der: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "Content-Type: application/pkcs7-mime; smime-type={smime_type}; name=\"smime.p7m\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\
         \r\n"
    )
    .into_bytes();
    out.extend_from_slice(&base64_lines(cms_der));
    out
}

/// Deepest nesting of multiparts read (mailparse recurses; a hostile message must not
/// exhaust the stack).
pub const MAX_MULTIPART_NESTING: usize = 32;

/// What an S/MIME entity holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Smime {
    /// `multipart/signed`: the signed part exactly as signed (canonical CRLF), and the
    /// detached signature (DER).
    ClearSigned { signed: Vec<u8>, signature: Vec<u8> },
    /// `application/pkcs7-mime; smime-type=signed-data` (DER).
    SignedData(Vec<u8>),
    /// `application/pkcs7-mime; smime-type=enveloped-data` or `authEnveloped-data` (DER).
    Enveloped(Vec<u8>),
    /// `application/pkcs7-mime` whose smime-type is missing or unknown (DER); the CMS content
    /// type says what it is.
    Pkcs7(Vec<u8>),
    /// Not S/MIME: the entity as given.
    Plain,
}

/// Reads an S/MIME entity (header fields, empty line, body). A body that is itself DER or
/// PEM (`-----BEGIN PKCS7-----`, `-----BEGIN CMS-----`) is taken as CMS too, for tools that
/// hand over bare CMS.
pub fn read(entity: &[u8]) -> Result<Smime, SmimeError> {
    if entity.first() == Some(&0x30) {
        return Ok(Smime::Pkcs7(entity.to_vec()));
    }
    if let Some(der) = pem_cms(entity) {
        return Ok(Smime::Pkcs7(der));
    }
    let lower = entity.to_ascii_lowercase();
    let nesting = lower.windows(10).filter(|w| w == b"multipart/").count();
    if nesting > MAX_MULTIPART_NESTING {
        return Err(SmimeError::Limit(format!(
            "the message nests more than {MAX_MULTIPART_NESTING} multipart entities"
        )));
    }
    let canonical = canonicalize(entity);
    let mail = mailparse::parse_mail(&canonical).map_err(|e| SmimeError::NotMime(e.to_string()))?;
    let mime = mail.ctype.mimetype.to_ascii_lowercase();
    let param = |name: &str| {
        mail.ctype
            .params
            .get(name)
            .map(|v| v.to_ascii_lowercase())
            .unwrap_or_default()
    };
    match mime.as_str() {
        "multipart/signed" => {
            let protocol = param("protocol");
            if !matches!(
                protocol.as_str(),
                "application/pkcs7-signature" | "application/x-pkcs7-signature"
            ) {
                return Err(SmimeError::Unsupported(format!(
                    "multipart/signed with protocol {protocol:?} (not S/MIME)"
                )));
            }
            let [first, second] = mail.subparts.as_slice() else {
                return Err(SmimeError::NotMime(format!(
                    "multipart/signed has {} parts, not 2",
                    mail.subparts.len()
                )));
            };
            let signature = second
                .get_body_raw()
                .map_err(|e| SmimeError::Malformed(format!("the signature part: {e}")))?;
            Ok(Smime::ClearSigned {
                signed: first.raw_bytes.to_vec(),
                signature,
            })
        }
        "application/pkcs7-mime" | "application/x-pkcs7-mime" => {
            let body = mail
                .get_body_raw()
                .map_err(|e| SmimeError::Malformed(format!("the body: {e}")))?;
            let body = pem_cms(&body).unwrap_or(body);
            Ok(match param("smime-type").as_str() {
                "signed-data" => Smime::SignedData(body),
                "enveloped-data" | "authenveloped-data" => Smime::Enveloped(body),
                _ => Smime::Pkcs7(body),
            })
        }
        _ => Ok(Smime::Plain),
    }
}

/// A PEM-armoured CMS object, decoded.
fn pem_cms(data: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(data).ok()?.trim_start();
    for label in ["PKCS7", "CMS", "SIGNED MESSAGE", "ENCRYPTED MESSAGE"] {
        if text.starts_with(&format!("-----BEGIN {label}-----")) {
            let body: String = text
                .lines()
                .skip(1)
                .take_while(|l| !l.starts_with("-----END"))
                .collect();
            use base64::Engine as _;
            return base64::engine::general_purpose::STANDARD
                .decode(body.trim())
                .ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalizes_every_line_end() {
        assert_eq!(&*canonicalize(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd");
        assert_eq!(&*canonicalize(b"\n\n"), b"\r\n\r\n");
        assert_eq!(&*canonicalize(b"\r\r\n\n"), b"\r\n\r\n\r\n");
        assert_eq!(&*canonicalize(b"a\r"), b"a\r\n");
        assert_eq!(&*canonicalize(b"\na"), b"\r\na");
        assert_eq!(&*canonicalize(b""), b"");
        // Already canonical: borrowed, not copied.
        for done in [&b"a\r\nb\r\n"[..], b"no line end", b"\r\n", b""] {
            assert!(matches!(canonicalize(done), Cow::Borrowed(_)), "{done:?}");
            assert_eq!(&*canonicalize(done), done);
        }
    }

    #[test]
    fn accepts_entities_and_rejects_what_is_not_one() {
        check_entity(b"Content-Type: text/plain\r\n\r\nhi").unwrap();
        check_entity(b"Content-Type: text/plain;\r\n charset=utf-8\r\n\r\n").unwrap();
        for bad in [
            &b"hello world"[..],
            b"\r\n\r\nbody",
            b"not a header\r\n\r\nbody",
            b" continued: x\r\n\r\nbody",
            b": empty name\r\n\r\n",
        ] {
            assert!(
                check_entity(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn base64_lines_are_76_wide() {
        let out = base64_lines(&[0u8; 100]);
        let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
        assert_eq!(lines[0].len(), 77); // 76 + CR
    }

    #[test]
    fn read_returns_the_signed_part_byte_exact_and_the_signature() {
        let entity = b"Content-Type: text/plain\r\n\r\nhello\r\n\r\n";
        let out = clear_signed(entity, b"\x30\x03\x02\x01\x01", "sha-256").unwrap();
        match read(&out).unwrap() {
            Smime::ClearSigned { signed, signature } => {
                assert_eq!(signed, entity);
                assert_eq!(signature, b"\x30\x03\x02\x01\x01");
            }
            other => panic!("{other:?}"),
        }
        let opaque = pkcs7_mime("enveloped-data", b"\x30\x00");
        assert_eq!(
            read(&opaque).unwrap(),
            Smime::Enveloped(b"\x30\x00".to_vec())
        );
        assert_eq!(
            read(b"Content-Type: text/plain\r\n\r\nx").unwrap(),
            Smime::Plain
        );
    }

    #[test]
    fn deep_multipart_nesting_is_refused() {
        let mut m = String::new();
        for i in 0..100 {
            m.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
            ));
        }
        assert!(matches!(read(m.as_bytes()), Err(SmimeError::Limit(_))));
    }

    #[test]
    fn clear_signed_keeps_the_entity_byte_exact() {
        let entity = b"Content-Type: text/plain\r\n\r\nhello\r\n";
        let out = clear_signed(entity, b"sig", "sha-256").unwrap();
        assert!(find(&out, entity).is_some());
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("micalg=sha-256"));
        assert!(text.ends_with("--\r\n"));
    }
}
