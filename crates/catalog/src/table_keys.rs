//! Table key encoding. Bucket names and object keys never contain NUL (the archive
//! rejects them), so NUL separates them and keeps one key's versions contiguous.

pub(crate) fn object_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + key.len() + 1);
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// Prefix of every version key of one object.
pub(crate) fn versions_prefix(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = object_key(bucket, key);
    k.push(0);
    k
}

pub(crate) fn version_key(bucket: &str, key: &str, seq: u64) -> Vec<u8> {
    let mut k = versions_prefix(bucket, key);
    k.extend_from_slice(&(!seq).to_be_bytes());
    k
}

/// Splits a VERSIONS key into (object key, seq).
pub(crate) fn split_version_key(bucket: &str, k: &[u8]) -> Option<(String, u64)> {
    let rest = k.get(bucket.len() + 1..)?;
    let (key, seq) = rest.split_at(rest.len().checked_sub(9)?);
    let seq = !u64::from_be_bytes(seq[1..].try_into().ok()?);
    Some((String::from_utf8(key.to_vec()).ok()?, seq))
}

/// Smallest key above every key in the bucket.
pub(crate) fn bucket_end(bucket: &str) -> Vec<u8> {
    let mut k = bucket.as_bytes().to_vec();
    k.push(1);
    k
}

/// Smallest byte string greater than every string starting with `prefix`.
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut p = prefix.to_vec();
    while let Some(last) = p.pop() {
        if last < 0xff {
            p.push(last + 1);
            return Some(p);
        }
    }
    None
}

pub(crate) fn part_key(upload_id: &str, number: u32) -> Vec<u8> {
    let mut k = upload_id.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&number.to_be_bytes());
    k
}
