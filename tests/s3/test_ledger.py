"""The audit log end to end: S3 writes, then proofs fetched over HTTP checked by an
independent RFC 9162 verifier written here, and `edgecloud ledger` bundles checked
offline with only the public key."""
import base64
import hashlib
import json
import subprocess

import httpx

from conftest import BIN


def leaf(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(l, r):
    return hashlib.sha256(b"\x01" + l + r).digest()


def mth(leaves):
    """RFC 6962 Merkle tree hash of a list of leaf hashes."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def verify_inclusion(index, size, leaf_hash, proof, root):
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(size1, size2, root1, root2, proof):
    """RFC 9162 section 2.1.4.2."""
    if size1 == size2:
        return not proof and root1 == root2
    if size1 == 0 or size1 > size2 or not proof:
        return False
    if size1 & (size1 - 1) == 0:
        proof = [root1] + proof
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == root1 and sr == root2


class Admin:
    def __init__(self, node):
        self.base = node.admin
        self.headers = {"Authorization": "Bearer " + (node.data / "admin.token").read_text().strip()}

    def get(self, path, **params):
        r = httpx.get(f"{self.base}/v1/ledger/{path}", params=params, headers=self.headers)
        assert r.status_code == 200, r.text
        return r

    def checkpoint(self):
        text = self.get("checkpoint").text
        origin, size, root = text.split("\n")[:3]
        return text, int(size), base64.b64decode(root)


def entries_in(bundle):
    """The entries of one entry bundle (u16 length + bytes each)."""
    out, i = [], 0
    while i < len(bundle):
        ln = int.from_bytes(bundle[i:i + 2], "big")
        out.append(bundle[i + 2:i + 2 + ln])
        i += 2 + ln
    return out


def entries(admin, size):
    """All entries, read from the published entry bundles."""
    out = []
    for n in range((size + 255) // 256):
        w = min(256, size - n * 256)
        name = f"{n:03d}" + ("" if w == 256 else f".p/{w}")
        out += entries_in(admin.get(f"tile/entries/{name}").content)
    return out


def verify_cosignature_independently(checkpoint, cosigner_pub):
    """C2SP tlog-cosignature/v1, checked here with the `cryptography` package: the
    signature line for the cosigner's name and key ID carries a big-endian timestamp and
    an Ed25519 signature over "cosignature/v1\ntime T\n" + the checkpoint body."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    name, key_id, key = cosigner_pub.strip().split("+", 2)
    raw = base64.b64decode(key)
    assert raw[0] == 4 and len(raw) == 33
    assert hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4].hex() == key_id
    body, sigs = checkpoint.split("\n\n", 1)
    for line in sigs.splitlines():
        _, signer, sig = line.split(" ")
        sig = base64.b64decode(sig)
        if signer == name and sig[:4].hex() == key_id:
            t = int.from_bytes(sig[4:12], "big")
            Ed25519PublicKey.from_public_bytes(raw[1:]).verify(
                sig[12:], f"cosignature/v1\ntime {t}\n".encode() + body.encode() + b"\n")
            return
    raise AssertionError("no cosignature by " + name)


