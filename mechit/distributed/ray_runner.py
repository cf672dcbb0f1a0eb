"""``--ray [ADDRESS]``: a dataset attribution run on Ray actors, merged into the single-process tables.

:func:`run_tasks_on_ray` is the one Ray loop (also behind ``mechit compare --ray``,
:mod:`mechit.distributed.jobs`): the driver starts ``workers`` actors (:class:`RayWorker`):
one per GPU of the cluster, or ``--workers N`` CPU actors of ``threads`` threads each;
each builds its work once and runs the tasks handed to it from a :class:`ray.util.ActorPool`.
For ``mechit attribute`` (:func:`run_on_ray`) the work is an :class:`AttributionWorker` and
there is one task per (model, example), models in order and the longest
examples first, so each actor pulls the next example when it is free and a long prompt
never leaves the others idle. Each actor loads a model once (and the next model when the
queue reaches it), writes each example's atomic record itself, and returns its id; the
driver shows one progress bar with an ETA and, at the end, merges the records into the
tables (:func:`mechit.distributed.merge.write_tables`).

Failures are Ray's to handle: an actor that dies (SIGKILL, out of memory, a lost node)
is restarted (``max_restarts``) and its unfinished task is run again on it
(``max_task_retries``). A record is written atomically only when its example is complete
and keyed by (model, example), so a redone example is neither lost nor duplicated. A
rerun of the same command resumes from the records; a second driver on the same
directory is refused (:mod:`mechit.distributed.lock`).

Ray is the optional extra ``mechit[ray]``; it is imported when a Ray run starts.

>>> run_on_ray(["organism-base", "organism-tuned"], records, "runs/attr", workers=2)  # doctest: +SKIP
{'done': 720, 'failed': 0, 'failures': [], 'empty': 0, 'empty_responses': []}
"""

from __future__ import annotations

import functools
import gc
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mechit.attribution.dataset import _one, record_inputs
from mechit.data.prompts import PromptRecord
from mechit.distributed.lock import run_lock
from mechit.distributed.merge import write_tables
from mechit.distributed.runs import generated_length, prepare_run
from mechit.distributed.shards import longest_first
from mechit.errors import InputError, MechitError
from mechit.models import load_model
from mechit.store import RecordStore, remove_stale_temporaries

IN_FLIGHT = 2  # tasks queued on each actor at a time


def import_ray():
    """The ``ray`` module, or a one-line MechitError saying how to install it.

    >>> import_ray().__name__  # doctest: +SKIP
    'ray'
    """
    try:
        import ray  # the optional extra: imported only when a Ray run is asked for
    except ImportError:
        raise MechitError("--ray needs Ray, which is not installed: pip install 'mechit[ray]'") from None
    return ray


class RayWorker:
    """The body of every Ray actor: builds its work once (``make()``, e.g. loading a model), then runs
    each task it is handed (``work(*task)``). ``threads`` sets torch's thread count in the actor's process.

    >>> worker = RayWorker(lambda: len, threads=1)
    >>> worker.run("abc")
    3
    """

    def __init__(self, make: Callable[[], Callable], threads: int):
        torch.set_num_threads(threads)
        self.work = make()

    def run(self, *task):
        """``work(*task)``: one task, whose result goes back to the driver."""
        return self.work(*task)

    def pid(self) -> int:
        """The actor's process id."""
        return os.getpid()


class AttributionWorker:
    """The work of one attribution actor: attributes the examples it is handed and writes their records.

    It holds one model at a time, loaded by ``loader(spec)`` when the first example of
    that model arrives.

    >>> worker = AttributionWorker(".", load_model, {}, "reference")
    >>> from mechit.data.prompts import PromptRecord
    >>> worker("organism-tuned", PromptRecord("bad", "hi", None, error="bad: no response"))
    ('organism-tuned', 'bad')
    >>> worker.spec is None                       # an example with an error loads no model
    True
    """

    def __init__(self, out: str | Path, loader: Callable, options: dict, response: str):
        self.store = RecordStore(out)
        self.loader, self.options, self.response = loader, options, response
        self.spec, self.model = None, None

    def _model(self, spec: str):
        if spec != self.spec:
            self.spec, self.model = None, None
            gc.collect()
            self.model, self.spec = self.loader(spec), spec
        return self.model

    def __call__(self, spec: str, record: PromptRecord, inputs: dict | None = None) -> tuple[str, str]:
        """Attribute one example under ``spec`` and write its record, keyed by ``inputs``
        (:func:`mechit.attribution.dataset.record_inputs`), unless it has one; return (spec, id)."""
        if self.store.state(spec, record.id, inputs) != "done":  # a retried task whose record was written before the kill
            model = self._model(spec) if record.error is None else None
            stored, tensors = _one(model, spec, record, self.options, self.response)
            self.store.write(spec, record.id, stored, tensors=tensors, inputs=inputs)
        return spec, record.id


