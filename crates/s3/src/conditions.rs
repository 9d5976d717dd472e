//! The `Condition` block of a bucket policy statement, as IAM evaluates it: every
//! operator must hold, and within one every key. A key's values come from the request
//! (`Facts`): headers such as `s3:x-amz-acl`, the tags it sets or finds
//! (`s3:RequestObjectTag/K`, `s3:ExistingObjectTag/K`), list parameters (`s3:prefix`).
//! What cannot be judged here (an unknown operator, or `aws:SourceIp`, which the S3
//! layer does not see) is `None`: the caller makes an Allow not apply and a Deny apply,
//! so a policy never grants more than it says.

use serde_json::Value;

/// The values a request has for a condition key (lower case), None when it has none.
pub(crate) type Facts<'a> = &'a dyn Fn(&str) -> Option<Vec<String>>;

/// Whether `condition` holds for the request; None when it cannot be judged.
pub(crate) fn holds(condition: Option<&Value>, facts: Facts) -> Option<bool> {
    let Some(condition) = condition else {
        return Some(true);
    };
    let Value::Object(operators) = condition else {
        return None;
    };
    let mut all = Some(true);
    for (operator, block) in operators {
        let Value::Object(keys) = block else {
            return None;
        };
        for (key, wanted) in keys {
            match one(operator, &key.to_ascii_lowercase(), &values(wanted), facts) {
                Some(true) => {}
                Some(false) => return Some(false),
                None => all = None,
            }
        }
    }
    all
}

fn values(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().flat_map(values).collect(),
        Value::String(s) => vec![s.clone()],
        Value::Null => Vec::new(),
        other => vec![other.to_string()],
    }
}

