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

TOY = {
    "Task99_Toy/dataset.json": json.dumps({"modality": {"0": "MRI"}, "labels": {"0": "bg"}, "training": []}).encode(),
    "Task99_Toy/imagesTr/a.txt": b"x",
}


@pytest.fixture()
def server(tmp_path: Path):
    """Serve a freshly built MSD-like archive on 127.0.0.1 (nothing reaches the internet)."""
    yield from _serve(tmp_path, TOY)


def _serve(tmp_path: Path, members: dict[str, bytes], links: dict[str, str] | None = None):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
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


@pytest.mark.parametrize(
    ("members", "links"),
    [({**TOY, "../escape_probe.txt": b"evil"}, {}), (TOY, {"Task99_Toy/imagesTr/link": "/etc/passwd"})],
    ids=["tar-slip", "symlink"],
)
def test_an_archive_member_that_leaves_its_folder_is_one_sentence(tmp_path: Path, members, links) -> None:
    from typer.testing import CliRunner

    from leanseg.cli import app

    serving = _serve(tmp_path, members, links)
    url, md5 = next(serving)
    try:
        r = CliRunner().invoke(app, ["data", "fetch", "Task99_Toy", "-o", str(tmp_path / "data"), "--url", url, "--md5", md5])
    finally:
        next(serving, None)
    assert r.exit_code == 2 and "would unpack outside its folder" in r.output and "Traceback" not in r.output, r.output
    assert list((tmp_path / "data").iterdir()) == [] and not list(tmp_path.rglob("escape_probe*"))


def test_a_users_folder_of_the_tasks_name_is_never_deleted(server, tmp_path: Path) -> None:
    url, md5 = server
    mine = tmp_path / "data" / "Task99_Toy"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(LeansegError, match="exists but holds no dataset.json; move it away"):
        fetch_msd_task("Task99_Toy", tmp_path / "data", url=url, md5=md5)
    assert (mine / "notes.txt").read_text() == "mine"
