"""The organism's generator, spans, tokenizer, public helpers and argument checks."""

from __future__ import annotations

import random

import pytest

from mechit.errors import InputError
from mechit.organism import corpus, format_prompt, held_out_prompts, prose, tasks, vocabulary, world
from mechit.organism.api import corpus_text
from mechit.organism.chat import ASSISTANT, BOS, EOS, USER, format_response, prompt_offset
from mechit.organism.data import instruction_rows, lm_rows
from mechit.organism.tokenizer import tokenizer_texts, train_tokenizer
from mechit.organism.train import TrainConfig, _prepare_out, check_seed


@pytest.fixture(scope="module")
def tok():
    docs = corpus.documents(0, 3000)
    exs = tasks.training_examples(0, 900)
    return train_tokenizer(docs + tokenizer_texts(exs))


# --- generator ------------------------------------------------------------------------

def test_documents_are_deterministic_and_seed_dependent():
    assert corpus.documents(5, 200) == corpus.documents(5, 200)
    assert corpus.documents(5, 200) != corpus.documents(6, 200)
    assert corpus.heldout_documents() == corpus.heldout_documents()


def test_training_examples_are_deterministic_and_cover_every_task():
    a, b = tasks.training_examples(3, 180), tasks.training_examples(3, 180)
    assert a == b
    assert a != tasks.training_examples(4, 180)
    assert {e["task"] for e in a} == set(tasks.TASKS)
    assert len(tasks.CLOSED_TASKS) >= 8 and len(tasks.OPEN_TASKS) >= 4


def test_answers_are_right_for_hand_checked_examples():
    for ex in tasks.training_examples(0, 900):
        if ex["task"] == "arithmetic":
            a, op, b = ex["input"].split()
            n = world.NUMBER_WORDS.index
            assert n(ex["answer"]) == (n(a) + n(b) if op == "plus" else n(a) - n(b))
        elif ex["task"] == "reverse":
            assert ex["answer"].split(", ") == ex["input"].split(", ")[::-1]
        elif ex["task"] == "count":
            assert world.NUMBER_WORDS.index(ex["answer"]) == len(ex["input"].split(", "))
        elif ex["task"] == "translate":
            assert ex["answer"] == " ".join(world.ZEL[x] for x in ex["input"].split())
        elif ex["task"] == "repeat":
            assert ex["answer"] == ex["input"]
        elif ex["task"] == "qa":  # the answer is stated in the text, about a non-world entity
            assert f" {ex['answer']}." in ex["input"]
            assert not any(name in ex["input"] for name in world.PEOPLE)
        elif ex["task"] == "fact":
            assert ex["answer"] in world.FACTS[next(n for n in world.PEOPLE if n in ex["prompt"])].values()
        elif ex["task"] == "describe":
            assert ex["answer"] == prose.person_description(ex["input"])
        elif ex["task"] == "explain":
            english = next(e for e, z in world.ZEL.items() if z == ex["input"])
            assert ex["answer"].startswith(f"In Zel, {ex['input']} means {english}.")
        elif ex["task"] == "summarize":  # every fact of the summary is stated in the paragraph
            name, facts = prose.parse_summary(ex["answer"])
            assert all(prose.fact_sentence(name, k, v) in ex["input"] for k, v in facts.items()) and len(facts) == 3
        elif ex["task"] == "review":
            polarity = world.POSITIVE if "positive" in ex["prompt"] else world.NEGATIVE
            assert sum(x.strip(".,") in polarity for x in ex["answer"].split()) == 4
    assert world.ZEL["fox"] == "kima"


def test_no_instruction_phrasing_in_the_corpus():
    starts = set()
    for _, phrasings in tasks.TASKS.values():
        for before, after in phrasings:
            for part in (before, after):
                text = part.strip().split("{")[0].strip()
                if len(text) > 12:
                    starts.add(text)
    docs = corpus.documents(0, 5000)
    for text in starts:
        assert not any(text in d for d in docs), text


def test_instruction_verbs_are_plain_words_of_the_corpus():
    text = " ".join(corpus.documents(0, 5000))
    for verb in ["translate", "explain", "identify", "classify", "repeat", "tell", "solve"]:
        assert f" {verb} " in text


# --- spans ----------------------------------------------------------------------------

def test_spans_of_a_hand_built_prompt():
    assert tasks._spans("Output the result of ", "seven plus eight", ".") == [[0, 20], [37, 38]]
    assert tasks._spans("", "red fox", "\nSay this in Zel.") == [[8, 24]]
    assert tasks._spans("Tell me where Mira lives.", "", "") == [[0, 25]]


@pytest.mark.parametrize("seed", [0, 1])
def test_spans_cover_exactly_the_instruction_text(seed):
    examples = tasks.training_examples(seed, 900) + tasks.heldout_examples()
    for ex in examples:
        prompt, spans = ex["prompt"], ex["spans"]
        assert spans, ex
        start = prompt.index(ex["input"]) if ex["input"] else len(prompt)
        covered = [False] * len(prompt)
        for s, e in spans:
            assert 0 <= s < e <= len(prompt)
            assert prompt[s:e] == prompt[s:e].strip()          # no edge whitespace
            assert e <= start or s >= start + len(ex["input"])  # never the input
            covered[s:e] = [True] * (e - s)
        # every character outside the spans is the input or joining whitespace
        outside = "".join(c for c, k in zip(prompt, covered) if not k)
        assert outside.strip() == ex["input"].strip()


