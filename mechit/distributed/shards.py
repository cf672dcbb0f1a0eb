"""Shards any scheduler can fan out: a deterministic split of a prompt set, balanced by tokens.

``mechit attribute ... --shard I/N`` processes the examples of shard ``I`` (0-based, as
``$SLURM_ARRAY_TASK_ID`` and Kubernetes' ``$JOB_COMPLETION_INDEX`` count). The split
depends only on the whole prompt set and ``N``, never on what is already done, so a shard
rerun after a crash takes the same examples and resumes them from their records.

Balance is by work, not by count of examples. Attributing one example costs one backward
pass per response token, each over the whole sequence, so its cost is estimated as
``response tokens x (prompt tokens + response tokens)``. Tokens are counted without a
tokenizer (words and punctuation marks, :func:`estimated_tokens`), so every shard, on any
machine, computes the same split before loading a model. Examples are dealt out longest
first, each to the shard with the least work so far (the LPT rule; ties go to the lower
index), then every shard keeps its examples in file order.

>>> from mechit.data.prompts import PromptRecord
>>> records = [PromptRecord(f"e{k}", "word " * n, "ok") for k, n in enumerate([9, 1, 1, 1, 5, 3])]
>>> [[r.id for r in shard_records(records, i, 2)] for i in range(2)]
[['e0', 'e1', 'e3'], ['e2', 'e4', 'e5']]
"""

from __future__ import annotations

import heapq
import re
from typing import Sequence

from mechit.data.prompts import PromptRecord
from mechit.errors import InputError

_TOKEN = re.compile(r"\w+|[^\w\s]")


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)``, with ``0 <= I < N``.

    >>> parse_shard("2/3")
    (2, 3)
    >>> parse_shard("3/3")
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: --shard '3/3': I must be in 0..N-1 (shards are counted from 0, e.g. 0/3, 1/3, 2/3)
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise InputError(f"--shard {text!r}: write I/N, e.g. 0/4 for the first of 4 shards")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise InputError(f"--shard {text!r}: N must be at least 1")
    if index >= count:
        raise InputError(f"--shard {text!r}: I must be in 0..N-1 (shards are counted from 0, e.g. 0/3, 1/3, 2/3)")
    return index, count


def estimated_tokens(text) -> int:
    """Words and punctuation marks in ``text`` (0 for anything but a string): a tokenizer-free token count.

    >>> estimated_tokens("Translate this, please: the cat")
    7
    """
    return len(_TOKEN.findall(text)) if isinstance(text, str) else 0


def example_cost(record: PromptRecord, response_tokens: int | None = None) -> int:
    """Estimated work of attributing ``record``: response tokens x all tokens (at least 1).

    ``response_tokens`` replaces the record's response length (for generated responses,
    pass the generation limit). A record with an error costs 1: it is only written down.

    >>> example_cost(PromptRecord("a", "one two three", "four five"))
    10
    >>> example_cost(PromptRecord("a", "one two three", None), response_tokens=4)
    28
    """
    if record.error:
        return 1
    n_prompt = estimated_tokens(record.prompt)
    n_response = estimated_tokens(record.response) if response_tokens is None else response_tokens
    return max(1, n_response * (n_prompt + n_response))


def split_by_cost(costs: Sequence[int], n_shards: int) -> list[list[int]]:
    """Indices of ``costs`` dealt into ``n_shards`` parts of near-equal total cost, each part sorted.

    Longest first, each to the part with the least total so far (ties: the lower part).

    >>> split_by_cost([9, 1, 1, 1, 5, 3], 2)
    [[0, 2], [1, 3, 4, 5]]
    >>> split_by_cost([4, 4, 4], 4)
    [[0], [1], [2], []]
    """
    if n_shards < 1:
        raise InputError(f"cannot split into {n_shards} shards: need at least 1")
    parts: list[list[int]] = [[] for _ in range(n_shards)]
    loads = [(0, shard) for shard in range(n_shards)]  # a heap of (total cost, shard)
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, shard = heapq.heappop(loads)
        parts[shard].append(index)
        heapq.heappush(loads, (load + costs[index], shard))
    return [sorted(part) for part in parts]


def shard_records(records: Sequence[PromptRecord], index: int, n_shards: int,
                  response_tokens: int | None = None) -> list[PromptRecord]:
    """The records of shard ``index`` of ``n_shards``, in file order (see :func:`example_cost`).

    >>> recs = [PromptRecord(f"e{k}", "a b", "c") for k in range(5)]
    >>> [r.id for r in shard_records(recs, 1, 2)]
    ['e1', 'e3']
    """
    if not 0 <= index < n_shards:
        raise InputError(f"shard {index}/{n_shards}: the index must be in 0..{n_shards - 1}")
    costs = [example_cost(r, response_tokens) for r in records]
    return [records[i] for i in split_by_cost(costs, n_shards)[index]]


def longest_first(records: Sequence[PromptRecord], response_tokens: int | None = None) -> list[PromptRecord]:
    """``records`` by decreasing :func:`example_cost` (file order among equals): the order a work queue
    should hand them out in, so that a long example does not start last and leave the other workers idle.

    >>> recs = [PromptRecord("short", "a", "b"), PromptRecord("long", "a b c d", "e f")]
    >>> [r.id for r in longest_first(recs)]
    ['long', 'short']
    """
    costs = [example_cost(r, response_tokens) for r in records]
    return [records[i] for i in sorted(range(len(records)), key=lambda i: (-costs[i], i))]
