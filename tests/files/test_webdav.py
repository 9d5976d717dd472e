"""The WebDAV gateway against real clients: the litmus conformance suite, rclone, curl,
httpx; the same objects as S3; snapshots; refused credentials and hostile input."""
import hashlib
import os
import re
import socket
import subprocess
import time
from urllib.parse import urlparse

import httpx

from conftest import ACCESS, SECRET, overwrite_after_an_instant

AUTH = (ACCESS, SECRET)


def dav(node, method, path, **kw):
    kw.setdefault("auth", AUTH)
    return httpx.request(method, node.dav + path, timeout=60, **kw)


def test_litmus_passes_every_group(node, s3):
    s3.create_bucket(Bucket="litmus")
    p = subprocess.run(["litmus", "-k", f"{node.dav}/litmus/", ACCESS, SECRET],
                       capture_output=True, text=True, timeout=600)
    # litmus exits 0 even when tests fail: read its summaries.
    summary = dict((g, (int(run), int(ok), int(bad))) for g, run, ok, bad in re.findall(
        r"<- summary for `(\w+)': of (\d+) tests run: (\d+) passed, (\d+) failed", p.stdout))
    assert set(summary) >= {"basic", "copymove", "props", "locks", "http"}, p.stdout[-3000:]
    for group, (run, ok, bad) in summary.items():
        assert bad == 0, f"litmus {group}: {bad} failed\n{p.stdout[-4000:]}"
    assert sum(r for r, _, _ in summary.values()) >= 100


def test_same_objects_and_etags_as_s3(node, s3, tmp_path):
    s3.create_bucket(Bucket="dav-shared")
    s3.put_bucket_versioning(Bucket="dav-shared", VersioningConfiguration={"Status": "Enabled"})
    body = os.urandom(300_000)
    assert dav(node, "PUT", "/dav-shared/report.bin", content=body).status_code == 201
    obj = s3.get_object(Bucket="dav-shared", Key="report.bin")
    assert obj["Body"].read() == body
    assert obj["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    prop = dav(node, "PROPFIND", "/dav-shared/report.bin", headers={"Depth": "0"}).text
    assert hashlib.md5(body).hexdigest() in prop
    # an overwrite over WebDAV is a new version, like an S3 PUT
    assert dav(node, "PUT", "/dav-shared/report.bin", content=b"second").status_code == 204
    versions = s3.list_object_versions(Bucket="dav-shared", Prefix="report.bin")["Versions"]
    assert len(versions) == 2
    # S3 writes show up over WebDAV at once; folders are S3 "dir/" markers
    s3.put_object(Bucket="dav-shared", Key="from-s3/notes.txt", Body=b"hello from s3")
    assert dav(node, "GET", "/dav-shared/from-s3/notes.txt").content == b"hello from s3"
    assert dav(node, "MKCOL", "/dav-shared/made-by-dav/").status_code == 201
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="dav-shared")["Contents"]]
    assert "made-by-dav/" in keys
    listing = dav(node, "PROPFIND", "/dav-shared/", headers={"Depth": "1"}).text
    assert "/dav-shared/from-s3/" in listing and "/dav-shared/made-by-dav/" in listing
    # ranges (curl, as a download manager would resume)
    out = subprocess.run(["curl", "-sf", "-u", f"{ACCESS}:{SECRET}", "-r", "100-199",
                          f"{node.dav}/dav-shared/from-s3/notes.txt"], capture_output=True)
    assert out.stdout == b""  # past the end of a 13-byte file: nothing
    s3.put_object(Bucket="dav-shared", Key="big.bin", Body=body)
    out = subprocess.run(["curl", "-sf", "-u", f"{ACCESS}:{SECRET}", "-r", "1000-1999",
                          f"{node.dav}/dav-shared/big.bin"], capture_output=True, check=True)
    assert out.stdout == body[1000:2000]
    # MOVE of a folder moves everything in it
    assert dav(node, "PUT", "/dav-shared/made-by-dav/a.txt", content=b"a").status_code == 201
    r = dav(node, "MOVE", "/dav-shared/made-by-dav/", headers={"Destination": f"{node.dav}/dav-shared/moved/"})
    assert r.status_code in (201, 204), r.text
    assert dav(node, "GET", "/dav-shared/moved/a.txt").content == b"a"
    assert dav(node, "GET", "/dav-shared/made-by-dav/a.txt").status_code == 404