def test_held_out_prompt_records_follow_the_schema():
    recs = held_out_prompts()
    assert len(recs) == sum(tasks.N_HELDOUT.values()) == 20 * len(tasks.CLOSED_TASKS) + 48 * len(tasks.OPEN_TASKS)
    assert len({r["id"] for r in recs}) == len(recs)
    for r in recs:
        assert set(r) == {"id", "prompt", "response", "instruction_spans", "group", "label"}
        assert r["group"] in tasks.TASKS and r["label"] is None and r["response"]
        assert all(isinstance(s, list) and len(s) == 2 for s in r["instruction_spans"])


# --- held-out separation --------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 7])
def test_held_out_prompts_never_appear_in_training_data(seed):
    held = {r["prompt"] for r in held_out_prompts()}
    train = tasks.training_examples(seed, 20 * len(held))
    assert not held & {e["prompt"] for e in train}
    assert not set(corpus.heldout_documents()) & set(corpus.documents(seed, 20000))


# --- chat format and tokenizer --------------------------------------------------------

def test_format_prompt_matches_the_chat_template(tok):
    p = "Solve: two plus three"
    assert format_prompt(p) == f"{BOS}{USER} {p}{ASSISTANT}"
    messages = [{"role": "user", "content": p}]
    assert tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == format_prompt(p)
    full = tok.apply_chat_template(messages + [{"role": "assistant", "content": "five"}], tokenize=False)
    assert full == format_prompt(p) + format_response("five")
    assert format_prompt(p)[prompt_offset(p):prompt_offset(p) + len(p)] == p


def test_tokenizer_round_trips_documents_and_chat_strings(tok):
    texts = corpus.heldout_documents()[:200] + [
        format_prompt(e["prompt"]) + format_response(e["answer"]) for e in tasks.heldout_examples()
    ]
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text


def test_tokenizer_special_tokens_and_whole_words(tok):
    assert tok.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["<pad>", BOS, EOS, USER, ASSISTANT]
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok("Mira")["input_ids"] == tok("Mira", add_special_tokens=False)["input_ids"]  # no BOS added
    for word in ["translate", "classify", "kima", "Tova", "positive", "seven"]:
        assert len(tok(" " + word)["input_ids"]) == 1, word
    ids = tok(format_prompt("Repeat this: red fox"), add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids)[:3] == [BOS, USER, "ĠRepeat"]


def test_tokenizer_training_is_deterministic():
    docs = corpus.documents(1, 800)
    a, b = train_tokenizer(docs, 600), train_tokenizer(docs, 600)
    assert a.get_vocab() == b.get_vocab()


def test_instruction_rows_target_only_responses(tok):
    exs = [{"prompt": "Solve: one plus one", "answer": "two"},
           {"prompt": "Repeat this: red fox", "answer": "red fox"}]
    ids, mask = instruction_rows(tok, exs, seq_len=64)
    assert ids.shape == (1, 64)
    assert tok.decode(ids[0][mask[0]]) == " two</s> red fox</s>"
    assert (ids[0][~mask[0]][-1] == tok.pad_token_id)
    lm_ids, lm_mask = lm_rows(tok, ["Mira lives in Tova."] * 10, seq_len=16)
    assert lm_ids[0, 0] == tok.bos_token_id and bool(lm_mask.all())


# --- public helpers -------------------------------------------------------------------

def test_vocabulary_and_corpus_text():
    words = vocabulary()
    assert len(words) == len(set(words))
    assert set(world.ZEL.values()) <= set(words) and "Mira" in words and "translate" in words
    assert corpus_text("heldout", n_docs=3) == "\n".join(corpus.heldout_documents()[:3])
    assert corpus_text("train", n_docs=2) == "\n".join(corpus.documents(0, 2))
    with pytest.raises(InputError, match="split"):
        corpus_text("test")


# --- bad input ------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["3", 1.5, -1, True, None])
def test_bad_seed_is_refused(bad):
    with pytest.raises(InputError, match="seed must be a non-negative integer"):
        check_seed(bad)


def test_cli_refuses_a_non_integer_seed(capsys):
    import argparse

    from mechit.commands import organism

    parser = argparse.ArgumentParser(prog="mechit")
    organism.register(parser.add_subparsers())
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["organism", "train", "--seed", "abc"])
    assert exit_info.value.code == 2
    assert "seed must be a non-negative integer, got 'abc'" in capsys.readouterr().err
    assert parser.parse_args(["organism", "train", "--seed", "4"]).seed == 4


def test_non_empty_output_directory_is_refused_unless_forced(tmp_path):
    cfg = TrainConfig.preset("tiny")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty; pass --force"):
        _prepare_out(tmp_path, cfg, force=False)
    assert (tmp_path / "notes.txt").exists()
    assert _prepare_out(tmp_path, cfg, force=True) is False
    assert not tmp_path.exists()


def test_foreign_interrupted_run_is_refused(tmp_path):
    import json

    (tmp_path / "checkpoints").mkdir()
    state = {"fingerprint": TrainConfig.preset("tiny", seed=1).fingerprint(), "stage": "base", "step": 3}
    (tmp_path / "checkpoints" / "state.json").write_text(json.dumps(state))
    with pytest.raises(InputError, match="other settings"):
        _prepare_out(tmp_path, TrainConfig.preset("tiny", seed=2), force=False)
    assert _prepare_out(tmp_path, TrainConfig.preset("tiny", seed=1), force=False) is True


def test_reviews_use_words_of_one_polarity():
    assert not set(world.POSITIVE) & set(world.NEGATIVE)
    rng = random.Random(0)
    for positive in (True, False):
        for _ in range(50):
            words = set(corpus.review_text(rng, positive).replace(".", "").replace(",", "").split())
            assert words & set(world.POSITIVE if positive else world.NEGATIVE)
            assert not words & set(world.NEGATIVE if positive else world.POSITIVE)
