"""Safe loading (issue 8 §4): no unpickling, ``torch.load`` only with ``weights_only=True``,
no unsafe YAML or TorchScript loading, no ``trust_remote_code=True`` literal, no ``eval``/``exec``, and ``--trust-remote-code`` is
off unless the user passes it.

Every call that can run a repository's own code says explicitly what it allows: each
``Auto*.from_pretrained`` and ``boot_transformers`` call passes ``trust_remote_code=`` (the
user's flag, or ``False``), and each ``load_model``/``load_pair`` call passes it or forwards
``**options`` that carry it. Concrete classes (``LlamaForCausalLM.from_pretrained``) never
run repository code and need no flag.

The source scan walks the AST of every ``.py`` file under ``mechit/``; the scanner itself is
tested on small snippets so that it can fail.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2] / "mechit"

# modules whose load functions execute code from the data they read
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal", "jsonpickle"}
# attribute calls that unpickle whatever the object (pandas, numpy)
UNSAFE_ATTRIBUTE_CALLS = {"read_pickle", "to_pickle"}
# mechit's loaders: a call passes trust_remote_code= or forwards **options
MECHIT_LOADERS = {"load_model", "load_pair"}


def _is_true(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _dotted(node: ast.AST) -> str:
    """``torch.load`` for ``Attribute(Name('torch'), 'load')``; '' when not a plain dotted name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def scan_source(text: str, filename: str = "<string>") -> list[str]:
    """Every unsafe construct in ``text`` as ``file:line: what``."""
    problems = []
    tree = ast.parse(text, filename=filename)
    torch_load_names = {"torch.load"}  # also `from torch import load [as x]`
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "torch":
            for alias in node.names:
                if alias.name == "load":
                    torch_load_names.add(alias.asname or "load")
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in UNSAFE_MODULES:
                    problems.append(f"{where}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            problems.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            keywords = {k.arg: k.value for k in node.keywords if k.arg}
            if isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec", "__import__"):
                problems.append(f"{where}: {node.func.id}(...)")
            if name in torch_load_names and not _is_true(keywords.get("weights_only", ast.Constant(None))):
                problems.append(f"{where}: {name}(...) without weights_only=True")
            if name in ("torch.jit.load", "yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all"):
                problems.append(f"{where}: {name}(...)")
            if name in ("yaml.load", "yaml.load_all") and "SafeLoader" not in ast.unparse(keywords.get("Loader", ast.Constant(None))):
                problems.append(f"{where}: {name}(...) without Loader=yaml.SafeLoader")
            if name.split(".")[0] in UNSAFE_MODULES and name.endswith(("load", "loads", "Unpickler")):
                problems.append(f"{where}: {name}(...)")
            if isinstance(node.func, ast.Attribute) and node.func.attr in UNSAFE_ATTRIBUTE_CALLS:
                problems.append(f"{where}: .{node.func.attr}(...)")
            if _is_true(keywords.get("allow_pickle", ast.Constant(None))):
                problems.append(f"{where}: allow_pickle=True")
            if _is_true(keywords.get("trust_remote_code", ast.Constant(None))):
                problems.append(f"{where}: trust_remote_code=True literal")
            problems += _trust_flag_problems(node, keywords, where)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "trust_remote_code" and _is_true(value):
                    problems.append(f"{where}: {{'trust_remote_code': True}} literal")
    return problems


def _trust_flag_problems(node: ast.Call, keywords: dict, where: str) -> list[str]:
    """A loading call that does not say whether the repository's own code may run."""
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    owner = _dotted(func.value).rsplit(".", 1)[-1] if isinstance(func, ast.Attribute) else ""
    if "trust_remote_code" in keywords:
        return []
    if (called == "from_pretrained" and owner.startswith("Auto")) or called == "boot_transformers":
        return [f"{where}: {owner + '.' if owner else ''}{called}(...) without trust_remote_code="]
    forwards = any(k.arg is None for k in node.keywords)
    if called in MECHIT_LOADERS and not forwards:
        return [f"{where}: {called}(...) without trust_remote_code="]
    return []


def _sources():
    files = sorted(ROOT.rglob("*.py"))
    assert len(files) > 20, f"expected the mechit package under {ROOT}"
    return files


@pytest.mark.parametrize(
    "snippet, expected",
    [
        ("import pickle", "import pickle"),
        ("import dill as d", "import dill"),
        ("from pickle import loads", "from pickle import"),
        ("import torch\ntorch.load('x.pt')", "without weights_only=True"),
        ("import torch\ntorch.load('x.pt', weights_only=False)", "without weights_only=True"),
        ("from torch import load\nload('x.pt')", "load(...) without weights_only=True"),
        ("from torch import load as tl\ntl('x.pt', map_location='cpu')", "tl(...) without weights_only=True"),
        ("m = f('x', trust_remote_code=True)", "trust_remote_code=True literal"),
        ("kw = {'trust_remote_code': True}", "'trust_remote_code': True"),
        ("eval('1+1')", "eval(...)"),
        ("exec('x = 1')", "exec(...)"),
        ("import pandas as pd\npd.read_pickle('x')", ".read_pickle(...)"),
        ("import numpy as np\nnp.load('x.npy', allow_pickle=True)", "allow_pickle=True"),
        ("import yaml\nyaml.load(text)", "without Loader=yaml.SafeLoader"),
        ("import yaml\nyaml.unsafe_load(text)", "yaml.unsafe_load"),
        ("import torch\ntorch.jit.load('m.pt')", "torch.jit.load"),
        ("from transformers import AutoModel\nAutoModel.from_pretrained(p)", "AutoModel.from_pretrained(...) without"),
        ("import transformers\ntransformers.AutoTokenizer.from_pretrained(p, gguf_file=f)", "AutoTokenizer.from_pretrained"),
        ("TransformerBridge.boot_transformers(p, device=d)", "boot_transformers(...) without trust_remote_code="),
        ("model = load_model(spec)", "load_model(...) without trust_remote_code="),
        ("from mechit.models import load_pair\npair = load_pair(a, b, dtype=d)", "load_pair(...) without"),
    ],
)
def test_scanner_catches(snippet, expected):
    problems = scan_source(snippet)
    assert problems and any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\ntorch.load('x.pt', weights_only=True)",
        "model.eval()",  # a method, not the builtin
        "f('x', trust_remote_code=trust_remote_code)",
        "AutoModel.from_pretrained(p, trust_remote_code=trust_remote_code)",
        "AutoModel.from_pretrained(p, trust_remote_code=False)",
        "LlamaForCausalLM.from_pretrained(p)",  # a concrete class runs no repository code
        "load_model(spec, trust_remote_code=args.trust_remote_code)",
        "load_model(base, **kw)",  # forwards the caller's options
        "from safetensors.torch import load_file\nload_file('x.safetensors')",
        "import json\njson.loads('{}')",
        "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)",
        "import yaml\nyaml.safe_load(text)",
    ],
)
def test_scanner_allows(snippet):
    assert scan_source(snippet) == []


