"""Prometheus metrics and structured logs of a real node: a scrape parsed by the
official Prometheus client's parser after S3 and WebDAV traffic, and `--log-format
json` read line by line."""
import json
import os

import httpx
import pytest

from conftest import ACCESS, SECRET, Node, client, scrape_metrics


def scrape(node):
    return scrape_metrics(node.admin)


def value(samples, name, **labels):
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == str(w) for k, w in labels.items()))


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    n = Node(tmp_path_factory.mktemp("metrics"), "--log-format", "json")
    yield n
    n.stop()


def test_metrics_count_requests_bytes_and_state_without_a_token(fresh):
    before = scrape(fresh)
    s3 = client(fresh.endpoint)
    s3.create_bucket(Bucket="metered")
    # Above the inline threshold (shards on the disk), and distinct (no dedup).
    bodies = [os.urandom(300_000) for _ in range(3)]
    for i, b in enumerate(bodies):
        s3.put_object(Bucket="metered", Key=f"k{i}", Body=b)
    body = bodies[0]
    assert s3.get_object(Bucket="metered", Key="k0")["Body"].read() == body
    with pytest.raises(Exception):
        s3.get_object(Bucket="metered", Key="missing")
    r = httpx.get(f"{fresh.dav}/metered/k1", auth=(ACCESS, SECRET), timeout=10)
    assert r.status_code == 200 and r.content == bodies[1]

    after = scrape(fresh)
    puts = value(after, "edgecloud_requests_total", gateway="S3", operation="PUT object", status=200)
    assert puts - value(before, "edgecloud_requests_total", gateway="S3", operation="PUT object", status=200) == 3
    assert value(after, "edgecloud_requests_total", gateway="S3", operation="GET object", status=404) >= 1
    assert value(after, "edgecloud_requests_total", gateway="WebDAV", operation="GET object", status=200) >= 1
    # Latency histograms: one observation per request, in the +Inf bucket.
    assert value(after, "edgecloud_request_duration_seconds_count", gateway="S3", operation="PUT object", status=200) == puts
    assert value(after, "edgecloud_request_duration_seconds_bucket", gateway="S3", operation="PUT object", status=200, le="+Inf") == puts
    # Bytes as the bodies streamed.
    assert value(after, "edgecloud_received_bytes_total", gateway="S3") - value(before, "edgecloud_received_bytes_total", gateway="S3") >= 3 * len(body)
    assert value(after, "edgecloud_sent_bytes_total", gateway="WebDAV") >= len(body)
    # The node's state.
    assert value(after, "edgecloud_disk_shards") >= 3
    assert value(after, "edgecloud_disk_bytes") >= 3 * len(body)
    assert value(after, "edgecloud_disk_ok") == 1
    assert value(after, "edgecloud_disk_size_bytes") > value(after, "edgecloud_disk_free_bytes") > 0
    assert value(after, "edgecloud_chunks") - value(before, "edgecloud_chunks") >= 3
    assert 10 << 20 < value(after, "process_resident_memory_bytes") < 1 << 30
    assert value(after, "edgecloud_repair_queue_chunks") == 0  # nothing below full redundancy
    assert value(after, "edgecloud_raft_leader") == 1
    assert value(after, "edgecloud_raft_voters") == 1
    assert value(after, "edgecloud_raft_term") >= 1
    assert value(after, "edgecloud_ledger_entries") >= 4  # bucket + three versions
    assert value(after, "edgecloud_buckets") >= 1
    assert value(after, "edgecloud_cluster_nodes", state="active") == 1


def test_other_admin_routes_still_need_the_token(fresh):
    assert httpx.get(f"{fresh.admin}/v1/status", timeout=10).status_code == 401
    assert httpx.get(f"{fresh.admin}/v1/buckets", timeout=10).status_code == 401


def test_json_logs_are_one_object_per_line(fresh):
    lines = [l for l in (fresh.data / "serve.log").read_text().splitlines() if l.startswith("{")]
    assert lines, "no JSON log lines"
    for l in lines:
        entry = json.loads(l)
        assert {"timestamp", "level", "fields"} <= entry.keys(), entry
    # Logs written to a file carry no terminal colour codes.
    assert "\x1b[" not in (fresh.data / "serve.log").read_text()


