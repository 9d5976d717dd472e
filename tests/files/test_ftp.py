"""The FTP gateway against lftp and curl: mirrors up and down, resume, listings,
renames, the same objects as S3 and WebDAV, refused logins and permissions, snapshots,
explicit FTPS."""
import hashlib
import os
import re
import subprocess

import httpx

from conftest import ACCESS, SECRET, Node, overwrite_after_an_instant


def lftp(port, script, user=ACCESS, password=SECRET, ok=True, extra=""):
    p = subprocess.run(["lftp", "-u", f"{user},{password}", "-e",
                        f"set ftp:ssl-allow no; set net:max-retries 1; set net:timeout 10; {extra}{script}; quit",
                        f"ftp://127.0.0.1:{port}"], capture_output=True, text=True, timeout=300)
    assert (p.returncode == 0) == ok, p.stdout + p.stderr
    return p.stdout + p.stderr


def curl(*args, ok=True):
    p = subprocess.run(["curl", "-s", "-S", *args], capture_output=True, timeout=120)
    assert (p.returncode == 0) == ok, p.stderr
    return p


def test_lftp_mirrors_a_tree_up_and_down(node, s3, tmp_path):
    s3.create_bucket(Bucket="ftp-mirror")
    src = tmp_path / "src"
    for i in range(12):
        d = src / f"d{i % 3}" / "deeper"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.bin").write_bytes(os.urandom(7919 * i))
    (src / "big.bin").write_bytes(os.urandom(5 << 20))
    lftp(node.ftp_port, f"cd ftp-mirror; mirror -R {src} tree")
    down = tmp_path / "down"
    lftp(node.ftp_port, f"mirror ftp-mirror/tree {down}")
    assert subprocess.run(["diff", "-r", str(src), str(down)]).returncode == 0
    # the same object over S3, with the same ETag as its MD5
    obj = s3.get_object(Bucket="ftp-mirror", Key="tree/big.bin")
    data = (src / "big.bin").read_bytes()
    assert obj["Body"].read() == data
    assert obj["ETag"].strip('"') == hashlib.md5(data).hexdigest()


def test_curl_lists_resumes_renames_and_deletes(node, s3, tmp_path):
    s3.create_bucket(Bucket="ftp-ops")
    s3.put_bucket_versioning(Bucket="ftp-ops", VersioningConfiguration={"Status": "Enabled"})
    url = f"ftp://127.0.0.1:{node.ftp_port}/ftp-ops"
    user = ["-u", f"{ACCESS}:{SECRET}"]
    data = os.urandom(1_000_000)
    (tmp_path / "up.bin").write_bytes(data)
    curl(*user, "-T", str(tmp_path / "up.bin"), f"{url}/dir/up.bin", "--ftp-create-dirs")
    # NLST and LIST
    names = curl(*user, "--list-only", f"{url}/dir/").stdout.decode().split()
    assert names == ["up.bin"]
    assert "1000000" in curl(*user, f"{url}/dir/").stdout.decode()
    # RETR with REST: resume a download from byte 400,000
    part = tmp_path / "part.bin"
    part.write_bytes(data[:400_000])
    curl(*user, "-C", "-", "-o", str(part), f"{url}/dir/up.bin")
    assert part.read_bytes() == data
    # an overwrite is a new version, visible over S3 and WebDAV at once
    (tmp_path / "v2.bin").write_bytes(b"second version")
    curl(*user, "-T", str(tmp_path / "v2.bin"), f"{url}/dir/up.bin")
    versions = s3.list_object_versions(Bucket="ftp-ops", Prefix="dir/up.bin")["Versions"]
    assert len(versions) == 2
    r = httpx.get(f"{node.dav}/ftp-ops/dir/up.bin", auth=(ACCESS, SECRET))
    assert r.content == b"second version"
    assert r.headers["etag"].strip('"') == hashlib.md5(b"second version").hexdigest()
    # RNFR/RNTO, MKD, DELE, RMD as raw commands (curl sends them from the login folder)
    curl(*user, f"{url}/", "-Q", "RNFR ftp-ops/dir/up.bin", "-Q", "RNTO ftp-ops/dir/renamed.bin", "-Q", "MKD ftp-ops/newdir")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="ftp-ops")["Contents"]}
    assert {"dir/renamed.bin", "newdir/"} <= keys and "dir/up.bin" not in keys
    curl(*user, f"{url}/", "-Q", "RMD ftp-ops/dir", ok=False)  # not empty
    curl(*user, f"{url}/", "-Q", "DELE ftp-ops/dir/renamed.bin", "-Q", "RMD ftp-ops/newdir")
    # "dir" was made by MKD (curl --ftp-create-dirs): its marker stays until RMD
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="ftp-ops")["Contents"]] == ["dir/"]
    curl(*user, f"{url}/", "-Q", "RMD ftp-ops/dir")
    assert "Contents" not in s3.list_objects_v2(Bucket="ftp-ops")
    # MLSD through lftp (it prefers MLSD when the server offers it)
    s3.put_object(Bucket="ftp-ops", Key="m.txt", Body=b"mlsd")
    out = lftp(node.ftp_port, "cd ftp-ops; cls -l", extra="set ftp:use-mlsd yes; ")
    assert "m.txt" in out


