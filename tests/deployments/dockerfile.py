"""docker/Dockerfile read as (instruction, arguments), and what pyproject.toml installs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
INSTALL = re.compile(
    r"\bpip3?\s+install\b|\buv\s+(pip|add|sync)\b|\bapt(-get)?\s+install\b|"
    r"\bconda\s+install\b|\bnpm\s+(install|ci)\b|\bapk\s+add\b"
)


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instr, _, args = line.partition(" ")
            out.append((instr.upper(), args.strip()))
    return out


def image_entrypoint() -> list[str]:
    return json.loads(next(a for i, a in dockerfile() if i == "ENTRYPOINT"))


def package_dirs() -> list[str]:
    """The folders pyproject.toml installs as ecocompress.* packages."""
    return sorted(set(PYPROJECT["tool"]["setuptools"]["package-dir"].values()))
