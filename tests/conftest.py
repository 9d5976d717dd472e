"""Starts a real `edgecloud serve` for the gateway tests (S3 in tests/s3, file protocols in
tests/files) and hands out configured clients."""
import os
import socket
import subprocess
import time

import boto3
import pytest
from botocore.config import Config

ACCESS, SECRET = "TESTACCESSKEY", "test-secret-key-1234567890"
BIN = os.environ.get("EDGECLOUD_BIN", "/var/tmp/edgecloud-target/debug/edgecloud")


def unmount_all(data):
    """Takes off what a node mounted under `data` (lazy roots of container images
    outlive the node, as they must for its containers; their processes end when
    unmounted)."""
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    for p in sorted(points, key=len, reverse=True):
        if p.startswith(str(data) + "/"):
            subprocess.run(["umount", "-l", p], capture_output=True)


def open_to_search(path):
    """Lets other users search (not list) `path` and the folders above it, as a
    container in a user namespace of its own needs to reach its root file system
    (pytest makes its folders 0700)."""
    p = os.path.abspath(path)
    while p != "/":
        os.chmod(p, os.stat(p).st_mode | 0o001)
        p = os.path.dirname(p)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """A running `edgecloud serve`: its S3 endpoint, admin URL and data directory."""

    def __init__(self, data, *extra, nfs_key=ACCESS):
        self.data = data
        s3_port, admin_port, dav_port, ftp_port, nfs_port = (free_port() for _ in range(5))
        self.port = s3_port
        self.dav = f"http://127.0.0.1:{dav_port}"
        self.ftp_port = ftp_port
        self.nfs_port = nfs_port
        self.endpoint = f"http://127.0.0.1:{s3_port}"
        self.admin = f"http://127.0.0.1:{admin_port}"
        env = dict(os.environ, EDGECLOUD_ACCESS_KEY=ACCESS, EDGECLOUD_SECRET_KEY=SECRET)
        self.proc = subprocess.Popen(
            [BIN, "serve", "--data", str(data), "--s3-listen", f"127.0.0.1:{s3_port}",
             "--admin-listen", f"127.0.0.1:{admin_port}", "--dav-listen", f"127.0.0.1:{dav_port}",
             "--ftp-listen", f"127.0.0.1:{ftp_port}", "--rpc-listen", "127.0.0.1:0",
             "--nfs-key", nfs_key, "--nfs-listen", f"127.0.0.1:{nfs_port}", *extra],
            env=env, stdout=subprocess.DEVNULL, stderr=open(data / "serve.log", "w"))
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", s3_port), timeout=0.2).close()
                break
            except OSError:
                assert self.proc.poll() is None, (data / "serve.log").read_text()
                assert time.time() < deadline, "edgecloud serve did not start"
                time.sleep(0.05)

    def cli(self, *args):
        """Runs an `edgecloud` client command against this node; returns stdout."""
        p = subprocess.run([BIN, "--data", str(self.data), "--admin", self.admin, *args],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        return p.stdout

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=20)


@pytest.fixture(scope="session")
def node(tmp_path_factory):
    n = Node(tmp_path_factory.mktemp("node"))
    yield n
    n.stop()


@pytest.fixture(scope="session")
def endpoint(node):
    return node.endpoint


def client(endpoint, access=ACCESS, secret=SECRET, style="path"):
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access,
                        aws_secret_access_key=secret, region_name="us-east-1",
                        config=Config(signature_version="s3v4", s3={"addressing_style": style}))


@pytest.fixture(scope="session")
def s3(endpoint):
    return client(endpoint)


@pytest.fixture
def aws(endpoint, tmp_path):
    """Runs the real aws CLI against the node; returns its stdout."""
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update(AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))

    def run(*args, check=True):
        p = subprocess.run(["aws", "--endpoint-url", endpoint, *args],
                           env=env, capture_output=True, text=True)
        if check:
            assert p.returncode == 0, p.stderr
        return p
    return run


def scrape_metrics(admin_url):
    """A node's /metrics (read as Prometheus would, parsed by its client library) as
    {(name, labels as a sorted tuple): value}."""
    import urllib.request
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(f"{admin_url}/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def overwrite_after_an_instant(s3, bucket, key, body):
    """Notes an instant (RFC 3339, UTC) strictly between the key's current version and
    a new one with `body`; returns it, for reading the past through .snapshots/."""
    import datetime
    time.sleep(0.05)
    instant = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
    time.sleep(0.05)
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return instant


# ---------- the web console in headless Chromium (tests/console, tests/cluster) ----------

ARTEFACTS = os.environ.get("EDGECLOUD_ARTEFACTS", "/var/tmp/edgecloud-artefacts")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Playwright (no browser download)."""
    from playwright.sync_api import sync_playwright
    os.makedirs(os.path.join(ARTEFACTS, "console"), exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def screenshot(page, name):
    """Saves the whole page as an artefact: $EDGECLOUD_ARTEFACTS/console/NAME.png."""
    page.screenshot(path=os.path.join(ARTEFACTS, "console", f"{name}.png"), full_page=True)


def assert_accessible(page, name):
    """axe-core finds no serious or critical problem on the page."""
    from axe_playwright_python.sync_playwright import Axe
    results = Axe().run(page)
    bad = [(v["id"], v["help"], [n["target"] for n in v["nodes"]][:3])
           for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    assert not bad, f"{name}: {bad}"


def console_login(page, admin_url, token):
    """Opens the console and logs in with the admin token, by keyboard alone."""
    page.goto(f"{admin_url}/")
    page.wait_for_selector("#login:not([hidden])")
    # The token field has focus; typing it and pressing Enter logs in.
    assert page.evaluate("document.activeElement.id") == "token"
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    page.wait_for_selector("#nav:not([hidden])")
