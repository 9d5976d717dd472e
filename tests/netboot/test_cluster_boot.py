"""Stateless nodes in a cluster: a host node and VMs on a bridge inside a network
namespace of their own, as an operator would set them up. The host node serves the node
image (`serve --boot-image`, the boot command line signed) with a machine invitation on
the command line that lists three machines' MAC addresses; dnsmasq is the network's
DHCP server, naming the host's /boot.ipxe as the boot file. Each VM, with a blank disk
and no kernel given, boots from its network card through iPXE, gets its address from
DHCP, is let in by its MAC and joins. A node powered off and booted again comes back as
the same node with its disk and nothing to repair; one whose power is cut mid-write
loses no acknowledged object; a fourth machine, not on the invitation's list, waits
with a code until `cluster approve`, is formatted and takes shards.

`EDGECLOUD_TEST_BOOT=kernel` boots the same command line by `-kernel/-initrd` instead
(no iPXE; the addresses still come from DHCP)."""
import ctypes
import glob
import json
import os
import re
import shutil
import subprocess
import threading
import time

import pytest

from conftest import ACCESS, BIN, SECRET

from test_boot import KERNELS, VM, image, ledger_records, signing_key  # noqa: F401 (a fixture)

pytestmark = [
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None
                       or not glob.glob(f"{KERNELS}/linux-image-*.deb"),
                       reason="needs qemu-system-x86 and a kernel package (scripts/setup)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and tap devices need root"),
    pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="needs dnsmasq (scripts/setup)"),
]

NS = f"ecboot{os.getpid()}"
HOST = "10.77.0.1"
BOOT_PORT = 8080
IPXE = os.environ.get("EDGECLOUD_TEST_BOOT", "ipxe") != "kernel"


def mac(i):
    return f"52:54:00:77:00:1{i}"
CLONE_NEWNET = 0x40000000


def ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True)


def in_netns(fn):
    """Runs `fn` in a thread that has entered the namespace (a network namespace is a
    thread's), and returns what it returns."""
    out = {}

    def run():
        libc = ctypes.CDLL(None, use_errno=True)
        with open(f"/run/netns/{NS}") as f:
            assert libc.setns(f.fileno(), CLONE_NEWNET) == 0, os.strerror(ctypes.get_errno())
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 (handed to the caller)
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def s3():
    import boto3
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=f"http://{HOST}:9400", aws_access_key_id=ACCESS,
                        aws_secret_access_key=SECRET, region_name="us-east-1",
                        config=Config(retries={"max_attempts": 3}, connect_timeout=5,
                                      read_timeout=60))


