"""Small helpers shared across the package: atomic writes, seeding, thread settings."""

from __future__ import annotations

import contextlib
import os
import random
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


TMP_MARK = ".leanseg-tmp"  # in every temporary name atomic_path makes, and in no other: the sweep deletes only these
# mkstemp's random part is 8 of [a-z0-9_]; the original suffixes follow the mark so writers still see the format
_OWN_TMP = re.compile(r"^\..+\.[a-z0-9_]{8}" + re.escape(TMP_MARK) + r"(\.[^.]+)*$")


def is_own_temporary(path: Path) -> bool:
    """A file :func:`atomic_path` made (a write killed before its rename left it): a plain file whose name has its pattern."""
    return bool(_OWN_TMP.match(path.name)) and path.is_file() and not path.is_symlink()


def sweep_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries a killed write left in ``folder`` (only :func:`is_own_temporary` files, no user file);
    call it once a command has been accepted and holds the folder's lock. Returns what was deleted."""
    gone = [p for p in Path(folder).iterdir() if is_own_temporary(p)] if Path(folder).is_dir() else []
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash or an exception never leaves a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_MARK + "".join(path.suffixes))
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes it 0600: give it the mode any new file gets under the umask
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def writable_folder(path: Path, what: str, fix: str) -> Path:
    """Create ``path`` (and its parents) and check that files can be written there, before any work is done.

    ``what`` names the folder in the sentence a failure gives ("output", "cache"); ``fix`` says what to do.
    """
    from leanseg.errors import LeansegError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LeansegError(f"The {what} {path} is a file; {fix}.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".leanseg-write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise LeansegError(f"Cannot write in the {what} folder {path} ({e.strerror or e}); {fix}.") from None
    return path


_LOCKS_HELD: dict[str, int] = {}  # folders this process has locked, with how many nested holders


@contextlib.contextmanager
def folder_lock(path: Path, what: str = "run") -> Iterator[None]:
    """One writer per folder: an exclusive lock on ``PATH/.lock`` for the block, nested holders in this process
    allowed. The operating system drops the lock when the process ends however it ends, so a killed run never
    leaves a stale lock. Under the lock, the temporary files of writes a killed process left are swept away.
    """
    from leanseg.errors import LeansegError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LeansegError(f"Output {path} is a file; pass a folder for the {what}.")
    writable_folder(path, what, "pass another --out")
    key = str(path.resolve())
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here
        yield
        return
    if key in _LOCKS_HELD:
        _LOCKS_HELD[key] += 1
        try:
            yield
        finally:
            _LOCKS_HELD[key] -= 1
        return
    fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise LeansegError(
            f"The {what} folder {path} is in use by another leanseg process (pid {holder}); wait for it to end or pass another --out."
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _LOCKS_HELD[key] = 1
    try:
        yield
    finally:
        del _LOCKS_HELD[key]
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def progress_bar(description: str) -> Callable[[Iterable[T]], Iterable[T]]:
    """A function that wraps an iterable in a transient rich progress bar (for long loops)."""
    from rich.progress import track

    return lambda items: track(items, description=description, transient=True)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(n)))


def resolve_device(name: str) -> Any:
    """``auto`` (CUDA where torch sees a device, else the CPU), ``cpu``, ``cuda`` or ``cuda:N`` as a ``torch.device``;
    a CUDA device torch cannot see is refused with a sentence, never a late CUDA error."""
    import torch

    from leanseg.errors import LeansegError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LeansegError(f"--device '{name}' is not a device; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise LeansegError(
                f"--device {name} was asked for, but torch {torch.__version__} sees {count} CUDA device(s); "
                "use --device cpu (or auto), or install torch's CUDA build."
            )
    elif device.type != "cpu":
        raise LeansegError(f"--device '{name}' is not supported; use auto, cpu, cuda or cuda:N.")
    return device


def cpu_kind() -> str:
    """``amx`` (AMX bf16: Intel Sapphire Rapids and newer), ``avx512_bf16`` (AMD Zen 4, Intel Cooper Lake) or ``avx2``
    (anything else, bf16 emulated). ``ATEN_CPU_CAPABILITY=avx2`` (or ``default``) reads as ``avx2``, as torch runs then."""
    if os.environ.get("ATEN_CPU_CAPABILITY", "").lower() in ("avx2", "default"):
        return "avx2"
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return "avx2"
    if "amx_bf16" in flags:
        return "amx"
    return "avx512_bf16" if "avx512_bf16" in flags else "avx2"


def cpu_has_fast_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX), so bf16 autocast pays off."""
    return cpu_kind() != "avx2"


def warn_emulated_bf16(setting: str) -> None:
    """Warn (once per setting) where bf16 is asked for on a CPU that emulates it: a batch-2 hippocampus step of the
    residual U-Net took 30.7 s in bf16 against 1.4 s in fp32 on an AVX2-only AMD EPYC."""
    if not cpu_has_fast_bf16() and setting not in _WARNED_BF16:
        import warnings

        _WARNED_BF16.add(setting)
        warnings.warn(
            f"{setting} asks for bf16, but this CPU has no native bf16 (avx512_bf16 or amx_bf16), where it runs about 20x "
            "slower than float32; leave it unset to choose by the CPU.",
            stacklevel=3,
        )


_WARNED_BF16: set[str] = set()


def ray_error_line(error: BaseException) -> str:
    """The line that says what failed in a Ray error (Ray re-raises a task's exception under a header, in colour;
    its last line is "Type: message")."""
    lines = [ln for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines() if ln.strip()]
    return lines[-1] if lines else type(error).__name__


def connect_ray(address: str, num_cpus: int | None = None) -> Any:
    """The ``ray`` module, connected to the cluster at ``address`` (``auto``: the one this machine belongs to;
    ``local``: a new one on this machine with ``num_cpus``). Ray is an optional extra: a missing one is a sentence."""
    from leanseg.errors import LeansegError

    try:
        import ray
    except ImportError:
        raise LeansegError('--ray-address needs Ray: pip install "leanseg[ray]" (or pip install ray).') from None
    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address == "local":
            ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", **kw)
        else:
            try:
                ray.init(address=address, **kw)
            except ConnectionError as e:
                raise LeansegError(
                    f"No Ray cluster answers at --ray-address {address} ({e}); start one (`ray start --head`) or pass local."
                ) from None
    return ray
