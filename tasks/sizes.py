"""Sizes: parsing ``20GB`` / ``500MiB`` / ``1.5G``, printing bytes, measuring disk usage."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ecocompress.tasks.errors import UserError

_UNITS = {
    "": 1,
    "b": 1,
    **{u: 1000**i for i, u in enumerate("kmgt", 1)},
    **{u + "b": 1000**i for i, u in enumerate("kmgt", 1)},
    **{u + "i": 1024**i for i, u in enumerate("kmgt", 1)},
    **{u + "ib": 1024**i for i, u in enumerate("kmgt", 1)},
}
_SIZE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)$")


def parse_size(text: str) -> int:
    """Bytes of a size such as ``20GB``, ``500MiB``, ``1.5G`` or ``0`` (case-insensitive).

    K, M, G, T (with or without B) are powers of 1000; KiB, MiB, GiB, TiB (or Ki, ...)
    powers of 1024; a bare number is bytes.

    Raises:
        UserError: not a non-negative number with one of those units.
    """
    m = _SIZE.match(str(text).strip().lower())
    if not m or m.group(2) not in _UNITS:
        raise UserError(
            f"bad size {text!r}: give a number and a unit, such as 20GB, 500MiB, 1.5G or 0"
        )
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def format_size(n: int) -> str:
    """``n`` bytes in decimal units (``1.02 GB``), as ``parse_size`` reads them."""
    for unit, f in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= f:
            return f"{n / f:.2f} {unit}"
    return f"{n} B"


def disk_bytes(path: Path) -> int:
    """Bytes allocated on disk below ``path`` (symlinks not followed, hard links once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    names = (os.path.join(r, n) for r, ds, fs in os.walk(path) for n in (*ds, *fs))
    for name in (str(path), *names):
        try:
            st = os.lstat(name)
        except FileNotFoundError:  # removed while walking
            continue
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512  # st_blocks counts 512-byte units
    return total
