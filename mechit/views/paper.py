"""The report's section "The paper's Tables 1–2 from the released results", and its ``summary.json`` object.

``mechit compare --paper-results DIR`` reads an attribution run made from the authors'
released results (``mechit attribute-import``, docs/attribution.md) and computes the same
rows as ``mechit attribute-stats DIR`` (:func:`mechit.attribution.run_stats.run_stats`): the
table ``paper_attribution_stats``. :func:`paper_headline` turns it into ``summary.json``'s
``paper_tables``; :func:`paper_section` draws it: followed vs not followed per group (the
paper's Table 1, from the annotators' ratings) and tuned vs base per group on the same
prompts (Table 2), each with the paper's Welch test and, for tuned vs base, the paired test.
Without ``--paper-results`` the section gives the commands that make the rows.

>>> rows = pd.DataFrame({"model": ["vicuna-7b vs llama-7b"], "comparison": ["tuned_vs_base"], "group": ["user"],
...                      "n": [252], "n_a": [252], "n_b": [252], "mean_a": [0.31], "mean_b": [0.27],
...                      "t": [2.1], "p_value": [0.018], "paired_t": [3.0], "paired_p": [0.0015]})
>>> summary = {"paper_tables": paper_headline({"paper_attribution_stats": rows}, source="OUT")}
>>> summary["paper_tables"]["rows"][0]["p_value"]
0.018
>>> "vicuna-7b vs llama-7b" in paper_section(summary)
True
"""

from __future__ import annotations

import html

import pandas as pd

from mechit.views.findings import fmt, plain

TABLE = "paper_attribution_stats"
KEYS = ("model", "comparison", "group", "n", "n_a", "n_b", "mean_a", "mean_b", "t", "p_value",
        "paired_t", "paired_p")
COMMANDS = """mechit attribute-import --results DIR/ifa_llama_7b  --model llama-7b  --prompts FinalDataset.tsv --out OUT
mechit attribute-import --results DIR/ifa_vicuna_7b --model vicuna-7b --prompts FinalDataset.tsv \\
    --ratings AnnotatedDataset.tsv --ratings-model vicuna_7B --out OUT
mechit attribute-stats OUT --base llama-7b --tuned vicuna-7b      # the same rows, as OUT/attribution_stats
mechit compare ... --paper-results OUT                             # the rows in this section"""


def paper_headline(tables: dict[str, pd.DataFrame], source: str) -> dict | None:
    """``{"source": DIR, "rows": [{model, comparison, group, n, n_a, n_b, mean_a, mean_b, t,
    p_value, paired_t, paired_p}, ...]}`` from the ``paper_attribution_stats`` table, or None
    when the comparison was run without ``--paper-results``. The module docstring has an example.
    """
    table = tables.get(TABLE)
    if table is None:
        return None
    rows = [{key: plain(row[key]) for key in KEYS if key in table.columns} for _, row in table.iterrows()]
    return {"source": source, "rows": rows}


def _table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """An HTML table of ``rows`` with (key, heading) ``columns``; counts whole, other numbers to 3 significant digits.

    >>> _table([{"group": "user", "n": 1264, "p_value": 0.01234}], [("group", "g"), ("n", "n"), ("p_value", "p")])
    '<table class="table"><tr><th>g</th><th>n</th><th>p</th></tr><tr><td>user</td><td>1264</td><td>0.0123</td></tr></table>'
    """
    def cell(value) -> str:
        return value if isinstance(value, str) else str(value) if isinstance(value, int) else fmt(value)

    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(row.get(key)))}</td>" for key, _ in columns) + "</tr>"
                   for row in rows)
    return f'<table class="table"><tr>{head}</tr>{body}</table>'


def paper_section(summary: dict) -> str:
    """The report's section (HTML): the rows of ``summary["paper_tables"]``, or the commands
    that make them. The module docstring has an example.

    >>> "attribute-import" in paper_section({})
    True
    """
    paper = summary.get("paper_tables")
    commands = f"<pre>{html.escape(COMMANDS)}</pre>"
    if not paper:
        body = ('<p class="caption">Not included in this comparison. With the authors\' released attribution '
                "results (their repository, <code>results/attribution_interpret/</code>, and "
                "<code>datasets/</code>), these commands make the rows:</p>" + commands)
    else:
        rows = paper["rows"]
        followed = [r for r in rows if r.get("comparison") == "followed_vs_not"]
        tuned = [r for r in rows if r.get("comparison") == "tuned_vs_base"]
        body = (f'<p class="caption">Instruction scores of the attribution run in <code>{html.escape(str(paper["source"]))}'
                "</code>, as <code>mechit attribute-stats</code> computes them: the paper's Welch test (one-sided, "
                "per group) and, where both models scored the same prompts, the paired t-test.</p>"
                "<h3>Followed vs not followed (the paper's Table 1)</h3>"
                + (_table(followed, [("model", "model"), ("group", "group"), ("n_a", "n followed"),
                                     ("n_b", "n not followed"), ("mean_a", "mean followed"),
                                     ("mean_b", "mean not followed"), ("t", "Welch t"), ("p_value", "p")])
                   if followed else '<p class="missing">No rated examples in this run.</p>')
                + "<h3>Tuned vs base on the same prompts (Table 2)</h3>"
                + (_table(tuned, [("model", "models"), ("group", "group"), ("n", "n pairs"), ("mean_a", "mean tuned"),
                                  ("mean_b", "mean base"), ("t", "Welch t"), ("p_value", "p"),
                                  ("paired_t", "paired t"), ("paired_p", "paired p")])
                   if tuned else '<p class="missing">The run holds one model only.</p>')
                + "<p class=\"caption\">Made by:</p>" + commands)
    return ('<section id="paper-tables"><h2>The paper\'s Tables 1–2 from the released results</h2>'
            f"{body}</section>")
