//! Name rules shared by every gateway, so hostile names are refused in one place.

use crate::ArchiveError;

/// S3 bucket naming: 3-63 chars of lowercase letters, digits, '-' and '.', starting and
/// ending with a letter or digit.
pub fn validate_bucket_name(name: &str) -> Result<(), ArchiveError> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(ArchiveError::InvalidName(format!(
            "bucket {name:?}: use 3-63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit"
        )))
    }
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