class BootedCluster:
    def __init__(self, root, image):
        self.root, self.image = root, image
        ip("netns", "add", NS)
        ip("-n", NS, "link", "set", "lo", "up")
        ip("-n", NS, "link", "add", "br0", "type", "bridge")
        ip("-n", NS, "addr", "add", f"{HOST}/24", "dev", "br0")
        ip("-n", NS, "link", "set", "br0", "up")
        self.data = root / "host"
        self.data.mkdir()
        self.vms = {}
        self.host = self.dhcp = None
        self.start_host()
        deadline = time.time() + 30
        while not (self.data / "cluster.secret").exists():
            assert self.host.poll() is None and time.time() < deadline, (root / "host.log").read_text()
            time.sleep(0.2)
        self.secret = (self.data / "cluster.secret").read_text().strip()
        # As the boot server names it on the command line.
        self.image_sha256 = json.loads((image / "manifest.json").read_text())["image_sha256"]
        # The network's DHCP server: fixed addresses by MAC, and the boot file for iPXE.
        self.dhcp = subprocess.Popen(
            ["ip", "netns", "exec", NS, "dnsmasq", "--keep-in-foreground", "--port=0",
             "--interface=br0", "--bind-interfaces", "--user=root", "--group=root",
             f"--dhcp-leasefile={root / 'dhcp.leases'}", "--pid-file=",
             f"--log-facility={root / 'dnsmasq.log'}", "--log-dhcp",
             "--dhcp-range=10.77.0.100,10.77.0.199,255.255.255.0,1h",
             *[f"--dhcp-host={mac(i)},10.77.0.1{i}" for i in range(1, 10)],
             f"--dhcp-boot=http://{HOST}:{BOOT_PORT}/boot.ipxe"],
            stdout=subprocess.DEVNULL, stderr=open(root / "dnsmasq.err", "w"))

    def start_host(self, *extra):
        env = dict(os.environ, EDGECLOUD_ACCESS_KEY=ACCESS, EDGECLOUD_SECRET_KEY=SECRET)
        self.host = subprocess.Popen(
            ["ip", "netns", "exec", NS, BIN, "serve", "--data", str(self.data), "--bind", HOST,
             "--site", "s0", "--disk", str(self.data / "d0"), "--scrub-interval", "5s",
             "--nfs-key", ACCESS, *extra],
            env=env, stdout=subprocess.DEVNULL, stderr=open(self.root / "host.log", "a"))

    def serve_boot(self, machines):
        """Invites the machines with MACs `machines` and restarts the host node serving
        the image with that invitation on the (signed) boot command line; returns it."""
        p = self.cli("cluster", "invite", "--machines", "--expires", "1h",
                     *[a for m in machines for a in ("--mac", m)])
        assert p.returncode == 0 and p.stdout.startswith("ecmac2_"), p.stderr
        self.args = (f'edgecloud.serve="--site booted --scrub-interval 5s" '
                     f"edgecloud.invite={p.stdout.strip()}")
        self.host.terminate()
        self.host.wait(timeout=30)
        self.start_host(
            "--boot-image", str(self.image), "--boot-listen", f"{HOST}:{BOOT_PORT}",
            "--boot-key", str(signing_key(self.image)),
            "--boot-args", f"console=ttyS0 panic=-1 edgecloud.env.EDGECLOUD_ACCESS_KEY={ACCESS} "
                           f"edgecloud.env.EDGECLOUD_SECRET_KEY={SECRET} {self.args}")
        deadline = time.time() + 60
        while in_netns(lambda: probe(f"http://{HOST}:{BOOT_PORT}/boot.ipxe")) != 200:
            assert self.host.poll() is None and time.time() < deadline, \
                (self.root / "host.log").read_text()[-3000:]
            time.sleep(0.3)
        return self.args

    def cli(self, *args):
        return subprocess.run(["ip", "netns", "exec", NS, BIN, "--data", str(self.data),
                               "--admin", f"http://{HOST}:9410", *args],
                              capture_output=True, text=True, timeout=60)

    def status(self):
        p = self.cli("cluster", "status", "--json")
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    def wait(self, cond, what, timeout=240):
        deadline = time.time() + timeout
        while True:
            try:
                s = self.status()
                if cond(s):
                    return s
            except (AssertionError, json.JSONDecodeError):
                pass
            assert time.time() < deadline, f"timed out waiting for {what}:\n" + \
                self.cli("cluster", "status").stdout + "".join(
                    f"\n--- vm {i}\n{vm.log()[-2500:]}" for i, vm in self.vms.items())
            time.sleep(1)

    def boot(self, i, disk):
        """Powers on machine i (MAC 52:54:00:77:00:1i, address 10.77.0.1i by DHCP) with
        `disk`: through iPXE from the host's boot server, or with `-kernel/-initrd` and
        the same command line."""
        tap = f"tap{i}"
        if not os.path.exists(f"/sys/class/net/{tap}"):
            subprocess.run(["ip", "-n", NS, "tuntap", "add", tap, "mode", "tap"],
                           capture_output=True)
            ip("-n", NS, "link", "set", tap, "master", "br0", "up")
        tmp = self.root / f"vm{i}-{time.time_ns()}"
        tmp.mkdir()
        netdev = f"tap,id=n0,ifname={tap},script=no,downscript=no"
        if IPXE:
            vm = VM(self.image, tmp, disks=[disk], netns=NS, netdev=netdev, mac=mac(i),
                    memory=768, network_boot=True)
        else:
            vm = VM(self.image, tmp, append=f"{self.args} edgecloud.image={self.image_sha256}",
                    disks=[disk], netns=NS, netdev=netdev, mac=mac(i), memory=768)
        self.vms[i] = vm
        return vm

    def back(self, i):
        """Waits until VM i's node serves and the host has heard from it since."""
        vm = self.vms[i]
        deadline = time.time() + 240
        while "serving" not in vm.log():
            assert vm.proc.poll() is None and time.time() < deadline, vm.log()[-3000:]
            time.sleep(0.5)
        return self.wait(lambda s: node_of(s, i)["state"] == "active"
                         and (node_of(s, i).get("seen_ms_ago") or 10 ** 9) < 2000
                         and node_of(s, i)["disk_health"], f"node {i} back")

    def settled(self):
        """Waits until a scrub pass finds every shard in place and every node reports the
        same shard count twice, heartbeats apart; returns that status."""
        last = None
        deadline = time.time() + 240
        while True:
            s = self.status()
            counts = {n["id"]: sum(d["shards"] for d in n["disk_health"])
                      for n in s["status"]["nodes"]}
            if s["repair"]["healthy"] and not s["repair"]["running"] and counts == last:
                return s
            assert time.time() < deadline, json.dumps(s["repair"])
            last = counts
            time.sleep(4)

    def stop(self):
        for vm in self.vms.values():
            vm.kill()
        if self.host.poll() is None:
            self.host.terminate()
            try:
                self.host.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.host.kill()
        if self.dhcp and self.dhcp.poll() is None:
            self.dhcp.kill()
            self.dhcp.wait()
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def probe(url):
    """The HTTP status of a GET of `url`, or None when nothing answers."""
    import urllib.error
    import urllib.request
    try:
        return urllib.request.urlopen(url, timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def node_of(s, i):
    """Node i in status `s` (a placeholder while it has not joined)."""
    return next((n for n in s["status"]["nodes"] if n["rpc_addr"] == f"10.77.0.1{i}:9420"),
                {"id": None, "state": None, "seen_ms_ago": None, "disk_health": []})


def shards_on(s, i):
    return sum(d["shards"] for d in node_of(s, i)["disk_health"])


def test_three_booted_nodes_join_reboot_with_their_disks_and_a_fourth_is_formatted(image, tmp_path):
    c = BootedCluster(tmp_path, image)
    disks = {}
    try:
        c.serve_boot([mac(1), mac(2), mac(3)])
        for i in (1, 2, 3):
            disks[i] = tmp_path / f"disk{i}.img"
            subprocess.run(["truncate", "-s", "512M", str(disks[i])], check=True)
            c.boot(i, disks[i])
        s = c.wait(lambda s: len(s["status"]["nodes"]) == 4 and all(
            n["state"] == "active" and n["disk_health"] for n in s["status"]["nodes"]),
            "four active nodes, each reporting its disks")
        ids = {i: node_of(s, i)["id"] for i in (1, 2, 3)}
        for i in (1, 2, 3):
            assert "formatted edgecloud-" in c.vms[i].log()
            if IPXE:  # the host's boot server logs what each machine fetched
                assert f"boot server: initramfs.img machine=10.77.0.1{i}" in \
                    (tmp_path / "host.log").read_text()
            # The machine's console, init's lines and the node's, read from the host.
            p = c.cli("cluster", "logs", ids[i], "--lines", "2000")
            assert p.returncode == 0, p.stderr
            for line in ("edgecloud init: disk vda: formatted edgecloud-", "edgecloud init: secrets: in memory only",
                         f"cluster: node {ids[i]} in site booted"):
                assert line in p.stdout, (line, p.stdout[-3000:])

        client = in_netns(s3)
        in_netns(lambda: client.create_bucket(Bucket="booted"))
        before = {f"k{n}": os.urandom(200_000) for n in range(12)}
        for k, v in before.items():
            in_netns(lambda k=k, v=v: client.put_object(Bucket="booted", Key=k, Body=v))
        s = c.settled()
        for i in (1, 2, 3):
            rss = in_netns(lambda i=i: resident(f"http://10.77.0.1{i}:9410/metrics"))
            print(f"node {i} (booted, idle, 12 objects stored): RSS {rss / 2**20:.1f} MiB")
        shards_before = shards_on(s, 1)
        assert shards_before > 0, "node 1 holds shards"
        repaired_before = s["repair"]["shards_repaired_total"]

        # A clean power-off and boot: the same node, its shards, nothing repaired.
        c.vms[1].monitor_command("sendkey ctrl-alt-delete")
        c.vms[1].proc.wait(timeout=120)
        # Its disk, the node off, holds shards and the catalog but no secret: not the
        # cluster secret, the master key, the S3 root key or the ledger key, and no
        # key file (the node key is derived, the shared keys were fetched).
        assert "secrets: in memory only" in c.vms[1].log()
        secrets = {"cluster secret": c.secret, "S3 secret": SECRET,
                   "master key": (c.data / "master.key").read_text().strip(),
                   "ledger key": (c.data / "ledger.key").read_text().strip().split("+")[-1]}
        assert not_on_disk(disks[1], secrets) == [], "secrets found on the data disk"
        listing = subprocess.run(["debugfs", "-R", "ls -l /node", str(disks[1])],
                                 capture_output=True, text=True, check=True).stdout
        assert "node.salt" in listing and "catalog.redb" in listing, listing
        for name in ("node.key", "cluster.secret", "master.key", "s3-credentials",
                     "ledger.key", "cosigner.key", "admin.token"):
            assert name not in listing, f"{name} on the data disk:\n{listing}"
        c.boot(1, disks[1])
        s = c.back(1)
        assert len(s["status"]["nodes"]) == 4, "no new node: the same one, known by its disk"
        assert node_of(s, 1)["id"] == ids[1]
        assert f"found {ext_label(disks[1])}" in c.vms[1].log()
        assert shards_on(s, 1) == shards_before
        # A repair pass over every chunk finds nothing to do.
        asked = time.time()
        p = c.cli("cluster", "repair")
        assert p.returncode == 0, p.stderr
        c.wait(lambda s: s["repair"].get("last_started", 0) > asked and not s["repair"]["running"],
               "a repair pass after the reboot")
        s = c.settled()
        assert shards_on(s, 1) == shards_before
        assert s["repair"]["shards_repaired_total"] == repaired_before, "a reboot repairs nothing"

        # Power cut mid-write: every acknowledged object is there after it comes back.
        written, stop = {}, threading.Event()

        def writer():
            n = 0
            while not stop.is_set():
                k, v = f"w{n}", os.urandom(150_000)
                try:
                    client.put_object(Bucket="booted", Key=k, Body=v)
                    written[k] = v
                except Exception:  # noqa: BLE001 (an unacknowledged write may be lost)
                    pass
                n += 1

        t = threading.Thread(target=lambda: in_netns(writer))
        t.start()
        time.sleep(3)
        c.vms[2].kill()  # the power cord
        time.sleep(3)
        c.boot(2, disks[2])
        s = c.back(2)
        assert node_of(s, 2)["id"] == ids[2] and len(s["status"]["nodes"]) == 4
        stop.set()
        t.join()
        assert len(written) > 3, "writes went on"
        for k, v in {**before, **written}.items():
            got = in_netns(lambda k=k: client.get_object(Bucket="booted", Key=k)["Body"].read())
            assert got == v, k

        # A fourth machine with a blank disk, booted from the same command line but not on
        # the invitation's list: it waits with a code until the operator approves it;
        # then it is formatted, joined, and given shards.
        disks[4] = tmp_path / "disk4.img"
        subprocess.run(["truncate", "-s", "512M", str(disks[4])], check=True)
        vm4 = c.boot(4, disks[4])
        deadline = time.time() + 240
        while "cluster approve" not in vm4.log():
            assert vm4.proc.poll() is None and time.time() < deadline, vm4.log()[-3000:]
            time.sleep(0.5)
        code = re.search(r"cluster approve ([0-9A-Z]{4}-[0-9A-Z]{4})", vm4.log()).group(1)
        waiting = c.cli("cluster", "approve").stdout
        assert code in waiting and mac(4) in waiting, waiting
        p = c.cli("cluster", "approve", code)
        assert p.returncode == 0, p.stderr
        c.back(4)
        assert "secrets: in memory only" in vm4.log()
        assert "formatted edgecloud-" in c.vms[4].log()
        for n in range(12):
            in_netns(lambda n=n: client.put_object(Bucket="booted", Key=f"late{n}",
                                                    Body=os.urandom(200_000)))
        c.wait(lambda s: shards_on(s, 4) > 0, "shards on the fourth node")

        # Each boot is in the cluster's audit log, with the image it booted.
        token = (c.data / "admin.token").read_text().strip()
        every = {*ids.values(), node_of(c.status(), 4)["id"]}
        deadline = time.time() + 60
        while True:  # a node records its boot once the catalog takes it; then it is published
            booted = in_netns(lambda: ledger_records(f"http://{HOST}:9410", token))
            booted = [r for r in booted if r["kind"] == "node_booted"]
            if {r["node_id"] for r in booted} == every and len(booted) >= 6 or time.time() > deadline:
                break
            time.sleep(2)
        assert {r["image_sha256"] for r in booted} == {c.image_sha256}
        assert {r["node_id"] for r in booted} == every
        assert len(booted) == 6, "three first boots, two boots again, one fourth node"
    finally:
        c.stop()


def not_on_disk(disk, secrets):
    """The names of `secrets` (name: text) whose bytes are anywhere in the image `disk`."""
    wanted = {name: text.encode() for name, text in secrets.items()}
    longest = max(len(b) for b in wanted.values())
    found, tail = set(), b""
    with open(disk, "rb") as f:
        while block := f.read(64 << 20):
            window = tail + block
            found |= {name for name, b in wanted.items() if b in window}
            tail = window[-longest:]
    return sorted(found)


def resident(metrics_url):
    """`process_resident_memory_bytes` from a node's metrics."""
    import urllib.request
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    line = next(l for l in text.splitlines() if l.startswith("process_resident_memory_bytes "))
    return float(line.split()[1])


def ext_label(disk):
    with open(disk, "rb") as f:
        head = f.read(2048)
    return head[1024 + 120:1024 + 136].rstrip(b"\0").decode()
