"""What an attacker with a key of their own, or a careless client, tries over S3: every
attempt is refused and changes nothing (the hardening issue's S3 items)."""
import json
import subprocess

import httpx
import pytest
from botocore.exceptions import ClientError

from conftest import client
from test_access import code, new_key


def test_an_upload_id_does_not_reach_into_another_bucket(node, s3):
    for b in ("mp-mine", "mp-victim"):
        s3.create_bucket(Bucket=b)
    victim = s3.create_multipart_upload(Bucket="mp-victim", Key="big")["UploadId"]
    part = s3.upload_part(Bucket="mp-victim", Key="big", UploadId=victim, PartNumber=1, Body=b"v" * 1000)
    access, secret = new_key(node, "mp-attacker", "--write", "mp-mine", "--read", "mp-victim")
    c = client(node.endpoint, access, secret)
    # abort, complete and list through the bucket the key may write, with the victim's id
    for call in (lambda: c.abort_multipart_upload(Bucket="mp-mine", Key="big", UploadId=victim),
                 lambda: c.complete_multipart_upload(
                     Bucket="mp-mine", Key="big", UploadId=victim,
                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}),
                 lambda: c.list_parts(Bucket="mp-mine", Key="big", UploadId=victim),
                 lambda: c.upload_part(Bucket="mp-mine", Key="big", UploadId=victim, PartNumber=2, Body=b"x")):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "NoSuchUpload"
    # or straight at the victim's bucket, where the key may only read
    with pytest.raises(ClientError) as e:
        c.abort_multipart_upload(Bucket="mp-victim", Key="big", UploadId=victim)
    assert code(e) == "AccessDenied"
    # the victim's upload is whole and completes
    assert [p["PartNumber"] for p in s3.list_parts(Bucket="mp-victim", Key="big", UploadId=victim)["Parts"]] == [1]
    s3.complete_multipart_upload(Bucket="mp-victim", Key="big", UploadId=victim,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert s3.get_object(Bucket="mp-victim", Key="big")["Body"].read() == b"v" * 1000
    assert "Contents" not in s3.list_objects_v2(Bucket="mp-mine")


def test_a_multipart_object_names_its_writer_in_the_ledger(node, s3):
    s3.create_bucket(Bucket="mp-ledger")
    access, secret = new_key(node, "mp-writer", "--write", "mp-ledger")
    c = client(node.endpoint, access, secret)
    up = c.create_multipart_upload(Bucket="mp-ledger", Key="k")["UploadId"]
    etag = c.upload_part(Bucket="mp-ledger", Key="k", UploadId=up, PartNumber=1, Body=b"p" * 100)["ETag"]
    c.complete_multipart_upload(Bucket="mp-ledger", Key="k", UploadId=up,
                                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    record = json.loads(json.loads(node.cli("ledger", "prove", "mp-ledger/k"))["entry"])
    assert (record["kind"], record["key"], record["actor"]) == ("version_written", "k", access)


def test_a_bucket_with_only_incomplete_uploads_is_deleted_and_the_uploads_with_it(s3):
    s3.create_bucket(Bucket="mp-abandoned")
    up = s3.create_multipart_upload(Bucket="mp-abandoned", Key="half")["UploadId"]
    s3.upload_part(Bucket="mp-abandoned", Key="half", UploadId=up, PartNumber=1, Body=b"h" * 1000)
    s3.delete_bucket(Bucket="mp-abandoned")
    assert "mp-abandoned" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    # a new bucket of that name starts empty: the old upload is gone
    s3.create_bucket(Bucket="mp-abandoned")
    assert s3.list_multipart_uploads(Bucket="mp-abandoned").get("Uploads", []) == []
    with pytest.raises(ClientError) as e:
        s3.list_parts(Bucket="mp-abandoned", Key="half", UploadId=up)
    assert code(e) == "NoSuchUpload"


def test_a_range_to_the_largest_number_reads_the_rest_of_the_object(node, s3):
    s3.create_bucket(Bucket="range-max")
    s3.put_object(Bucket="range-max", Key="k", Body=b"0123456789")
    # the admin API parses ranges itself (ByteRange): the end was incremented past u64
    token = (node.data / "admin.token").read_text().strip()
    auth = {"Authorization": f"Bearer {token}"}
    for rng, want in (("bytes=0-18446744073709551615", b"0123456789"),
                      ("bytes=4-18446744073709551615", b"456789")):
        r = httpx.get(f"{node.admin}/v1/objects/range-max/k", headers={**auth, "Range": rng})
        assert (r.status_code, r.content) == (206, want), (r.status_code, r.content)
    r = httpx.get(f"{node.admin}/v1/objects/range-max/k",
                  headers={**auth, "Range": "bytes=0-18446744073709551616"})
    assert r.status_code == 400, r.status_code
    # S3 (s3s parses the header): the whole object, or a clear 400, never a 5xx
    p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--aws-sigv4",
                        "aws:amz:us-east-1:s3", "-u", "TESTACCESSKEY:test-secret-key-1234567890",
                        "-H", "Range: bytes=0-18446744073709551615", f"{node.endpoint}/range-max/k"],
                       capture_output=True, text=True)
    assert p.stdout in ("206", "400"), p.stdout
    # UploadPartCopy's x-amz-copy-source-range: outside the source, refused
    up = s3.create_multipart_upload(Bucket="range-max", Key="mp")["UploadId"]
    with pytest.raises(ClientError) as e:
        s3.upload_part_copy(Bucket="range-max", Key="mp", UploadId=up, PartNumber=1,
                            CopySource={"Bucket": "range-max", "Key": "k"},
                            CopySourceRange="bytes=0-18446744073709551615")
    assert code(e) == "InvalidRange"
    assert s3.get_object(Bucket="range-max", Key="k")["Body"].read() == b"0123456789"


