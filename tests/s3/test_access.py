"""Who may do what: access keys made with `edgecloud key`, per-bucket permissions,
public buckets (canned ACL and bucket policy), CORS, and virtual-hosted-style requests."""
import json
import subprocess
import time

import httpx
import pytest
from botocore.exceptions import ClientError

from conftest import Node, client


def code(e):
    return e.value.response["Error"]["Code"]


def new_key(node, *args):
    out = node.cli("key", "create", *args)
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return fields["access key"].strip(), fields["secret"].strip()


def test_keys_with_per_bucket_permissions(node, s3):
    for b in ("perm-read", "perm-write", "perm-other"):
        s3.create_bucket(Bucket=b)
        s3.put_object(Bucket=b, Key="seed", Body=b"seed")
    access, secret = new_key(node, "tester", "--read", "perm-read", "--write", "perm-write")
    c = client(node.endpoint, access, secret)

    # read-only bucket: list and get work, writes are refused and change nothing
    assert [o["Key"] for o in c.list_objects_v2(Bucket="perm-read")["Contents"]] == ["seed"]
    assert c.get_object(Bucket="perm-read", Key="seed")["Body"].read() == b"seed"
    for call in (lambda: c.put_object(Bucket="perm-read", Key="x", Body=b"x"),
                 lambda: c.delete_object(Bucket="perm-read", Key="seed"),
                 lambda: c.put_bucket_versioning(Bucket="perm-read", VersioningConfiguration={"Status": "Enabled"})):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "AccessDenied"
    assert s3.get_object(Bucket="perm-read", Key="seed")["Body"].read() == b"seed"

    # write bucket: objects yes, bucket configuration and deletion no
    c.put_object(Bucket="perm-write", Key="new", Body=b"new")
    c.delete_object(Bucket="perm-write", Key="seed")
    with pytest.raises(ClientError) as e:
        c.delete_bucket(Bucket="perm-write")
    assert code(e) == "AccessDenied"
    # copying needs read on the source: allowed from perm-read, refused from perm-other
    c.copy_object(Bucket="perm-write", Key="copied", CopySource={"Bucket": "perm-read", "Key": "seed"})
    with pytest.raises(ClientError) as e:
        c.copy_object(Bucket="perm-write", Key="stolen", CopySource={"Bucket": "perm-other", "Key": "seed"})
    assert code(e) == "AccessDenied"

    # other buckets: invisible and unreadable; no bucket creation
    assert sorted(b["Name"] for b in c.list_buckets()["Buckets"]) == ["perm-read", "perm-write"]
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket="perm-other", Key="seed")
    assert code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        c.create_bucket(Bucket="perm-mine")
    assert code(e) == "AccessDenied"

    # grant, then revoke
    node.cli("key", "allow", access, "perm-other", "read")
    assert c.get_object(Bucket="perm-other", Key="seed")["Body"].read() == b"seed"
    listed = node.cli("key", "list")
    assert access in listed and "perm-other:read" in listed and secret not in listed
    node.cli("key", "delete", access)
    with pytest.raises(ClientError) as e:
        c.list_buckets()
    assert code(e) == "InvalidAccessKeyId"


def test_a_key_that_creates_a_bucket_owns_it(node, s3):
    access, secret = new_key(node, "creator", "--create-buckets")
    c = client(node.endpoint, access, secret)
    c.create_bucket(Bucket="created-by-key")
    c.put_bucket_versioning(Bucket="created-by-key", VersioningConfiguration={"Status": "Enabled"})
    c.put_object(Bucket="created-by-key", Key="k", Body=b"v")
    assert [b["Name"] for b in c.list_buckets()["Buckets"]] == ["created-by-key"]
    # the root key still sees and reads everything
    assert s3.get_object(Bucket="created-by-key", Key="k")["Body"].read() == b"v"


