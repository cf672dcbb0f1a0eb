"""The run lock: a live holder in another process is refused by name, a killed one's lock is taken over."""

import os
import signal
import subprocess
import sys

import pytest

from mechit.distributed.lock import lock_path, run_lock
from mechit.errors import InputError

HOLD = """
import sys, time
from mechit.distributed.lock import run_lock
with run_lock(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """A separate process holding the 'ray driver' lock of tmp_path until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "ray driver"], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout.readline().strip() == "held"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_live_holder_is_refused_by_pid(holder, tmp_path):
    with pytest.raises(InputError, match=rf"another mechit ray driver is running on this directory \(pid {holder.pid} on "):
        with run_lock(tmp_path, "ray driver"):
            pass
    with run_lock(tmp_path, "shard 0/2"):  # another role is not blocked
        pass


def test_lock_of_killed_holder_is_taken_over(holder, tmp_path):
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    path = lock_path(tmp_path, "ray driver")
    assert f"pid {holder.pid} " in path.read_text()  # the stale file is still there
    with run_lock(tmp_path, "ray driver"):
        assert path.read_text().startswith(f"pid {os.getpid()} ")
    assert not path.exists()  # removed by its holder at the end


def test_lock_is_released_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with run_lock(tmp_path, "ray driver"):
            raise RuntimeError("boom")
    with run_lock(tmp_path, "ray driver"):
        pass
