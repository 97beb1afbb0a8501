//! The BER-TLV subset PIV uses (SP 800-73-4 part 2, appendix A): tags of one to three
//! bytes, definite lengths of up to three bytes. Parsing never trusts a length it has not
//! checked against the bytes it has.

/// A TLV could not be parsed (answered with `6A 80`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedTlv;

/// Appends `tag || length || value` to `out`.
pub fn push(out: &mut Vec<u8>, tag: &[u8], value: &[u8]) {
    out.extend_from_slice(tag);
    push_len(out, value.len());
    out.extend_from_slice(value);
}

/// `tag || length || value` as a new vector.
pub fn encode(tag: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + tag.len() + 4);
    push(&mut out, tag, value);
    out
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    // PIV objects stay far below 16 MiB; longer values are not representable in PIV.
    match len {
        0..=0x7F => out.push(len as u8),
        0x80..=0xFF => out.extend_from_slice(&[0x81, len as u8]),
        0x100..=0xFFFF => {
            out.push(0x82);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x83);
            out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        }
    }
}

/// One parsed TLV, borrowing from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub tag: &'a [u8],
    pub value: &'a [u8],
}

/// Parses one TLV from the front of `input`, returning it and the rest.
pub fn parse_one(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), MalformedTlv> {
    let first = *input.first().ok_or(MalformedTlv)?;
    // Multi-byte tag: low five bits all set, then continuation bytes while bit 8 is set.
    let mut tag_len = 1;
    if first & 0x1F == 0x1F {
        loop {
            let b = *input.get(tag_len).ok_or(MalformedTlv)?;
            tag_len += 1;
            if b & 0x80 == 0 {
                break;
            }
            if tag_len >= 3 {
                return Err(MalformedTlv);
            }
        }
    }
    let (tag, rest) = input.split_at(tag_len);
    let (len, rest) = parse_len(rest)?;
    if rest.len() < len {
        return Err(MalformedTlv);
    }
    let (value, rest) = rest.split_at(len);
    Ok((Tlv { tag, value }, rest))
}

/// Parses `input` as exactly one TLV with nothing after it.
pub fn parse_exact(input: &[u8]) -> Result<Tlv<'_>, MalformedTlv> {
    match parse_one(input)? {
        (tlv, []) => Ok(tlv),
        _ => Err(MalformedTlv),
    }
}

/// Parses `input` as a sequence of TLVs that fills it exactly.
pub fn parse_all(mut input: &[u8]) -> Result<Vec<Tlv<'_>>, MalformedTlv> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let (tlv, rest) = parse_one(input)?;
        out.push(tlv);
        input = rest;
    }
    Ok(out)
}

fn parse_len(input: &[u8]) -> Result<(usize, &[u8]), MalformedTlv> {
    let (&first, rest) = input.split_first().ok_or(MalformedTlv)?;
    if first < 0x80 {
        return Ok((usize::from(first), rest));
    }
    let n = usize::from(first & 0x7F);
    if n == 0 || n > 3 || rest.len() < n {
        return Err(MalformedTlv);
    }
    let len = rest[..n]
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    Ok((len, &rest[n..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_length_form() {
        for len in [0usize, 1, 0x7F, 0x80, 0xFF, 0x100, 0x1234, 0x10000] {
            let value = vec![0xAB; len];
            let enc = encode(&[0x5F, 0xC1, 0x05], &value);
            let tlv = parse_exact(&enc).unwrap();
            assert_eq!(tlv.tag, &[0x5F, 0xC1, 0x05]);
            assert_eq!(tlv.value.len(), len);
        }
    }

    #[test]
    fn rejects_truncated_and_trailing_input() {
        assert!(parse_exact(&[]).is_err());
        assert!(parse_exact(&[0x5C]).is_err());
        assert!(parse_exact(&[0x5C, 0x03, 0x5F]).is_err());
        assert!(parse_exact(&[0x5C, 0x84, 0, 0, 0, 1, 0]).is_err());
        assert!(parse_exact(&[0x5C, 0x01, 0x7E, 0x00]).is_err());
        assert!(parse_exact(&[0x5F, 0xFF, 0xFF, 0xFF, 0x00]).is_err());
        assert_eq!(parse_all(&[0x82, 0x00, 0x81, 0x01, 0x07]).unwrap().len(), 2);
    }
}
