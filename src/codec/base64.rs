//! Base64 for SenML-JSON `vd` (base64url without padding on output) and plain
//! text opaque values (standard alphabet with padding). Decoding accepts both
//! alphabets, with or without padding.

use alloc::vec::Vec;

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The alphabet and padding to encode with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alphabet {
    /// RFC 4648 §4 with `=` padding.
    Standard,
    /// RFC 4648 §5 without padding.
    UrlSafeNoPad,
}

/// Appends the base64 text of `data` to `out` (ASCII only).
pub(crate) fn encode_into(data: &[u8], alphabet: Alphabet, mut out: impl FnMut(u8)) {
    let (table, pad) = match alphabet {
        Alphabet::Standard => (STANDARD, true),
        Alphabet::UrlSafeNoPad => (URL_SAFE, false),
    };
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let symbols = chunk.len() + 1;
        for i in 0..4 {
            if i < symbols {
                out(table[((n >> (18 - 6 * i)) & 0x3F) as usize]);
            } else if pad {
                out(b'=');
            }
        }
    }
}

/// Length of the encoded text.
#[cfg(test)]
pub(crate) fn encoded_len(len: usize, alphabet: Alphabet) -> usize {
    match alphabet {
        Alphabet::Standard => len.div_ceil(3) * 4,
        Alphabet::UrlSafeNoPad => (len * 4).div_ceil(3),
    }
}

fn symbol(b: u8) -> Option<u32> {
    Some(u32::from(match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'+' | b'-' => 62,
        b'/' | b'_' => 63,
        _ => return None,
    }))
}

/// Decodes base64 in either alphabet, padded or not. On failure, the index of
/// the offending character.
pub(crate) fn decode(text: &[u8]) -> Result<Vec<u8>, usize> {
    let mut end = text.len();
    // Padding: at most two '=' and only to complete a 4-symbol group.
    let padding = text.iter().rev().take_while(|&&b| b == b'=').count();
    if padding > 0 {
        if padding > 2 || text.len() % 4 != 0 {
            return Err(text.len() - padding);
        }
        end -= padding;
    }
    if let Some(bad) = text[..end].iter().position(|&b| symbol(b).is_none()) {
        return Err(bad);
    }
    if end % 4 == 1 {
        return Err(end.saturating_sub(1));
    }
    let mut out = Vec::with_capacity(end / 4 * 3 + 2);
    let mut acc = 0u32;
    let mut bits = 0;
    for (i, &b) in text[..end].iter().enumerate() {
        acc = (acc << 6) | symbol(b).ok_or(i)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero for a canonical encoding.
    if acc != 0 {
        return Err(end - 1);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;

    fn enc(data: &[u8], alphabet: Alphabet) -> String {
        let mut s = String::new();
        encode_into(data, alphabet, |b| s.push(char::from(b)));
        assert_eq!(s.len(), encoded_len(data.len(), alphabet));
        s
    }

    #[test]
    fn rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, coded) in cases {
            assert_eq!(enc(plain.as_bytes(), Alphabet::Standard), coded);
            assert_eq!(decode(coded.as_bytes()).unwrap(), plain.as_bytes());
            let unpadded = coded.trim_end_matches('=');
            assert_eq!(enc(plain.as_bytes(), Alphabet::UrlSafeNoPad), unpadded);
            assert_eq!(decode(unpadded.as_bytes()).unwrap(), plain.as_bytes());
        }
        assert_eq!(decode(b"AQIDBAU").unwrap(), [1, 2, 3, 4, 5]);
        assert_eq!(enc(&[0xfb, 0xff], Alphabet::UrlSafeNoPad), "-_8");
        assert_eq!(enc(&[0xfb, 0xff], Alphabet::Standard), "+/8=");
        assert_eq!(decode(b"-_8").unwrap(), [0xfb, 0xff]);
        assert_eq!(decode(b"+/8=").unwrap(), [0xfb, 0xff]);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(decode(b"Zg="), Err(2)); // padding without a full group
        assert_eq!(decode(b"Z==="), Err(1));
        assert_eq!(decode(b"Z"), Err(0));
        assert_eq!(decode(b"Zm9v!"), Err(4));
        assert_eq!(decode(b"Zh=="), Err(1)); // non-zero leftover bits
        assert_eq!(decode(b"Zm 9v"), Err(2));
    }
}