def test_anonymous_access_only_to_public_buckets(endpoint, s3):
    s3.create_bucket(Bucket="private-b")
    s3.put_object(Bucket="private-b", Key="doc", Body=b"secret")
    assert httpx.get(f"{endpoint}/private-b/doc").status_code == 403
    assert httpx.get(f"{endpoint}/private-b").status_code == 403

    # canned ACLs, as in S3: a public bucket may be listed, a public object read
    s3.create_bucket(Bucket="public-acl", ACL="public-read")
    s3.put_object(Bucket="public-acl", Key="doc", Body=b"hello", ACL="public-read")
    s3.put_object(Bucket="public-acl", Key="hidden", Body=b"private")
    assert httpx.get(f"{endpoint}/public-acl/doc").content == b"hello"
    assert httpx.get(f"{endpoint}/public-acl/hidden").status_code == 403
    assert b"<Key>doc</Key>" in httpx.get(f"{endpoint}/public-acl").content
    # who may list learns that a key is missing; others only get "denied"
    assert httpx.get(f"{endpoint}/public-acl/nothing-here").status_code == 404
    assert httpx.get(f"{endpoint}/private-b/nothing-here").status_code == 403
    s3.put_object_acl(Bucket="public-acl", Key="hidden", ACL="public-read")
    assert httpx.get(f"{endpoint}/public-acl/hidden").content == b"private"
    grants = s3.get_bucket_acl(Bucket="public-acl")["Grants"]
    assert any(g["Grantee"].get("URI", "").endswith("AllUsers") and g["Permission"] == "READ" for g in grants)
    # public-read opens reads only
    assert httpx.put(f"{endpoint}/public-acl/evil", content=b"x").status_code == 403
    assert httpx.delete(f"{endpoint}/public-acl/doc").status_code == 403
    assert s3.get_object(Bucket="public-acl", Key="doc")["Body"].read() == b"hello"
    s3.put_bucket_acl(Bucket="public-acl", ACL="private")
    assert httpx.get(f"{endpoint}/public-acl").status_code == 403
    s3.put_object_acl(Bucket="public-acl", Key="doc", ACL="private")
    assert httpx.get(f"{endpoint}/public-acl/doc").status_code == 403

    # bucket policy: public read of one prefix only
    s3.create_bucket(Bucket="public-policy")
    s3.put_object(Bucket="public-policy", Key="www/index.html", Body=b"<h1>hi</h1>")
    s3.put_object(Bucket="public-policy", Key="private/notes", Body=b"no")
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject"],
        "Resource": ["arn:aws:s3:::public-policy/www/*"]}]}
    s3.put_bucket_policy(Bucket="public-policy", Policy=json.dumps(policy))
    assert json.loads(s3.get_bucket_policy(Bucket="public-policy")["Policy"]) == policy
    assert httpx.get(f"{endpoint}/public-policy/www/index.html").content == b"<h1>hi</h1>"
    assert httpx.get(f"{endpoint}/public-policy/private/notes").status_code == 403
    assert httpx.get(f"{endpoint}/public-policy").status_code == 403  # no s3:ListBucket granted
    with pytest.raises(ClientError) as e:
        s3.put_bucket_policy(Bucket="public-policy", Policy="{not json")
    assert code(e) == "MalformedPolicy"
    s3.delete_bucket_policy(Bucket="public-policy")
    assert httpx.get(f"{endpoint}/public-policy/www/index.html").status_code == 403
    with pytest.raises(ClientError) as e:
        s3.get_bucket_policy(Bucket="public-policy")
    assert code(e) == "NoSuchBucketPolicy"


