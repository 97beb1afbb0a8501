//! PC/SC part 10 `FEATURE_VERIFY_PIN_DIRECT`: reading the host's PIN_VERIFY_STRUCTURE and
//! putting the typed PIN into its APDU, as a PIN-pad reader's firmware does.
//!
//! No crate implements the reader side of PC/SC part 10 (drivers such as libccid do it in
//! C), and the part used here is a fixed 19-byte header, so it is written out by hand.

/// Status words a PIN pad answers instead of the card's (PC/SC part 10, 2.5.2).
pub const SW_TIMEOUT: [u8; 2] = [0x64, 0x00];
pub const SW_CANCELLED: [u8; 2] = [0x64, 0x01];
pub const SW_BAD_LENGTH: [u8; 2] = [0x64, 0x03];
/// "Wrong data in the buffer, rejected by firmware."
pub const SW_BAD_BLOCK: [u8; 2] = [0x6B, 0x80];

/// The header of PIN_VERIFY_STRUCTURE, before `abData`:
///
/// ```text
/// bTimerOut, bTimerOut2, bmFormatString, bmPINBlockString, bmPINLengthFormat   5 bytes
/// wPINMaxExtraDigit (0xXXYY: XX minimum, YY maximum digits, little-endian)     2
/// bEntryValidationCondition, bNumberMessage                                    2
/// wLangId                                                                      2
/// bMsgIndex, bTeoPrologue[3]                                                   4
/// ulDataLength (little-endian)                                                 4
/// abData: the APDU to send, with room for the PIN
/// ```
const HEADER: usize = 19;

/// What the host asked the PIN pad to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyRequest {
    /// Seconds to wait for the person; 0 means the reader's default.
    pub timeout_secs: u8,
    format: u8,
    min_len: u8,
    max_len: u8,
    apdu: Vec<u8>,
}

/// Why a request or a typed PIN cannot be used; each becomes the status word the host sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The structure or the APDU is malformed, or asks for what this pad does not do.
    BadBlock,
    /// The typed PIN is shorter or longer than the host allows.
    BadLength,
}

impl Refusal {
    pub fn status_word(self) -> [u8; 2] {
        match self {
            Refusal::BadBlock => SW_BAD_BLOCK,
            Refusal::BadLength => SW_BAD_LENGTH,
        }
    }
}

impl VerifyRequest {
    pub fn parse(block: &[u8]) -> Result<VerifyRequest, Refusal> {
        if block.len() < HEADER {
            return Err(Refusal::BadBlock);
        }
        let data_len = u32::from_le_bytes([block[15], block[16], block[17], block[18]]);
        let apdu = &block[HEADER..];
        // Header, CLA INS P1 P2 and Lc at least: the PIN goes into the command data.
        if usize::try_from(data_len).ok() != Some(apdu.len()) || apdu.len() < 5 {
            return Err(Refusal::BadBlock);
        }
        Ok(VerifyRequest {
            timeout_secs: block[0],
            format: block[2],
            min_len: block[6],
            max_len: block[5],
            apdu: apdu.to_vec(),
        })
    }

