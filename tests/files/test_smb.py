"""SMB for Windows users: Samba (scripts/smb-share) serving an `edgecloud mount`, driven
with smbclient (this machine has no kernel CIFS client)."""
import os
import socket
import subprocess
import time
from pathlib import Path

from conftest import free_port
from test_mount import Mount

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "smb-share"


def test_smbclient_puts_gets_lists_renames_through_samba(node, s3, tmp_path):
    s3.create_bucket(Bucket="smb-share")
    s3.put_bucket_versioning(Bucket="smb-share", VersioningConfiguration={"Status": "Enabled"})
    mount = Mount(node, "smb-share", tmp_path / "mnt")
    port = free_port()
    smbd = subprocess.Popen([str(SCRIPT), str(mount.dir), "edge", str(port), "root", "smb-pass-1", str(tmp_path / "smb")],
                            stdout=open(tmp_path / "smbd.log", "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # smbd signals its whole process group on exit
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert smbd.poll() is None, (tmp_path / "smbd.log").read_text()
                assert time.time() < deadline, "smbd did not start"
                time.sleep(0.2)

        def smb(commands, ok=True, password="smb-pass-1"):
            p = subprocess.run(["smbclient", "//127.0.0.1/edge", "-p", str(port), "-U", f"root%{password}",
                                "-c", commands], capture_output=True, text=True, timeout=120, cwd=tmp_path)
            failed = p.returncode != 0 or "NT_STATUS_" in p.stdout + p.stderr
            assert failed != ok, p.stdout + p.stderr
            return p.stdout
        data = os.urandom(3 << 20)
        (tmp_path / "report.bin").write_bytes(data)
        smb("mkdir reports; put report.bin reports\\q4.bin")
        assert s3.get_object(Bucket="smb-share", Key="reports/q4.bin")["Body"].read() == data
        smb("rename reports\\q4.bin reports\\q4-final.bin")
        listing = smb("ls reports\\*")
        assert "q4-final.bin" in listing and str(len(data)) in listing
        smb("get reports\\q4-final.bin back.bin")
        assert (tmp_path / "back.bin").read_bytes() == data
        # an overwrite is a new version
        (tmp_path / "report.bin").write_bytes(b"revised")
        smb("put report.bin reports\\q4-final.bin")
        versions = s3.list_object_versions(Bucket="smb-share", Prefix="reports/q4-final.bin")["Versions"]
        assert len(versions) == 2
        smb("del reports\\q4-final.bin; rmdir reports")
        assert "Contents" not in s3.list_objects_v2(Bucket="smb-share")
        smb("ls", ok=False, password="wrong")
    finally:
        smbd.terminate()
        smbd.wait(timeout=20)
        mount.close()