# The one place pickle bytes are read: the authors' released attribution results, through an
# allow-list unpickler that admits numpy's array reconstruction only (issue 15;
# tests/unit/data/test_imported_results.py refuses a hostile pickle through it).
ALLOWED_PICKLE_READERS = {"mechit/data/imported.py": ["mechit/data/imported.py:33: import pickle"]}


def test_mechit_source_has_no_unsafe_loading():
    problems = []
    for path in _sources():
        where = str(path.relative_to(ROOT.parent))
        found = scan_source(path.read_text(encoding="utf-8"), where)
        problems += [p for p in found if p not in ALLOWED_PICKLE_READERS.get(where, [])]
    assert problems == [], "unsafe constructs in mechit/:\n" + "\n".join(problems)


def test_no_pickle_files_shipped():
    """Package data (organism weights, word lists) holds no pickle or torch-pickle files."""
    bad = [p for p in ROOT.rglob("*") if p.is_file() and p.suffix in (".pkl", ".pickle", ".pt", ".pth", ".bin", ".joblib")]
    assert bad == []


def test_load_model_defaults_trust_remote_code_off():
    from mechit.models import load_model

    assert inspect.signature(load_model).parameters["trust_remote_code"].default is False


class _Booted(Exception):
    """Raised by the fake boot_transformers to stop loading once the arguments are seen."""


