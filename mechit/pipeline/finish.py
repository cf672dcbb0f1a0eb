"""``mechit merge DIR`` on a ``mechit compare`` directory: the rest of a sharded or Ray comparison, in process.

The last shard (or the Ray driver) finishes a comparison by itself. When it was stopped,
:func:`finish_compare` does the same by hand: it reads the arguments the run left
(``DIR/compare_run.json``), refuses in one line while some example misses its per-prompt
records, and otherwise runs ``compare`` with those arguments, which finds every record and
computes only the weight stages, the tables, the summary and the report.

>>> finish_compare("nowhere")
Traceback (most recent call last):
...
mechit.errors.InputError: nowhere: no compare_run.json, the arguments a sharded or Ray `mechit compare` leaves; finish a run started without --shard or --ray by rerunning the same `mechit compare`
"""

from __future__ import annotations

from pathlib import Path

from mechit.errors import InputError
from mechit.pipeline.prompt_work import PromptJob, read_arguments
from mechit.pipeline.run import compare


def finish_compare(out: str | Path, *, progress: bool = True) -> Path:
    """Finish the comparison in ``out`` from its records; return the report's path (or ``out``).

    >>> finish_compare("runs/organism")                              # doctest: +SKIP
    PosixPath('runs/organism/report.html')
    """
    arguments = read_arguments(out)

    def refuse_missing(job: PromptJob) -> int:
        missing = [r.id for r in job.examples if job.missing(r)]
        if missing:
            raise InputError(f"{out}: {len(missing)} of {len(job.examples)} examples miss per-prompt records "
                             f"(first: {missing[0]}); finish the run (rerun the shards that did not complete, "
                             "or the same command), then merge")
        return 0

    return compare(out=out, per_prompt=refuse_missing, progress=progress, **arguments)