def test_logins_permissions_and_snapshots(node, s3, tmp_path):
    s3.create_bucket(Bucket="ftp-guarded")
    s3.create_bucket(Bucket="ftp-private")
    s3.put_object(Bucket="ftp-guarded", Key="report.txt", Body=b"quarterly")
    url = f"ftp://127.0.0.1:{node.ftp_port}/ftp-guarded/report.txt"
    # wrong secret, unknown key: 530 and nothing read
    p = curl("-u", f"{ACCESS}:wrong", url, ok=False)
    assert b"530" in p.stderr or p.returncode == 67
    curl("-u", f"NOSUCHKEY:{SECRET}", url, ok=False)
    curl(url, ok=False)  # anonymous
    out = node.cli("key", "create", "ftp-reader")
    access = re.search(r"EC[A-Z0-9]{18}", out).group(0)
    secret = re.search(r"secret:\s*(\S+)", out).group(1)
    node.cli("key", "allow", access, "ftp-guarded", "read")
    assert curl("-u", f"{access}:{secret}", url).stdout == b"quarterly"
    (tmp_path / "x").write_bytes(b"overwrite")
    curl("-u", f"{access}:{secret}", "-T", str(tmp_path / "x"), url, ok=False)
    curl("-u", f"{access}:{secret}", f"ftp://127.0.0.1:{node.ftp_port}/", "-Q", "DELE ftp-guarded/report.txt", ok=False)
    assert s3.get_object(Bucket="ftp-guarded", Key="report.txt")["Body"].read() == b"quarterly"
    # buckets the key cannot read are not listed
    listing = curl("-u", f"{access}:{secret}", "--list-only", f"ftp://127.0.0.1:{node.ftp_port}/").stdout.decode()
    names = listing.split()
    assert "ftp-guarded" in names and "ftp-private" not in names, names
    # snapshots: readable, never writable
    instant = overwrite_after_an_instant(s3, "ftp-guarded", "report.txt", b"restated")
    past = f"ftp://127.0.0.1:{node.ftp_port}/ftp-guarded/.snapshots/{instant}/report.txt"
    assert curl("-u", f"{ACCESS}:{SECRET}", past).stdout == b"quarterly"
    p = curl("-u", f"{ACCESS}:{SECRET}", "-T", str(tmp_path / "x"), past, ok=False)
    assert b"550" in p.stderr or b"553" in p.stderr, p.stderr


