"""The report's section on the paper's Tables 1-2 and its summary.json object (mechit.views.paper)."""

import math

import pandas as pd

from mechit.views.paper import TABLE, paper_headline, paper_section


def _rows() -> pd.DataFrame:
    return pd.DataFrame({
        "model": ["vicuna-7b vs llama-7b", "vicuna-7b vs llama-7b", "vicuna-7b"],
        "comparison": ["tuned_vs_base", "tuned_vs_base", "followed_vs_not"],
        "group": ["(all)", "user", "user"], "n": [632, 252, 200], "n_a": [632, 252, 150], "n_b": [632, 252, 50],
        "mean_a": [0.3125, 0.2875, 0.4], "mean_b": [0.25, 0.2, 0.1], "t": [2.5, 1.5, 4.0],
        "p_value": [0.00625, 0.0667, 1e-5], "paired_t": [3.5, 2.5, math.nan], "paired_p": [0.00025, 0.00651, math.nan],
    })


def test_headline_holds_every_row_as_plain_json_values():
    paper = paper_headline({TABLE: _rows()}, source="OUT")
    assert paper["source"] == "OUT" and len(paper["rows"]) == 3
    assert paper["rows"][2]["paired_t"] is None and paper["rows"][0]["n"] == 632
    assert type(paper["rows"][0]["n"]) is int and type(paper["rows"][0]["mean_a"]) is float
    assert paper_headline({}, source=None) is None


def test_section_puts_each_row_under_its_table():
    page = paper_section({"paper_tables": paper_headline({TABLE: _rows()}, source="OUT")})
    table1, table2 = page.split("<h3>")[1:3]
    assert table1.startswith("Followed vs not followed")
    assert "<td>vicuna-7b</td><td>user</td><td>150</td><td>50</td><td>0.4</td><td>0.1</td><td>4</td><td>1.0e-05</td>" in table1
    assert "(all)" not in table1
    assert table2.startswith("Tuned vs base")
    assert ("<td>(all)</td><td>632</td><td>0.312</td><td>0.25</td><td>2.5</td><td>0.00625</td><td>3.5</td>"
            "<td>2.5e-04</td>") in table2
    assert "<td>user</td><td>252</td><td>0.287</td><td>0.2</td>" in table2


def test_section_without_results_gives_the_commands_and_says_so():
    page = paper_section({})
    assert "Not included in this comparison" in page and "mechit attribute-import" in page
    one_model = paper_section({"paper_tables": paper_headline({TABLE: _rows().iloc[2:]}, source="OUT")})
    assert "The run holds one model only." in one_model and "No rated examples" not in one_model
