"""Object lock (WORM) as backup tools use it: a bucket created with lock and a default
retention, retention and legal hold per version through the aws CLI, and every other
way to delete (WebDAV, FTP, the edgecloud CLI, the admin API) unable to destroy a locked
version. Each lock change is a ledger record."""
import datetime
import json
import subprocess
import time

import httpx
import pytest
from botocore.exceptions import ClientError

from conftest import ACCESS, BIN, SECRET, client


def code(e):
    return e.value.response["Error"]["Code"]


def new_key(node, *args):
    out = node.cli("key", "create", *args)
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return fields["access key"].strip(), fields["secret"].strip()


def versions(s3, bucket, key):
    r = s3.list_object_versions(Bucket=bucket, Prefix=key)
    return [v["VersionId"] for v in r.get("Versions", [])], [m["VersionId"] for m in r.get("DeleteMarkers", [])]


def ledger_records(node):
    """Every audit-log record, read from the published entry tiles."""
    from test_ledger import Admin, entries
    admin = Admin(node)
    return [json.loads(e) for e in entries(admin, admin.checkpoint()[1])]


def test_compliance_retention_survives_every_gateway_and_the_root_key(node, s3, aws, tmp_path):
    aws("s3api", "create-bucket", "--bucket", "worm", "--object-lock-enabled-for-bucket")
    assert json.loads(aws("s3api", "get-bucket-versioning", "--bucket", "worm").stdout)["Status"] == "Enabled"
    aws("s3api", "put-object-lock-configuration", "--bucket", "worm", "--object-lock-configuration",
        '{"ObjectLockEnabled":"Enabled","Rule":{"DefaultRetention":{"Mode":"COMPLIANCE","Days":1}}}')
    conf = json.loads(aws("s3api", "get-object-lock-configuration", "--bucket", "worm").stdout)
    assert conf["ObjectLockConfiguration"]["Rule"]["DefaultRetention"] == {"Mode": "COMPLIANCE", "Days": 1}

    src = tmp_path / "backup.tar"
    src.write_bytes(b"precious backup " * 1000)
    aws("s3", "cp", str(src), "s3://worm/backup.tar")
    head = json.loads(aws("s3api", "head-object", "--bucket", "worm", "--key", "backup.tar").stdout)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    until = datetime.datetime.fromisoformat(head["ObjectLockRetainUntilDate"].replace("Z", "+00:00"))
    left = until - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(hours=23) < left <= datetime.timedelta(days=1)
    vid = head["VersionId"]

    # The root key cannot remove it, bypass or not, nor shorten the retention.
    for extra in ([], ["--bypass-governance-retention"]):
        p = aws("s3api", "delete-object", "--bucket", "worm", "--key", "backup.tar", "--version-id", vid, *extra,
                check=False)
        assert p.returncode != 0 and "AccessDenied" in p.stderr, p.stderr
    sooner = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    p = aws("s3api", "put-object-retention", "--bucket", "worm", "--key", "backup.tar", "--bypass-governance-retention",
            "--retention", json.dumps({"Mode": "COMPLIANCE", "RetainUntilDate": sooner}), check=False)
    assert p.returncode != 0 and "AccessDenied" in p.stderr, p.stderr
    p = aws("s3api", "put-bucket-versioning", "--bucket", "worm", "--versioning-configuration", "Status=Suspended",
            check=False)
    assert "InvalidBucketState" in p.stderr, p.stderr

    # Deleting through WebDAV, FTP or the CLI adds a delete marker; the locked version stays.
    r = httpx.request("DELETE", f"{node.dav}/worm/backup.tar", auth=(ACCESS, SECRET))
    assert r.status_code in (200, 204), r.text
    assert versions(s3, "worm", "backup.tar")[0] == [vid]
    s3.put_object(Bucket="worm", Key="other.txt", Body=b"x")
    subprocess.run(["curl", "-sf", "-u", f"{ACCESS}:{SECRET}", f"ftp://127.0.0.1:{node.ftp_port}/",
                    "-Q", "DELE worm/other.txt"], check=True, capture_output=True)
    other_versions, markers = versions(s3, "worm", "other.txt")
    assert len(other_versions) == 1 and len(markers) == 1
    # Removing a version for good is refused on every path, with a message saying why.
    p = subprocess.run([BIN, "--data", str(node.data), "--admin", node.admin,
                        "rm", "worm/backup.tar", "--version", vid], capture_output=True, text=True)
    assert p.returncode != 0 and "COMPLIANCE" in p.stderr, p.stderr
    token = (node.data / "admin.token").read_text().strip()
    r = httpx.delete(f"{node.admin}/v1/objects/worm/backup.tar", params={"version": vid},
                     headers={"Authorization": "Bearer " + token})
    assert r.status_code == 403 and r.json()["error"] == "ObjectLocked", r.text
    body = s3.get_object(Bucket="worm", Key="backup.tar", VersionId=vid)["Body"].read()
    assert body == src.read_bytes()
    # The bucket cannot go while it holds the version.
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket="worm")
    assert code(e) == "BucketNotEmpty"

    # The CLI (through the admin API) shows the bucket's lock.
    line = next(l for l in node.cli("bucket", "list").splitlines() if l.startswith("worm "))
    assert "object lock COMPLIANCE 1 days" in line, line

    # The ledger holds the lock configuration and the version's retention.
    recs = ledger_records(node)
    assert any(r["kind"] == "object_lock_set" and r["bucket"] == "worm" and r["mode"] == "COMPLIANCE"
               and r["days"] == 1 for r in recs)
    ret = [r for r in recs if r["kind"] == "retention_set" and r["key"] == "backup.tar"]
    assert len(ret) == 1 and ret[0]["version_id"] == vid and ret[0]["mode"] == "COMPLIANCE"