def test_cors_rules_and_preflight(endpoint, s3):
    s3.create_bucket(Bucket="cors-b", ACL="public-read")
    s3.put_object(Bucket="cors-b", Key="app.js", Body=b"js", ACL="public-read")
    with pytest.raises(ClientError) as e:
        s3.get_bucket_cors(Bucket="cors-b")
    assert code(e) == "NoSuchCORSConfiguration"
    rules = [{"AllowedMethods": ["GET", "HEAD"], "AllowedOrigins": ["https://*.example.com"],
              "AllowedHeaders": ["x-custom-*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 600},
             {"AllowedMethods": ["PUT"], "AllowedOrigins": ["https://upload.example.org"]}]
    s3.put_bucket_cors(Bucket="cors-b", CORSConfiguration={"CORSRules": rules})
    got = s3.get_bucket_cors(Bucket="cors-b")["CORSRules"]
    assert got[0]["AllowedOrigins"] == ["https://*.example.com"] and got[1]["AllowedMethods"] == ["PUT"]

    pre = httpx.options(f"{endpoint}/cors-b/app.js", headers={
        "Origin": "https://www.example.com", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "X-Custom-Trace"})
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "https://www.example.com"
    assert "GET" in pre.headers["access-control-allow-methods"]
    assert pre.headers["access-control-allow-headers"] == "X-Custom-Trace"
    assert pre.headers["access-control-max-age"] == "600"
    refused = httpx.options(f"{endpoint}/cors-b/app.js", headers={
        "Origin": "https://evil.test", "Access-Control-Request-Method": "GET"})
    assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
    assert httpx.options(f"{endpoint}/cors-b/app.js").status_code == 400

    r = httpx.get(f"{endpoint}/cors-b/app.js", headers={"Origin": "https://cdn.example.com"})
    assert r.content == b"js"
    assert r.headers["access-control-allow-origin"] == "https://cdn.example.com"
    assert r.headers["access-control-expose-headers"] == "ETag"
    assert "access-control-allow-origin" not in httpx.get(f"{endpoint}/cors-b/app.js").headers

    with pytest.raises(ClientError) as e:
        s3.put_bucket_cors(Bucket="cors-b", CORSConfiguration={"CORSRules": [
            {"AllowedMethods": ["PATCH"], "AllowedOrigins": ["*"]}]})
    assert code(e) == "InvalidRequest"
    s3.delete_bucket_cors(Bucket="cors-b")
    with pytest.raises(ClientError):
        s3.get_bucket_cors(Bucket="cors-b")


@pytest.fixture(scope="module")
def vhost_node(tmp_path_factory):
    n = Node(tmp_path_factory.mktemp("vhost"), "--domain", "s3.test")
    yield n
    n.stop()


def test_virtual_hosted_style_requests(vhost_node):
    # Path style still works on a node with --domain.
    path_style = client(vhost_node.endpoint)
    path_style.create_bucket(Bucket="vhosted")
    path_style.put_object(Bucket="vhosted", Key="dir/a.txt", Body=b"by path")
    # Virtual-hosted style: URLs presigned for http://vhosted.s3.test:PORT/..., sent by
    # curl to this machine with the Host header unchanged.
    virt = client(f"http://s3.test:{vhost_node.port}", style="virtual")
    get_url = virt.generate_presigned_url("get_object", Params={"Bucket": "vhosted", "Key": "dir/a.txt"})
    assert get_url.startswith(f"http://vhosted.s3.test:{vhost_node.port}/dir/a.txt")
    route = ["--connect-to", f"vhosted.s3.test:{vhost_node.port}:127.0.0.1:{vhost_node.port}"]
    out = subprocess.run(["curl", "-sSf", *route, get_url], capture_output=True, check=True).stdout
    assert out == b"by path"
    put_url = virt.generate_presigned_url("put_object", Params={"Bucket": "vhosted", "Key": "b.txt"})
    subprocess.run(["curl", "-sSf", *route, "-X", "PUT", "--data-binary", "by host", put_url], check=True)
    assert path_style.get_object(Bucket="vhosted", Key="b.txt")["Body"].read() == b"by host"
    list_url = virt.generate_presigned_url("list_objects_v2", Params={"Bucket": "vhosted"})
    listing = subprocess.run(["curl", "-sSf", *route, list_url], capture_output=True, check=True).stdout
    assert b"<Key>b.txt</Key>" in listing and b"<Key>dir/a.txt</Key>" in listing


def test_bucket_policy_shares_with_keys_and_deny_wins(node, s3):
    access, secret = new_key(node, "partner", "--read", "policy-shared")
    c = client(node.endpoint, access, secret)
    s3.create_bucket(Bucket="policy-shared")
    s3.put_object(Bucket="policy-shared", Key="secret/plan", Body=b"plan")
    s3.put_object(Bucket="policy-shared", Key="open/readme", Body=b"hi")
    policy = {"Statement": [
        {"Effect": "Allow", "Principal": {"AWS": [access]}, "Action": "s3:PutObject",
         "Resource": "arn:aws:s3:::policy-shared/inbox/*"},
        {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
         "Resource": "arn:aws:s3:::policy-shared/secret/*"}]}
    s3.put_bucket_policy(Bucket="policy-shared", Policy=json.dumps(policy))
    c.put_object(Bucket="policy-shared", Key="inbox/report", Body=b"r")   # allowed by the policy only
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket="policy-shared", Key="elsewhere", Body=b"x")
    assert code(e) == "AccessDenied"
    assert c.get_object(Bucket="policy-shared", Key="open/readme")["Body"].read() == b"hi"
    with pytest.raises(ClientError) as e:  # the key may read the bucket, but Deny wins
        c.get_object(Bucket="policy-shared", Key="secret/plan")
    assert code(e) == "AccessDenied"
    assert s3.get_object(Bucket="policy-shared", Key="secret/plan")["Body"].read() == b"plan"  # root is never denied


def test_public_objects_are_readable_by_other_keys(node, s3):
    access, secret = new_key(node, "stranger")
    c = client(node.endpoint, access, secret)
    s3.create_bucket(Bucket="public-to-keys")
    s3.put_object(Bucket="public-to-keys", Key="pub", Body=b"p", ACL="public-read")
    s3.put_object(Bucket="public-to-keys", Key="priv", Body=b"q")
    assert c.get_object(Bucket="public-to-keys", Key="pub")["Body"].read() == b"p"
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket="public-to-keys", Key="priv")
    assert code(e) == "AccessDenied"