def test_publishing_the_current_version_does_not_publish_the_old_ones(endpoint, s3):
    s3.create_bucket(Bucket="acl-versions")
    s3.put_bucket_versioning(Bucket="acl-versions", VersioningConfiguration={"Status": "Enabled"})
    old = s3.put_object(Bucket="acl-versions", Key="doc", Body=b"secret draft")["VersionId"]
    s3.put_object(Bucket="acl-versions", Key="doc", Body=b"public text")
    s3.put_object_acl(Bucket="acl-versions", Key="doc", ACL="public-read")
    assert httpx.get(f"{endpoint}/acl-versions/doc").content == b"public text"
    r = httpx.get(f"{endpoint}/acl-versions/doc", params={"versionId": old})
    assert r.status_code == 403 and b"secret draft" not in r.content
    # as-of the old version's time: also the old version, also private
    head = s3.head_object(Bucket="acl-versions", Key="doc", VersionId=old)
    at = head["LastModified"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    r = httpx.get(f"{endpoint}/acl-versions/doc", headers={"x-edgecloud-as-of": at})
    assert r.status_code == 403 and b"secret draft" not in r.content
    # publishing that version on purpose works
    s3.put_object_acl(Bucket="acl-versions", Key="doc", VersionId=old, ACL="public-read")
    assert httpx.get(f"{endpoint}/acl-versions/doc", params={"versionId": old}).content == b"secret draft"


def test_writers_cannot_publish_objects_or_erase_versions(node, s3):
    s3.create_bucket(Bucket="writer-limits")
    s3.put_bucket_versioning(Bucket="writer-limits", VersioningConfiguration={"Status": "Enabled"})
    v = s3.put_object(Bucket="writer-limits", Key="doc", Body=b"kept")["VersionId"]
    access, secret = new_key(node, "plain-writer", "--write", "writer-limits")
    c = client(node.endpoint, access, secret)
    with pytest.raises(ClientError) as e:
        c.put_object_acl(Bucket="writer-limits", Key="doc", ACL="public-read")
    assert code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        c.delete_object(Bucket="writer-limits", Key="doc", VersionId=v)
    assert code(e) == "AccessDenied"
    out = c.delete_objects(Bucket="writer-limits", Delete={"Objects": [{"Key": "doc", "VersionId": v}]})
    assert [x["Code"] for x in out.get("Errors", [])] == ["AccessDenied"] and not out.get("Deleted")
    # a writer may still delete the usual way: a delete marker, the version kept
    c.delete_object(Bucket="writer-limits", Key="doc")
    assert s3.get_object(Bucket="writer-limits", Key="doc", VersionId=v)["Body"].read() == b"kept"
    assert httpx.get(f"{node.endpoint}/writer-limits/doc").status_code == 403
    # the owner (here the root key) may do both
    s3.delete_object(Bucket="writer-limits", Key="doc", VersionId=v)
    versions = s3.list_object_versions(Bucket="writer-limits").get("Versions", [])
    assert v not in [x["VersionId"] for x in versions]


def test_a_bucket_policy_deny_on_the_source_stops_a_copy(node, s3):
    for b in ("copy-src-denied", "copy-dst"):
        s3.create_bucket(Bucket=b)
    s3.put_object(Bucket="copy-src-denied", Key="secret", Body=b"do not copy")
    s3.put_object(Bucket="copy-src-denied", Key="open", Body=b"fine")
    access, secret = new_key(node, "copier", "--read", "copy-src-denied", "--write", "copy-dst")
    s3.put_bucket_policy(Bucket="copy-src-denied", Policy=json.dumps({"Statement": [{
        "Effect": "Deny", "Principal": {"AWS": access}, "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::copy-src-denied/secret"}]}))
    c = client(node.endpoint, access, secret)
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket="copy-src-denied", Key="secret")
    assert code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        c.copy_object(Bucket="copy-dst", Key="stolen", CopySource={"Bucket": "copy-src-denied", "Key": "secret"})
    assert code(e) == "AccessDenied"
    up = c.create_multipart_upload(Bucket="copy-dst", Key="stolen-mp")["UploadId"]
    with pytest.raises(ClientError) as e:
        c.upload_part_copy(Bucket="copy-dst", Key="stolen-mp", UploadId=up, PartNumber=1,
                           CopySource={"Bucket": "copy-src-denied", "Key": "secret"})
    assert code(e) == "AccessDenied"
    assert "Contents" not in s3.list_objects_v2(Bucket="copy-dst")
    # what the policy does not deny still copies
    c.copy_object(Bucket="copy-dst", Key="open", CopySource={"Bucket": "copy-src-denied", "Key": "open"})
    assert s3.get_object(Bucket="copy-dst", Key="open")["Body"].read() == b"fine"