def test_tls_for_s3_ftp_and_webdav(tmp_path):
    """A node of its own with a certificate: S3, WebDAV and the admin API over HTTPS only,
    and FTP with AUTH TLS required before any login."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    data = tmp_path / "data"
    data.mkdir()
    node = Node(data, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        import boto3
        from botocore.config import Config
        s3_https = node.endpoint.replace("http://", "https://")
        s3 = boto3.client("s3", endpoint_url=s3_https, aws_access_key_id=ACCESS,
                          aws_secret_access_key=SECRET, region_name="us-east-1", verify=str(cert),
                          config=Config(s3={"addressing_style": "path"}))
        s3.create_bucket(Bucket="tls")
        # S3 answers HTTPS only
        curl(f"{node.endpoint}/tls", ok=False)
        (tmp_path / "s.txt").write_bytes(b"over tls")
        url = f"ftp://127.0.0.1:{node.ftp_port}/tls/s.txt"
        curl("--ssl-reqd", "-k", "-u", f"{ACCESS}:{SECRET}", "-T", str(tmp_path / "s.txt"), url)
        assert curl("--ssl-reqd", "-k", "-u", f"{ACCESS}:{SECRET}", url).stdout == b"over tls"
        assert s3.get_object(Bucket="tls", Key="s.txt")["Body"].read() == b"over tls"
        # a login in the clear is refused before the secret is checked: nothing read
        p = curl("-u", f"{ACCESS}:{SECRET}", url, ok=False)
        assert b"over tls" not in p.stdout
        # WebDAV answers HTTPS only; Basic credentials never cross in the clear
        https = node.dav.replace("http://", "https://")
        assert curl("-k", "-u", f"{ACCESS}:{SECRET}", f"{https}/tls/s.txt").stdout == b"over tls"
        assert curl("--cacert", str(cert), "-u", f"{ACCESS}:{SECRET}", f"{https}/tls/s.txt").stdout == b"over tls"
        curl("-u", f"{ACCESS}:{SECRET}", f"{node.dav}/tls/s.txt", ok=False)
        assert curl("-k", f"{https}/tls/s.txt", "-o", "/dev/null", "-w", "%{http_code}").stdout == b"401"
        # The admin API answers HTTPS only; the CLI finds its URL and certificate in the
        # data directory, or is given them.
        admin_https = node.admin.replace("http://", "https://")
        curl(f"{node.admin}/v1/status", ok=False)
        assert (data / "admin.url").read_text().strip() == admin_https
        from conftest import BIN

        def cli(*args):
            return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=60)
        p = cli("--data", str(data), "bucket", "list")
        assert p.returncode == 0 and "tls" in p.stdout, p.stderr
        p = cli("--data", str(data), "--admin", admin_https, "--admin-ca", str(cert), "bucket", "list")
        assert p.returncode == 0 and "tls" in p.stdout, p.stderr
        token = (data / "admin.token").read_text().strip()
        p = cli("--data", str(tmp_path / "elsewhere"), "--token", token, "--admin", admin_https, "bucket", "list")
        assert p.returncode != 0 and "--admin-ca" in p.stderr, p.stderr
        p = cli("--data", str(data), "--admin", node.admin, "bucket", "list")  # plain HTTP to a TLS port
        assert p.returncode != 0, p.stdout
    finally:
        node.stop()


def test_a_self_signed_certificate_on_request(tmp_path):
    """--tls-self-signed: a certificate made on first start, kept across restarts."""
    data = tmp_path / "data"
    data.mkdir()
    node = Node(data, "--tls-self-signed")
    try:
        cert = data / "tls" / "cert.pem"
        s3_https = node.endpoint.replace("http://", "https://")
        assert curl("--cacert", str(cert), "-o", "/dev/null", "-w", "%{http_code}", f"{s3_https}/").stdout == b"403"
        first = cert.read_bytes()
    finally:
        node.stop()
    node = Node(data, "--tls-self-signed")
    try:
        assert cert.read_bytes() == first
        assert curl("--cacert", str(cert), "-o", "/dev/null", "-w", "%{http_code}", f"{s3_https.rsplit(':', 1)[0]}:{node.port}/").stdout == b"403"
    finally:
        node.stop()


def test_hostile_paths_wrong_logins_and_a_reset_upload(node, s3, tmp_path):
    import socket
    import struct
    s3.create_bucket(Bucket="ftp-hostile")
    s3.put_object(Bucket="ftp-hostile", Key="keep.txt", Body=b"keep me")
    base = f"ftp://127.0.0.1:{node.ftp_port}"
    user = ["-u", f"{ACCESS}:{SECRET}"]
    (tmp_path / "x").write_bytes(b"bad")
    # traversal, NUL and over-long names: refused, nothing stored, nothing read outside
    for cmd in ["RNFR /ftp-hostile/../../etc/passwd", "MKD /ftp-hostile/" + "n" * 300, "RMD /ftp-hostile/../.."]:
        curl(*user, f"{base}/", "-Q", cmd, ok=False)
    curl(*user, f"{base}/ftp-hostile/%2e%2e/%2e%2e/etc/passwd", ok=False)
    curl(*user, "-T", str(tmp_path / "x"), f"{base}/ftp-hostile/a%00b", ok=False)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="ftp-hostile")["Contents"]] == ["keep.txt"]
    # an upload whose data connection is reset (not closed) stores nothing
    c = socket.create_connection(("127.0.0.1", node.ftp_port), timeout=10)
    f = c.makefile("rwb")

    def send(line):
        f.write(line.encode() + b"\r\n")
        f.flush()
        reply = f.readline().decode()
        while reply[3:4] == "-":
            reply = f.readline().decode()
        return reply
    f.readline()  # greeting
    assert send(f"USER {ACCESS}").startswith("331")
    assert send(f"PASS {SECRET}").startswith("230")
    send("TYPE I")
    pasv = send("PASV")
    nums = list(map(int, pasv[pasv.index("(") + 1:pasv.index(")")].split(",")))
    data = socket.create_connection((".".join(map(str, nums[:4])), nums[4] * 256 + nums[5]), timeout=10)
    assert send("STOR /ftp-hostile/reset.bin")[:3] in ("125", "150")
    data.sendall(os.urandom(200_000))
    import time
    time.sleep(0.3)  # let the server take the data connection before it is reset
    data.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    data.close()  # RST
    try:
        f.readline()  # the transfer's failure reply, when the server saw the reset
    except TimeoutError:
        pass  # a reset that beat the server's accept leaves it waiting; nothing is stored either way
    c.close()
    time.sleep(0.5)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="ftp-hostile")["Contents"]]
    assert keys == ["keep.txt"], keys
    # and the server still serves
    assert curl(*user, f"{base}/ftp-hostile/keep.txt").stdout == b"keep me"


def test_a_deleted_key_ends_what_its_open_session_may_do(node, s3):
    import ftplib
    import io
    s3.create_bucket(Bucket="ftp-revoked")
    out = node.cli("key", "create", "ftp-soon-gone")
    access = re.search(r"EC[A-Z0-9]{18}", out).group(0)
    secret = re.search(r"secret:\s*(\S+)", out).group(1)
    node.cli("key", "allow", access, "ftp-revoked", "write")
    with ftplib.FTP() as f:
        f.connect("127.0.0.1", node.ftp_port, timeout=20)
        f.login(access, secret)
        f.storbinary("STOR ftp-revoked/before.txt", io.BytesIO(b"allowed"))
        assert "before.txt" in f.nlst("ftp-revoked")
        node.cli("key", "delete", access)
        # the same session, still logged in: every command is refused from now on
        for call in (lambda: f.storbinary("STOR ftp-revoked/after.txt", io.BytesIO(b"revoked")),
                     lambda: f.nlst("ftp-revoked"),
                     lambda: f.retrbinary("RETR ftp-revoked/before.txt", lambda _: None),
                     lambda: f.delete("ftp-revoked/before.txt")):
            try:
                call()
            except ftplib.error_perm as e:
                assert str(e)[:1] == "5", e
            else:
                raise AssertionError("a revoked key's session went on working")
    names = [o["Key"] for o in s3.list_objects_v2(Bucket="ftp-revoked").get("Contents", [])]
    assert names == ["before.txt"]
    assert s3.get_object(Bucket="ftp-revoked", Key="before.txt")["Body"].read() == b"allowed"