def test_authenticated_read_buckets_are_listed_for_every_key(node, s3):
    s3.create_bucket(Bucket="auth-read", ACL="authenticated-read")
    s3.put_object(Bucket="auth-read", Key="memo", Body=b"for every key")
    access, secret = new_key(node, "any-key")
    c = client(node.endpoint, access, secret)
    assert "auth-read" in [b["Name"] for b in c.list_buckets()["Buckets"]]
    assert c.get_object(Bucket="auth-read", Key="memo")["Body"].read() == b"for every key"
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket="auth-read", Key="memo", Body=b"x")
    assert code(e) == "AccessDenied"


def test_acl_grants_share_with_other_keys_over_every_gateway(node, s3, aws):
    """ACL grants name access keys as S3 account ids: a READ grant on a bucket lets that
    key list and read it (over S3 and WebDAV alike), an object READ grant lets it read
    one object, READ_ACP/WRITE_ACP let it see or change the ACL, and nothing else."""
    reader, reader_secret = new_key(node, "acl-reader")
    stranger, stranger_secret = new_key(node, "acl-stranger")
    r = client(node.endpoint, reader, reader_secret)
    x = client(node.endpoint, stranger, stranger_secret)
    s3.create_bucket(Bucket="acl-shared")
    s3.put_object(Bucket="acl-shared", Key="doc.txt", Body=b"shared")
    with pytest.raises(ClientError):
        r.list_objects_v2(Bucket="acl-shared")

    # A bucket READ grant through the aws CLI's grant header.
    aws("s3api", "put-bucket-acl", "--bucket", "acl-shared", "--grant-read", f"id={reader}")
    assert [o["Key"] for o in r.list_objects_v2(Bucket="acl-shared")["Contents"]] == ["doc.txt"]
    assert r.get_object(Bucket="acl-shared", Key="doc.txt")["Body"].read() == b"shared"
    dav = httpx.get(f"{node.dav}/acl-shared/doc.txt", auth=(reader, reader_secret))
    assert dav.status_code == 200 and dav.content == b"shared"
    acl = s3.get_bucket_acl(Bucket="acl-shared")
    assert {(g["Grantee"].get("ID"), g["Permission"]) for g in acl["Grants"]} == {(reader, "READ")}
    # Reading is not writing, nor seeing the ACL; strangers get nothing.
    with pytest.raises(ClientError) as e:
        r.put_object(Bucket="acl-shared", Key="new", Body=b"x")
    assert code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        r.get_bucket_acl(Bucket="acl-shared")
    assert code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        x.get_object(Bucket="acl-shared", Key="doc.txt")
    assert code(e) == "AccessDenied"

    # An object grant (an AccessControlPolicy body) opens that object only.
    s3.put_object(Bucket="acl-shared", Key="other.txt", Body=b"other")
    owner = s3.get_object_acl(Bucket="acl-shared", Key="other.txt")["Owner"]
    s3.put_object_acl(Bucket="acl-shared", Key="other.txt", AccessControlPolicy={
        "Owner": owner,
        "Grants": [{"Grantee": {"ID": owner["ID"], "Type": "CanonicalUser"}, "Permission": "FULL_CONTROL"},
                   {"Grantee": {"ID": stranger, "Type": "CanonicalUser"}, "Permission": "READ"},
                   {"Grantee": {"ID": stranger, "Type": "CanonicalUser"}, "Permission": "READ_ACP"}]})
    assert x.get_object(Bucket="acl-shared", Key="other.txt")["Body"].read() == b"other"
    assert len(x.get_object_acl(Bucket="acl-shared", Key="other.txt")["Grants"]) == 3
    with pytest.raises(ClientError) as e:
        x.get_object(Bucket="acl-shared", Key="doc.txt")
    assert code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        x.put_object_acl(Bucket="acl-shared", Key="other.txt", ACL="public-read")
    assert code(e) == "AccessDenied"

    # Grants to unknown keys or by email are refused with the reason; a canned ACL
    # replaces the grants.
    for grant in ("id=NOSUCHKEY", "emailAddress=someone@example.com"):
        p = aws("s3api", "put-bucket-acl", "--bucket", "acl-shared", "--grant-read", grant, check=False)
        assert p.returncode != 0 and ("InvalidArgument" in p.stderr or "Unresolvable" in p.stderr), p.stderr
    s3.put_bucket_acl(Bucket="acl-shared", ACL="private")
    with pytest.raises(ClientError):
        r.list_objects_v2(Bucket="acl-shared")


