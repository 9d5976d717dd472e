"""The NFS v3 gateway against libnfs: the nfs-cp/nfs-ls/nfs-cat utilities and the libnfs
Python bindings (this machine has no kernel NFS client): copies up and down, folders,
renames, partial overwrites, truncation, the same objects as S3, snapshots."""
import hashlib
import os
import subprocess
import time

import libnfs
import pytest

from conftest import overwrite_after_an_instant


def url(node, path):
    return f"nfs://127.0.0.1{path}?nfsport={node.nfs_port}&mountport={node.nfs_port}&version=3"


def run(*args, ok=True):
    p = subprocess.run(list(args), capture_output=True, timeout=120)
    assert (p.returncode == 0) == ok, p.stdout + p.stderr
    return p


def until(check, what, timeout=10):
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, what
        time.sleep(0.2)


def test_nfs_cp_up_and_down_and_the_same_object_over_s3(node, s3, tmp_path):
    s3.create_bucket(Bucket="nfs-cp")
    data = os.urandom(5 << 20)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    run("nfs-cp", str(src), url(node, "/nfs-cp/copied.bin"))
    listing = run("nfs-ls", url(node, "/nfs-cp")).stdout.decode()
    assert "copied.bin" in listing and str(len(data)) in listing
    back = tmp_path / "back.bin"
    run("nfs-cp", url(node, "/nfs-cp/copied.bin"), str(back))
    assert back.read_bytes() == data
    # a version over S3, with the MD5 ETag, once the copy is committed
    until(lambda: "Contents" in s3.list_objects_v2(Bucket="nfs-cp"), "the copy never became an object")
    obj = s3.get_object(Bucket="nfs-cp", Key="copied.bin")
    assert obj["Body"].read() == data
    assert obj["ETag"].strip('"') == hashlib.md5(data).hexdigest()
    # and S3 writes are visible over NFS at once
    s3.put_object(Bucket="nfs-cp", Key="dir/from-s3.txt", Body=b"written over S3")
    assert run("nfs-cat", url(node, "/nfs-cp/dir/from-s3.txt")).stdout == b"written over S3"


def test_folders_renames_overwrites_and_truncation(node, s3):
    s3.create_bucket(Bucket="nfs-ops")
    s3.put_bucket_versioning(Bucket="nfs-ops", VersioningConfiguration={"Status": "Enabled"})
    n = libnfs.NFS(url(node, "/nfs-ops"))
    n.mkdir("/docs")
    f = n.open("/docs/a.txt", mode="w")
    f.write("hello world")
    f.close()
    assert n.open("/docs/a.txt").read() == "hello world"
    assert sorted(n.listdir("/docs")) == ["a.txt"]
    assert libnfs.nfs_rename(n._nfs, "/docs/a.txt", "/docs/b.txt") == 0
    assert n.listdir("/docs") == ["b.txt"]
    # change three bytes in the middle; the rest stays
    f = n.open("/docs/b.txt", mode="r+")
    f.seek(6)
    f.write("WOR")
    f.close()
    assert n.open("/docs/b.txt").read() == "hello WORld"
    assert libnfs.nfs_truncate(n._nfs, "/docs/b.txt", 5) == 0
    assert n.open("/docs/b.txt").read() == "hello"
    body = lambda: s3.get_object(Bucket="nfs-ops", Key="docs/b.txt")["Body"].read()
    until(lambda: body() == b"hello", "S3 never saw the truncated file")
    versions = s3.list_object_versions(Bucket="nfs-ops", Prefix="docs/b.txt")["Versions"]
    assert len(versions) >= 2  # each committed change is a version
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="nfs-ops")["Contents"]}
    assert "docs/" in keys and "docs/a.txt" not in keys
    import errno
    assert n.rmdir("/docs") == -errno.ENOTEMPTY
    assert n.unlink("/docs/b.txt") == 0
    assert n.rmdir("/docs") == 0
    assert "Contents" not in s3.list_objects_v2(Bucket="nfs-ops")


