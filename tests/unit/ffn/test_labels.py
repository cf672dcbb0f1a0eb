"""mechit.ffn.labels, .lexicon, .labellers: lexicon labeller, endpoint labeller against a fake server, proportions."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

from mechit.errors import MechitError
from mechit.ffn.labellers import (
    EndpointLabeller,
    LabelCache,
    LocalModelLabeller,
    build_prompt,
    label_concepts,
    make_labeller,
    parse_label,
)
from mechit.ffn.labels import LabellerError, label_proportions, label_table
from mechit.ffn.lexicon import LexiconLabeller, organism_second_language

# ---------------------------------------------------------------- lexicon


@pytest.mark.parametrize(
    "words, task",
    [
        (["1", "2", "3.5", "+", "=", "sum", "seven", "cat"], "math"),
        (["def", "return", "self", "{", "}", "getValue", "user_id", "os.path", "cat", "dog"], "coding"),
        (["der", "und", "café", "привет", "東京", "cat", "dog", "run"], "translation"),
        (["story", "poem", "essay", "narrative", "cat", "dog", "tree", "house", "river", "stone"], "writing"),
        (["cat", "dog", "tree", "house", "river", "stone", "bread", "lamp"], "none"),
        ([], "none"),
    ],
)
def test_lexicon_task_labels(words, task):
    assert LexiconLabeller(foreign_words=()).label(words, "task") == task


def test_lexicon_task_thresholds_and_ties():
    lab = LexiconLabeller(foreign_words=())
    # 1 of 10 math words (0.1 < 0.15): not math; 2 of 10 writing words (0.2 >= 0.2): writing
    words = ["1", "story", "poem"] + ["cat", "dog", "tree", "house", "river", "stone", "lamp"]
    assert lab.task_shares(words) == pytest.approx({"math": 0.1, "coding": 0.0, "translation": 0.0, "writing": 0.2})
    assert lab.label(words, "task") == "writing"
    # 2 math and 2 writing words: math wins (0.2 / 0.15 > 0.2 / 0.2)
    assert lab.label(["1", "2"] + words[1:9], "task") == "math"


def test_lexicon_uses_the_second_language():
    words = ["kima", "vor", "tesa", "cat", "dog"]
    assert LexiconLabeller(foreign_words=()).label(words, "task") == "none"
    assert LexiconLabeller(foreign_words={"kima", "vor", "tesa"}).label(words, "task") == "translation"
    zel = sorted(organism_second_language())[:6]
    assert len(zel) == 6
    # the organism's second language counts only when given: never by default
    assert LexiconLabeller().label(zel, "task") == "none"
    assert LexiconLabeller(foreign_words=organism_second_language()).label(zel, "task") == "translation"
    assert make_labeller("lexicon", foreign_words="organism").label(zel, "task") == "translation"
    assert make_labeller("lexicon").label(zel, "task") == "none"


@pytest.mark.parametrize(
    "words, level",
    [
        (["the", "of", "and", "to", "in", ",", ".", "cat"], "syntax"),
        (["walking", "talking", "running", "singing", "cat", "tree"], "morphology"),
        (["cats", "dogs", "walked", "children", "tree", "river"], "morphology"),
        (["cat", "hat", "bat", "mat", "tree", "river", "stone"], "phonology"),
        (["cat", "dog", "horse", "goat", "fish", "bird", "owl"], "semantics"),
    ],
)
def test_lexicon_level_labels(words, level):
    assert LexiconLabeller(foreign_words=()).label(words, "level") == level


def test_unknown_question_is_a_clear_error():
    with pytest.raises(MechitError, match="unknown question 'mood'"):
        LexiconLabeller().label(["a"], "mood")


def test_parse_label_and_prompt():
    labels = ("writing", "math", "coding", "translation", "none")
    assert parse_label("Coding", labels) == "coding"
    assert parse_label("The answer is: math.", labels) == "math"
    assert parse_label('{"label": "translation"}', labels) == "translation"
    assert parse_label("banana", labels) is None
    assert parse_label("math and coding", labels) is None
    p0, p1 = build_prompt(["a", "b", "c", "d"], "level", 0), build_prompt(["a", "b", "c", "d"], "level", 1)
    assert "Words: a, b, c, d" in p0 and p0 != p1 and sorted(p1) == sorted(p0)


# ---------------------------------------------------------------- fake OpenAI-compatible server


class FakeServer:
    """Replies from a script: each request pops the next action (the last one repeats).

    Actions: ("ok", text) chat reply, ("status", code), ("raw", body), ("sleep", seconds),
    ("drop", None) closes the connection without a reply.
    """

    def __init__(self, script):
        self.script = list(script)
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                assert len(server.requests) < 50, "unbounded retries"
                action = server.script.pop(0) if len(server.script) > 1 else server.script[0]
                kind, arg = action
                if kind == "sleep":
                    time.sleep(arg)
                    kind, arg = "ok", "math"
                if kind == "drop":  # close the connection without a reply
                    self.close_connection = True
                    return
                if kind == "status":
                    self.send_response(arg)
                    self.end_headers()
                    self.wfile.write(b"oops")
                    return
                payload = arg.encode() if kind == "raw" else json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": arg}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _labeller(url, tmp_path, **kw):
    opts = dict(timeout=2.0, retries=2, backoff=0.01, cache=tmp_path / "cache.jsonl", api_key="sk-test")
    opts.update(kw)
    return EndpointLabeller(url, "fake-model", **opts)


def test_endpoint_happy_path_and_cache(tmp_path):
    with FakeServer([("ok", "Math.")]) as srv:
        lab = _labeller(srv.url, tmp_path)
        assert lab.label(["1", "2"], "task", seed=3) == "math"
        assert lab.label(["1", "2"], "task", seed=3) == "math"  # cached: no new request
        assert len(srv.requests) == 1
        req = srv.requests[0]
        assert req["path"] == "/v1/chat/completions"
        assert req["body"]["model"] == "fake-model" and req["body"]["seed"] == 3
        assert req["auth"] == "Bearer sk-test"
        # a new labeller reads the cache from disk
        assert _labeller(srv.url, tmp_path).label(["1", "2"], "task", seed=3) == "math"
        assert len(srv.requests) == 1


@pytest.mark.parametrize(
    "first",
    [("status", 500), ("status", 503), ("raw", "not json"), ("raw", '{"choices": []}'), ("ok", "banana"),
     ("drop", None)],
)
def test_endpoint_retries_transient_problems(tmp_path, first):
    with FakeServer([first, ("ok", "coding")]) as srv:
        assert _labeller(srv.url, tmp_path).label(["def"], "task") == "coding"
        assert len(srv.requests) == 2


def test_endpoint_timeout_is_retried_then_reported(tmp_path):
    with FakeServer([("sleep", 0.6), ("ok", "syntax")]) as srv:
        assert _labeller(srv.url, tmp_path, timeout=0.2).label(["the"], "level") == "syntax"
    with FakeServer([("sleep", 0.6)]) as srv:
        with pytest.raises(LabellerError, match=r"no reply within 0.2 s"):
            _labeller(srv.url, tmp_path, timeout=0.2, retries=1).label(["of"], "level")
        assert len(srv.requests) == 2


def test_endpoint_gives_up_with_clear_errors(tmp_path):
    with FakeServer([("status", 500)]) as srv:
        with pytest.raises(LabellerError, match=r"after 3 attempts: HTTP 500"):
            _labeller(srv.url, tmp_path).label(["x"], "task")
        assert len(srv.requests) == 3
    with FakeServer([("ok", "banana")]) as srv:
        with pytest.raises(LabellerError, match=r"'banana' is not one of writing, math"):
            _labeller(srv.url, tmp_path).label(["x"], "task")
    with FakeServer([("status", 401)]) as srv:
        with pytest.raises(LabellerError, match="refused the request: HTTP 401"):
            _labeller(srv.url, tmp_path).label(["x"], "task")
        assert len(srv.requests) == 1  # a client error is not retried


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_endpoint(tmp_path):
    lab = _labeller(f"http://127.0.0.1:{_closed_port()}/v1", tmp_path)
    with pytest.raises(LabellerError, match="cannot reach the labelling endpoint http://127.0.0.1"):
        lab.label(["x"], "task")


def test_failure_mid_run_keeps_finished_labels(tmp_path):
    concepts = pd.DataFrame(
        {"layer": [0] * 6, "component": [0, 0, 1, 1, 2, 2], "rank": [0, 1] * 3,
         "word": ["1", "2", "def", "self", "a", "b"]}
    )
    # two good replies, then the server breaks for good
    with FakeServer([("ok", "math"), ("ok", "coding"), ("status", 500)]) as srv:
        lab = _labeller(srv.url, tmp_path, retries=1)
        with pytest.raises(LabellerError, match=r"2 of 3 labels were finished \(cached in .*cache.jsonl\)"):
            label_concepts(concepts, lab, questions=("task",), progress=False)
    assert len(LabelCache(tmp_path / "cache.jsonl")) == 2
    # the rerun asks only for the missing label
    with FakeServer([("ok", "none")]) as srv:
        labels = label_concepts(concepts, _labeller(srv.url, tmp_path), questions=("task",), progress=False)
        assert len(srv.requests) == 1
    assert labels["label"].tolist() == ["math", "coding", "none"]


def test_cache_ignores_a_torn_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"key": "a", "label": "math"}\n{"key": "b", "lab')
    assert LabelCache(path).entries == {"a": "math"}


# ---------------------------------------------------------------- local model


def test_local_labeller_parses_greedy_reply(tiny_llama, monkeypatch, tmp_path):
    lab = LocalModelLabeller(tiny_llama, max_new_tokens=3, cache=tmp_path / "c.jsonl")
    reply = lab._generate("Reply with one word.")  # real greedy generation through the bridge
    assert isinstance(reply, str)
    assert reply == lab._generate("Reply with one word.")  # greedy: deterministic
    monkeypatch.setattr(lab, "_generate", lambda prompt: " Semantics")
    assert lab.label(["cat", "dog"], "level") == "semantics"
    monkeypatch.setattr(lab, "_generate", lambda prompt: "zebra")
    with pytest.raises(LabellerError, match="not one of phonology"):
        lab.label(["other"], "level")


# ---------------------------------------------------------------- proportions and the table


def _labels(model, seeds, math_per_seed):
    rows = []
    for seed, n_math in zip(seeds, math_per_seed):
        for comp in range(10):
            for layer in (0, 5):
                rows.append(dict(model=model, layer=layer, component=comp, seed=seed, question="task",
                                 label="math" if comp < n_math else "none"))
    return rows


def test_label_proportions_and_table():
    labels = pd.DataFrame(_labels("base", [0, 1, 2], [2, 3, 4]) + _labels("tuned", [0, 1, 2], [5, 6, 7]))
    props = label_proportions(labels)
    got = props[(props.model == "tuned") & (props.label == "math") & (props.layer_group == 1)]
    assert got["proportion"].item() == pytest.approx(0.6)
    assert got["std"].item() == pytest.approx(0.1)
    assert got["n_seeds"].item() == 3
    assert set(props["label"]) == {"writing", "math", "coding", "translation", "none"}
    table = label_table(labels)
    math = table[table.label == "math"].iloc[0]
    assert math["base"] == pytest.approx(0.3) and math["tuned"] == pytest.approx(0.6)
    assert math["diff"] == pytest.approx(0.3)
    # Welch t by hand: equal std 0.1, n=3 -> t = 0.3 / sqrt(2 * 0.01 / 3)
    assert math["t"] == pytest.approx(0.3 / np.sqrt(2 * 0.01 / 3))
    assert 0 < math["p"] < 0.05
    assert table[table.label == "coding"]["t"].isna().all()
    by_group = label_table(labels, group_size=4)
    assert sorted(by_group["layer_group"].unique()) == [0, 1]
    g1 = by_group[(by_group.layer_group == 1) & (by_group.label == "math")].iloc[0]
    assert (g1["base"], g1["tuned"]) == (pytest.approx(0.3), pytest.approx(0.6))
    assert g1["t"] == pytest.approx(math["t"])
    with pytest.raises(MechitError, match="both models"):
        label_table(labels[labels.model == "base"])
