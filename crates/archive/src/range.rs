//! Byte ranges and instants as clients give them.

use crate::ArchiveError;

/// A byte range as requested (HTTP Range semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// bytes=a-b (b inclusive) or bytes=a-
    /// bytes=a-b (b inclusive) or bytes=a-
    From {
        /// The first byte.
        start: u64,
        /// The last byte (inclusive); None for the end of the object.
        end: Option<u64>,
    },
    /// bytes=-n: the last n bytes
    Suffix(u64),
}

impl ByteRange {
    /// Parses `bytes=a-b`, `bytes=a-` or `bytes=-n` (one range only).
    pub fn parse_header(h: &str) -> Result<Self, ArchiveError> {
        let bad = || ArchiveError::Invalid(format!("unsupported Range header {h:?}"));
        let spec = h.trim().strip_prefix("bytes=").ok_or_else(bad)?;
        if spec.contains(',') {
            return Err(bad());
        }
        let (a, b) = spec.split_once('-').ok_or_else(bad)?;
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() {
            return Ok(ByteRange::Suffix(b.parse().map_err(|_| bad())?));
        }
        let start = a.parse().map_err(|_| bad())?;
        let end = if b.is_empty() {
            None
        } else {
            Some(b.parse().map_err(|_| bad())?)
        };
        if end.is_some_and(|e| e < start) {
            return Err(bad());
        }
        Ok(ByteRange::From { start, end })
    }

    /// The half-open span this range covers in an object of `size` bytes.
    pub fn resolve(&self, size: u64) -> Result<std::ops::Range<u64>, ArchiveError> {
        match *self {
            ByteRange::From { start, end } => {
                if start >= size {
                    return Err(ArchiveError::InvalidRange { size });
                }
                // `end` is inclusive and may be u64::MAX (`bytes=0-18446744073709551615`).
                Ok(start..end.map_or(size, |e| e.saturating_add(1).min(size)))
            }
            ByteRange::Suffix(n) => {
                if n == 0 {
                    return Err(ArchiveError::InvalidRange { size });
                }
                Ok(size.saturating_sub(n)..size)
            }
        }
    }
}

/// Parses an RFC 3339 instant (`2026-11-25T10:00:00Z`) into ns since the epoch.
pub fn parse_instant(s: &str) -> Result<u64, ArchiveError> {
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        ArchiveError::Invalid(format!(
            "{s:?} is not an RFC 3339 time (like 2026-11-25T10:00:00Z): {e}"
        ))
    })?;
    let d = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| ArchiveError::Invalid(format!("{s:?} is before 1970")))?;
    Ok(d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_ending_at_the_largest_number_is_the_rest_of_the_object() {
        let r = ByteRange::parse_header("bytes=0-18446744073709551615").unwrap();
        assert_eq!(r.resolve(10).unwrap(), 0..10);
        let r = ByteRange::parse_header("bytes=3-18446744073709551615").unwrap();
        assert_eq!(r.resolve(10).unwrap(), 3..10);
        let r = ByteRange::parse_header("bytes=-18446744073709551615").unwrap();
        assert_eq!(r.resolve(10).unwrap(), 0..10);
    }

    #[test]
    fn numbers_past_u64_are_refused_not_wrapped() {
        assert!(ByteRange::parse_header("bytes=0-18446744073709551616").is_err());
        assert!(ByteRange::parse_header("bytes=18446744073709551616-").is_err());
    }
}
