//! Client-side AWS Signature V4 (header-signed, UNSIGNED-PAYLOAD): what
//! `edgecloud bench --s3` and the request fuzzer use to reach past authentication.
//! The server side of SigV4 is s3s's.

/// Signs requests for one key in one region.
pub struct Signer {
    /// The access key id.
    pub access_key: String,
    /// Its secret.
    pub secret_key: String,
    /// The region to sign for.
    pub region: String,
}

fn hmac(key: &[u8], msg: &str) -> Vec<u8> {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&k, msg.as_bytes()).as_ref().to_vec()
}

/// S3's URI encoding: everything but unreserved characters, '/' kept in paths.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `20261125T140022Z` for now.
fn amz_date() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

impl Signer {
    /// The headers that sign `method path?query` sent to `host` (as in the Host header).
    /// `path` is the raw (unencoded) path; `query` raw pairs.
    pub fn headers(
        &self,
        method: &str,
        host: &str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Vec<(&'static str, String)> {
        let stamp = amz_date();
        let date = &stamp[..8];
        let mut q: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
            .collect();
        q.sort();
        let query = q
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let payload = "UNSIGNED-PAYLOAD";
        let canonical = format!(
            "{method}\n{}\n{query}\nhost:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{stamp}\n\nhost;x-amz-content-sha256;x-amz-date\n{payload}",
            uri_encode(path, true)
        );
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
            codec_hex(digest.as_ref())
        );
        let mut k = hmac(format!("AWS4{}", self.secret_key).as_bytes(), date);
        for part in [self.region.as_str(), "s3", "aws4_request"] {
            k = hmac(&k, part);
        }
        let signature = codec_hex(&hmac(&k, &to_sign));
        vec![
            ("x-amz-date", stamp.clone()),
            ("x-amz-content-sha256", payload.to_string()),
            (
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}",
                    self.access_key
                ),
            ),
        ]
    }
}

fn codec_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signing key derivation from AWS's documentation example
    /// ("Examples of how to derive a signing key for Signature Version 4").
    #[test]
    fn signing_key_matches_the_aws_example() {
        let mut k = hmac(b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215");
        for part in ["us-east-1", "iam", "aws4_request"] {
            k = hmac(&k, part);
        }
        assert_eq!(
            codec_hex(&k),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn uri_encoding_keeps_unreserved_and_slashes() {
        assert_eq!(uri_encode("/b/a b+c~d", true), "/b/a%20b%2Bc~d");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
    }
}
