//! Lower-case hex encoding for digests and host data, and a strict decoder for hex given on the
//! command line or in configuration (no prefix, no separators, even length).

/// Errors decoding a hex string.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HexError {
    /// Hex digits come in pairs; an odd count is a truncated value.
    #[error("hex string has an odd number of digits ({len})")]
    OddLength { len: usize },
    /// Any character outside 0-9, a-f, A-F.
    #[error("invalid hex character {ch:?} at position {pos}")]
    InvalidChar { ch: char, pos: usize },
    /// The value must have an exact size (e.g. 32 bytes of host data).
    #[error("expected {expected} bytes of hex, got {actual}")]
    WrongLength { expected: usize, actual: usize },
}

/// Encode bytes as lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Decode a hex string of any even length.
pub fn decode(s: &str) -> Result<Vec<u8>, HexError> {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() % 2 != 0 {
        return Err(HexError::OddLength { len: chars.len() });
    }
    let mut out = Vec::with_capacity(chars.len() / 2);
    for (i, pair) in chars.chunks(2).enumerate() {
        let mut byte = 0u8;
        for (j, &ch) in pair.iter().enumerate() {
            let v = ch
                .to_digit(16)
                .ok_or(HexError::InvalidChar { ch, pos: i * 2 + j })?;
            // to_digit(16) is at most 15, so the value fits a nibble.
            byte = (byte << 4) | (v as u8);
        }
        out.push(byte);
    }
    Ok(out)
}

/// Decode a hex string that must encode exactly `N` bytes.
pub fn decode_array<const N: usize>(s: &str) -> Result<[u8; N], HexError> {
    let v = decode(s)?;
    v.as_slice().try_into().map_err(|_| HexError::WrongLength {
        expected: N,
        actual: v.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes = [0x00, 0x01, 0xab, 0xff, 0x7f];
        assert_eq!(encode(&bytes), "0001abff7f");
        assert_eq!(decode("0001ABff7f").unwrap(), bytes);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(decode("abc"), Err(HexError::OddLength { len: 3 }));
        assert_eq!(decode("0g"), Err(HexError::InvalidChar { ch: 'g', pos: 1 }));
        assert_eq!(decode("é0"), Err(HexError::InvalidChar { ch: 'é', pos: 0 }));
        assert_eq!(
            decode_array::<2>("aabbcc"),
            Err(HexError::WrongLength {
                expected: 2,
                actual: 3
            })
        );
        assert_eq!(decode_array::<2>("aabb").unwrap(), [0xaa, 0xbb]);
        assert_eq!(decode("").unwrap(), Vec::<u8>::new());
    }
}
