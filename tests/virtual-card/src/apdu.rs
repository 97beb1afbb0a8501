//! ISO 7816-4 command and response APDUs: the only module that knows their byte layout.
//!
//! It parses what the reader sends and formats what the card answers; it knows nothing
//! about PIV.

/// Status words the card answers with, named as in ISO 7816-4 and NIST SP 800-73-4.
pub mod sw {
    /// Normal processing.
    pub const OK: u16 = 0x9000;
    /// `61 xx`: more response bytes are waiting for GET RESPONSE (xx = how many, 00 = 256+).
    pub const MORE_DATA: u16 = 0x6100;
    /// `63 Cx`: verification failed, x tries left.
    pub const VERIFY_FAILED: u16 = 0x63C0;
    /// Memory failure (the PIN counter could not be stored).
    pub const MEMORY_FAILURE: u16 = 0x6581;
    /// Wrong length (Lc/Le inconsistent with the APDU's size).
    pub const WRONG_LENGTH: u16 = 0x6700;
    /// Logical channels are not supported.
    pub const LOGICAL_CHANNEL_NOT_SUPPORTED: u16 = 0x6881;
    /// Secure messaging is not supported.
    pub const SECURE_MESSAGING_NOT_SUPPORTED: u16 = 0x6882;
    /// Command chaining is not supported for this instruction.
    pub const CHAINING_NOT_SUPPORTED: u16 = 0x6884;
    /// Security status not satisfied (PIN not verified).
    pub const SECURITY_STATUS_NOT_SATISFIED: u16 = 0x6982;
    /// Authentication method blocked (PIN blocked).
    pub const AUTH_METHOD_BLOCKED: u16 = 0x6983;
    /// Conditions of use not satisfied (e.g. GET RESPONSE with nothing pending).
    pub const CONDITIONS_NOT_SATISFIED: u16 = 0x6985;
    /// Incorrect parameters in the command data field.
    pub const WRONG_DATA: u16 = 0x6A80;
    /// File or application not found (absent data object, unknown AID).
    pub const NOT_FOUND: u16 = 0x6A82;
    /// Incorrect parameters P1-P2.
    pub const WRONG_P1P2: u16 = 0x6A86;
    /// Referenced data (key or PIN reference) not found.
    pub const REFERENCE_NOT_FOUND: u16 = 0x6A88;
    /// Instruction code not supported.
    pub const INS_NOT_SUPPORTED: u16 = 0x6D00;
    /// Class not supported.
    pub const CLA_NOT_SUPPORTED: u16 = 0x6E00;
    /// No precise diagnosis: the card failed (a flaky card's fault, `CardConfig::fault_file`).
    pub const NO_PRECISE_DIAGNOSIS: u16 = 0x6F00;
}

/// A parsed command APDU (short or extended form), borrowing its data field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command<'a> {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    /// The command data field (empty when Lc is absent).
    pub data: &'a [u8],
    /// The expected response length: `None` when Le is absent; `Some(256)` for a short
    /// Le of `00`, `Some(65536)` for an extended Le of `00 00`.
    pub le: Option<usize>,
}

/// The bytes do not form a command APDU of any ISO 7816-4 case (answered with `67 00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedApdu;

impl<'a> Command<'a> {
    /// Parses the four ISO 7816-4 cases, short and extended.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, MalformedApdu> {
        let (header, body) = bytes.split_first_chunk::<4>().ok_or(MalformedApdu)?;
        let [cla, ins, p1, p2] = *header;
        let mut cmd = Command {
            cla,
            ins,
            p1,
            p2,
            data: &[],
            le: None,
        };
        match body {
            // Case 1.
            [] => {}
            // Case 2 short.
            [le] => cmd.le = Some(short_le(*le)),
            // Case 3/4 short.
            [lc, rest @ ..] if *lc != 0 => {
                let lc = usize::from(*lc);
                if rest.len() == lc {
                    cmd.data = rest;
                } else if rest.len() == lc + 1 {
                    cmd.data = &rest[..lc];
                    cmd.le = Some(short_le(rest[lc]));
                } else {
                    return Err(MalformedApdu);
                }
            }
            // Case 2 extended.
            [0, hi, lo] => cmd.le = Some(extended_le(*hi, *lo)),
            // Case 3/4 extended.
            [0, hi, lo, rest @ ..] => {
                let lc = usize::from(u16::from_be_bytes([*hi, *lo]));
                if lc == 0 {
                    return Err(MalformedApdu);
                }
                if rest.len() == lc {
                    cmd.data = rest;
                } else if rest.len() == lc + 2 {
                    cmd.data = &rest[..lc];
                    cmd.le = Some(extended_le(rest[lc], rest[lc + 1]));
                } else {
                    return Err(MalformedApdu);
                }
            }
            _ => return Err(MalformedApdu),
        }
        Ok(cmd)
    }

    /// Whether the command-chaining bit of CLA is set (more parts of this command follow).
    pub fn is_chained(&self) -> bool {
        self.cla & 0x10 != 0
    }
}

fn short_le(le: u8) -> usize {
    if le == 0 { 256 } else { usize::from(le) }
}

fn extended_le(hi: u8, lo: u8) -> usize {
    match u16::from_be_bytes([hi, lo]) {
        0 => 65536,
        n => usize::from(n),
    }
}

/// A response APDU: data followed by the status word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub data: Vec<u8>,
    pub sw: u16,
}

impl Response {
    /// A response with data and `90 00`.
    pub fn ok(data: Vec<u8>) -> Self {
        Response { data, sw: sw::OK }
    }

    /// A response with only a status word.
    pub fn status(sw: u16) -> Self {
        Response {
            data: Vec::new(),
            sw,
        }
    }

    /// The bytes sent to the reader.
    pub fn into_bytes(self) -> Vec<u8> {
        let mut out = self.data;
        out.extend_from_slice(&self.sw.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_short_cases() {
        let c = Command::parse(&[0, 0x20, 0, 0x80]).unwrap();
        assert_eq!((c.data, c.le), (&[][..], None));
        let c = Command::parse(&[0, 0xC0, 0, 0, 0]).unwrap();
        assert_eq!(c.le, Some(256));
        let c = Command::parse(&[0, 0x20, 0, 0x80, 2, 1, 2]).unwrap();
        assert_eq!((c.data, c.le), (&[1, 2][..], None));
        let c = Command::parse(&[0, 0xCB, 0x3F, 0xFF, 1, 7, 8]).unwrap();
        assert_eq!((c.data, c.le), (&[7][..], Some(8)));
    }

    #[test]
    fn parses_extended_cases() {
        let c = Command::parse(&[0, 0xCB, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(c.le, Some(65536));
        let c = Command::parse(&[0, 0x87, 0, 0, 0, 0, 2, 9, 9, 1, 0]).unwrap();
        assert_eq!((c.data, c.le), (&[9, 9][..], Some(256)));
    }

    #[test]
    fn rejects_inconsistent_lengths() {
        for bad in [
            &[0u8, 1, 2][..],
            &[0, 0x20, 0, 0x80, 3, 1],
            &[0, 0x20, 0, 0x80, 1, 1, 2, 3],
            &[0, 0x20, 0, 0x80, 0, 0],
            &[0, 0x20, 0, 0x80, 0, 0, 0, 1],
            &[0, 0x20, 0, 0x80, 0, 0, 2, 1],
        ] {
            assert_eq!(Command::parse(bad), Err(MalformedApdu), "{bad:02X?}");
        }
    }
}
