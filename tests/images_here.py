"""Images built here for the container tests: umoci makes an OCI layout from busybox
(busybox-static), so no registry is needed."""
import os
import shutil
import subprocess

import pytest


def sh(*args, cwd=None):
    subprocess.run(args, check=True, cwd=cwd, capture_output=True)


@pytest.fixture(scope="session")
def layout(tmp_path_factory):
    """An OCI layout with `base` (busybox, /etc/motd), `localhost/app:1` (base, motd
    deleted, a config added) and `other` (its own layer holding the same busybox)."""
    d = tmp_path_factory.mktemp("images")
    sh("umoci", "init", "--layout", "oci", cwd=d)
    sh("umoci", "new", "--image", "oci:base", cwd=d)
    sh("umoci", "unpack", "--image", "oci:base", "b1", cwd=d)
    root = d / "b1" / "rootfs"
    (root / "bin").mkdir()
    (root / "etc").mkdir()
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", root / "bin" / applet)
    (root / "etc" / "motd").write_text("welcome\n")
    (root / "www").mkdir()
    (root / "www" / "index.html").write_text("<h1>served from the store</h1>\n")
    sh("umoci", "repack", "--image", "oci:base", "b1", cwd=d)
    sh("umoci", "config", "--image", "oci:base", "--config.cmd", "/bin/sh", cwd=d)
    sh("umoci", "tag", "--image", "oci:base", "localhost/app:1", cwd=d)
    sh("umoci", "unpack", "--image", "oci:localhost/app:1", "b2", cwd=d)
    (d / "b2" / "rootfs" / "etc" / "motd").unlink()
    (d / "b2" / "rootfs" / "etc" / "app.conf").write_text("port=80\n")
    sh("umoci", "repack", "--image", "oci:localhost/app:1", "b2", cwd=d)
    sh("umoci", "new", "--image", "oci:other", cwd=d)
    sh("umoci", "unpack", "--image", "oci:other", "b3", cwd=d)
    (d / "b3" / "rootfs" / "usr" / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", d / "b3" / "rootfs" / "usr" / "bin" / "busybox")
    sh("umoci", "repack", "--image", "oci:other", "b3", cwd=d)
    return d




DEBIAN_CACHE = "/var/tmp/edgecloud-tools/images"


@pytest.fixture(scope="session")
def debian_redis(tmp_path_factory):
    """A Debian bookworm root file system made by debootstrap (minbase, with
    redis-server from Debian's packages), saved as a `docker save` tarball by umoci and
    skopeo. Built once per machine into DEBIAN_CACHE (30 s of debootstrap)."""
    tar = os.path.join(DEBIAN_CACHE, "debian-redis.tar")
    if os.path.exists(tar):
        return tar
    os.makedirs(DEBIAN_CACHE, exist_ok=True)
    d = tmp_path_factory.mktemp("debian")
    root = d / "root"
    sh("debootstrap", "--variant=minbase", "--include=redis-server", "bookworm", str(root),
       "http://deb.debian.org/debian")
    shutil.rmtree(root / "var" / "cache" / "apt", ignore_errors=True)
    shutil.rmtree(root / "var" / "lib" / "apt" / "lists", ignore_errors=True)
    sh("umoci", "init", "--layout", "oci", cwd=d)
    sh("umoci", "new", "--image", "oci:debian-redis", cwd=d)
    sh("umoci", "unpack", "--image", "oci:debian-redis", "b", cwd=d)
    shutil.rmtree(d / "b" / "rootfs")
    os.rename(root, d / "b" / "rootfs")
    sh("umoci", "repack", "--image", "oci:debian-redis", "b", cwd=d)
    sh("umoci", "config", "--image", "oci:debian-redis", "--config.cmd", "/bin/bash",
       "--config.env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       cwd=d)
    partial = tar + ".partial"
    if os.path.exists(partial):
        os.remove(partial)
    sh("skopeo", "copy", "oci:oci:debian-redis", f"docker-archive:{partial}:debian-redis:12",
       cwd=d)
    os.rename(partial, tar)
    return tar