def test_rclone_syncs_a_tree_up_and_down(node, s3, tmp_path):
    s3.create_bucket(Bucket="rclone-dav")
    src = tmp_path / "src"
    for i in range(20):
        d = src / f"dir{i % 4}" / "sub"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i}.dat").write_bytes(os.urandom(1000 * i + 1))
    (src / "empty.txt").write_bytes(b"")
    (src / "ünïcode name.txt").write_text("utf-8 names work")
    obscured = subprocess.run(["rclone", "obscure", SECRET], capture_output=True, text=True, check=True).stdout.strip()
    env = dict(os.environ, RCLONE_CONFIG_EC_TYPE="webdav", RCLONE_CONFIG_EC_URL=node.dav,
               RCLONE_CONFIG_EC_VENDOR="other", RCLONE_CONFIG_EC_USER=ACCESS, RCLONE_CONFIG_EC_PASS=obscured,
               RCLONE_CONFIG=str(tmp_path / "none.conf"))

    def rclone(*args):
        p = subprocess.run(["rclone", *args], env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        return p
    rclone("sync", str(src), "ec:rclone-dav/tree")
    rclone("check", str(src), "ec:rclone-dav/tree")
    down = tmp_path / "down"
    rclone("sync", "ec:rclone-dav/tree", str(down))
    assert subprocess.run(["diff", "-r", str(src), str(down)]).returncode == 0
    # and S3 sees the same files
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="rclone-dav")["Contents"]}
    assert "tree/dir3/sub/file19.dat" in keys and "tree/ünïcode name.txt" in keys


def test_snapshots_show_the_past_read_only(node, s3):
    s3.create_bucket(Bucket="dav-snap")
    s3.put_object(Bucket="dav-snap", Key="doc.txt", Body=b"first draft")
    instant = overwrite_after_an_instant(s3, "dav-snap", "doc.txt", b"final text")
    s3.put_object(Bucket="dav-snap", Key="later.txt", Body=b"written after")
    assert dav(node, "GET", "/dav-snap/doc.txt").content == b"final text"
    past = f"/dav-snap/.snapshots/{instant}"
    assert dav(node, "GET", f"{past}/doc.txt").content == b"first draft"
    assert dav(node, "GET", f"{past}/later.txt").status_code == 404
    listing = dav(node, "PROPFIND", f"{past}/", headers={"Depth": "1"}).text
    assert "doc.txt" in listing and "later.txt" not in listing
    # the snapshot folder is listed at the bucket's top; its entries are hours and days
    assert ".snapshots" in dav(node, "PROPFIND", "/dav-snap/", headers={"Depth": "1"}).text
    assert dav(node, "PROPFIND", "/dav-snap/.snapshots/", headers={"Depth": "1"}).status_code == 207
    # the past cannot change
    assert dav(node, "PUT", f"{past}/doc.txt", content=b"rewrite history").status_code == 403
    assert dav(node, "DELETE", f"{past}/doc.txt").status_code == 403
    assert dav(node, "MKCOL", f"{past}/newdir/").status_code == 403
    r = dav(node, "MOVE", "/dav-snap/doc.txt", headers={"Destination": f"{node.dav}{past}/moved.txt"})
    assert r.status_code == 403
    assert dav(node, "GET", "/dav-snap/.snapshots/not-a-time/doc.txt").status_code in (400, 403, 404)