def test_ledger_proofs_verify_independently(node, s3, tmp_path):
    admin = Admin(node)
    s3.create_bucket(Bucket="audit-trail")
    body = b"contract v1\n" * 1000
    r = s3.put_object(Bucket="audit-trail", Key="contract.txt", Body=body)
    idx = int(r["ResponseMetadata"]["HTTPHeaders"]["x-edgecloud-ledger-index"])
    saved_text, size1, root1 = admin.checkpoint()
    assert size1 > idx

    # the root is the RFC 6962 hash of every entry (recomputed here from the entry
    # tiles, and by pymerkle as an independent oracle)
    all_entries = entries(admin, size1)
    assert mth([leaf(e) for e in all_entries]) == root1
    from pymerkle import InmemoryTree
    oracle = InmemoryTree(algorithm="sha256")
    for e in all_entries:
        oracle.append_entry(e)
    assert oracle.get_root() == root1
    created = [json.loads(e) for e in all_entries if b'"bucket_created"' in e and b'"audit-trail"' in e]
    assert [c["actor"] for c in created] == ["TESTACCESSKEY"]
    record = json.loads(all_entries[idx])
    assert record["kind"] == "version_written" and record["key"] == "contract.txt"
    assert record["sha256"] == hashlib.sha256(body).hexdigest() and record["size"] == len(body)
    assert record["actor"] == "TESTACCESSKEY"

    proof = [base64.b64decode(p) for p in admin.get("proof/inclusion", index=idx, size=size1).json()["proof"]]
    assert verify_inclusion(idx, size1, leaf(all_entries[idx]), proof, root1)
    assert not verify_inclusion(idx, size1, leaf(b"forged"), proof, root1)

    # more writes; the new log extends the old one
    for i in range(20):
        s3.put_object(Bucket="audit-trail", Key=f"log/{i}", Body=b"x")
    d = s3.delete_object(Bucket="audit-trail", Key="log/0")
    del_idx = int(d["ResponseMetadata"]["HTTPHeaders"]["x-edgecloud-ledger-index"])
    c = s3.copy_object(Bucket="audit-trail", Key="contract-copy.txt", CopySource={"Bucket": "audit-trail", "Key": "contract.txt"})
    copy_idx = int(c["ResponseMetadata"]["HTTPHeaders"]["x-edgecloud-ledger-index"])
    _, size2, root2 = admin.checkpoint()
    later = entries(admin, size2)
    deletion, copy = json.loads(later[del_idx]), json.loads(later[copy_idx])
    assert (deletion["kind"], deletion["key"], deletion["actor"]) == ("delete_marker", "log/0", "TESTACCESSKEY")
    assert copy["sha256"] == hashlib.sha256(body).hexdigest()  # a copy names the same content
    assert size2 >= size1 + 21
    cons = [base64.b64decode(p) for p in admin.get("proof/consistency", **{"from": size1, "to": size2}).json()["proof"]]
    assert verify_consistency(size1, size2, root1, root2, cons)
    assert not verify_consistency(size1, size2, hashlib.sha256(b"rewritten").digest(), root2, cons)

    # the CLI: a bundle checked offline with only the public key and the file
    def cli(*args, ok=True):
        p = subprocess.run([BIN, "--data", str(node.data), "--admin", node.admin, *args], capture_output=True, text=True)
        assert (p.returncode == 0) == ok, p.stdout + p.stderr
        return p.stdout + p.stderr
    bundle = tmp_path / "bundle.json"
    bundle.write_text(cli("ledger", "prove", "audit-trail/contract.txt"))
    original = tmp_path / "contract.txt"
    original.write_bytes(body)
    pub = str(node.data / "ledger.pub")
    out = cli("ledger", "check", str(bundle), "--key", pub, "--file", str(original))
    assert "verified" in out and "matches" in out
    changed = tmp_path / "changed.txt"
    changed.write_bytes(body + b"!")
    assert "NOT VERIFIED" in cli("ledger", "check", str(bundle), "--key", pub, "--file", str(changed), ok=False)
    tampered = json.loads(bundle.read_text())
    tampered["entry"] = tampered["entry"].replace('"size":12000', '"size":12001')
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(tampered))
    assert "NOT VERIFIED" in cli("ledger", "check", str(bad), "--key", pub, ok=False)
    # a key that is not the log's
    other = subprocess.run([BIN, "ledger", "check", str(bundle), "--key", "edgecloud.local/ledger+00000000+" +
                            base64.b64encode(b"\x01" + b"\x00" * 32).decode()], capture_output=True, text=True)
    assert other.returncode != 0
    # history since the saved checkpoint
    saved = tmp_path / "checkpoint"
    saved.write_text(saved_text)
    assert "extends" in cli("ledger", "verify", "--since", str(saved), "--key", pub)
    now = tmp_path / "now.checkpoint"
    cli("ledger", "status", "--save", str(now))
    assert "extends" in cli("ledger", "verify", "--since", str(now), "--key", pub)
    # a forged checkpoint (another size under the same signature) is refused
    lines = saved_text.split("\n")
    lines[1] = str(int(lines[1]) + 1)
    forged = tmp_path / "forged.checkpoint"
    forged.write_text("\n".join(lines))
    assert "saved checkpoint" in cli("ledger", "verify", "--since", str(forged), "--key", pub, ok=False)