    /// The APDU with `typed` (the keys pressed, as ASCII digits or characters) encoded and
    /// written where bmFormatString says, left-justified over the host's padding.
    pub fn fill(&self, typed: &[u8]) -> Result<Vec<u8>, Refusal> {
        let n = typed.len();
        if n == 0
            || (self.min_len != 0 && n < usize::from(self.min_len))
            || (self.max_len != 0 && n > usize::from(self.max_len))
        {
            return Err(Refusal::BadLength);
        }
        // Right justification (bit 2) is not needed by any card the rig emulates.
        if self.format & 0x04 != 0 {
            return Err(Refusal::BadBlock);
        }
        let position = usize::from((self.format >> 3) & 0x0F);
        let offset = if self.format & 0x80 != 0 {
            position
        } else if position % 8 == 0 {
            position / 8
        } else {
            return Err(Refusal::BadBlock);
        };
        let encoded = match self.format & 0x03 {
            // ASCII: the characters as typed.
            0x02 => typed.to_vec(),
            // Binary: one byte per digit.
            0x00 => typed.iter().map(|d| digit(*d)).collect::<Result<_, _>>()?,
            // BCD: two digits a byte, the last nibble padded with F.
            0x01 => typed
                .chunks(2)
                .map(|pair| {
                    let hi = digit(pair[0])?;
                    let lo = pair.get(1).map_or(Ok(0x0F), |d| digit(*d))?;
                    Ok((hi << 4) | lo)
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(Refusal::BadBlock),
        };
        let lc = usize::from(self.apdu[4]);
        let at = 5 + offset;
        if self.apdu.len() < 5 + lc || offset + encoded.len() > lc {
            return Err(Refusal::BadBlock);
        }
        let mut apdu = self.apdu.clone();
        apdu[at..at + encoded.len()].copy_from_slice(&encoded);
        Ok(apdu)
    }
}

fn digit(d: u8) -> Result<u8, Refusal> {
    if d.is_ascii_digit() {
        Ok(d - b'0')
    } else {
        Err(Refusal::BadLength)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What OpenSC 0.23 sends for a PIV card: ASCII, bytes, position 0, 8-byte block, PIN
    /// 4 to 8 long, and `VERIFY 80` with eight FF bytes of padding.
    fn opensc_piv_block() -> Vec<u8> {
        let mut b = vec![30, 30, 0x82, 0x08, 0x00, 8, 4, 0x02, 0, 0, 0, 0, 0, 0, 0];
        let apdu = [
            0x00, 0x20, 0x00, 0x80, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        b.extend_from_slice(&(apdu.len() as u32).to_le_bytes());
        b.extend_from_slice(&apdu);
        b
    }

    #[test]
    fn the_pin_is_written_over_the_padding() {
        let req = VerifyRequest::parse(&opensc_piv_block()).unwrap();
        assert_eq!(req.timeout_secs, 30);
        let apdu = req.fill(b"123456").unwrap();
        assert_eq!(apdu, b"\x00\x20\x00\x80\x08123456\xFF\xFF");
    }

    #[test]
    fn a_pin_outside_the_length_limits_is_refused() {
        let req = VerifyRequest::parse(&opensc_piv_block()).unwrap();
        assert_eq!(req.fill(b"123"), Err(Refusal::BadLength));
        assert_eq!(req.fill(b"123456789"), Err(Refusal::BadLength));
        assert_eq!(req.fill(b""), Err(Refusal::BadLength));
    }

    #[test]
    fn bcd_packs_two_digits_a_byte() {
        let mut b = opensc_piv_block();
        b[2] = 0x81; // BCD, bytes, position 0
        let apdu = VerifyRequest::parse(&b).unwrap().fill(b"12345").unwrap();
        assert_eq!(&apdu[5..8], &[0x12, 0x34, 0x5F]);
    }

    #[test]
    fn malformed_blocks_are_refused() {
        let good = opensc_piv_block();
        assert_eq!(VerifyRequest::parse(&good[..10]), Err(Refusal::BadBlock));
        let mut wrong_len = good.clone();
        wrong_len[15] = 40;
        assert_eq!(VerifyRequest::parse(&wrong_len), Err(Refusal::BadBlock));
        // Lc says 8 bytes of data but the APDU holds fewer.
        let mut short = good.clone();
        short.truncate(good.len() - 4);
        short[15] -= 4;
        let req = VerifyRequest::parse(&short).unwrap();
        assert_eq!(req.fill(b"123456"), Err(Refusal::BadBlock));
        // A PIN position past the data.
        let mut far = good;
        far[2] = 0x82 | (6 << 3);
        let req = VerifyRequest::parse(&far).unwrap();
        assert_eq!(req.fill(b"123456"), Err(Refusal::BadBlock));
    }
}
