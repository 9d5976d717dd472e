"""`edgecloud run`, `ps`, `logs`, `stop`, `container rm|inspect` on a real node (root,
overlayfs, youki's libcontainer in the node's process): output and exit codes, the
environment, dropped capabilities, seccomp, cgroup limits, a web server answering
through a published port, exec, restart policies, bucket volumes, and containers that
outlive a restart of the node."""
import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.request

import pytest

from conftest import BIN, Node, free_port, open_to_search, unmount_all
from images_here import debian_redis, layout, sh  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root")

# Docker's default capability set, as the bit mask /proc/PID/status prints.
DOCKER_CAPS = 0x00000000A80425FB


@pytest.fixture
def node(tmp_path, layout):
    (tmp_path / "node").mkdir()
    open_to_search(tmp_path)
    n = Node(tmp_path / "node")
    cli(n, "image", "import", str(layout / "oci"))
    yield n
    subprocess.run([BIN, "--data", str(n.data), "--admin", n.admin, "container", "rm", "-f",
                    *[c["id"] for c in ps(n, all=True)]], capture_output=True)
    n.stop()
    unmount_all(n.data)


def run_cli(node, *args):
    return subprocess.run([BIN, "--data", str(node.data), "--admin", node.admin, *args],
                          capture_output=True, text=True, timeout=120)


def cli(node, *args):
    p = run_cli(node, *args)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def ps(node, all=False):
    p = subprocess.run(["curl", "-sf", "-H", f"Authorization: Bearer {token(node)}",
                        f"{node.admin}/v1/containers" + ("?all=true" if all else "")],
                       capture_output=True, text=True)
    return json.loads(p.stdout) if p.returncode == 0 else []


def token(node):
    return (node.data / "admin.token").read_text().strip()


