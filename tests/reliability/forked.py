"""Helpers of the process-level tests: a client of the fork server (``_fork_runner.py``)
and views of a run's output directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

RUNNER = Path(__file__).with_name("_fork_runner.py")


class Runner:
    """Client of the fork server."""

    def __init__(self, cwd: Path, **env_vars: str):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env_vars}
        self.proc = subprocess.Popen([sys.executable, str(RUNNER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=cwd, env=env)
        assert self._read() == {"ready": True}

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, "fork runner died"
        return json.loads(line)

    def _send(self, obj) -> dict:
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def start(self, argv: list[str], log: Path) -> int:
        return self._send({"argv": argv, "log": str(log)})["pid"]

    def wait(self, pid: int) -> int:
        return self._send({"wait": pid})["status"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def running(pid: int) -> bool:
    """Whether ``pid`` is alive and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def records_done(out: Path) -> list[Path]:
    return [p for p in (out / "records").rglob("*.json") if not p.name.startswith(".")] if out.exists() else []


def files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def leftovers(out: Path) -> list[str]:
    """Temporary files under ``out`` (``*.tmp``, mechit's or not)."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*.tmp"))


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    return int(child.stdout)


def plant_stale_temporary(directory: Path) -> Path:
    """A half-written temporary file as a writer killed inside ``mechit.store.atomic_path`` leaves it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f".planted.json.mechit-{dead_pid()}-abcd1234.tmp"
    path.write_text('{"half": ')
    return path