@pytest.fixture
def boot_calls(monkeypatch):
    """Replace ``TransformerBridge.boot_transformers`` with a recorder that stops the load."""
    from transformer_lens.model_bridge import TransformerBridge

    calls = []

    def fake(*args, **kwargs):
        calls.append(kwargs)
        raise _Booted

    monkeypatch.setattr(TransformerBridge, "boot_transformers", staticmethod(fake))
    return calls


def test_load_model_passes_trust_remote_code_false_by_default(tmp_path, boot_calls):
    from mechit.errors import SpecError
    from mechit.models import load_model

    (tmp_path / "config.json").write_text("{}")
    for kwargs, expected in (({}, False), ({"trust_remote_code": True}, True)):
        with pytest.raises((_Booted, SpecError)):
            load_model(tmp_path, **kwargs)
        assert boot_calls[-1]["trust_remote_code"] is expected


# every subcommand that loads a model (ffn-labels: its --labeller local model)
MODEL_COMMANDS = ["info", "attribute", "compare", "heads", "ffn", "ffn-rotation", "ffn-labels"]


def _subparsers():
    from mechit.cli import build_parser

    parser = build_parser()
    (action,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return action.choices


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_cli_exposes_trust_remote_code_off_by_default(command):
    choices = _subparsers()
    if command not in choices:
        pytest.skip(f"no `mechit {command}` command")
    sub = choices[command]
    action = sub._option_string_actions.get("--trust-remote-code")
    assert action is not None, f"`mechit {command}` loads a model but has no --trust-remote-code flag"
    assert action.default is False and action.nargs == 0


GOOD_PROMPTS = Path(__file__).resolve().parents[1] / "bad_inputs" / "prompts" / "good.jsonl"
MINIMAL_ARGV = {
    "info": ["info", "--load", "{a}"],
    "heads": ["heads", "--model", "{a}", "--out", "{out}"],
    "ffn": ["ffn", "--model", "{a}", "--out", "{out}"],
    "ffn-rotation": ["ffn-rotation", "--base", "{a}", "--tuned", "{b}", "--out", "{out}"],
    "attribute": ["attribute", "--model", "{a}", "--prompts", str(GOOD_PROMPTS), "--out", "{out}"],
    "compare": ["compare", "--base", "{a}", "--tuned", "{b}", "--prompts", str(GOOD_PROMPTS), "--out", "{out}"],
    "ffn-labels": ["ffn-labels", "{out}", "--labeller", "local", "--local-model", "{a}"],
}


@pytest.mark.parametrize("command", list(MINIMAL_ARGV))
def test_cli_trust_remote_code_reaches_load_model(command, tmp_path, boot_calls, capsys):
    """`mechit COMMAND` loads with trust_remote_code False; with --trust-remote-code, True."""
    from mechit.cli import main

    if "--trust-remote-code" not in _subparsers()[command]._option_string_actions:
        pytest.skip(f"`mechit {command}` has no --trust-remote-code yet (see test above)")
    dirs = {}
    for name in ("a", "b"):
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
        (dirs[name] / "config.json").write_text("{}")
    argv = [a.format(out=tmp_path / "out", **dirs) for a in MINIMAL_ARGV[command]]
    if command == "ffn-labels":  # labels the concepts of an earlier `mechit ffn` run
        (tmp_path / "out").mkdir()
        pd.DataFrame({"layer": [0], "component": [0], "explained_variance": [0.5], "rank": [0], "word": ["cat"],
                      "score": [1.0]}).to_parquet(tmp_path / "out" / "concepts.parquet")
    for extra, expected in (([], False), (["--trust-remote-code"], True)):
        n = len(boot_calls)
        try:
            main([*argv, *extra])
        except _Booted:
            pass
        assert len(boot_calls) > n, capsys.readouterr().err
        assert boot_calls[-1]["trust_remote_code"] is expected
