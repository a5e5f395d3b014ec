//! Sizes as users write them: `512M`, `50G`, `1T` (binary units; a bare number is bytes).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A size that cannot be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid size {0:?}: use a number with K, M, G or T, like 512M or 50G")]
pub struct SizeError(pub String);

/// A size in bytes, parsed from and shown as `50G`-style text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ByteSize(pub u64);

const UNITS: [(char, u32); 4] = [('K', 10), ('M', 20), ('G', 30), ('T', 40)];

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// The size in whole MiB, rounded down.
    pub fn mib(self) -> u64 {
        self.0 >> 20
    }
}

impl FromStr for ByteSize {
    type Err = SizeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || SizeError(s.to_string());
        let text = s.trim();
        let text = text
            .strip_suffix(['B', 'b'])
            .filter(|t| t.ends_with(char::is_alphabetic))
            .unwrap_or(text);
        let (digits, shift) = match text.chars().last() {
            Some(c) if c.is_ascii_alphabetic() => {
                let unit = c.to_ascii_uppercase();
                let shift = UNITS.iter().find(|(u, _)| *u == unit).ok_or_else(err)?.1;
                (&text[..text.len() - 1], shift)
            }
            _ => (text, 0),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let number: u64 = digits.parse().map_err(|_| err())?;
        number
            .checked_mul(1u64 << shift)
            .map(ByteSize)
            .ok_or_else(err)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, shift) in UNITS.iter().rev() {
            let scale = 1u64 << shift;
            if self.0 >= scale && self.0.is_multiple_of(scale) {
                return write!(f, "{}{unit}", self.0 / scale);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl TryFrom<String> for ByteSize {
    type Error = SizeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ByteSize> for String {
    fn from(s: ByteSize) -> String {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_units() {
        assert_eq!("50G".parse(), Ok(ByteSize(50 << 30)));
        assert_eq!("512M".parse(), Ok(ByteSize(512 << 20)));
        assert_eq!("512m".parse(), Ok(ByteSize(512 << 20)));
        assert_eq!("2GB".parse(), Ok(ByteSize(2 << 30)));
        assert_eq!("1T".parse(), Ok(ByteSize(1 << 40)));
        assert_eq!("4096".parse(), Ok(ByteSize(4096)));
    }

    #[test]
    fn rejects_garbage_and_overflow() {
        for bad in ["", "G", "-1G", "1.5G", "10X", "1 G", "99999999999T", "1GG"] {
            assert_eq!(
                bad.parse::<ByteSize>(),
                Err(SizeError(bad.to_string())),
                "{bad}"
            );
        }
    }

    #[test]
    fn displays_in_the_largest_exact_unit() {
        assert_eq!(ByteSize(50 << 30).to_string(), "50G");
        assert_eq!(ByteSize(1536 << 20).to_string(), "1536M");
        assert_eq!(ByteSize(1000).to_string(), "1000");
    }
}
