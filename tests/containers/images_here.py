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