def test_governance_yields_only_to_owners_and_legal_hold_to_nobody(node, s3):
    s3.create_bucket(Bucket="gov", ObjectLockEnabledForBucket=True)
    writer = client(node.endpoint, *new_key(node, "lock-writer", "--write", "gov"))
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)
    v = writer.put_object(Bucket="gov", Key="k", Body=b"v1", ObjectLockMode="GOVERNANCE",
                          ObjectLockRetainUntilDate=later, ObjectLockLegalHoldStatus="ON")["VersionId"]
    ret = s3.get_object_retention(Bucket="gov", Key="k", VersionId=v)["Retention"]
    assert ret["Mode"] == "GOVERNANCE" and abs((ret["RetainUntilDate"] - later).total_seconds()) < 1

    # A writer may extend, never shorten or bypass.
    writer.put_object_retention(Bucket="gov", Key="k", VersionId=v,
                                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": later + datetime.timedelta(days=1)})
    for kw in ({}, {"BypassGovernanceRetention": True}):
        with pytest.raises(ClientError) as e:
            writer.put_object_retention(Bucket="gov", Key="k", VersionId=v, **kw,
                                        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": later})
        assert code(e) == "AccessDenied"

    # Under legal hold even the owner bypassing governance cannot remove it.
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket="gov", Key="k", VersionId=v, BypassGovernanceRetention=True)
    assert code(e) == "AccessDenied"
    s3.put_object_legal_hold(Bucket="gov", Key="k", VersionId=v, LegalHold={"Status": "OFF"})
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket="gov", Key="k", VersionId=v)
    assert code(e) == "AccessDenied"
    s3.delete_object(Bucket="gov", Key="k", VersionId=v, BypassGovernanceRetention=True)
    assert versions(s3, "gov", "k") == ([], [])

    # Buckets without lock refuse lock requests, and lock cannot be bolted onto an
    # unversioned bucket.
    s3.create_bucket(Bucket="nolock")
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="nolock", Key="k", Body=b"x", ObjectLockLegalHoldStatus="ON")
    assert code(e) in ("InvalidArgument", "InvalidRequest")
    with pytest.raises(ClientError) as e:
        s3.put_object_lock_configuration(Bucket="nolock", ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})
    assert code(e) == "InvalidBucketState"


def test_restic_backups_in_a_locked_bucket_survive_an_attacker_with_the_owners_key(node, s3, aws, tmp_path):
    """The ransomware case object lock is for: restic backs up into a bucket with a
    default GOVERNANCE retention; an attacker holding the owner's key deletes every
    object and tries to delete every version. The versions stay; removing the delete
    markers brings the repository back, and restic restores every file."""
    import os
    import random
    aws("s3api", "create-bucket", "--bucket", "restic-locked", "--object-lock-enabled-for-bucket")
    aws("s3api", "put-object-lock-configuration", "--bucket", "restic-locked", "--object-lock-configuration",
        '{"ObjectLockEnabled":"Enabled","Rule":{"DefaultRetention":{"Mode":"GOVERNANCE","Days":1}}}')
    src = tmp_path / "src"
    src.mkdir()
    rnd = random.Random(7)
    for i in range(20):
        (src / f"file{i}.bin").write_bytes(rnd.randbytes(rnd.randint(1, 300_000)))
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update(AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET, RESTIC_PASSWORD="correct horse",
               RESTIC_REPOSITORY=f"s3:{node.endpoint}/restic-locked", RESTIC_CACHE_DIR=str(tmp_path / "cache"))

    def restic(*args):
        p = subprocess.run(["restic", "-q", *args], env=env, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        return p.stdout
    restic("init")
    restic("backup", str(src))

    # The attack: every object deleted, then every version, with the owner's key.
    time.sleep(1.1)  # delete markers are dated to the second
    attack = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    aws("s3", "rm", "--recursive", "s3://restic-locked/")
    assert s3.list_objects_v2(Bucket="restic-locked").get("KeyCount") == 0
    listed = s3.list_object_versions(Bucket="restic-locked")
    assert len(listed["Versions"]) >= 4
    for v in listed["Versions"]:
        p = aws("s3api", "delete-object", "--bucket", "restic-locked", "--key", v["Key"],
                "--version-id", v["VersionId"], check=False)
        assert p.returncode != 0 and "AccessDenied" in p.stderr, p.stderr

    # The recovery: remove the attack's delete markers (they are not locked); restic's
    # own (its lock files) stay.
    for m in listed["DeleteMarkers"]:
        if m["LastModified"] >= attack:
            s3.delete_object(Bucket="restic-locked", Key=m["Key"], VersionId=m["VersionId"])
    restic("check")
    out = tmp_path / "restored"
    restic("restore", "latest", "--target", str(out))
    for f in src.iterdir():
        assert (out / str(src).lstrip("/") / f.name).read_bytes() == f.read_bytes()
