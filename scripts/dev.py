#!/usr/bin/env python3
"""One-command bootstrap: `python3 scripts/dev.py demo` or `python3 scripts/dev.py test`.

Creates `.venv` beside the project on first use (standard library only: venv + pip), installs
the project with the extras the command needs, then runs it. Works on a fresh machine with
only Python 3.11+.

    demo   the main job: a full sync against the bundled fake API, a crash and a resume
    test   the whole test suite (ruff and mypy run in CI through .ci/run)
    lint   ruff + mypy --strict
    docs   the reference site into site/ (mkdocs arguments pass through: --strict, serve)
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".installed-extras"


def ensure_env(extras: str) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036  (run by whatever python3 the user has)
        sys.exit(f"Python 3.11+ is required, this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        print(f"creating {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    installed = STAMP.read_text().split(",") if STAMP.exists() else []
    wanted = extras.split(",")
    if not set(wanted) <= set(installed):
        merged = ",".join(sorted(set(installed) | set(wanted)))
        print(f"installing callscaler-async[{merged}] into .venv ...", flush=True)
        subprocess.run(
            [str(PYTHON), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e",
             f"{ROOT}[{merged}]"],
            check=True,
        )
        STAMP.write_text(merged)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "help"
    rest = argv[1:]
    if command == "demo":
        ensure_env("cli")
        return subprocess.call([str(BIN / "callscaler"), "demo", *rest], cwd=ROOT)
    if command == "test":
        ensure_env("test")
        return subprocess.call([str(PYTHON), "-m", "pytest", *rest], cwd=ROOT)
    if command == "lint":
        ensure_env("dev")
        code = subprocess.call([str(PYTHON), "-m", "ruff", "check", "."], cwd=ROOT)
        return code or subprocess.call([str(PYTHON), "-m", "mypy"], cwd=ROOT)
    if command == "docs":
        ensure_env("docs")
        mkdocs = [str(PYTHON), "-m", "mkdocs"]
        # The theme's and plugins' notices about MkDocs' future, printed on every build.
        env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
        if rest and rest[0] == "serve":
            return subprocess.call([*mkdocs, *rest], cwd=ROOT, env=env)
        return subprocess.call([*mkdocs, "build", *rest], cwd=ROOT, env=env)
    print(__doc__)
    return 0 if command == "help" else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
