"""The per-prompt work of ``mechit compare``, one example at a time, resumable through records.

Three stages of a comparison do work per prompt, and each keeps one atomic record per
(model, example) (:class:`mechit.store.RecordStore`), so a run resumes example by example
and any process can do any example:

- attribution: ``DIR/records`` and ``DIR/tensors`` (:func:`mechit.attribution.attribute_dataset`
  with the model names "base" and "tuned");
- faithfulness: ``DIR/ablation``, the ablation of an example the attribution scored, on the
  attributed response (:func:`ablate_example`);
- heads: ``DIR/attention``, the instruction attention of an example (:func:`attend`).

The stages themselves (:mod:`mechit.pipeline.stages`) read these records into their
tables. :class:`PromptJob` does all three for one example on both models: the unit of
``mechit compare --shard I/N`` and ``--ray`` (:mod:`mechit.distributed.jobs`), which leave
every record the single-process run would write, so the comparison that follows finds
them all and builds the same tables.

>>> from mechit.organism import held_out_prompts
>>> store = attention_store("run")
>>> attend(store, "tuned", model, held_out_prompts()[0], chat=True)
>>> attention_table(store, ["tuned"], held_out_prompts()[:1]).shape == (model.cfg.n_layers * model.cfg.n_heads, 11)
True
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from mechit.attribution.ablation import COLUMNS as ABLATION_COLUMNS
from mechit.attribution.ablation import ablate_prompts
from mechit.attribution.dataset import _one, open_run_manifest, record_inputs
from mechit.data.prompts import PromptRecord
from mechit.errors import InputError
from mechit.heads.attention import COLUMNS as ATTENTION_COLUMNS
from mechit.heads.attention import instruction_attention
from mechit.models import ModelPair, load_pair, tag_model, weights_fingerprint
from mechit.pipeline.context import Options, run_threads
from mechit.store import RecordStore, write_json

PER_PROMPT_STAGES = ("attribution", "faithfulness", "heads")
ARGUMENTS = "compare_run.json"


def attention_store(out: str | Path) -> RecordStore:
    """The records of instruction attention: ``DIR/attention``.

    >>> attention_store("run").directory
    PosixPath('run/attention')
    """
    return RecordStore(Path(out) / "attention")


def ablation_store(out: str | Path) -> RecordStore:
    """The records of the faithfulness stage's ablations: ``DIR/ablation``.

    >>> ablation_store("run").directory
    PosixPath('run/ablation')
    """
    return RecordStore(Path(out) / "ablation")


def attend(store: RecordStore, name: str, model, record: dict, *, chat: bool) -> None:
    """Store the instruction attention (:func:`mechit.heads.attention.instruction_attention`) of
    one prompt record (a dict of the JSONL schema) under model ``name``, unless it is stored.

    >>> from mechit.organism import held_out_prompts
    >>> attend(attention_store("run"), "tuned", model, held_out_prompts()[0], chat=True)
    >>> len(attention_store("run").read("tuned", "translate-000")["rows"]) == model.cfg.n_layers * model.cfg.n_heads
    True
    """
    if not store.done(name, record["id"]):
        frame = instruction_attention(model, [record], chat_template=chat, progress=False)
        store.write(name, record["id"], {"rows": frame.to_dict("records")})


def attention_table(store: RecordStore, names: list[str], records: list[dict]) -> pd.DataFrame:
    """The ``instruction_attention`` table from the stored records: models in ``names`` order
    (first column ``model``), then records in order; the frame ``pair.run(instruction_attention,
    records)`` returns.

    >>> attention_table(attention_store("empty"), ["base"], []).columns[:3].tolist()
    ['model', 'id', 'group']
    """
    frames = [tag_model(pd.DataFrame([row for r in records for row in store.read(name, r["id"])["rows"]],
                                     columns=ATTENTION_COLUMNS), name) for name in names]
    return pd.concat(frames, ignore_index=True)


def ablate_example(store: RecordStore, name: str, model, record: PromptRecord, *, how: str, chat: bool) -> None:
    """Store the ablation (:func:`mechit.attribution.ablation.ablate_prompts`) of one example
    under model ``name``, on ``record.response`` (the attributed response), unless it is stored.

    >>> from mechit.organism import held_out_prompts
    >>> r = held_out_prompts()[0]
    >>> ablate_example(ablation_store("run"), "tuned", model, PromptRecord(r["id"], r["prompt"], r["response"],
    ...                tuple(map(tuple, r["instruction_spans"])), r["group"]), how="remove", chat=True)
    >>> sorted({row["part"] for row in ablation_store("run").read("tuned", r["id"])["rows"]})
    ['context', 'instruction']
    """
    if not store.done(name, record.id):
        frame = ablate_prompts(model, [record], how=how, chat_template=chat, progress=False)
        store.write(name, record.id, {"rows": frame.to_dict("records")})


def ablation_frame(store: RecordStore, name: str, records: list[PromptRecord]) -> pd.DataFrame:
    """The stored ablation rows of model ``name`` for ``records``, in order (columns of
    :func:`mechit.attribution.ablation.ablate_prompts`).

    >>> ablation_frame(ablation_store("empty"), "base", []).columns[:3].tolist()
    ['id', 'group', 'error']
    """
    rows = [row for record in records for row in store.read(name, record.id)["rows"]]
    return pd.DataFrame(rows, columns=["id", "group", "error", *ABLATION_COLUMNS])


def save_arguments(out: str | Path, arguments: dict) -> Path:
    """Write the arguments of :func:`mechit.pipeline.run.compare` (``DIR/compare_run.json``;
    the prompt file as an absolute path, the options as a dict) for a later ``mechit merge DIR``.

    >>> from mechit.pipeline.context import Options
    >>> _ = save_arguments("run", {"base": None, "prompts": "p.jsonl", "options": Options(seed=3)})
    >>> read_arguments("run")["options"].seed, Path(read_arguments("run")["prompts"]).is_absolute()
    (3, True)
    """
    stored = {**arguments, "options": dataclasses.asdict(arguments["options"])}
    if stored.get("prompts") is not None:
        stored["prompts"] = str(Path(stored["prompts"]).resolve())
    if isinstance(stored.get("dtype"), torch.dtype):
        stored["dtype"] = str(stored["dtype"]).removeprefix("torch.")
    return write_json(Path(out) / ARGUMENTS, stored)


def read_arguments(out: str | Path) -> dict:
    """The arguments :func:`save_arguments` wrote in ``out``, options as :class:`Options`.

    >>> read_arguments("nowhere")
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: nowhere: no compare_run.json, the arguments a sharded or Ray `mechit compare` leaves; finish a run started without --shard or --ray by rerunning the same `mechit compare`
    """
    path = Path(out) / ARGUMENTS
    if not path.is_file():
        raise InputError(f"{out}: no {ARGUMENTS}, the arguments a sharded or Ray `mechit compare` leaves; finish a "
                         "run started without --shard or --ray by rerunning the same `mechit compare`")
    stored = json.loads(path.read_text(encoding="utf-8"))
    return {**stored, "options": Options(**stored["options"])}


def prompt_records(records: list[dict]) -> list[PromptRecord]:
    """:class:`mechit.data.prompts.PromptRecord` objects from prompt dicts (the JSONL schema).

    >>> prompt_records([{"id": "a", "prompt": "Say hi", "response": None, "instruction_spans": [[0, 3]]}])[0].instruction_spans
    ((0, 3),)
    """
    fields = ("id", "prompt", "response", "group", "label", "source", "error")
    return [PromptRecord(**{k: r[k] for k in fields if k in r},
                         instruction_spans=tuple(tuple(s) for s in r.get("instruction_spans") or ()))
            for r in records]


def chat_of(pair: ModelPair) -> bool:
    """Wrap prompts in the chat template when both tokenizers have one (the organism's do), for both models alike.

    >>> chat_of(pair)
    True
    """
    return all(getattr(pair.weights(name).tokenizer, "chat_template", None) for name in pair.names)


def attribution_options(pair: ModelPair, max_new_tokens: int) -> dict:
    """The options of compare's attribution records (those of its ``attribution_run.json``).

    >>> attribution_options(pair, 32)
    {'max_new_tokens': 32, 'chat_template': True}
    """
    return {"max_new_tokens": max_new_tokens, "chat_template": chat_of(pair)}


def attribution_fingerprints(specs: dict[str, str]) -> dict[str, str | None]:
    """The weights fingerprint of each model name ("base", "tuned") from its spec: what the
    attribution records are keyed by.

    >>> attribution_fingerprints({"tuned": "organism-tuned"})["tuned"] is not None
    True
    """
    return {name: weights_fingerprint(spec) for name, spec in specs.items()}


@dataclass
class PromptJob:
    """The per-prompt work of one comparison: ``job(record)`` does one example's attribution,
    ablation and instruction attention, under both models, for the ``stages`` asked for, and
    writes their records (those a single-process ``compare`` writes). Picklable: a Ray actor
    builds its copy with :meth:`loaded`, which loads the pair once.

    ``specs``: {"base": spec, "tuned": spec}; ``loading``: the keyword arguments of
    :func:`mechit.models.load_pair`; ``records``: the prompt dicts of the run; ``stages``: the
    stages to run (those without per-prompt work are left out); ``options``: an :class:`Options`.

    >>> from mechit.organism import held_out_prompts
    >>> from mechit.pipeline.context import Options
    >>> job = PromptJob("run", {"base": "organism-base", "tuned": "organism-tuned"}, {},
    ...                 held_out_prompts()[:2], ["heads"], Options()).loaded()
    >>> job.missing(job.examples[0])
    True
    >>> job(job.examples[0])
    'translate-000'
    >>> job.missing(job.examples[0]), job.missing(job.examples[1])
    (False, True)
    """

    out: str | Path
    specs: dict[str, str]
    loading: dict
    records: list[dict]
    stages: list[str]
    options: Options
    pair: ModelPair | None = field(default=None, repr=False)

    def __post_init__(self):
        self.out = Path(self.out).resolve()  # Ray actors may start in another working directory
        self.stages = [s for s in self.stages if s in PER_PROMPT_STAGES]
        self.examples = prompt_records(self.records)
        self._dicts = {r["id"]: r for r in self.records}
        fingerprints = attribution_fingerprints(self.specs)
        self._inputs = {name: record_inputs(name, self.examples, fingerprints) for name in self.specs}
        self._store, self._ablation, self._attention = (RecordStore(self.out), ablation_store(self.out),
                                                        attention_store(self.out))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "pair": None}  # each actor loads its own pair

    @property
    def response_tokens(self) -> int | None:
        """The response length a split assumes for every example when responses are generated, else None."""
        return self.options.max_new_tokens if self.options.response == "generate" else None

    def loaded(self) -> PromptJob:
        """This job with the pair loaded, torch's threads set as
        ``compare`` sets them (:func:`mechit.pipeline.context.run_threads`), and the attribution
        manifest written or checked (as :func:`mechit.attribution.attribute_dataset` does)."""
        if self.pair is None:
            self.pair = load_pair(self.specs["base"], self.specs["tuned"], **self.loading)
            # the thread count of a single-process compare: the products' rounding depends on it
            n_parameters = self.pair.description("base")["parameters"]
            torch.set_num_threads(run_threads(n_parameters, self.options.threads, torch.get_num_threads()))
        if "attribution" in self.stages:
            open_run_manifest(self.out, list(self.specs), self.examples, self.options.response, self._attribution)
        return self

    @property
    def _attribution(self) -> dict:
        return attribution_options(self.pair, self.options.max_new_tokens)

    def _attributed(self, name: str, record: PromptRecord) -> PromptRecord | None:
        """``record`` with the response its attribution under ``name`` used, or None when it scored none."""
        if not self._store.done(name, record.id):
            return None
        example = self._store.read(name, record.id)["example"]
        return dataclasses.replace(record, response=example["response"]) if example["status"] == "ok" else None

    def missing(self, record: PromptRecord) -> bool:
        """Whether some record of this example that the stages need is not written yet."""
        for name in self.specs:
            if "attribution" in self.stages and self._store.state(name, record.id, self._inputs[name][record.id]) != "done":
                return True
            if ("faithfulness" in self.stages and not self._ablation.done(name, record.id)
                    and self._attributed(name, record) is not None):
                return True
            if "heads" in self.stages and not self._attention.done(name, record.id):
                return True
        return False

    def __call__(self, record: PromptRecord) -> str:
        """Do what is missing of ``record``'s per-prompt work under both models; return its id."""
        chat = chat_of(self.pair)
        for name, model in self.pair:
            if "attribution" in self.stages:
                inputs = self._inputs[name][record.id]
                if self._store.state(name, record.id, inputs) != "done":
                    stored, tensors = _one(model, name, record, self._attribution, self.options.response)
                    self._store.write(name, record.id, stored, tensors=tensors, inputs=inputs)
            attributed = self._attributed(name, record) if "faithfulness" in self.stages else None
            if attributed is not None:
                ablate_example(self._ablation, name, model, attributed, how=self.options.ablation, chat=chat)
            if "heads" in self.stages:
                attend(self._attention, name, model, self._dicts[record.id], chat=chat)
        return record.id
