import hashlib
import http.server
import io
import json
import tarfile
import threading
from pathlib import Path

import pytest

from leanseg.data.fetch import fetch_msd_task
from leanseg.errors import LeansegError


@pytest.fixture()
def server(tmp_path: Path):
    """Serve a freshly built MSD-like archive on 127.0.0.1 (nothing reaches the internet)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in {
            "Task99_Toy/dataset.json": json.dumps({"modality": {"0": "MRI"}, "labels": {"0": "bg"}, "training": []}).encode(),
            "Task99_Toy/imagesTr/a.txt": b"x",
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "Task99_Toy.tar").write_bytes(buf.getvalue())
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "www"), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/Task99_Toy.tar", hashlib.md5(buf.getvalue()).hexdigest()
    httpd.shutdown()


def test_fetch_verifies_and_unpacks(server, tmp_path: Path) -> None:
    url, md5 = server
    out = fetch_msd_task("Task99_Toy", tmp_path / "data", url=url, md5=md5)
    assert (out / "dataset.json").is_file() and (out / "imagesTr" / "a.txt").read_bytes() == b"x"
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["Task99_Toy"]  # no temporary left


def test_wrong_checksum_leaves_nothing(server, tmp_path: Path) -> None:
    url, _ = server
    with pytest.raises(LeansegError, match="MD5"):
        fetch_msd_task("Task99_Toy", tmp_path / "data", url=url, md5="0" * 32)
    assert list((tmp_path / "data").iterdir()) == []


def test_unknown_task() -> None:
    with pytest.raises(LeansegError, match="Unknown MSD task 'Task42_Nothing'"):
        fetch_msd_task("Task42_Nothing", "/tmp/never-created-leanseg")
