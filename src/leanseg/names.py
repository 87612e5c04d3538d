"""Names built from data: case ids and the file names derived from them.

A case id comes from a file a user may have received (``dataset.json``, an image's name), and leanseg names files
after it (the preprocessing cache, a degraded copy, predictions). So every id is checked where it is read: one
path component of portable characters (letters, digits, ``_``, ``-``, ``.``, ``+``, inner spaces), starting with a
letter, digit or ``_`` (so never ``..``, a hidden name or an option), and no two cases of one listing may share a
name, letter case aside (they would share files on a case-insensitive disk). ``tests/test_names.py`` walks every
place in ``src/`` that joins a path with an f-string of a case id, so a new one cannot skip the check.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from leanseg.errors import LeansegError

MAX_CASE_ID = 200  # characters; with the longest suffix leanseg adds it stays under the 255 bytes of a file name
_CASE_ID = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.+ -]*[A-Za-z0-9_+-])?")


def is_safe_case_id(case_id: object) -> bool:
    """True for a string leanseg may name files after (see the module docstring)."""
    return isinstance(case_id, str) and len(case_id) <= MAX_CASE_ID and _CASE_ID.fullmatch(case_id) is not None


def check_case_id(case_id: object, source: Path | str) -> str:
    """``case_id`` itself, or a sentence naming it and ``source`` (the file it came from) where it is unsafe."""
    if not is_safe_case_id(case_id):
        raise LeansegError(
            f"Case id {case_id!r} in {source} cannot name a file: use one name of letters, digits, '_', '-', '.' or '+' "
            f"(no folder, no '..', at most {MAX_CASE_ID} characters, starting with a letter, digit or '_'); rename the case there."
        )
    return case_id  # type: ignore[return-value]


def check_unique(named: Iterable[tuple[str, Path | str]], source: Path | str) -> None:
    """Refuse two entries (case id, the file it came from) whose ids are equal, letter case aside, naming both files."""
    seen: dict[str, tuple[str, Path | str]] = {}
    for case_id, path in named:
        key = case_id.casefold()
        if key in seen:
            other_id, other = seen[key]
            raise LeansegError(
                f"{other} and {path} in {source} both give the case name '{other_id}'"
                + (f" / '{case_id}'" if other_id != case_id else "")
                + "; their outputs would overwrite each other: rename or remove one of them."
            )
        seen[key] = (case_id, path)
