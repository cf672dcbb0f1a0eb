"""The shard split: deterministic, a partition, balanced by estimated work, independent of progress."""

import random

import pytest

from mechit.data.prompts import PromptRecord
from mechit.distributed.shards import (
    estimated_tokens,
    example_cost,
    longest_first,
    parse_shard,
    shard_records,
    split_by_cost,
)
from mechit.errors import InputError


def test_split_hand_computed():
    # longest first to the least-loaded part: 9->0, 5->1, 3->1 (8), 1(i1)->1 (9), 1(i2)->0 (10), 1(i3)->1 (10)
    assert split_by_cost([9, 1, 1, 1, 5, 3], 2) == [[0, 2], [1, 3, 4, 5]]
    assert split_by_cost([], 3) == [[], [], []]


@pytest.mark.parametrize("n_shards", [1, 2, 3, 7])
def test_split_is_a_balanced_partition(n_shards):
    rng = random.Random(n_shards)
    costs = [rng.randint(1, 500) for _ in range(200)]
    parts = split_by_cost(costs, n_shards)
    assert sorted(i for part in parts for i in part) == list(range(len(costs)))  # every index once
    loads = [sum(costs[i] for i in part) for part in parts]
    # the LPT rule: no part exceeds another by more than the largest single cost
    assert max(loads) - min(loads) <= max(costs)
    assert split_by_cost(costs, n_shards) == parts  # deterministic


def test_balance_is_by_work_not_by_count():
    # one long example and six short ones: the long one gets a shard to itself
    records = [PromptRecord("long", "w " * 200, "r " * 40)] + [PromptRecord(f"s{k}", "w w", "r") for k in range(6)]
    assert [r.id for r in shard_records(records, 0, 2)] == ["long"]
    assert [r.id for r in shard_records(records, 1, 2)] == [f"s{k}" for k in range(6)]


def test_shards_keep_file_order_and_cover_the_set():
    rng = random.Random(0)
    records = [PromptRecord(f"e{k}", "w " * rng.randint(1, 50), "r " * rng.randint(1, 9)) for k in range(40)]
    shards = [shard_records(records, i, 3) for i in range(3)]
    ids = [r.id for s in shards for r in s]
    assert sorted(ids) == sorted(r.id for r in records) and len(ids) == len(set(ids))
    position = {r.id: k for k, r in enumerate(records)}
    for shard in shards:
        assert [position[r.id] for r in shard] == sorted(position[r.id] for r in shard)


def test_cost_counts_tokens_and_generation_limit():
    assert estimated_tokens("a, b.") == 4 and estimated_tokens(None) == 0
    record = PromptRecord("a", "one two three", "four five")
    assert example_cost(record) == 2 * 5
    assert example_cost(record, response_tokens=10) == 10 * 13  # responses to be generated: the limit
    assert example_cost(PromptRecord("bad", "x", None, error="bad")) == 1
    assert [r.id for r in longest_first([PromptRecord("s", "a", "b"), record])] == ["a", "s"]


@pytest.mark.parametrize("text, message", [("2", "write I/N"), ("1/0", "N must be at least 1"),
                                           ("4/4", "0..N-1"), ("-1/3", "write I/N")])
def test_parse_shard_refuses_bad_input(text, message):
    with pytest.raises(InputError, match=message):
        parse_shard(text)
    assert parse_shard(" 0 / 1 ") == (0, 1)
