"""A node image booted in a VM: `edgecloud node-image build` makes a kernel and an
initramfs from Debian's kernel package and this build's binary; qemu boots them
(`-kernel/-initrd`, KVM where /dev/kvm is) with a virtio network card on qemu's user
network; the node gets its address by DHCP, serves S3 (reached through a forwarded
port), and powers off cleanly when the machine is asked to (Ctrl-Alt-Del)."""
import glob
import json
import os
import shutil
import socket
import subprocess
import time

import pytest

from conftest import ACCESS, BIN, SECRET, Node, free_port

KERNELS = "/var/tmp/edgecloud-tools/kernel"

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None
                                or not glob.glob(f"{KERNELS}/linux-image-*.deb"),
                                reason="needs qemu-system-x86 and a kernel package (scripts/setup)")


def build_args(out, deb, key):
    return [BIN, "node-image", "build", "--out", str(out), "--kernel-deb", deb,
            "--signing-key", str(key)]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """An image that boots only configurations signed with its key (`key` beside it)."""
    out = tmp_path_factory.mktemp("node-image")
    key = out.parent / f"{out.name}.key"
    p = subprocess.run([BIN, "node-image", "keygen", "--out", str(key)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    deb = sorted(glob.glob(f"{KERNELS}/linux-image-*.deb"))[-1]
    p = subprocess.run(build_args(out, deb, key), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "image      sha256" in p.stdout
    public = json.loads((out / "manifest.json").read_text())["config_key"]
    assert f"boots      configurations signed with {public} only" in p.stdout, p.stdout
    return out


def signing_key(image):
    return image.parent / f"{image.name}.key"


def signed(image, cmdline):
    p = subprocess.run([BIN, "node-image", "sign", "--key", str(signing_key(image)), cmdline],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


KVM = None


def kvm_works(image, tmp):
    """Whether a guest runs under KVM here: /dev/kvm can be there while nested
    virtualisation does not run the guest (this CI machine); then the tests boot under
    TCG (software emulation), slower but the same."""
    global KVM
    if KVM is None:
        KVM = False
        if os.access("/dev/kvm", os.W_OK):
            log = tmp / "kvm-probe.log"
            p = subprocess.Popen(["qemu-system-x86_64", "-enable-kvm", "-m", "256", "-display", "none",
                                  "-serial", f"file:{log}", "-kernel", str(image / "vmlinuz"),
                                  "-append", "console=ttyS0 panic=-1", "-no-reboot"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # KVM runs the guest if its kernel gets all the way to the panic (no root
            # file system; `panic=-1` and -no-reboot end qemu): a guest that printed its
            # first lines and then stalled was taken for a working KVM once.
            try:
                p.wait(timeout=10)
                KVM = "Kernel panic" in log.read_text(errors="replace")
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    return KVM


class VM:
    """A VM booting the image: from `-kernel/-initrd`, or with `boot_url` over the
    network (qemu's iPXE ROM asks qemu's DHCP, which names `boot_url` as the boot file),
    or with `network_boot` from whatever DHCP server is on `netdev`'s network."""

    def __init__(self, image, tmp, append="", boot_url=None, disks=(), netns=None, netdev=None,
                 mac=None, memory=1024, after_signing="", network_boot=False):
        self.s3_port = free_port()
        self.monitor = tmp / "monitor.sock"
        self.console = tmp / "console.log"
        kvm = ["-enable-kvm", "-cpu", "host"] if kvm_works(image, tmp) else []
        cmdline = ("console=ttyS0 panic=-1 "
                   f"edgecloud.env.EDGECLOUD_ACCESS_KEY={ACCESS} "
                   f"edgecloud.env.EDGECLOUD_SECRET_KEY={SECRET} " + append)
        if boot_url:
            boot = ["-boot", "n"]
            netdev = f"user,id=n0,bootfile={boot_url},hostfwd=tcp:127.0.0.1:{self.s3_port}-:9400"
        elif network_boot:
            boot = ["-boot", "n"]  # iPXE asks the network's DHCP server (`netdev`'s) what to boot
        else:
            # Signed as the boot server would (the image starts a node for nothing else);
            # `after_signing` is what someone on the way adds.
            cmdline = signed(image, cmdline) + after_signing
            boot = ["-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initramfs.img"),
                    "-append", cmdline]
            netdev = netdev or f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.s3_port}-:9400"
        nic = "virtio-net-pci,netdev=n0" + (f",mac={mac}" if mac else "")
        self.qemu = [*(["ip", "netns", "exec", netns] if netns else []),
                     "qemu-system-x86_64", *kvm, "-m", str(memory), "-smp", "2", "-no-reboot",
                     "-display", "none", "-serial", f"file:{self.console}",
                     "-monitor", f"unix:{self.monitor},server,nowait", *boot,
                     "-netdev", netdev, "-device", nic,
                     *[a for d in disks for a in ("-drive", f"file={d},format=raw,if=virtio")]]
        self.power_on()

    def power_on(self):
        self.started = time.time()
        self.proc = subprocess.Popen(self.qemu, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)

    def log(self):
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def wait_for_s3(self, timeout=120, again=True):
        """Seconds from power-on until S3 answers an HTTP request. A guest whose kernel
        stalled before our init ran (seen once under TCG, at 1 s of kernel time) is
        powered on once more: nothing of ours had run yet."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log()
            try:
                with socket.create_connection(("127.0.0.1", self.s3_port), timeout=1) as s:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    s.settimeout(2)
                    if s.recv(12).startswith(b"HTTP/1.1"):
                        return time.time() - self.started
            except OSError:
                pass
            time.sleep(0.2)
        if again and "edgecloud init:" not in self.log():
            print(f"the guest's kernel stalled before init ran; powering on again:\n"
                  f"{self.log()[-400:]}")
            self.kill()
            self.console.unlink()
            self.power_on()
            return self.wait_for_s3(timeout, again=False)
        raise AssertionError("S3 did not answer:\n" + self.log()[-4000:])

    def monitor_command(self, cmd):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.monitor))
            s.sendall(cmd.encode() + b"\n")
            time.sleep(0.5)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_a_node_image_is_reproducible_and_small(image, tmp_path):
    manifest = json.loads((image / "manifest.json").read_text())
    assert manifest["initramfs_bytes"] < 40 << 20, "the initramfs target is 40 MB"
    assert "virtio_net" in manifest["modules"] and "virtio_pci" in manifest["modules"]
    deb = sorted(glob.glob(f"{KERNELS}/linux-image-*.deb"))[-1]
    again = tmp_path / "again"
    p = subprocess.run(build_args(again, deb, signing_key(image)), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    for f in ("vmlinuz", "initramfs.img", "manifest.json"):
        assert (image / f).read_bytes() == (again / f).read_bytes(), f"{f} differs"


def test_a_booted_node_gets_an_address_serves_s3_and_powers_off(image, tmp_path):
    import boto3
    from botocore.config import Config
    vm = VM(image, tmp_path)
    try:
        seconds = vm.wait_for_s3()
        print(f"power-on to S3 answering: {seconds:.1f} s ({'KVM' if KVM else 'TCG'})")
        log = vm.log()
        assert "edgecloud init: starting" in log
        assert "kernel modules loaded" in log and "eth0: 10.0.2.15/24 via 10.0.2.2" in log, log
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{vm.s3_port}",
                          aws_access_key_id=ACCESS, aws_secret_access_key=SECRET,
                          region_name="us-east-1",
                          config=Config(retries={"max_attempts": 2}))
        s3.create_bucket(Bucket="booted")
        s3.put_object(Bucket="booted", Key="hello.txt", Body=b"from a netbooted node\n")
        assert s3.get_object(Bucket="booted", Key="hello.txt")["Body"].read() \
            == b"from a netbooted node\n"
        # Ctrl-Alt-Del reaches init as SIGINT: it stops the node and powers off.
        vm.monitor_command("sendkey ctrl-alt-delete")
        vm.proc.wait(timeout=60)
        log = vm.log()
        assert "stopping the node" in log and "powering off" in log, log[-3000:]
    finally:
        vm.kill()


def ledger_records(admin, token):
    """Every record of a node's audit log, read as a monitor reads it: the signed
    checkpoint's size, then the published entry bundles (C2SP tlog-tiles)."""
    import urllib.request

    def fetch(path):
        req = urllib.request.Request(f"{admin}/v1/ledger/{path}",
                                     headers={"Authorization": f"Bearer {token}"})
        return urllib.request.urlopen(req, timeout=10).read()

    size = int(fetch("checkpoint").decode().splitlines()[1])
    records = []
    for n in range((size + 255) // 256):
        width = min(256, size - n * 256)
        b = fetch(f"tile/entries/{n:03d}" + ("" if width == 256 else f".p/{width}"))
        i = 0
        while i < len(b):
            length = int.from_bytes(b[i:i + 2], "big")
            records.append(json.loads(b[i + 2:i + 2 + length]))
            i += 2 + length
    return records


def wait_for_record(admin, token, match, timeout=30):
    deadline = time.time() + timeout
    while True:
        found = [r for r in ledger_records(admin, token) if match(r)]
        if found:
            return found
        assert time.time() < deadline, "no such ledger record"
        time.sleep(0.5)


def ext_label(disk):
    """The label of the ext2/3/4 file system on a disk image ('' if it holds none)."""
    with open(disk, "rb") as f:
        head = f.read(2048)
    if head[1024 + 56:1024 + 58] != b"\x53\xef":
        return ""
    return head[1024 + 120:1024 + 136].rstrip(b"\0").decode()


def test_a_blank_disk_is_formatted_and_a_reboot_finds_it_with_the_nodes_data(image, tmp_path):
    """A node booted with a blank disk and a disk holding someone's file system formats
    the blank one (ext4, labelled edgecloud-XXXXXX), keeps its data directory and shards
    there, and leaves the other untouched. Powered off and booted again, with the disks
    on the other slots, it finds its disk by the label, formats nothing, and is the
    same node with the same objects; booted with `edgecloud.format=never` and a new
    blank disk, it formats nothing."""
    import boto3
    from botocore.config import Config
    blank, foreign = tmp_path / "blank.img", tmp_path / "foreign.img"
    subprocess.run(["truncate", "-s", "256M", str(blank)], check=True)
    subprocess.run(["truncate", "-s", "64M", str(foreign)], check=True)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "family-photos", str(foreign)],
                   check=True)
    foreign_before = foreign.read_bytes()

    def boot(name, disks, append=""):
        (tmp_path / name).mkdir()
        vm = VM(image, tmp_path / name, disks=disks, append=append)
        vm.wait_for_s3()
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{vm.s3_port}",
                          aws_access_key_id=ACCESS, aws_secret_access_key=SECRET,
                          region_name="us-east-1", config=Config(retries={"max_attempts": 2}))
        return vm, s3

    def power_off(vm):
        vm.monitor_command("sendkey ctrl-alt-delete")
        vm.proc.wait(timeout=60)
        log = vm.log()
        # Its disk unmounted cleanly before the power went (init says nothing went wrong).
        assert "powering off" in log and "unmounting filesystem" in log, log[-3000:]
        assert "edgecloud init: unmounting" not in log, log[-3000:]

    vm, s3 = boot("first", [blank, foreign])
    try:
        log = vm.log()
        label = ext_label(blank)
        assert label.startswith("edgecloud-") and len(label) == 16, label
        assert f"disk vda: formatted {label}" in log, log
        assert 'disk vdb holds an ext2/3/4 file system labelled "family-photos": left alone' in log
        assert f"the node's data is on {label}" in log
        s3.create_bucket(Bucket="kept")
        s3.put_object(Bucket="kept", Key="a.txt", Body=b"on the node's own disk\n" * 1000)
        power_off(vm)
    finally:
        vm.kill()
    assert foreign.read_bytes() == foreign_before, "a disk not ours is never written"

    # Again, the disks swapped: found by label, nothing formatted, the same data.
    vm, s3 = boot("second", [foreign, blank])
    try:
        log = vm.log()
        assert f"disk vdb: found {label}" in log and "formatted" not in log, log
        body = s3.get_object(Bucket="kept", Key="a.txt")["Body"].read()
        assert body == b"on the node's own disk\n" * 1000
        power_off(vm)
    finally:
        vm.kill()
    assert ext_label(blank) == label

    # With formatting off, a new blank disk stays blank.
    other = tmp_path / "other.img"
    subprocess.run(["truncate", "-s", "64M", str(other)], check=True)
    vm, s3 = boot("third", [blank, other], append="edgecloud.format=never")
    try:
        assert "disk vdb is blank: not formatted (edgecloud.format=never)" in vm.log()
        assert s3.head_object(Bucket="kept", Key="a.txt")["ContentLength"] == 23000
    finally:
        vm.kill()
    assert ext_label(other) == ""


def test_a_boot_configuration_changed_after_signing_starts_no_node(image, tmp_path):
    """The image was built with a boot key: a command line changed on the way (here a
    parameter added after signing) starts no node and touches no disk."""
    disk = tmp_path / "blank.img"
    subprocess.run(["truncate", "-s", "64M", str(disk)], check=True)
    vm = VM(image, tmp_path, disks=[disk], after_signing=" edgecloud.format=never")
    try:
        deadline = time.time() + 120
        while "does not match it" not in vm.log():
            assert vm.proc.poll() is None and time.time() < deadline, vm.log()[-3000:]
            time.sleep(0.5)
        time.sleep(3)
        log = vm.log()
        assert "the node does not start" in log and "node started" not in log, log[-3000:]
        assert "disk vda" not in log
    finally:
        vm.kill()
    assert open(disk, "rb").read(1 << 20) == bytes(1 << 20), "the disk was not touched"


def test_bad_boot_parameters_are_named_and_the_node_still_boots(image, tmp_path):
    vm = VM(image, tmp_path, append="edgecloud.colour=red")
    try:
        vm.wait_for_s3()
        assert "kernel parameter edgecloud.colour=red: unknown" in vm.log()
    finally:
        vm.kill()


def test_a_node_serves_the_image_and_a_machine_boots_it_over_the_network(image, tmp_path):
    """`serve --boot-image`: the node serves /boot.ipxe, the kernel and the initramfs; a
    VM with no disk and no kernel given boots from its network card (iPXE), runs the
    image it was served and answers S3."""
    port = free_port()
    args = ("console=ttyS0 panic=-1 "
            f"edgecloud.env.EDGECLOUD_ACCESS_KEY={ACCESS} edgecloud.env.EDGECLOUD_SECRET_KEY={SECRET}")
    (tmp_path / "host").mkdir()
    tftp = free_port()
    host = Node(tmp_path / "host", "--boot-image", str(image), "--boot-listen", f"127.0.0.1:{port}",
                "--boot-args", args, "--boot-key", str(signing_key(image)),
                "--boot-tftp-listen", f"127.0.0.1:{tftp}")
    try:
        manifest = json.loads((image / "manifest.json").read_text())
        # The node checks the image's hashes before its boot server listens, after S3.
        deadline = time.time() + 30
        while subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"]).returncode == 7:
            assert time.time() < deadline, "the boot server did not start"
            time.sleep(0.2)
        p = subprocess.run(["curl", "-sf", f"http://127.0.0.1:{port}/boot.ipxe"],
                           capture_output=True, text=True, timeout=10)
        assert p.returncode == 0 and p.stdout.startswith("#!ipxe\n"), p
        assert f"edgecloud.image={manifest['image_sha256']} edgecloud.sig=" in p.stdout
        # What machines boot is in the serving node's audit log.
        token = (tmp_path / "host" / "admin.token").read_text().strip()
        served = wait_for_record(host.admin, token, lambda r: r["kind"] == "boot_image_served")
        assert served[-1]["image_sha256"] == manifest["image_sha256"]
        assert served[-1]["initramfs_sha256"] == manifest["initramfs_sha256"]
        kernel = subprocess.run(["curl", "-sf", f"http://127.0.0.1:{port}/vmlinuz"],
                                capture_output=True, timeout=10).stdout
        assert kernel == (image / "vmlinuz").read_bytes()
        # The same folder over TFTP (curl's client, with a larger block size), read only.
        p = subprocess.run(["curl", "-sf", "--tftp-blksize", "1468",
                            f"tftp://127.0.0.1:{tftp}/initramfs.img"], capture_output=True, timeout=60)
        assert p.returncode == 0 and p.stdout == (image / "initramfs.img").read_bytes()
        for path in ("/../manifest.json", "/no-such-file", "/%2e%2e/etc/passwd"):
            p = subprocess.run(["curl", "-sf", "--path-as-is", f"tftp://127.0.0.1:{tftp}{path}"],
                               capture_output=True, timeout=30)
            assert p.returncode != 0 and not p.stdout, (path, p.returncode)
        # qemu's user network reaches the host's loopback at 10.0.2.2.
        vm = VM(image, tmp_path, boot_url=f"http://10.0.2.2:{port}/boot.ipxe")
        try:
            seconds = vm.wait_for_s3(timeout=240)
            print(f"power-on to S3 answering, booted over the network: {seconds:.1f} s")
            assert f"booted image sha256 {manifest['image_sha256']}" in vm.log()
            assert "the boot configuration is signed with the image's key" in vm.log()
        finally:
            vm.kill()
    finally:
        host.stop()
    def serve_refused(boot_image, says):
        p = subprocess.run([BIN, "serve", "--data", str(tmp_path / "other"), "--boot-image",
                            str(boot_image), "--bind", "127.0.0.1", "--s3-listen", "127.0.0.1:0",
                            "--dav-listen", "127.0.0.1:0", "--ftp-listen", "127.0.0.1:0",
                            "--rpc-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                            "--boot-listen", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and says in p.stderr, p.stderr

    # A folder that holds no image fails the start, saying what to do.
    serve_refused(tmp_path, "node-image build")
    # An image built with a key is not served without it.
    serve_refused(image, "give --boot-key")