def test_public_access_block_and_ownership_controls_guard_acls(node, s3, aws):
    """The aws CLI's guards against publishing by mistake: a public access block refuses
    public ACLs and policies and makes existing ones give nothing; BucketOwnerEnforced
    turns ACLs off altogether."""
    anon = httpx.Client()
    s3.create_bucket(Bucket="guarded", ACL="public-read")
    s3.put_object(Bucket="guarded", Key="doc.txt", Body=b"doc", ACL="public-read")
    assert anon.get(f"{node.endpoint}/guarded/doc.txt").status_code == 200

    aws("s3api", "put-public-access-block", "--bucket", "guarded", "--public-access-block-configuration",
        "BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true")
    got = json.loads(aws("s3api", "get-public-access-block", "--bucket", "guarded").stdout)
    assert all(got["PublicAccessBlockConfiguration"].values())
    # What was public is not any more; making anything public is refused.
    assert anon.get(f"{node.endpoint}/guarded/doc.txt").status_code == 403
    assert anon.get(f"{node.endpoint}/guarded").status_code == 403
    for call in (lambda: s3.put_bucket_acl(Bucket="guarded", ACL="public-read"),
                 lambda: s3.put_object(Bucket="guarded", Key="x", Body=b"x", ACL="public-read"),
                 lambda: s3.put_bucket_policy(Bucket="guarded", Policy=json.dumps({"Statement": [
                     {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                      "Resource": "arn:aws:s3:::guarded/*"}]}))):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "AccessDenied"
    aws("s3api", "delete-public-access-block", "--bucket", "guarded")
    assert anon.get(f"{node.endpoint}/guarded/doc.txt").status_code == 200
    p = aws("s3api", "get-public-access-block", "--bucket", "guarded", check=False)
    assert "NoSuchPublicAccessBlockConfiguration" in p.stderr

    # BucketOwnerEnforced: ACLs no longer count and cannot be set (but private).
    reader, _ = new_key(node, "guarded-reader")
    s3.put_bucket_acl(Bucket="guarded", GrantRead=f"id={reader}")
    aws("s3api", "put-bucket-ownership-controls", "--bucket", "guarded", "--ownership-controls",
        "Rules=[{ObjectOwnership=BucketOwnerEnforced}]")
    got = json.loads(aws("s3api", "get-bucket-ownership-controls", "--bucket", "guarded").stdout)
    assert got["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert anon.get(f"{node.endpoint}/guarded/doc.txt").status_code == 403
    with pytest.raises(ClientError) as e:
        s3.put_object_acl(Bucket="guarded", Key="doc.txt", ACL="public-read")
    assert code(e) == "AccessControlListNotSupported"
    s3.put_object(Bucket="guarded", Key="private.txt", Body=b"p", ACL="private")


def test_a_bucket_opened_to_everyone_takes_anonymous_writes_but_keeps_its_history(node, s3, endpoint):
    """public-read-write (as S3): anyone may add objects and delete markers, never delete a
    version or change the bucket; each write is in the ledger as @anonymous; the public
    access block closes it again."""
    from test_object_lock import ledger_records
    s3.create_bucket(Bucket="dropbox", ACL="public-read-write")
    s3.put_bucket_versioning(Bucket="dropbox", VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket="dropbox", Key="doc", Body=b"v1")["VersionId"]
    r = httpx.put(f"{endpoint}/dropbox/doc", content=b"v2 from anyone")
    assert r.status_code == 200, r.text
    assert s3.get_object(Bucket="dropbox", Key="doc")["Body"].read() == b"v2 from anyone"
    grants = s3.get_bucket_acl(Bucket="dropbox")["Grants"]
    assert {g["Permission"] for g in grants if g["Grantee"].get("URI", "").endswith("AllUsers")} == {"READ", "WRITE"}
    # a delete marker is fine, deleting a version (history) is not
    assert httpx.delete(f"{endpoint}/dropbox/doc?versionId={first}").status_code == 403
    assert httpx.delete(f"{endpoint}/dropbox/doc").status_code == 204
    assert s3.get_object(Bucket="dropbox", Key="doc", VersionId=first)["Body"].read() == b"v1"
    # nothing about the bucket itself
    assert httpx.put(f"{endpoint}/dropbox?acl", headers={"x-amz-acl": "private"}).status_code == 403
    assert httpx.delete(f"{endpoint}/dropbox?policy").status_code == 403
    anonymous = [r for r in ledger_records(node) if r.get("actor") == "@anonymous"]
    assert [(r["kind"], r["key"]) for r in anonymous if r["kind"] == "version_written"] == [("version_written", "doc")]
    # the public access block closes it
    s3.put_public_access_block(Bucket="dropbox", PublicAccessBlockConfiguration={
        "BlockPublicAcls": False, "IgnorePublicAcls": True, "BlockPublicPolicy": False, "RestrictPublicBuckets": False})
    assert httpx.put(f"{endpoint}/dropbox/late", content=b"x").status_code == 403
    # a bucket that does not exist is no secret
    assert b"NoSuchBucket" in httpx.get(f"{endpoint}/no-such-bucket-here/k").content


def test_policy_conditions_decide_whether_a_statement_applies(node, s3, endpoint):
    """A statement applies only when its Condition holds; a condition the server cannot
    judge (a source address) keeps an Allow from applying."""
    s3.create_bucket(Bucket="conditional")
    s3.put_object(Bucket="conditional", Key="open", Body=b"o", Tagging="security=public")
    s3.put_object(Bucket="conditional", Key="closed", Body=b"c", Tagging="security=private")
    s3.put_bucket_policy(Bucket="conditional", Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": "arn:aws:s3:::conditional/*",
         "Condition": {"StringEquals": {"s3:ExistingObjectTag/security": "public"}}},
        {"Effect": "Allow", "Principal": "*", "Action": "s3:PutObject",
         "Resource": "arn:aws:s3:::conditional/*",
         "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}},
    ]}))
    assert httpx.get(f"{endpoint}/conditional/open").content == b"o"
    assert httpx.get(f"{endpoint}/conditional/closed").status_code == 403
    assert httpx.put(f"{endpoint}/conditional/new", content=b"x").status_code == 403
    assert s3.get_bucket_policy_status(Bucket="conditional")["PolicyStatus"]["IsPublic"] is False
    # a key with no permission of its own, allowed to upload by the policy, but never
    # with a public-read ACL (a Deny with a condition)
    access, secret = new_key(node, "uploader")
    c = client(node.endpoint, access, secret)
    s3.put_bucket_policy(Bucket="conditional", Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": access}, "Action": "s3:PutObject",
         "Resource": "arn:aws:s3:::conditional/*"},
        {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
         "Resource": "arn:aws:s3:::conditional/*",
         "Condition": {"StringEquals": {"s3:x-amz-acl": "public-read"}}}]}))
    c.put_object(Bucket="conditional", Key="mine", Body=b"m")
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket="conditional", Key="published", Body=b"p", ACL="public-read")
    assert code(e) == "AccessDenied"
    # what a key wrote into a bucket it does not own, it may read back (ObjectWriter), and
    # nothing else
    assert c.get_object(Bucket="conditional", Key="mine")["Body"].read() == b"m"
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket="conditional", Key="open")
    assert code(e) == "AccessDenied"
    # A Deny on objects by their tags holds for a copy's source too.
    s3.put_bucket_policy(Bucket="conditional", Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": access}, "Action": ["s3:GetObject", "s3:PutObject"],
         "Resource": "arn:aws:s3:::conditional/*"},
        {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
         "Resource": "arn:aws:s3:::conditional/*",
         "Condition": {"StringEquals": {"s3:ExistingObjectTag/security": "private"}}}]}))
    assert c.get_object(Bucket="conditional", Key="open")["Body"].read() == b"o"
    for call in (lambda: c.get_object(Bucket="conditional", Key="closed"),
                 lambda: c.copy_object(Bucket="conditional", Key="stolen",
                                       CopySource={"Bucket": "conditional", "Key": "closed"})):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "AccessDenied"
    c.copy_object(Bucket="conditional", Key="copied", CopySource={"Bucket": "conditional", "Key": "open"})


def test_signed_requests_expire(node, s3, endpoint):
    """SigV2 requests carry their date: an old or invalid one is refused (no replay);
    presigned V4 URLs live at most a week."""
    import base64, hashlib, hmac
    from email.utils import formatdate
    from conftest import ACCESS, SECRET
    s3.create_bucket(Bucket="dated")
    s3.put_object(Bucket="dated", Key="k", Body=b"k")

    def v2_get(date):
        sig = base64.b64encode(hmac.new(SECRET.encode(), f"GET\n\n\n{date}\n/dated/k".encode(), hashlib.sha1).digest()).decode()
        return httpx.get(f"{endpoint}/dated/k", headers={"Date": date, "Authorization": f"AWS {ACCESS}:{sig}"})
    assert v2_get(formatdate(usegmt=True)).content == b"k"
    old = v2_get(formatdate(time.time() - 3600, usegmt=True))
    assert old.status_code == 403 and b"RequestTimeTooSkewed" in old.content
    assert b"AccessDenied" in v2_get("yesterday").content
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "dated", "Key": "k"}, ExpiresIn=8 * 24 * 3600)
    assert httpx.get(url).status_code == 403