/// One operator on one key.
fn one(operator: &str, key: &str, wanted: &[String], facts: Facts) -> Option<bool> {
    // Set operators on single-valued keys work as the plain ones, but for a key the
    // request lacks: ForAllValues holds over an empty set, as IAM has it.
    let for_all = operator.starts_with("ForAllValues:");
    let op = operator
        .strip_prefix("ForAnyValue:")
        .or_else(|| operator.strip_prefix("ForAllValues:"))
        .unwrap_or(operator);
    let (op, if_exists) = match op.strip_suffix("IfExists") {
        Some(o) => (o, true),
        None => (op, false),
    };
    const KNOWN: [&str; 18] = [
        "StringEquals",
        "StringNotEquals",
        "StringEqualsIgnoreCase",
        "StringNotEqualsIgnoreCase",
        "StringLike",
        "StringNotLike",
        "ArnEquals",
        "ArnNotEquals",
        "ArnLike",
        "ArnNotLike",
        "Bool",
        "Null",
        "NumericEquals",
        "NumericNotEquals",
        "NumericLessThan",
        "NumericLessThanEquals",
        "NumericGreaterThan",
        "NumericGreaterThanEquals",
    ];
    if !KNOWN.contains(&op) || key == "aws:sourceip" || key == "aws:securetransport" {
        return None;
    }
    let have = facts(key);
    if op == "Null" {
        let absent = have.is_none();
        return Some(wanted.iter().all(|w| (w == "true") == absent));
    }
    let Some(have) = have else {
        // A missing key: negated operators hold, as do `...IfExists` ones.
        return Some(for_all || if_exists || op.contains("Not"));
    };
    let any = |f: &dyn Fn(&str, &str) -> bool| have.iter().any(|h| wanted.iter().any(|w| f(h, w)));
    let num = |s: &str| s.trim().parse::<f64>().ok();
    let cmp = |f: fn(f64, f64) -> bool| {
        any(&|h, w| matches!((num(h), num(w)), (Some(h), Some(w)) if f(h, w)))
    };
    Some(match op {
        "StringEquals" | "ArnEquals" => any(&|h, w| h == w),
        "StringNotEquals" | "ArnNotEquals" => !any(&|h, w| h == w),
        "StringEqualsIgnoreCase" => any(&|h, w| h.eq_ignore_ascii_case(w)),
        "StringNotEqualsIgnoreCase" => !any(&|h, w| h.eq_ignore_ascii_case(w)),
        "StringLike" | "ArnLike" => any(&|h, w| crate::policy::glob(w, h)),
        "StringNotLike" | "ArnNotLike" => !any(&|h, w| crate::policy::glob(w, h)),
        "Bool" => any(&|h, w| h.eq_ignore_ascii_case(w)),
        "NumericEquals" => cmp(|h, w| h == w),
        "NumericNotEquals" => !cmp(|h, w| h == w),
        "NumericLessThan" => cmp(|h, w| h < w),
        "NumericLessThanEquals" => cmp(|h, w| h <= w),
        "NumericGreaterThan" => cmp(|h, w| h > w),
        _ => cmp(|h, w| h >= w), // NumericGreaterThanEquals
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(key: &str) -> Option<Vec<String>> {
        match key {
            "s3:x-amz-acl" => Some(vec!["public-read".into()]),
            "s3:existingobjecttag/security" => Some(vec!["public".into()]),
            "s3:max-keys" => Some(vec!["10".into()]),
            _ => None,
        }
    }

    fn check(cond: &str) -> Option<bool> {
        holds(Some(&serde_json::from_str(cond).unwrap()), &facts)
    }

    #[test]
    fn conditions_read_the_request_as_iam_does() {
        assert_eq!(holds(None, &facts), Some(true));
        assert_eq!(
            check(r#"{"StringEquals": {"s3:x-amz-acl": "public-read"}}"#),
            Some(true)
        );
        assert_eq!(
            check(r#"{"StringEquals": {"s3:x-amz-acl": ["private", "x"]}}"#),
            Some(false)
        );
        assert_eq!(
            check(r#"{"StringNotLike": {"s3:x-amz-acl": "public*"}}"#),
            Some(false)
        );
        assert_eq!(
            check(r#"{"StringLike": {"S3:ExistingObjectTag/security": "pub*"}}"#),
            Some(true)
        );
        // A missing key: positive operators fail, negated ones and IfExists hold.
        assert_eq!(
            check(r#"{"StringEquals": {"s3:x-amz-copy-source": "b/k"}}"#),
            Some(false)
        );
        assert_eq!(
            check(r#"{"StringNotEquals": {"s3:x-amz-copy-source": "b/k"}}"#),
            Some(true)
        );
        assert_eq!(
            check(r#"{"StringEqualsIfExists": {"s3:x-amz-copy-source": "b/k"}}"#),
            Some(true)
        );
        assert_eq!(
            check(r#"{"Null": {"s3:x-amz-server-side-encryption": "true"}}"#),
            Some(true)
        );
        assert_eq!(check(r#"{"Null": {"s3:x-amz-acl": "true"}}"#), Some(false));
        assert_eq!(
            check(r#"{"NumericLessThanEquals": {"s3:max-keys": "10"}}"#),
            Some(true)
        );
        assert_eq!(
            check(r#"{"NumericGreaterThan": {"s3:max-keys": 10}}"#),
            Some(false)
        );
        // Every key of every operator must hold.
        assert_eq!(
            check(r#"{"StringEquals": {"s3:x-amz-acl": "public-read", "s3:max-keys": "11"}}"#),
            Some(false)
        );
        assert_eq!(
            check(r#"{"ForAllValues:StringEquals": {"s3:requestobjecttagkeys": "a"}}"#),
            Some(true)
        );
        assert_eq!(
            check(r#"{"ForAnyValue:StringEquals": {"s3:requestobjecttagkeys": "a"}}"#),
            Some(false)
        );
        // What cannot be judged here.
        assert_eq!(
            check(r#"{"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}"#),
            None
        );
        assert_eq!(
            check(r#"{"DateGreaterThan": {"aws:CurrentTime": "2020-01-01"}}"#),
            None
        );
    }
}
