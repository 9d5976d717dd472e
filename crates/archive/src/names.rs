//! Name rules shared by every gateway, so hostile names are refused in one place.

use crate::ArchiveError;

/// Buckets edgecloud keeps for itself (container images): users cannot create them,
/// and the services that own them create them on first use.
pub const SYSTEM_BUCKETS: &[&str] = &["edgecloud-images"];

/// S3 bucket naming: 3-63 chars of lowercase letters, digits, '-' and '.', starting and
/// ending with a letter or digit, whose dot-separated labels are DNS labels (none empty,
/// none starting or ending with '-'), and not an IPv4 address: the name must work as a
/// virtual host. Checked when a bucket is created.
pub fn validate_bucket_name(name: &str) -> Result<(), ArchiveError> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name
            .split('.')
            .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'));
    if !ok {
        return Err(ArchiveError::InvalidName(format!(
            "bucket {name:?}: use 3-63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit, with no '-' next to a '.'"
        )));
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(ArchiveError::InvalidName(format!(
            "bucket {name:?}: a bucket name must not be an IP address"
        )));
    }
    Ok(())
}

/// Object keys: 1-1024 bytes of UTF-8 without NUL. Keys are names, never paths, so
/// "../x" is just a key; gateways that map keys to paths check segments themselves.
pub fn validate_key(key: &str) -> Result<(), ArchiveError> {
    if key.is_empty() || key.len() > 1024 {
        return Err(ArchiveError::InvalidName(format!(
            "keys must be 1 to 1024 bytes long, got {}",
            key.len()
        )));
    }
    if key.contains('\0') {
        return Err(ArchiveError::InvalidName(
            "keys must not contain NUL bytes".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_the_rules_of_s3() {
        for good in ["abc", "my-bucket.v2", "a1.b-2.c3", "192.168.5.4x"] {
            assert!(validate_bucket_name(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "ABC",
            "a_b",
            "-ab",
            "ab-",
            ".ab",
            "ab.",
            "a..b",
            "foo-.bar",
            "foo.-bar",
            "192.168.5.4",
            "a/b",
        ] {
            assert!(validate_bucket_name(bad).is_err(), "{bad}");
        }
    }
}