def test_snapshots_and_bad_names(node, s3, tmp_path):
    s3.create_bucket(Bucket="nfs-snap")
    s3.put_object(Bucket="nfs-snap", Key="plan.txt", Body=b"plan A")
    instant = overwrite_after_an_instant(s3, "nfs-snap", "plan.txt", b"plan B")
    assert run("nfs-cat", url(node, "/nfs-snap/plan.txt")).stdout == b"plan B"
    assert run("nfs-cat", url(node, f"/nfs-snap/.snapshots/{instant}/plan.txt")).stdout == b"plan A"
    src = tmp_path / "x"
    src.write_bytes(b"rewrite")
    run("nfs-cp", str(src), url(node, f"/nfs-snap/.snapshots/{instant}/plan.txt"), ok=False)
    n = libnfs.NFS(url(node, "/nfs-snap"))
    import errno
    assert n.mkdir("/" + "n" * 300) < 0  # over-long names are refused
    with pytest.raises(FileNotFoundError):
        n.mkdir("/nope/deeper")  # no parent
    assert n.mkdir(f"/.snapshots/{instant}/new") == -errno.EROFS
    # still serving, and nothing new appeared
    assert run("nfs-cat", url(node, "/nfs-snap/plan.txt")).stdout == b"plan B"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="nfs-snap")["Contents"]] == ["plan.txt"]


def test_acknowledged_writes_outlive_a_failed_store_and_a_restart(tmp_path):
    """A staged file that cannot be stored is kept, not dropped (COMMIT says so), sealed
    on the node's disk, and bytes a WRITE acknowledged as stable survive a restart."""
    import re
    from conftest import Node, client
    data = tmp_path / "node"
    data.mkdir()
    setup = Node(data)
    s3 = client(setup.endpoint)
    s3.create_bucket(Bucket="nfs-durable")
    out = setup.cli("key", "create", "nfs-writer")
    access = re.search(r"EC[A-Z0-9]{18}", out).group(0)
    setup.cli("key", "allow", access, "nfs-durable", "write")
    setup.stop()

    node = Node(data, nfs_key=access)
    try:
        payload = os.urandom(300_000)
        n = libnfs.NFS(url(node, "/nfs-durable"))
        # O_SYNC: libnfs sends every WRITE as FILE_SYNC, which the server must keep
        fh = libnfs.new_NFSFileHandle()
        flags = os.O_WRONLY | os.O_CREAT | os.O_SYNC
        assert libnfs.nfs_create(n._nfs, "/kept.bin", flags, 0o644, fh) == 0
        fh = libnfs.NFSFileHandle_value(fh)
        assert libnfs.nfs_write(n._nfs, fh, len(payload), bytearray(payload)) == len(payload)
        # the key loses write before the file is stored: the store fails, the bytes stay,
        # and COMMIT says so instead of answering OK
        node.cli("key", "allow", access, "nfs-durable", "read")
        assert libnfs.nfs_fsync(n._nfs, fh) < 0
        libnfs.nfs_close(n._nfs, fh)
        time.sleep(3)  # an idle flush tries, and fails too
        assert "Contents" not in client(node.endpoint).list_objects_v2(Bucket="nfs-durable")
        assert "stor" in (data / "serve.log").read_text()
        # the staged bytes wait sealed: no run of the payload is on the node's disk
        staged = b"".join(p.read_bytes() for p in (data / "nfs-staging").iterdir())
        assert len(staged) > len(payload)
        assert all(payload[i:i + 32] not in staged for i in range(0, len(payload) - 32, 4096))
        node.proc.kill()  # no clean shutdown
        node.proc.wait()
    except BaseException:
        node.stop()
        raise
    node = Node(data, nfs_key=access)
    try:
        s3 = client(node.endpoint)
        node.cli("key", "allow", access, "nfs-durable", "write")
        body = lambda: s3.get_object(Bucket="nfs-durable", Key="kept.bin")["Body"].read()
        until(lambda: "Contents" in s3.list_objects_v2(Bucket="nfs-durable"),
              "the acknowledged bytes were lost in the restart", timeout=20)
        assert body() == payload
        leftovers = [p for p in (data / "nfs-staging").iterdir()]
        assert leftovers == [], leftovers
    finally:
        node.stop()