def wait_for(what, check, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_command_runs_in_its_own_container_and_its_exit_code_comes_back(node):
    assert cli(node, "run", "base", "echo", "hello") == "hello\n"
    p = run_cli(node, "run", "--rm", "-e", "GREETING=hi there", "base",
                "sh", "-c", 'echo "$GREETING"; echo $$; hostname; exit 7')
    assert p.returncode == 7, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "hi there" and lines[1] == "1", lines  # pid 1: its own pid namespace
    assert all(c["exit_code"] != 7 for c in ps(node, all=True)), "--rm removed it"
    # Capabilities beyond Docker's default set are dropped; no new privileges.
    status = cli(node, "run", "--rm", "base", "cat", "/proc/self/status")
    caps = dict(l.split(":\t") for l in status.splitlines() if l.startswith("Cap"))
    assert int(caps["CapEff"], 16) == DOCKER_CAPS, caps
    assert int(caps["CapBnd"], 16) == DOCKER_CAPS, caps
    assert "NoNewPrivs:\t1" in status
    assert "Seccomp:\t2" in status, "Docker's default seccomp profile filters its calls"
    # Its own network namespace: loopback only; or the node's, with --network host.
    assert cli(node, "run", "--rm", "base", "ls", "/sys/class/net").split() == ["lo"]
    flags = cli(node, "run", "--rm", "base", "cat", "/sys/class/net/lo/flags")
    assert int(flags, 16) & 1, "loopback is up (IFF_UP), so 127.0.0.1 answers" 
    host = cli(node, "run", "--rm", "--network", "host", "base", "ls", "/sys/class/net")
    assert host.split() == sorted(os.listdir("/sys/class/net"))
    # A memory limit lands in its cgroup (v1 or v2, whichever the host has).
    out = cli(node, "run", "--rm", "--memory", "64m", "base", "sh", "-c",
              "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null"
              " || cat /sys/fs/cgroup/memory.max")
    assert out.strip() == str(64 << 20), out
    out = cli(node, "run", "--rm", "--cpus", "1.5", "base", "sh", "-c",
              "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null"
              " || cut -d' ' -f1 /sys/fs/cgroup/cpu.max")
    assert out.strip() == "150000", out
    # Its root is an unprivileged user of the node (a user namespace of its own).
    assert cli(node, "run", "--rm", "base", "cat", "/proc/self/uid_map").split() == \
        ["0", "1610612736", "65536"]
    assert cli(node, "run", "--rm", "--userns", "host", "base", "cat",
               "/proc/self/uid_map").split() == ["0", "0", "4294967295"]
    # Writes stay in the container; the image is untouched.
    cli(node, "run", "--name", "writer", "base", "sh", "-c", "echo changed > /etc/motd")
    # An ended container keeps nothing mounted (its root is mounted again if it starts).
    writer = json.loads(cli(node, "container", "inspect", "writer"))
    rootfs = str(node.data / "containers" / "run" / writer["id"] / "rootfs")
    wait_for("its root unmounted", lambda: rootfs not in open("/proc/mounts").read())
    assert cli(node, "run", "--rm", "base", "cat", "/etc/motd") == "welcome\n"
    # Bad requests get clear errors.
    p = run_cli(node, "run", "no-such-image", "true")
    assert p.returncode != 0 and "no image" in p.stderr, p.stderr
    p = run_cli(node, "run", "--name", "writer", "base", "true")
    assert p.returncode != 0 and "exists" in p.stderr, p.stderr
    p = run_cli(node, "run", "--restart", "sometimes", "base", "true")
    assert p.returncode != 0 and "restart policy" in p.stderr, p.stderr


def test_containers_created_at_once_each_run_their_own_command(node):
    """Several `run`s at once, with execs into a running container between them: each
    runs its own command (libcontainer moves the node's working directory while it sets
    a container up; the node sets up one at a time), and the node goes on starting
    containers after."""
    cli(node, "run", "-d", "--name", "steady", "base", "sleep", "300")

    def one(i):
        if i % 3 == 0:
            return run_cli(node, "exec", "steady", "echo", f"exec{i}"), f"exec{i}\n"
        return run_cli(node, "run", "--rm", "base", "echo", f"run{i}"), f"run{i}\n"

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        done = list(pool.map(one, range(18)))
    for p, expected in done:
        assert p.returncode == 0 and p.stdout == expected, (expected, p.stdout, p.stderr)
    assert cli(node, "run", "--rm", "base", "echo", "after") == "after\n"
    # The setup helpers' orphans (the containers' processes) came to the node, which
    # reaped each: no zombie is left.
    def zombies():
        out = subprocess.run(["ps", "-o", "stat=,comm=", "--ppid", str(node.proc.pid)],
                             capture_output=True, text=True).stdout
        return [l for l in out.splitlines() if l.startswith("Z")]
    wait_for("no zombie under the node", lambda: not zombies())


def test_a_web_server_answers_and_stops_and_a_policy_restarts(node, layout):
    port = free_port()
    # Published through the node (a veth pair into the container's own namespace).
    cid = cli(node, "run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:8080", "base",
              "httpd", "-f", "-p", "8080", "-h", "/www").strip()
    assert len(cid) == 64

    def answers():
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
        except OSError:
            return None
    wait_for("the web server", answers)
    assert answers() == b"<h1>served from the store</h1>\n"
    table = cli(node, "ps")
    assert "web" in table and "running" in table and cid[:12] in table
    info = json.loads(cli(node, "container", "inspect", "web"))
    assert info["state"] == "running" and info["image_id"].startswith("sha256:")
    assert info["address"].startswith("10.89.") and info["spec"]["network"] == "bridge"
    # The node reaches it at its own address too.
    assert urllib.request.urlopen(f"http://{info['address']}:8080/", timeout=5).read() \
        == b"<h1>served from the store</h1>\n"
    # exec: a command inside it, its output and exit code.
    assert cli(node, "exec", "web", "cat", "/www/index.html") == "<h1>served from the store</h1>\n"
    p = run_cli(node, "exec", "-e", "CODE=5", "web", "sh", "-c", "echo $CODE; exit $CODE")
    assert (p.returncode, p.stdout) == (5, "5\n"), p.stderr
    # httpd as pid 1 ignores SIGTERM: the grace ends in SIGKILL.
    cli(node, "stop", "--time", "1", "web")
    info = json.loads(cli(node, "container", "inspect", cid[:12]))
    assert (info["state"], info["exit_code"]) == ("exited", 137), info
    assert answers() is None
    p = run_cli(node, "exec", "web", "true")
    assert p.returncode != 0 and "not running" in p.stderr
    p = run_cli(node, "image", "rm", "base")
    assert p.returncode != 0 and "used by container web" in p.stderr, p.stderr
    p = run_cli(node, "container", "rm", "web")
    assert p.returncode == 0
    assert "web" not in cli(node, "ps", "-a")
    # Now it goes, and its lazy root with it (one for containers in user namespaces).
    assert info["user_namespace"] == 1610612736
    root = node.data / "containers" / "lazy" / (info["image_id"][7:] + "-u1610612736")
    assert os.path.ismount(root)
    cli(node, "image", "rm", info["image_id"])
    assert not os.path.ismount(root) and not root.exists()
    cli(node, "image", "import", str(layout / "oci"))

    # on-failure:2 runs it three times in all; logs holds every run's output.
    cli(node, "run", "-d", "--name", "flaky", "--restart", "on-failure:2", "base",
        "sh", "-c", "echo attempt; exit 1")
    wait_for("two restarts", lambda: any(
        c["name"] == "flaky" and c["restarts"] == 2 and c["state"] == "exited"
        for c in ps(node, all=True)))
    assert cli(node, "logs", "flaky") == "attempt\n" * 3
    # A running container is removed only with --force.
    cli(node, "run", "-d", "--name", "sleeper", "base", "sleep", "300")
    p = run_cli(node, "container", "rm", "sleeper")
    assert p.returncode != 0 and "--force" in p.stderr
    cli(node, "container", "rm", "--force", "sleeper")
    # logs -f follows until the container ends.
    cli(node, "run", "-d", "--name", "counter", "base", "sh", "-c",
        "for i in 1 2 3; do echo $i; sleep 0.2; done")
    assert cli(node, "logs", "-f", "counter") == "1\n2\n3\n"


def test_a_bucket_volume_keeps_what_containers_write(node):
    cli(node, "bucket", "create", "vols")
    cli(node, "run", "--rm", "-v", "vols/db:/data", "base", "sh", "-c",
        "echo persisted > /data/state.txt && mkdir -p /data/sub && echo 2 > /data/sub/n")
    # The files are the bucket's objects now, and outlive the container.
    assert cli(node, "get", "vols/db/state.txt", "-") == "persisted\n"
    assert cli(node, "get", "vols/db/sub/n", "-") == "2\n"
    # Another container sees them; read-only means read-only.
    assert cli(node, "run", "--rm", "-v", "vols/db:/data:ro", "base",
               "cat", "/data/state.txt") == "persisted\n"
    p = run_cli(node, "run", "--rm", "-v", "vols/db:/data:ro", "base", "sh", "-c",
                "echo x > /data/other")
    assert p.returncode != 0
    # A second write is a new version of the same object.
    cli(node, "run", "--rm", "-v", "vols:/v", "base", "sh", "-c",
        "echo changed > /v/db/state.txt")
    assert cli(node, "get", "vols/db/state.txt", "-") == "changed\n"
    versions = cli(node, "versions", "vols/db/state.txt")
    assert versions.count("state.txt") >= 2, versions
    # Bad volumes get clear errors.
    p = run_cli(node, "run", "--rm", "-v", "nosuchbucket:/data", "base", "true")
    assert p.returncode != 0 and "create it with" in p.stderr, p.stderr
    p = run_cli(node, "run", "--rm", "-v", "vols:relative", "base", "true")
    assert p.returncode != 0 and "absolute" in p.stderr, p.stderr


def test_containers_outlive_a_restart_of_the_node(tmp_path, layout):
    data = tmp_path / "node"
    data.mkdir()
    open_to_search(tmp_path)  # so in a user namespace of its own
    n = Node(data)
    cli(n, "image", "import", str(layout / "oci"))
    cli(n, "run", "-d", "--name", "survivor", "base", "sleep", "300")
    pid = ps(n)[0]["pid"]
    n.stop()
    assert os.path.exists(f"/proc/{pid}"), "the container kept running"
    n = Node(data)
    try:
        [c] = ps(n)
        assert (c["name"], c["state"], c["pid"]) == ("survivor", "running", pid)
        assert c["user_namespace"] == 1610612736
        # exec joins its user namespace: root inside, owning what it writes in its root.
        assert cli(n, "exec", "survivor", "sh", "-c", "echo x > /made && stat -c %u /made; id -u") \
            == "0\n0\n"
        with open(f"/proc/{pid}/status") as f:
            assert "\nUid:\t1610612736\t" in f.read(), "an unprivileged user of the node"
        # Its lazy root lived on with it, and fetches through the new node a file
        # nothing had read before.
        assert cli(n, "exec", "survivor", "cat", "/www/index.html") \
            == "<h1>served from the store</h1>\n"
        cli(n, "stop", "--time", "0", "survivor")
        wait_for("the container to end", lambda: not os.path.exists(f"/proc/{pid}"))
        assert ps(n, all=True)[0]["state"] == "exited"
        cli(n, "container", "rm", "survivor")
    finally:
        n.stop()
        unmount_all(data)


def serves(root):
    """Whether a lazy root answers (a dead one is still in the mount table)."""
    try:
        os.listdir(root)
        return True
    except OSError:
        return False


def file_digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_a_lazy_root_reads_only_what_the_container_opens_and_prefetches_it_later(
        tmp_path, layout):
    # `big`: base, and 24 MiB of data the container never reads at start.
    d = tmp_path / "images"
    shutil.copytree(layout / "oci", d / "oci")
    sh("umoci", "unpack", "--image", "oci:base", "u", cwd=d)
    (d / "u" / "rootfs" / "data").mkdir()
    (d / "u" / "rootfs" / "data" / "big.bin").write_bytes(os.urandom(24 << 20))
    sh("umoci", "repack", "--image", "oci:base", "u", cwd=d)
    sh("umoci", "tag", "--image", "oci:base", "big", cwd=d)
    big = d / "u" / "rootfs" / "data" / "big.bin"
    (tmp_path / "node").mkdir()
    n = Node(tmp_path / "node")
    files = n.data / "containers" / "files"
    try:
        cli(n, "image", "import", str(d / "oci"))
        image = json.loads(cli(n, "image", "inspect", "big"))
        assert cli(n, "run", "big", "cat", "/etc/motd") == "welcome\n"
        here = set(os.listdir(files))
        # busybox and motd were fetched; the big file was not.
        assert file_digest("/bin/busybox") in here and file_digest(big) not in here
        fetched = sum(os.path.getsize(files / f) for f in here)
        assert fetched < image["size"] / 10, (fetched, image["size"])
        # Reading it fetches it, checked against its digest.
        out = cli(n, "run", "--rm", "big", "sha256sum", "/data/big.bin")
        assert out.split()[0] == file_digest(big)
        assert file_digest(files / file_digest(big)) == file_digest(big)
        # The lazy root is one process per image, whatever the containers.
        hex_id = image["id"][7:]
        root = n.data / "containers" / "lazy" / hex_id
        assert os.path.ismount(root) and serves(root)
        # Its first start (the motd container, which has ended) was recorded: a lazy
        # root mounted anew (its process killed, the node's copies gone) fetches ahead
        # what that start read, motd among them, though this container reads no motd.
        reads = n.data / "containers" / "lazy" / f"{hex_id}.reads"
        assert file_digest(d / "u" / "rootfs" / "etc" / "motd") in reads.read_text()
        subprocess.run(["pkill", "-f", f"lazy-root .*{hex_id}"], check=True)
        wait_for("the lazy root to end", lambda: not serves(root))
        for f in os.listdir(files):
            os.remove(files / f)
        cli(n, "container", "rm", "-f", *[c["id"] for c in ps(n, all=True)])
        assert cli(n, "run", "--rm", "big", "true") == ""
        motd = file_digest(d / "u" / "rootfs" / "etc" / "motd")
        wait_for("motd fetched ahead", lambda: motd in os.listdir(files))
        assert file_digest(big) not in os.listdir(files)
        # Removing the image drops the node's copies of files no other image holds.
        cli(n, "run", "--rm", "big", "sha256sum", "/data/big.bin")
        assert file_digest(big) in os.listdir(files)
        cli(n, "image", "rm", image["id"])
        left = os.listdir(files)
        assert file_digest(big) not in left and file_digest("/bin/busybox") in left, left
    finally:
        n.stop()
        unmount_all(n.data)


def test_compose_starts_services_in_order_and_they_reach_one_another_by_name(node, tmp_path):
    port = free_port()
    shop = tmp_path / "Shop"
    shop.mkdir()
    (shop / "docker-compose.yml").write_text(f"""
services:
  client:
    image: base
    command: ["sh", "-c", "sleep 600"]
    depends_on: [web]
    environment:
      TARGET: web
  web:
    image: base
    command: httpd -f -p 8080 -h /www
    ports: ["127.0.0.1:{port}:8080"]
    restart: unless-stopped
""")
    f = str(shop / "docker-compose.yml")
    out = cli(node, "compose", "up", "-f", f)
    lines = out.splitlines()
    assert lines[0].startswith("shop-web-1: started") and \
        lines[1].startswith("shop-client-1: started"), out
    # The client reaches the web server by its service name, through the node.
    page = cli(node, "exec", "shop-client-1", "sh", "-c", "wget -qO- http://$TARGET:8080/")
    assert page == "<h1>served from the store</h1>\n"
    # A name added later reaches the containers already running.
    assert "client" in cli(node, "exec", "shop-web-1", "cat", "/etc/hosts")
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read() \
        == b"<h1>served from the store</h1>\n"
    table = cli(node, "compose", "ps", "-f", f)
    assert "shop-web-1" in table and "shop-client-1" in table
    # Up again: running services are left alone.
    assert cli(node, "compose", "up", "-f", f).count("left as it is") == 2
    # Down: dependants first.
    out = cli(node, "compose", "down", "-f", f)
    assert out.splitlines() == ["shop-client-1: removed", "shop-web-1: removed"], out
    assert "shop-" not in cli(node, "ps", "-a")
    # What compose cannot do is refused by name, before anything runs.
    (shop / "docker-compose.yml").write_text("services:\n  a:\n    build: .\n")
    p = run_cli(node, "compose", "up", "-f", f)
    assert p.returncode != 0 and "`build` is not supported" in p.stderr, p.stderr


def test_redis_on_debian_keeps_its_data_on_a_bucket_volume(node, debian_redis):
    """A Debian image (debootstrap) with Redis from Debian's packages: its data lives
    in a bucket, so it outlives the container; its lazy root fetched a fraction of it."""
    cli(node, "image", "import", debian_redis)
    image = json.loads(cli(node, "image", "inspect", "debian-redis:12"))
    files = node.data / "containers" / "files"
    before = sum(os.path.getsize(files / f) for f in os.listdir(files)) \
        if files.exists() else 0
    cli(node, "bucket", "create", "redisdata")
    cli(node, "run", "-d", "--name", "redis", "-v", "redisdata/r1:/data", "debian-redis:12",
        "redis-server", "--dir", "/data", "--save", "", "--appendonly", "no")
    wait_for("redis to answer", lambda: run_cli(
        node, "exec", "redis", "redis-cli", "PING").stdout == "PONG\n")
    assert cli(node, "exec", "redis", "redis-cli", "SET", "visits", "41") == "OK\n"
    assert cli(node, "exec", "redis", "redis-cli", "INCR", "visits") == "42\n"
    assert cli(node, "exec", "redis", "redis-cli", "SAVE") == "OK\n"
    fetched = sum(os.path.getsize(files / f) for f in os.listdir(files)) - before
    print(f"debian-redis: {image['size']} bytes, its lazy root fetched {fetched}")
    assert fetched < image["size"] / 4, (fetched, image["size"])
    cli(node, "container", "rm", "--force", "redis")
    # The dump is a versioned object of the bucket; a new container finds it.
    assert "r1/dump.rdb" in cli(node, "ls", "redisdata/r1/")
    cli(node, "run", "-d", "--name", "redis2", "-v", "redisdata/r1:/data",
        "debian-redis:12", "redis-server", "--dir", "/data", "--save", "")
    wait_for("redis to answer", lambda: run_cli(
        node, "exec", "redis2", "redis-cli", "PING").stdout == "PONG\n")
    assert cli(node, "exec", "redis2", "redis-cli", "GET", "visits") == "42\n"
