"""Bucket lifecycle rules set with the aws CLI and applied by the node on its own:
expiration, noncurrent versions, lone delete markers, stale multipart uploads, with
object lock respected and every action recorded in the ledger as `@lifecycle`. The node
runs with 1-second lifecycle days (`--lifecycle-day 1s`), as Ceph's suite does with
rgw_lc_debug_interval."""
import json
import os
import subprocess
import time

import pytest

from conftest import ACCESS, SECRET, Node, client
from test_object_lock import ledger_records

DAY = 1.0


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    n = Node(tmp_path_factory.mktemp("lifecycle"), "--lifecycle-day", "1s")
    yield n
    n.stop()


def aws(node, *args, check=True):
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update(AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1")
    p = subprocess.run(["aws", "--endpoint-url", node.endpoint, *args], env=env, capture_output=True, text=True)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def until(check, what, timeout=30):
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_rules_expire_clean_up_and_keep_what_is_locked(fast, tmp_path):
    s3 = client(fast.endpoint)
    s3.create_bucket(Bucket="logs", ObjectLockEnabledForBucket=True)  # versioned, lock on
    for k in ("tmp/a", "tmp/b", "keep/c"):
        s3.put_object(Bucket="logs", Key=k, Body=b"1")
    for body in (b"v1", b"v2", b"v3"):
        s3.put_object(Bucket="logs", Key="db/dump", Body=body)
    # A noncurrent version kept by governance retention for an hour.
    held = s3.put_object(Bucket="logs", Key="held/x", Body=b"old", ObjectLockMode="GOVERNANCE",
                         ObjectLockRetainUntilDate=time.time() + 3600)["VersionId"]
    s3.put_object(Bucket="logs", Key="held/x", Body=b"new")
    # A key whose only version is deleted, leaving a marker over one noncurrent version.
    s3.put_object(Bucket="logs", Key="gone/y", Body=b"y")
    s3.delete_object(Bucket="logs", Key="gone/y")
    upload = s3.create_multipart_upload(Bucket="logs", Key="tmp/big")["UploadId"]

    rules = {"Rules": [
        {"ID": "tmp", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled", "Expiration": {"Days": 2},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
        {"ID": "history", "Filter": {}, "Status": "Enabled",
         "NoncurrentVersionExpiration": {"NoncurrentDays": 1, "NewerNoncurrentVersions": 1}},
        {"ID": "markers", "Filter": {"Prefix": "gone/"}, "Status": "Enabled",
         "Expiration": {"ExpiredObjectDeleteMarker": True}, "NoncurrentVersionExpiration": {"NoncurrentDays": 1}},
        {"ID": "off", "Filter": {"Prefix": "keep/"}, "Status": "Disabled", "Expiration": {"Days": 1}},
    ]}
    aws(fast, "s3api", "put-bucket-lifecycle-configuration", "--bucket", "logs",
        "--lifecycle-configuration", json.dumps(rules))
    got = json.loads(aws(fast, "s3api", "get-bucket-lifecycle-configuration", "--bucket", "logs").stdout)
    assert [r["ID"] for r in got["Rules"]] == ["tmp", "history", "markers", "off"]

    def keys():
        return sorted(o["Key"] for o in s3.list_objects_v2(Bucket="logs").get("Contents", []))

    def versions(key):
        r = s3.list_object_versions(Bucket="logs", Prefix=key)
        return len(r.get("Versions", [])), len(r.get("DeleteMarkers", []))

    until(lambda: keys() == ["db/dump", "held/x", "keep/c"], "tmp/ to expire")
    until(lambda: not s3.list_multipart_uploads(Bucket="logs").get("Uploads"), "the upload to be aborted")
    # db/dump keeps its current version and the newest noncurrent one.
    until(lambda: versions("db/dump") == (2, 0), "old db/dump versions to go")
    # A version goes when any enabled rule says so; the lone marker goes after it.
    until(lambda: versions("gone/") == (0, 0), "gone/y's marker to go")
    # An expired key's data stays as a noncurrent version ("history" keeps the newest).
    assert versions("tmp/a") == (1, 1)
    # The locked version stays, whatever the rules say.
    time.sleep(3 * DAY)
    assert versions("held/x") == (2, 0)
    assert s3.get_object(Bucket="logs", Key="held/x", VersionId=held)["Body"].read() == b"old"

    recs = [r for r in ledger_records(fast) if r["actor"] == "@lifecycle"]
    kinds = {r["kind"] for r in recs}
    assert kinds >= {"delete_marker", "version_deleted"}, kinds
    assert any(r["kind"] == "delete_marker" and r["key"] == "tmp/a" for r in recs)
    assert any(r["kind"] == "version_deleted" and r["key"] == "db/dump" for r in recs)
    assert not any(r.get("key") == "held/x" for r in recs)
    assert any(r["kind"] == "lifecycle_set" and r["bucket"] == "logs" for r in ledger_records(fast))

    aws(fast, "s3api", "delete-bucket-lifecycle", "--bucket", "logs")
    p = aws(fast, "s3api", "get-bucket-lifecycle-configuration", "--bucket", "logs", check=False)
    assert "NoSuchLifecycleConfiguration" in p.stderr


def test_bad_rules_are_refused_with_the_reason(fast):
    s3 = client(fast.endpoint)
    s3.create_bucket(Bucket="rules")
    cases = [
        ({"ID": "a", "Status": "enabled", "Filter": {}, "Expiration": {"Days": 1}}, "MalformedXML"),
        ({"ID": "a", "Status": "Enabled", "Filter": {}, "Expiration": {"Days": 0}}, "InvalidArgument"),
        ({"ID": "a" * 256, "Status": "Enabled", "Filter": {}, "Expiration": {"Days": 1}}, "InvalidArgument"),
        ({"ID": "a", "Status": "Enabled", "Filter": {}, "Transitions": [{"Days": 1, "StorageClass": "GLACIER"}]},
         "InvalidStorageClass"),
        ({"ID": "a", "Status": "Enabled", "Filter": {}}, "InvalidRequest"),
    ]
    for rule, code in cases:
        p = aws(fast, "s3api", "put-bucket-lifecycle-configuration", "--bucket", "rules",
                "--lifecycle-configuration", json.dumps({"Rules": [rule]}), check=False)
        assert p.returncode != 0 and code in p.stderr, (rule, p.stderr)
    p = aws(fast, "s3api", "get-bucket-lifecycle-configuration", "--bucket", "rules", check=False)
    assert "NoSuchLifecycleConfiguration" in p.stderr