def worker_count(resources: dict, workers: int | None, threads: int) -> tuple[int, bool]:
    """(number of actors, whether each takes a GPU) for a cluster with ``resources``.

    One actor per GPU when the cluster has GPUs and ``workers`` is None; else ``workers``
    CPU actors (default: the cluster's CPUs divided by ``threads``).

    >>> worker_count({"CPU": 16.0, "GPU": 4.0}, None, 1), worker_count({"CPU": 16.0}, None, 2)
    ((4, True), (8, False))
    >>> worker_count({"CPU": 16.0, "GPU": 4.0}, 3, 1)
    (3, False)
    """
    if workers is not None:
        if workers < 1:
            raise InputError(f"--workers {workers}: must be at least 1")
        return workers, False
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return gpus, True
    return max(1, int(resources.get("CPU", 1)) // threads), False


def run_tasks_on_ray(
    tasks: Sequence[tuple],
    make: Callable[[], Callable],
    *,
    address: str | None = None,
    workers: int | None = None,
    threads: int = 1,
    retries: int = 3,
    progress: bool = True,
    desc: str = "examples",
) -> None:
    """Run ``work(*task)`` for every task on Ray actors (:class:`RayWorker`), each building its
    ``work = make()`` once; tasks are handed out in the given order to whichever actor is free.

    ``address``: the Ray cluster (None: the one ``ray.init`` finds, ``$RAY_ADDRESS`` or a new
    local one; an already initialised Ray is used as it is). ``workers``: CPU actors (see
    :func:`worker_count`); ``threads``: torch threads (and Ray CPUs) per actor; ``retries``:
    restarts of a dead actor and reruns of its task. ``make`` runs in the actors, so it must
    pickle (a module-level function, a ``functools.partial`` of one, a bound method of a
    picklable object). Each actor holds :data:`IN_FLIGHT` tasks, so it starts the next one
    without waiting for a round trip to the driver. The driver shows one progress bar. A
    task that raises a :class:`mechit.errors.MechitError` stops the run with that error, as
    in one process.

    >>> run_tasks_on_ray([(spec, record, None)], functools.partial(AttributionWorker, "runs/attr", load_model,
    ...                  {}, "reference"), workers=2)                                   # doctest: +SKIP
    """
    ray = import_ray()
    from ray.util import ActorPool

    if threads < 1:
        raise InputError(f"--threads {threads}: must be at least 1")
    if not tasks:
        return
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, log_to_driver=False)
    actors = []
    try:
        n_workers, gpu = worker_count(ray.cluster_resources(), workers, threads)
        actor = ray.remote(num_cpus=threads, num_gpus=1 if gpu else 0, max_restarts=retries,
                           max_task_retries=retries)(RayWorker)
        actors = [actor.remote(make, threads) for _ in range(min(n_workers, len(tasks)))]
        pool = ActorPool(actors * IN_FLIGHT)  # an actor listed twice holds a second task while it runs the first
        for task in tasks:
            pool.submit(lambda a, t: a.run.remote(*t), task)
        bar = tqdm(total=len(tasks), desc=f"{desc} on {len(actors)} Ray workers", unit="ex",
                   file=sys.stderr, disable=not progress)
        while pool.has_next():
            try:
                pool.get_next_unordered()
            except ray.exceptions.RayTaskError as error:  # a task's own error: as in one process, one line
                if isinstance(error.cause, MechitError):
                    raise error.cause from None
                raise
            bar.update()
        bar.close()
    finally:
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()


def run_on_ray(
    specs: Sequence[str],
    records: Sequence[PromptRecord],
    out: str | Path,
    address: str | None = None,
    workers: int | None = None,
    *,
    response: str = "reference",
    table_format: str = "parquet",
    loader: Callable | None = None,
    progress: bool = True,
    threads: int = 1,
    retries: int = 3,
    **options,
) -> dict:
    """Attribute every example under every model spec on Ray actors; write the tables; return the summary.

    ``address``, ``workers``, ``threads`` and ``retries``: see :func:`run_tasks_on_ray`. The
    other arguments, the written files and the summary are those of
    :func:`mechit.attribution.attribute_dataset`. ``loader`` runs in the actors, so it
    must pickle (a module-level function or a ``functools.partial`` of one).

    >>> run_on_ray(["organism-tuned"], records, "runs/attr", "ray://head:10001")  # doctest: +SKIP
    {'done': 360, 'failed': 0, 'failures': [], 'empty': 0, 'empty_responses': []}
    """
    import_ray()  # before any file is written: a user without Ray gets the one-line error first
    if threads < 1:
        raise InputError(f"--threads {threads}: must be at least 1")
    out = prepare_run(specs, records, out, response=response, table_format=table_format, options=options)
    store = RecordStore(out)
    ordered = longest_first(records, generated_length(response, options))
    with run_lock(out, "ray driver"):
        remove_stale_temporaries(out)  # left by writers killed in an earlier run
        inputs = {spec: record_inputs(spec, ordered) for spec in specs}
        todo = [(spec, r, inputs[spec][r.id]) for spec in specs for r in ordered
                if store.state(spec, r.id, inputs[spec][r.id]) != "done"]
        make = functools.partial(AttributionWorker, str(out.resolve()), loader or load_model, options, response)
        run_tasks_on_ray(todo, make, address=address, workers=workers, threads=threads, retries=retries,
                         progress=progress, desc="attribute")
        return write_tables(out, specs, [r.id for r in records], table_format)
