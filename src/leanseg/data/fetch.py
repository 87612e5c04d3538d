"""Download an MSD task archive, verify its checksum and unpack it (MONAI's download helpers).

Addresses and MD5 sums default to the table MONAI's ``DecathlonDataset`` keeps; ``url``/``md5``
override them (tests serve an archive on 127.0.0.1). The task folder appears only once the archive
has been verified and fully unpacked.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from leanseg.errors import LeansegError


def msd_tasks() -> dict[str, tuple[str, str]]:
    from monai.apps import DecathlonDataset

    return {k: (DecathlonDataset.resource[k], DecathlonDataset.md5[k]) for k in DecathlonDataset.resource}


def fetch_msd_task(task: str, out_dir: Path | str, url: str | None = None, md5: str | None = None) -> Path:
    """Download ``task`` into ``out_dir/<task>`` unless it is already there; return that folder."""
    from monai.apps.utils import HashCheckError, download_url, extractall

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise LeansegError(f"Output {out} is a file; pass a folder to unpack the task into.")
    target = out / task
    if (target / "dataset.json").is_file():
        return target
    if target.exists():  # a folder of the user's without a dataset.json: never deleted or filled
        raise LeansegError(f"{target} exists but holds no dataset.json; move it away or pass another --out.")
    if url is None or md5 is None:
        tasks = msd_tasks()
        if task not in tasks:
            raise LeansegError(f"Unknown MSD task '{task}'; choose one of {sorted(tasks)} or pass --url and --md5.")
        url = url or tasks[task][0]
        md5 = md5 or tasks[task][1]
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=f".fetch-{task}-") as tmp:
        archive = Path(tmp) / Path(url.split("?")[0]).name
        try:
            download_url(url, str(archive), hash_val=md5, hash_type="md5", progress=True)
        except (RuntimeError, HashCheckError) as e:
            raise LeansegError(
                f"Download of {url} failed its MD5 check or broke off; try again or check --md5 ({type(e).__name__})."
            ) from e
        except OSError as e:
            raise LeansegError(f"Cannot download {url} ({e}); check the address and the network.") from e
        unpacked = Path(tmp) / "unpacked"
        try:
            extractall(str(archive), str(unpacked), has_base=False)
        except ValueError as e:  # MONAI refuses members that would land outside the folder (tar-slip, links)
            raise LeansegError(
                f"The archive from {url} holds a member that would unpack outside its folder ({e}); it was not unpacked: "
                "check where it came from."
            ) from None
        found = [p.parent for p in unpacked.rglob("dataset.json")]
        if not found:
            raise LeansegError(f"The archive from {url} holds no dataset.json; it is not an MSD task.")
        shutil.move(str(found[0]), str(target))
    return target