def test_multipart_records_name_each_part_and_check_the_file(node, s3, tmp_path):
    from boto3.s3.transfer import TransferConfig
    s3.create_bucket(Bucket="ledger-mp")
    mib = 1 << 20
    body = bytes(range(256)) * (12 * mib // 256) + b"tail"
    original = tmp_path / "big.bin"
    original.write_bytes(body)
    cfg = TransferConfig(multipart_threshold=5 * mib, multipart_chunksize=5 * mib)
    s3.upload_file(str(original), "ledger-mp", "big.bin", Config=cfg)
    s3.copy_object(Bucket="ledger-mp", Key="copy.bin", CopySource={"Bucket": "ledger-mp", "Key": "big.bin"})

    def cli(*args, ok=True):
        p = subprocess.run([BIN, "--data", str(node.data), "--admin", node.admin, *args], capture_output=True, text=True)
        assert (p.returncode == 0) == ok, p.stdout + p.stderr
        return p.stdout + p.stderr
    pub = str(node.data / "ledger.pub")
    for key in ["big.bin", "copy.bin"]:
        bundle = tmp_path / f"{key}.json"
        bundle.write_text(cli("ledger", "prove", f"ledger-mp/{key}"))
        record = json.loads(json.loads(bundle.read_text())["entry"])
        assert record["sha256"] is None and record["size"] == len(body)
        offsets = [0, 5 * mib, 10 * mib, len(body)]
        assert record["parts"] == [{"size": b - a, "sha256": hashlib.sha256(body[a:b]).hexdigest()}
                                   for a, b in zip(offsets, offsets[1:])]
        out = cli("ledger", "check", str(bundle), "--key", pub, "--file", str(original),
                  "--cosigner", str(node.data / "cosigner.pub"))
        assert "matches" in out and "cosigned: by 1 of 1" in out
    changed = tmp_path / "changed.bin"
    changed.write_bytes(body[:7 * mib] + b"X" + body[7 * mib + 1:])
    out = cli("ledger", "check", str(tmp_path / "big.bin.json"), "--key", pub, "--file", str(changed), ok=False)
    assert "NOT VERIFIED" in out and "part 2" in out
    short = tmp_path / "short.bin"
    short.write_bytes(body[:-1])
    assert "shorter" in cli("ledger", "check", str(tmp_path / "big.bin.json"), "--key", pub, "--file", str(short), ok=False)


def test_admin_changes_are_recorded_as_the_admin(node):
    # without --public-ledger the log is the admin's
    assert httpx.get(f"{node.admin}/v1/ledger/checkpoint").status_code == 401
    admin = Admin(node)
    _, before, _ = admin.checkpoint()
    node.cli("bucket", "create", "ledger-admin")
    out = node.cli("key", "create", "auditor")
    access = next(w for w in out.split() if w.startswith("EC"))
    node.cli("key", "allow", access, "ledger-admin", "read")
    node.cli("key", "delete", access)
    import time
    deadline = time.time() + 10
    while admin.checkpoint()[1] < before + 4:  # checkpoints follow within a second
        assert time.time() < deadline, "the checkpoint did not grow"
        time.sleep(0.2)
    _, size, _ = admin.checkpoint()
    records = [json.loads(e) for e in entries(admin, size)[before:]]
    kinds = [(r["kind"], r["actor"]) for r in records]
    assert ("bucket_created", "@admin") in kinds
    assert ("key_created", "@admin") in kinds
    assert ("permission_changed", "@admin") in kinds
    assert ("key_revoked", "@admin") in kinds


def test_audit_checks_the_whole_published_log_and_names_a_damaged_entry(tmp_path):
    """A node of its own: the test damages its published files."""
    from conftest import Node, client
    import shutil
    import time
    node = Node(tmp_path, "--public-ledger")
    try:
        s3 = client(node.endpoint)
        s3.create_bucket(Bucket="monitored")
        for i in range(300):  # more than one tile of 256
            s3.put_object(Bucket="monitored", Key=f"k{i}", Body=b"x")
        admin = Admin(node)
        deadline = time.time() + 10
        while admin.checkpoint()[1] < 301:
            assert time.time() < deadline
            time.sleep(0.2)
        pub = str(node.data / "ledger.pub")
        # the first tile is full: its partials are deleted, and served cut from it
        assert not (node.data / "ledger" / "tile" / "0" / "000.p").exists()
        assert not (node.data / "ledger" / "tile" / "entries" / "000.p").exists()
        full = admin.get("tile/0/000").content
        assert admin.get("tile/0/000.p/100").content == full[:100 * 32]
        bundle = admin.get("tile/entries/000").content
        cut = admin.get("tile/entries/000.p/100").content
        assert bundle.startswith(cut) and len(entries_in(cut)) == 100
        assert entries_in(cut) == entries_in(bundle)[:100]

        def cli(*args, ok=True):
            p = subprocess.run([BIN, "--data", str(node.data), "--admin", node.admin, *args],
                               capture_output=True, text=True)
            assert (p.returncode == 0) == ok, p.stdout + p.stderr
            return p.stdout + p.stderr
        assert "verified: all" in cli("ledger", "audit", "--key", pub)
        # a copy of the published files (a mirror) checks the same way
        mirror = tmp_path / "mirror"
        shutil.copytree(node.data / "ledger", mirror)
        assert "verified: all" in cli("ledger", "audit", "--key", pub, "--from", str(mirror))

        # change one byte inside entry 7's record in the first entry bundle
        bundle = mirror / "tile" / "entries" / "000"
        data = bytearray(bundle.read_bytes())
        offset = 0
        for _ in range(7):
            offset += 2 + int.from_bytes(data[offset:offset + 2], "big")
        data[offset + 10] ^= 1
        bundle.write_bytes(bytes(data))
        out = cli("ledger", "audit", "--key", pub, "--from", str(mirror), ok=False)
        assert "NOT VERIFIED" in out and "entry 7 " in out, out
        # cut the second level-0 tile short: entry 256 + 3 is the first without its hash
        shutil.copy(node.data / "ledger" / "tile" / "entries" / "000", bundle)
        size = int((mirror / "checkpoint").read_text().split("\n")[1])
        tile = mirror / "tile" / "0" / f"001.p/{size - 256}"
        tile.write_bytes(tile.read_bytes()[:3 * 32 + 5])
        out = cli("ledger", "audit", "--key", pub, "--from", str(mirror), ok=False)
        assert "entry 259 " in out, out
        # the node's own files are untouched: the live log still checks out
        assert "verified: all" in cli("ledger", "audit", "--key", pub)
        # the checkpoint is cosigned by the node as the log's voter (C2SP tlog-cosignature)
        cosigner = str(node.data / "cosigner.pub")
        assert "cosigned: by 1 of 1" in cli("ledger", "audit", "--key", pub, "--cosigner", cosigner)
        other = "edgecloud.local/other+00000000+" + base64.b64encode(b"\x04" + b"\x11" * 32).decode()
        out = cli("ledger", "audit", "--key", pub, "--cosigner", cosigner, "--cosigner", other, ok=False)
        assert "NOT VERIFIED" in out and "2 required" in out
        assert "cosigned: by 1 of 2" in cli("ledger", "audit", "--key", pub, "--cosigner", cosigner,
                                            "--cosigner", other, "--quorum", "1")
        verify_cosignature_independently(admin.get("checkpoint").text, (node.data / "cosigner.pub").read_text())
        # --public-ledger: published data needs no token; everything else still does
        for path in ["checkpoint", "public-key", "tile/0/000", "tile/entries/000",
                     "proof/inclusion?index=3&size=300", "proof/consistency?from=3&to=300"]:
            assert httpx.get(f"{node.admin}/v1/ledger/{path}").status_code == 200, path
        for path in ["ledger/prove/monitored/k1", "keys", "buckets", "status"]:
            assert httpx.get(f"{node.admin}/v1/{path}").status_code == 401, path
        assert httpx.post(f"{node.admin}/v1/ledger/checkpoint").status_code in (401, 405)
    finally:
        node.stop()
