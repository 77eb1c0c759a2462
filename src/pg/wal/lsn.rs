//! Log sequence numbers: byte positions in the WAL stream.

use std::fmt;
use std::ops::{Add, Sub};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A WAL position (PostgreSQL's `XLogRecPtr` / `pg_lsn`): a 64-bit byte
/// offset into the WAL stream of a cluster.
///
/// Text form is PostgreSQL's `%X/%X` (upper 32 bits, `/`, lower 32 bits, both
/// in hexadecimal without leading zeros), for example `0/2000028`. Parsing also
/// accepts lower case and leading zeros (`0/02000028`, as `pg_waldump` prints).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

/// Text that is not an `X/Y` LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {text:?}: expected two hexadecimal numbers of at most 8 digits separated by '/', like 0/2000028")]
pub struct ParseLsnError {
    /// The text that was rejected.
    pub text: String,
}

impl Lsn {
    /// `InvalidXLogRecPtr`: position 0, never the position of a record.
    pub const INVALID: Lsn = Lsn(0);

    /// Whether this is not [`Lsn::INVALID`].
    pub fn is_valid(self) -> bool {
        self.0 != 0
    }

    /// `self + bytes`, or `None` when that overflows 64 bits.
    pub fn checked_add(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_add(bytes).map(Lsn)
    }

    /// The number of the WAL segment holding this position (`XLByteToSeg`).
    pub fn segment_number(self, seg_size: super::WalSegSize) -> u64 {
        self.0 / u64::from(seg_size.bytes())
    }

    /// The offset of this position inside its segment (`XLogSegmentOffset`).
    pub fn segment_offset(self, seg_size: super::WalSegSize) -> u32 {
        // The remainder is below the segment size, which is a u32.
        (self.0 % u64::from(seg_size.bytes())) as u32
    }

    /// The first byte of segment `segno` (`XLogSegNoOffsetToRecPtr(segno, 0)`).
    /// Saturates at `u64::MAX` for segment numbers beyond the 64-bit space.
    pub fn from_segment(segno: u64, seg_size: super::WalSegSize) -> Lsn {
        Lsn(segno.saturating_mul(u64::from(seg_size.bytes())))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError {
            text: s.to_string(),
        };
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let part = |p: &str| -> Result<u64, ParseLsnError> {
            // from_str_radix accepts a leading '+', PostgreSQL does not.
            if p.is_empty() || p.len() > 8 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            u64::from_str_radix(p, 16).map_err(|_| err())
        };
        Ok(Lsn((part(hi)? << 32) | part(lo)?))
    }
}

impl Add<u64> for Lsn {
    type Output = Lsn;

    /// Panics on overflow in debug builds like integer addition; use
    /// [`Lsn::checked_add`] for positions computed from untrusted input.
    fn add(self, rhs: u64) -> Lsn {
        Lsn(self.0 + rhs)
    }
}

impl Sub<Lsn> for Lsn {
    type Output = u64;

    /// The number of bytes from `rhs` to `self`; saturates to 0 when `rhs` is
    /// after `self`.
    fn sub(self, rhs: Lsn) -> u64 {
        self.0.saturating_sub(rhs.0)
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::wal::WalSegSize;

    #[test]
    fn parse_and_display_round_trip() {
        for (text, value) in [
            ("0/0", 0u64),
            ("0/2000028", 0x0200_0028),
            ("16/B374D848", 0x16_B374_D848),
            ("FFFFFFFF/FFFFFFFF", u64::MAX),
            ("1/0", 1 << 32),
        ] {
            let lsn: Lsn = text.parse().unwrap();
            assert_eq!(lsn, Lsn(value), "{text}");
            assert_eq!(lsn.to_string(), text);
        }
        // pg_waldump's zero-padded form and lower case parse too.
        assert_eq!("0/02000028".parse::<Lsn>().unwrap(), Lsn(0x0200_0028));
        assert_eq!("16/b374d848".parse::<Lsn>().unwrap(), Lsn(0x16_B374_D848));
    }

    #[test]
    fn parse_errors_name_the_text() {
        for bad in [
            "",
            "/",
            "0/",
            "/0",
            "0",
            "0/1/2",
            "G/0",
            "0/123456789",
            "+1/0",
            " 0/1",
            "0/1 ",
            "-1/0",
        ] {
            let err = bad.parse::<Lsn>().unwrap_err();
            assert_eq!(err.text, bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn arithmetic() {
        let a = Lsn(0x100);
        assert_eq!(a + 0x28, Lsn(0x128));
        assert_eq!(a.checked_add(1), Some(Lsn(0x101)));
        assert_eq!(Lsn(u64::MAX).checked_add(1), None);
        assert_eq!(Lsn(0x128) - a, 0x28);
        assert_eq!(a - Lsn(0x128), 0, "saturates");
        assert!(Lsn(1) < Lsn(2));
        assert!(!Lsn::INVALID.is_valid());
        assert!(Lsn(1).is_valid());
        assert_eq!(Lsn::default(), Lsn::INVALID);
    }

    #[test]
    fn segments() {
        let s16 = WalSegSize::DEFAULT;
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.segment_number(s16), 0x16B3);
        assert_eq!(lsn.segment_offset(s16), 0x74D848);
        assert_eq!(
            Lsn::from_segment(0x16B3, s16),
            "16/B3000000".parse().unwrap()
        );
        let s1 = WalSegSize::new(1 << 20).unwrap();
        assert_eq!(lsn.segment_number(s1), 0x16B37);
        assert_eq!(lsn.segment_offset(s1), 0x4D848);
        assert_eq!(
            Lsn::from_segment(0x16B37, s1),
            "16/B3700000".parse().unwrap()
        );
        assert_eq!(Lsn::from_segment(u64::MAX, s1), Lsn(u64::MAX));
    }

    #[test]
    fn serde_as_text() {
        let lsn = Lsn(0x16_B374_D848);
        let json = serde_json::to_string(&lsn).unwrap();
        assert_eq!(json, "\"16/B374D848\"");
        assert_eq!(serde_json::from_str::<Lsn>(&json).unwrap(), lsn);
        let err = serde_json::from_str::<Lsn>("\"nope\"").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
