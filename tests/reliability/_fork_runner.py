"""A fork server for the kill tests: import mechit and its heavy dependencies once, then run
each ``mechit`` command in a forked child that the test can SIGKILL.

Starting ``mechit`` afresh costs ~10 s of imports on a busy 2-core machine; a fork costs
milliseconds, and the child is a real, separate process doing the run. This process never
runs a torch operation itself, so forking is safe (no OpenMP pool to inherit).

Protocol, one JSON object per line: on stdin ``{"argv": [...], "log": PATH}`` starts
``mechit.cli.main(argv)`` in a child (stdout and stderr to ``log``) and answers
``{"pid": N}``; ``{"wait": N}`` reaps child N and answers ``{"status": S}`` (exit code, or
minus the signal number). EOF ends the server. Children use ``RUNNER_THREADS`` torch threads (default 1).
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import mechit.attribution.dataset  # noqa: E402,F401  (torch, transformers, pandas)
import mechit.cli  # noqa: E402
import mechit.models  # noqa: E402,F401
import transformer_lens.model_bridge  # noqa: E402,F401


def _child(argv: list[str], log: str) -> None:
    import torch

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    torch.set_num_threads(int(os.environ.get("RUNNER_THREADS", "1")))
    try:
        code = mechit.cli.main(argv)
    except BaseException as error:  # noqa: BLE001 - report and exit, never return to the server loop
        print(f"runner: {type(error).__name__}: {error}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if "argv" in request:
            pid = os.fork()
            if pid == 0:
                _child(request["argv"], request["log"])
            print(json.dumps({"pid": pid}), flush=True)
        elif "wait" in request:
            _, status = os.waitpid(request["wait"], 0)
            code = os.waitstatus_to_exitcode(status)
            print(json.dumps({"status": code}), flush=True)


if __name__ == "__main__":
    main()