def test_the_grafana_dashboard_uses_only_metrics_the_node_exposes(fresh):
    import re
    from pathlib import Path
    dash = json.loads((Path(__file__).parents[2] / "deploy/grafana/edgecloud.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"edgecloud_[a-z_]+", e)}
    # Request series exist once a request was served (also when this test runs alone).
    client(fresh.endpoint).list_buckets()
    exposed = {n for (n, _) in scrape(fresh)}
    assert len(used) >= 15
    missing = {m for m in used if m not in exposed}
    assert not missing, f"the dashboard queries metrics the node does not expose: {missing}"


def test_the_admin_api_matches_its_openapi_document(fresh, tmp_path):
    """schemathesis generates requests from the document the node serves and checks
    every answer: no server error, a documented status, content type and schema."""
    import subprocess
    # The document's examples name these, so generated requests also reach real data.
    s3 = client(fresh.endpoint)
    s3.create_bucket(Bucket="photos")
    s3.put_object(Bucket="photos", Key="2026/holiday.jpg", Body=b"sun and sea")
    token = (fresh.data / "admin.token").read_text().strip()
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    p = subprocess.run(
        ["st", "run", f"{fresh.admin}/openapi.yaml", "--url", fresh.admin,
         "-H", f"Authorization: Bearer {token}", "--max-examples", "25", "--seed", "1",
         # A pull contacts the registry its reference names (502 when there is none):
         # tests/containers/test_pull.py drives it against a real registry instead.
         "--exclude-path", "/v1/image-pulls",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
         "--no-color"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-2000:]


def test_ftp_operations_are_counted(fresh):
    import ftplib
    import io
    client(fresh.endpoint).create_bucket(Bucket="ftpmetered")
    before = scrape(fresh)
    data = os.urandom(123_456)
    with ftplib.FTP() as f:
        f.connect("127.0.0.1", fresh.ftp_port, timeout=10)
        f.login(ACCESS, SECRET)
        f.storbinary("STOR /ftpmetered/a.bin", io.BytesIO(data))
        got = io.BytesIO()
        f.retrbinary("RETR /ftpmetered/a.bin", got.write)
        assert got.getvalue() == data
        f.delete("/ftpmetered/a.bin")
        with pytest.raises(ftplib.error_perm, match="^550"):
            f.retrbinary("RETR /ftpmetered/a.bin", got.write)
        f.nlst("/ftpmetered")
    after = scrape(fresh)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)
    assert grew("edgecloud_requests_total", gateway="FTP", operation="STOR", status=226) == 1
    assert grew("edgecloud_requests_total", gateway="FTP", operation="RETR", status=226) == 1
    assert grew("edgecloud_requests_total", gateway="FTP", operation="DELE", status=250) == 1
    # Failures count too, with the reply code the client saw, and so do listings.
    assert grew("edgecloud_requests_total", gateway="FTP", operation="RETR", status=550) == 1
    assert grew("edgecloud_requests_total", gateway="FTP", operation="LIST", status=226) == 1
    # Every operation is timed.
    assert grew("edgecloud_request_duration_seconds_count", gateway="FTP", operation="STOR", status=226) == 1
    assert grew("edgecloud_request_duration_seconds_count", gateway="FTP", operation="RETR", status=550) == 1
    assert grew("edgecloud_received_bytes_total", gateway="FTP") == len(data)
    assert grew("edgecloud_sent_bytes_total", gateway="FTP") == len(data)


def test_nfs_operations_are_counted(fresh):
    import libnfs
    client(fresh.endpoint).create_bucket(Bucket="nfsmetered")
    before = scrape(fresh)
    text = "counted over NFS " * 1000
    n = libnfs.NFS(f"nfs://127.0.0.1/nfsmetered?nfsport={fresh.nfs_port}&mountport={fresh.nfs_port}&version=3")
    f = n.open("/a.txt", mode="w")
    f.write(text)
    f.close()
    assert n.open("/a.txt").read() == text
    with pytest.raises(Exception):
        n.open("/missing.txt").read()
    after = scrape(fresh)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)
    assert grew("edgecloud_requests_total", gateway="NFS", operation="WRITE", status="NFS3_OK") >= 1
    assert grew("edgecloud_requests_total", gateway="NFS", operation="READ", status="NFS3_OK") >= 1
    assert grew("edgecloud_requests_total", gateway="NFS", operation="LOOKUP", status="NFS3ERR_NOENT") >= 1
    assert grew("edgecloud_request_duration_seconds_count", gateway="NFS", operation="READ", status="NFS3_OK") >= 1
    assert grew("edgecloud_received_bytes_total", gateway="NFS") >= len(text)
    assert grew("edgecloud_sent_bytes_total", gateway="NFS") >= len(text)
