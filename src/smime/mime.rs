//! MIME framing of S/MIME messages (RFC 8551 section 3): canonical form, clear-signed
//! `multipart/signed` and opaque `application/pkcs7-mime`.
//!
//! Owns: checking that input is a MIME entity, converting it to canonical CRLF form, and
//! wrapping CMS output in MIME. Builds MIME by hand: the structures are a few fixed
//! headers, and what matters is byte-exactness of the signed part, which a general MIME
//! writer would not guarantee.

use base64::Engine as _;

use super::SmimeError;

/// Converts line ends to CRLF (a lone LF or lone CR becomes CRLF).
pub fn canonicalize(input: &[u8]) -> Vec<u8> {
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
    out
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

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalizes_every_line_end() {
        assert_eq!(canonicalize(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd");
        assert_eq!(canonicalize(b"\n\n"), b"\r\n\r\n");
        assert_eq!(canonicalize(b""), b"");
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
    fn clear_signed_keeps_the_entity_byte_exact() {
        let entity = b"Content-Type: text/plain\r\n\r\nhello\r\n";
        let out = clear_signed(entity, b"sig", "sha-256").unwrap();
        assert!(find(&out, entity).is_some());
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("micalg=sha-256"));
        assert!(text.ends_with("--\r\n"));
    }
}
