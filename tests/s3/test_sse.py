"""Server-side encryption with customer keys (SSE-C) through the aws CLI: the key is
needed for every read, a wrong key is refused, the key is stored nowhere on the node,
the other gateways refuse to serve the object without it, and a copy re-encrypts."""
import base64
import hashlib
import json
import os
import subprocess

import httpx

from conftest import ACCESS, SECRET


def test_sse_c_objects_need_their_key_everywhere(node, s3, aws, tmp_path):
    key = os.urandom(32)
    other = os.urandom(32)
    kfile, ofile = tmp_path / "key.bin", tmp_path / "other.bin"
    kfile.write_bytes(key)
    ofile.write_bytes(other)
    src = tmp_path / "secret.bin"
    src.write_bytes(os.urandom(300_000) + b"the plans" * 1000)
    s3.create_bucket(Bucket="ssec")
    aws("s3", "cp", str(src), "s3://ssec/secret.bin", "--sse-c", "AES256", "--sse-c-key", f"fileb://{kfile}")

    back = tmp_path / "back.bin"
    aws("s3", "cp", "s3://ssec/secret.bin", str(back), "--sse-c", "AES256", "--sse-c-key", f"fileb://{kfile}")
    assert back.read_bytes() == src.read_bytes()
    head = json.loads(aws("s3api", "head-object", "--bucket", "ssec", "--key", "secret.bin",
                          "--sse-customer-algorithm", "AES256", "--sse-customer-key", f"fileb://{kfile}").stdout)
    assert head["SSECustomerAlgorithm"] == "AES256"
    assert head["SSECustomerKeyMD5"] == base64.b64encode(hashlib.md5(key).digest()).decode()

    # Without the key, or with another, nothing is served.
    for extra in ([], ["--sse-c", "AES256", "--sse-c-key", f"fileb://{ofile}"]):
        p = aws("s3", "cp", "s3://ssec/secret.bin", str(tmp_path / "x"), *extra, check=False)
        assert p.returncode != 0, p.stdout
    r = httpx.get(f"{node.dav}/ssec/secret.bin", auth=(ACCESS, SECRET))
    assert r.status_code >= 400 and b"the plans" not in r.content
    # A range read with the key works; so does a copy to a plain object, with the key.
    got = s3.get_object(Bucket="ssec", Key="secret.bin", Range="bytes=300000-300008",
                        SSECustomerAlgorithm="AES256", SSECustomerKey=key)["Body"].read()
    assert got == b"the plans"
    s3.copy_object(Bucket="ssec", Key="plain.bin", CopySource={"Bucket": "ssec", "Key": "secret.bin"},
                   CopySourceSSECustomerAlgorithm="AES256", CopySourceSSECustomerKey=key)
    assert s3.get_object(Bucket="ssec", Key="plain.bin")["Body"].read() == src.read_bytes()

    # The key is nowhere on the node: not in the catalog, not in any file.
    for root, _, files in os.walk(node.data):
        for f in files:
            path = os.path.join(root, f)
            # Only regular files hold bytes (the data directory also holds a Unix
            # socket, which cannot be opened).
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as fh:
                data = fh.read()
            assert key not in data and base64.b64encode(key) not in data, path