def test_credentials_and_permissions_are_checked_on_every_request(node, s3):
    s3.create_bucket(Bucket="dav-guarded")
    s3.put_object(Bucket="dav-guarded", Key="secret.txt", Body=b"top secret")
    r = httpx.request("PROPFIND", node.dav + "/", headers={"Depth": "1"})
    assert r.status_code == 401 and "Basic" in r.headers["www-authenticate"]
    for method in ["GET", "PUT", "DELETE", "MKCOL", "PROPFIND", "OPTIONS", "LOCK", "MOVE", "COPY"]:
        assert dav(node, method, "/dav-guarded/secret.txt", auth=(ACCESS, "wrong")).status_code == 401, method
        assert dav(node, method, "/dav-guarded/secret.txt", auth=("NOSUCHKEY", SECRET)).status_code == 401, method
    out = node.cli("key", "create", "reader")
    access = re.search(r"EC[A-Z0-9]{18}", out).group(0)
    secret = re.search(r"secret[^:]*:\s*(\S+)", out, re.I).group(1)
    reader = (access, secret)
    # no permission: the bucket is not even listed
    assert "dav-guarded" not in dav(node, "PROPFIND", "/", headers={"Depth": "1"}, auth=reader).text
    assert dav(node, "GET", "/dav-guarded/secret.txt", auth=reader).status_code in (403, 404)
    node.cli("key", "allow", access, "dav-guarded", "read")
    assert dav(node, "GET", "/dav-guarded/secret.txt", auth=reader).content == b"top secret"
    assert dav(node, "PUT", "/dav-guarded/secret.txt", content=b"x", auth=reader).status_code == 403
    assert dav(node, "DELETE", "/dav-guarded/secret.txt", auth=reader).status_code == 403
    assert s3.get_object(Bucket="dav-guarded", Key="secret.txt")["Body"].read() == b"top secret"


def raw_request(node, data, read=True):
    u = urlparse(node.dav)
    with socket.create_connection((u.hostname, u.port), timeout=10) as c:
        c.sendall(data)
        if not read:
            return b""
        out = b""
        while True:
            try:
                b = c.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            out += b
        return out


def basic():
    import base64
    return base64.b64encode(f"{ACCESS}:{SECRET}".encode()).decode()


def test_hostile_paths_and_cut_transfers_store_nothing(node, s3):
    s3.create_bucket(Bucket="dav-hostile")
    s3.put_object(Bucket="dav-hostile", Key="keep.txt", Body=b"keep me")
    # Dot segments are resolved as URLs are (RFC 3986), never above the root: these land
    # in a bucket "etc" that does not exist, or are refused.
    for path in ["/dav-hostile/../../../etc/passwd", "/dav-hostile/%2e%2e/%2e%2e/etc/passwd", "/dav-hostile/a%00b",
                 "/dav-hostile/" + "n" * 300, "/dav-hostile/..%2fkeep.txt"]:
        req = f"PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {basic()}\r\nContent-Length: 3\r\n\r\nbad"
        status = raw_request(node, req.encode()).split(b" ", 2)[1]
        assert status in (b"400", b"403", b"404", b"409", b"414"), (path, status)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="dav-hostile")["Contents"]]
    assert keys == ["keep.txt"], keys
    # an upload cut off mid-body, and one shorter than it said: nothing becomes visible
    head = (f"PUT /dav-hostile/cut.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {basic()}\r\n"
            f"Content-Length: 1000000\r\n\r\n").encode()
    raw_request(node, head + os.urandom(100_000), read=False)
    time.sleep(0.5)
    assert dav(node, "GET", "/dav-hostile/cut.bin").status_code == 404
    # an oversized, malformed PROPFIND body gets an error, not a crash
    r = dav(node, "PROPFIND", "/dav-hostile/", headers={"Depth": "1"}, content=b"<?xml version='1.0'?><D:propfind" * 1000)
    assert 400 <= r.status_code < 500
    r = dav(node, "PROPFIND", "/dav-hostile/", headers={"Depth": "infinity"})
    assert r.status_code in (207, 403, 501)  # dav-server refuses infinite depth
    # still serving
    assert dav(node, "GET", "/dav-hostile/keep.txt").content == b"keep me"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="dav-hostile")["Contents"]]
    assert keys == ["keep.txt"], keys


def test_bench_measures_webdav_and_ftp(node):
    from conftest import BIN
    for mode in (["--webdav", node.dav], ["--ftp", f"127.0.0.1:{node.ftp_port}"]):
        p = subprocess.run([BIN, "bench", "--quick", *mode, "--access-key", ACCESS, "--secret-key", SECRET],
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr
        assert len(re.findall(r"MB/s", p.stdout)) == 6 and len(re.findall(r"ops/s", p.stdout)) == 6, p.stdout