def test_a_node_keeps_its_files_private_and_will_not_start_without_its_keys(tmp_path):
    import os
    import stat
    from conftest import BIN, Node
    data = tmp_path / "node"
    data.mkdir()
    n = Node(data)
    try:
        client(n.endpoint).create_bucket(Bucket="kept")
        client(n.endpoint).put_object(Bucket="kept", Key="k", Body=b"needs the master key")
        access, secret = new_key(n, "at-rest", "--read", "kept")
        assert client(n.endpoint, access, secret).get_object(Bucket="kept", Key="k")["Body"].read()
    finally:
        n.stop()
    # the key's secret is nowhere on disk in the clear: not in the catalog, the Raft log
    # or its snapshots (sealed under the master key)
    for p in (p for p in data.rglob("*") if p.is_file() and p.name != "serve.log"):
        assert secret.encode() not in p.read_bytes(), f"{p} holds an access key's secret"
    # the catalog (access-key secrets), Raft log, keys: nothing readable by others; the
    # data folder and the containers' folders may be passed through (0711, not listed)
    # by a container's root in its user namespace (docs/containers.md)
    passable = {data, data / "containers", data / "containers" / "run"}
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o711
    names = {p.name for p in data.iterdir()}
    assert {"catalog.redb", "raft-log.redb", "master.key", "ledger.key", "admin.token"} <= names, names
    for p in (p for p in data.rglob("*") if p.name != "serve.log"):  # the test writes serve.log
        mode = stat.S_IMODE(os.stat(p).st_mode)
        if p in passable:
            assert mode == 0o711, f"{p} is {oct(mode)}"
        else:
            assert mode & 0o077 == 0, f"{p} is {oct(mode)}"
    # a lost master key is not silently replaced by a new one
    for lost in ("master.key", "ledger.key"):
        (data / lost).rename(tmp_path / lost)
        p = subprocess.run([BIN, "serve", "--data", str(data), "--s3-listen", "127.0.0.1:0",
                            "--admin-listen", "127.0.0.1:0", "--dav-listen", "127.0.0.1:0",
                            "--ftp-listen", "127.0.0.1:0", "--rpc-listen", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and "missing" in p.stderr and "backup" in p.stderr, p.stderr
        assert not (data / lost).exists()
        (tmp_path / lost).rename(data / lost)
    # with its keys back, it starts and reads what it held
    n = Node(data)
    try:
        assert client(n.endpoint).get_object(Bucket="kept", Key="k")["Body"].read() == b"needs the master key"
        assert client(n.endpoint, access, secret).get_object(Bucket="kept", Key="k")["Body"].read()
    finally:
        n.stop()


def test_a_flood_of_idle_and_half_sent_connections_does_not_stop_the_node(tmp_path):
    """Slowloris on every listener at once from one host (127.0.0.2): a few thousand
    sockets that send half a request and stall, more than a listener's whole connection
    cap on S3. The node goes on serving S3, WebDAV, FTP and the admin API to real
    clients on another address (127.0.0.1) meanwhile, and after the flood: one address
    gets at most a quarter of a listener's connections."""
    import ftplib
    import resource
    import socket
    from conftest import Node
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    data = tmp_path / "node"
    data.mkdir()
    import re
    import time
    n = Node(data)
    deadline = time.time() + 20
    while not (m := re.search(r"node-to-node on 127\.0\.0\.1:(\d+)", (data / "serve.log").read_text())):
        assert time.time() < deadline, "no node-to-node address in the log"
        time.sleep(0.1)
    rpc_port = int(m.group(1))
    per_listener = min(1000, (hard - 4500) // 6)
    ports = {"s3": n.port, "webdav": int(n.dav.rsplit(":", 1)[1]), "ftp": n.ftp_port,
             "nfs": n.nfs_port, "admin": int(n.admin.rsplit(":", 1)[1]), "rpc": rpc_port}
    half = {"s3": b"GET / HTTP/1.1\r\nHost: x\r\n", "webdav": b"PROPFIND / HTTP/1.1\r\nHo",
            "admin": b"GET /v1/status HTTP/1.1\r\n", "ftp": b"USER ab", "nfs": b"\x80\x00\x01\x00\x00",
            "rpc": b"\x16\x03\x01\x00"}  # half a TLS ClientHello
    held = []
    try:
        s3 = client(n.endpoint)
        s3.create_bucket(Bucket="flooded")
        for what, port in ports.items():
            # past the listener's cap of 4096 on S3, so only the per-address cap helps
            count = 4096 + 200 if what == "s3" else per_listener
            for _ in range(count):
                s = socket.socket()
                s.setblocking(True)
                try:
                    s.bind(("127.0.0.2", 0))
                    s.connect(("127.0.0.1", port))
                    s.send(half[what])
                except OSError:
                    s.close()
                    continue
                held.append(s)
        assert len(held) > 3 * per_listener, len(held)
        # real clients, while every socket above is held
        s3.put_object(Bucket="flooded", Key="during", Body=b"served")
        assert s3.get_object(Bucket="flooded", Key="during")["Body"].read() == b"served"
        r = httpx.get(f"{n.dav}/flooded/during", auth=("TESTACCESSKEY", "test-secret-key-1234567890"))
        assert r.content == b"served"
        with ftplib.FTP() as f:
            f.connect("127.0.0.1", n.ftp_port, timeout=20)
            f.login("TESTACCESSKEY", "test-secret-key-1234567890")
            assert "during" in f.nlst("flooded")
        assert "full redundancy" in n.cli("cluster", "status")  # the admin API answers too
    finally:
        for s in held:
            s.close()
    try:
        assert client(n.endpoint).get_object(Bucket="flooded", Key="during")["Body"].read() == b"served"
        assert n.proc.poll() is None
    finally:
        n.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_body_without_a_length_is_cut_off_at_the_size_limit(tmp_path):
    """FTP, chunked WebDAV and chunked S3 uploads (ftplib, httpx) announce no length:
    the node's --max-object-size is checked while they stream, the refusal names the limit, and
    nothing is stored; a body under the limit is stored as usual."""
    import ftplib
    import io
    from conftest import ACCESS, SECRET, Node
    data = tmp_path / "node"
    data.mkdir()
    n = Node(data, "--max-object-size", "1MiB")
    try:
        s3 = client(n.endpoint)
        s3.create_bucket(Bucket="capped")
        # Just past the limit: a server that refuses mid-body closes the connection, and a
        # client still sending may see a broken pipe instead of the answer (curl does;
        # httpx reads the early answer).
        big = bytes(range(256)) * ((1 << 12) + 800)  # 1 MiB + 200 KiB

        def pieces(body):  # a generator body: httpx sends it chunked, without a length
            for i in range(0, len(body), 64 << 10):
                yield body[i:i + (64 << 10)]

        r = httpx.put(f"{n.dav}/capped/dav-big", content=pieces(big), auth=(ACCESS, SECRET), timeout=60)
        assert r.status_code == 413, (r.status_code, r.text)
        r = httpx.put(f"{n.dav}/capped/dav-small", content=pieces(big[:1 << 19]), auth=(ACCESS, SECRET))
        assert r.status_code in (200, 201, 204), r.status_code

        with ftplib.FTP() as f:
            f.connect("127.0.0.1", n.ftp_port, timeout=30)
            f.login(ACCESS, SECRET)
            with pytest.raises(ftplib.error_perm, match="^552"):
                f.storbinary("STOR /capped/ftp-big", io.BytesIO(big))

        url = s3.generate_presigned_url("put_object", Params={"Bucket": "capped", "Key": "s3-big"})
        r = httpx.put(url, content=pieces(big), timeout=60)  # chunked, no Content-Length
        assert r.status_code == 400 and b"EntityTooLarge" in r.content, (r.status_code, r.content)
        assert b"max-object-size" in r.content, r.content

        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="capped").get("Contents", [])]
        assert keys == ["dav-small"], keys
        assert s3.get_object(Bucket="capped", Key="dav-small")["Body"].read() == big[:1 << 19]
    finally:
        n.stop()
