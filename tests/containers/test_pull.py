"""`edgecloud image pull` from a real registry (Docker's distribution, Debian's
`docker-registry`), images pushed to it with skopeo: by tag, by digest, a
multi-platform index, a registry that wants a login, and what is refused."""
import json
import os
import shutil
import subprocess
import time
import urllib.request

import bcrypt
import pytest

from conftest import Node, free_port
from images_here import layout, sh  # noqa: F401 (layout is a fixture)
from test_run import cli, run_cli, unmount_all

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("docker-registry"),
    reason="needs root and docker-registry")


def start_registry(d, users=None):
    """A registry on a free port, storing under `d`; with `users`, a login (htpasswd)."""
    d.mkdir(parents=True)
    port = free_port()
    config = ["version: 0.1", "storage:", "  filesystem:", f"    rootdirectory: {d}/data",
              "http:", f"  addr: 127.0.0.1:{port}"]
    if users:
        with open(d / "htpasswd", "w") as f:
            for user, password in users.items():
                f.write(f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()}\n")
        config += ["auth:", "  htpasswd:", "    realm: edgecloud-test", f"    path: {d}/htpasswd"]
    (d / "config.yml").write_text("\n".join(config) + "\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(d / "config.yml")],
                            stdout=subprocess.DEVNULL, stderr=open(d / "log", "w"))
    deadline = time.time() + 20
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            break
        except urllib.error.HTTPError:
            break  # 401: up, and wants a login
        except OSError:
            assert proc.poll() is None, (d / "log").read_text()
            assert time.time() < deadline, "the registry did not start"
            time.sleep(0.1)
    return proc, f"127.0.0.1:{port}"


def push(layout_dir, image, to, creds=None):
    args = ["skopeo", "copy", "--all", "--dest-tls-verify=false"]
    if creds:
        args += ["--dest-creds", creds]
    sh(*args, f"oci:{layout_dir}:{image}", f"docker://{to}")


@pytest.fixture
def node(tmp_path):
    (tmp_path / "node").mkdir()
    n = Node(tmp_path / "node")
    yield n
    n.stop()
    unmount_all(n.data)


def test_images_are_pulled_by_tag_digest_and_platform(tmp_path, layout, node):
    proc, registry = start_registry(tmp_path / "registry")
    try:
        push(layout / "oci", "base", f"{registry}/team/base:1")
        # By tag, over plain HTTP; it runs like an imported image.
        out = cli(node, "image", "pull", "--insecure", f"{registry}/team/base:1")
        assert f"Loaded image: {registry}/team/base:1" in out, out
        assert cli(node, "run", "--rm", f"{registry}/team/base:1", "cat", "/etc/motd") \
            == "welcome\n"
        image = json.loads(cli(node, "image", "inspect", f"{registry}/team/base:1"))
        digest = image["manifest_digest"]
        # By digest: the same image, nothing stored twice.
        done = json.loads(cli(node, "image", "pull", "--insecure", "--json",
                              f"{registry}/team/base@{digest}"))
        assert done["images"][0]["id"] == image["id"]
        assert done["files_stored"] == 0 and done["layers_read"] == 0, done
        # A digest the registry does not have, a name it does not have, TLS it lacks.
        wrong = "sha256:" + "0" * 64
        p = run_cli(node, "image", "pull", "--insecure", f"{registry}/team/base@{wrong}")
        assert p.returncode != 0 and "no such image" in p.stderr, p.stderr
        p = run_cli(node, "image", "pull", "--insecure", f"{registry}/team/nothing:1")
        assert p.returncode != 0 and "no such image" in p.stderr, p.stderr
        p = run_cli(node, "image", "pull", f"{registry}/team/base:1")
        assert p.returncode != 0 and "pulling" in p.stderr, p.stderr

        # A multi-platform index: this machine's image is the one pulled.
        multi = tmp_path / "multi"
        shutil.copytree(layout / "oci", multi)
        index = json.loads((multi / "index.json").read_text())
        by_name = {m["annotations"]["org.opencontainers.image.ref.name"]: m
                   for m in index["manifests"]}
        arm = dict(by_name["other"], platform={"os": "linux", "architecture": "arm64"})
        amd = dict(by_name["base"], platform={"os": "linux", "architecture": "amd64"})
        for m in (arm, amd):
            m.pop("annotations")
        nested = json.dumps({"schemaVersion": 2,
                             "mediaType": "application/vnd.oci.image.index.v1+json",
                             "manifests": [arm, amd]}).encode()
        import hashlib
        h = hashlib.sha256(nested).hexdigest()
        (multi / "blobs" / "sha256" / h).write_bytes(nested)
        index["manifests"].append({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": f"sha256:{h}", "size": len(nested),
            "annotations": {"org.opencontainers.image.ref.name": "multi"}})
        (multi / "index.json").write_text(json.dumps(index))
        push(multi, "multi", f"{registry}/team/multi:1")
        cli(node, "image", "pull", "--insecure", f"{registry}/team/multi:1")
        pulled = json.loads(cli(node, "image", "inspect", f"{registry}/team/multi:1"))
        assert pulled["id"] == image["id"], "the amd64 image (base), not the arm64 one"
    finally:
        proc.kill()


def test_a_registry_that_wants_a_login_gets_one(tmp_path, layout, node):
    proc, registry = start_registry(tmp_path / "registry", users={"ci": "s3cret pass"})
    try:
        push(layout / "oci", "base", f"{registry}/private/base:1", creds="ci:s3cret pass")
        ref = f"{registry}/private/base:1"
        p = run_cli(node, "image", "pull", "--insecure", ref)
        assert p.returncode != 0 and "--user" in p.stderr, p.stderr
        p = subprocess.run(
            [*cli_args(node), "image", "pull", "--insecure", "--user", "ci",
             "--password-stdin", ref], input="wrong\n", capture_output=True, text=True)
        assert p.returncode != 0 and "refused" in p.stderr, p.stderr
        p = subprocess.run(
            [*cli_args(node), "image", "pull", "--insecure", "--user", "ci",
             "--password-stdin", ref], input="s3cret pass\n", capture_output=True, text=True)
        assert p.returncode == 0 and "Loaded image" in p.stdout, p.stderr
        # The password is not kept: the image's record and the ledger hold none of it.
        assert "s3cret" not in cli(node, "image", "inspect", ref)
    finally:
        proc.kill()


def cli_args(node):
    from conftest import BIN
    return [BIN, "--data", str(node.data), "--admin", node.admin]
