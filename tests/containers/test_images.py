"""`edgecloud image`: images built here with umoci (OCI layouts, a deleted file becomes a
whiteout) and converted by skopeo to `docker save` tarballs, imported through the CLI
into a real node: names, root file systems, files shared across images stored once,
digests checked, hostile layers refused, removal freeing what no image holds."""
import io
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from conftest import BIN, Node
from images_here import layout, sh  # noqa: F401 (layout is a fixture)


@pytest.fixture
def node(tmp_path):
    (tmp_path / "node").mkdir()
    n = Node(tmp_path / "node")
    yield n
    n.stop()


def cli(node, *args, ok=True):
    p = subprocess.run([BIN, "--data", str(node.data), "--admin", node.admin, *args],
                       capture_output=True, text=True)
    assert (p.returncode == 0) == ok, p.stdout + p.stderr
    return p.stdout if ok else p.stderr


def listing(node):
    return json.loads(cli(node, "image", "ls", "--json"))


def test_a_docker_save_tarball_and_an_oci_layout_share_their_files(node, layout, tmp_path):
    # skopeo writes the `docker save` format (manifest.json, config, layer tars).
    sh("skopeo", "--insecure-policy", "copy", "-q", "oci:oci:localhost/app:1",
       f"docker-archive:{tmp_path}/app.tar:web/app:1", cwd=layout)
    out = cli(node, "image", "import", str(tmp_path / "app.tar"))
    assert "Loaded image: web/app:1" in out, out
    app = json.loads(cli(node, "image", "inspect", "web/app:1", "--files"))
    files = {e["path"]: e for e in app["tree"]}
    assert files["bin/busybox"]["kind"] == "file"
    assert files["bin/busybox"]["size"] == os.path.getsize("/bin/busybox")
    assert files["bin/sh"] == {**files["bin/sh"], "kind": "symlink", "link": "busybox"}
    assert "etc/app.conf" in files and "etc/motd" not in files, "the whiteout hides motd"
    assert app["config"]["config"]["Cmd"] == ["/bin/sh"]

    # The OCI layout directory: three images; app is the same image (same config), so
    # it gains a name and its manifest digest, and nothing is read again.
    out = json.loads(cli(node, "image", "import", str(layout / "oci"), "--json"))
    names = sorted(n for i in out["images"] for n in i["names"])
    assert names == ["base:latest", "localhost/app:1", "other:latest", "web/app:1"], names
    assert out["files_known"] >= 1, "other's busybox is base's: stored once"
    app2 = json.loads(cli(node, "image", "inspect", "localhost/app:1"))
    assert app2["id"] == app["id"] and app2["manifest_digest"].startswith("sha256:")
    with open(layout / "oci" / "index.json") as f:
        index = json.load(f)
    assert app2["manifest_digest"] in [m["digest"] for m in index["manifests"]]

    ls = listing(node)
    assert ls["usage"]["images"] == 3
    busybox = os.path.getsize("/bin/busybox")
    # Three images each hold busybox; the store keeps it once (plus a few small files).
    assert ls["usage"]["image_bytes"] >= 3 * busybox
    assert ls["usage"]["stored_bytes"] < busybox + 4096, ls["usage"]
    text = cli(node, "image", "ls")
    assert "web/app:1" in text and "saved by storing each file once" in text

    # Removing a name keeps the image; removing the last frees what only it held.
    out = cli(node, "image", "rm", "web/app:1")
    assert "Untagged: web/app:1" in out and "Deleted" not in out
    out = cli(node, "image", "rm", "localhost/app:1", "other")
    assert out.count("Deleted:") == 2, out
    ls = listing(node)
    assert [i["names"] for i in ls["images"]] == [["base:latest"]]
    assert ls["usage"]["files"] == 3, "busybox, motd and index.html stay for base"
    err = cli(node, "image", "inspect", "other", ok=False)
    assert "no image" in err and "NoSuchImage" in err
    # The system bucket is not a user's to create.
    err = cli(node, "bucket", "create", "edgecloud-images", ok=False)
    assert "kept by edgecloud" in err


def test_a_tampered_layer_or_a_hostile_one_is_refused_and_leaves_nothing(node, layout, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(layout / "oci", bad)
    with open(bad / "index.json") as f:
        index = json.load(f)
    manifest = next(m for m in index["manifests"]
                    if m["annotations"]["org.opencontainers.image.ref.name"] == "other")
    with open(bad / "blobs" / "sha256" / manifest["digest"][7:]) as f:
        layer = json.load(f)["layers"][0]["digest"][7:]
    blob = bad / "blobs" / "sha256" / layer
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x40
    blob.write_bytes(bytes(data))
    err = cli(node, "image", "import", str(bad), ok=False)
    assert "RefusedLayer" in err or "DigestMismatch" in err, err
    assert listing(node)["usage"] == {"images": 0, "files": 0, "stored_bytes": 0,
                                      "image_bytes": 0}

    # A docker save tarball whose layer climbs out of the root with '..'.
    layer_tar = io.BytesIO()
    with tarfile.open(fileobj=layer_tar, mode="w") as t:
        for name, body in [("etc/ok", b"fine"), ("../../etc/cron.d/evil", b"* * * * * root x")]:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            t.addfile(info, io.BytesIO(body))
    layer_bytes = layer_tar.getvalue()
    import hashlib
    diff_id = hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]}}).encode()
    cfg_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": ["evil:1"],
                            "Layers": [f"{diff_id}/layer.tar"]}]).encode()
    with tarfile.open(tmp_path / "evil.tar", "w") as t:
        for name, body in [(cfg_name, config), (f"{diff_id}/layer.tar", layer_bytes),
                           ("manifest.json", manifest)]:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            t.addfile(info, io.BytesIO(body))
    err = cli(node, "image", "import", str(tmp_path / "evil.tar"), ok=False)
    assert "climbs out of the root" in err and "RefusedLayer" in err, err
    assert listing(node)["usage"]["files"] == 0, "etc/ok was taken back"

    # Not an image; a truncated one.
    (tmp_path / "junk").write_bytes(b"not a tar at all" * 100)
    err = cli(node, "image", "import", str(tmp_path / "junk"), ok=False)
    assert "InvalidImage" in err, err
    sh("skopeo", "--insecure-policy", "copy", "-q", "oci:oci:base",
       f"docker-archive:{tmp_path}/base.tar:base:1", cwd=layout)
    whole = (tmp_path / "base.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(whole[: len(whole) // 2])
    err = cli(node, "image", "import", str(tmp_path / "cut.tar"), ok=False)
    assert "error:" in err, err
    # Only admins import: a request without the token is refused (before its body is
    # read: a small one, so the refusal is not lost to a broken pipe while sending).
    import urllib.request
    req = urllib.request.Request(f"{node.admin}/v1/images", data=whole[:4096], method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 401
