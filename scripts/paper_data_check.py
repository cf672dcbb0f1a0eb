"""Figures of a copy of Wu et al.'s prompt file (``datasets/FinalDataset.tsv``) as mechit reads it.

Usage: ``python scripts/paper_data_check.py PATH`` (reads PATH only; downloads nothing).

Prints the number of records and per-group counts, records with an ``error`` (and why),
instruction spans per record under ``spans="authors"`` and ``spans="literal"``, how many
prompts' instruction characters (letters and digits) differ between the two conventions,
and how many differ from an independent re-implementation of the authors' loader rule
(each piece sentence marks the text of the first prompt sentence containing it, found by
its first occurrence in the prompt, as their token search does).
"""

from __future__ import annotations

import collections
import re
import sys

from mechit.data.paper import paper_group
from mechit.data.prompts import decode_tsv_field, read_paper_tsv

BREAK = re.compile(r"(?<=[.!?:])\s+")


def letters(prompt: str, spans) -> frozenset[int]:
    """Positions of the letters and digits inside ``spans``."""
    return frozenset(i for s, e in spans for i in range(s, e) if prompt[i].isalnum())


def reference_letters(prompt: str, annotation: str) -> frozenset[int]:
    """The authors' rule written independently of mechit: sentence texts, located by first occurrence."""
    sentences = [s for line in prompt.split("\n") for s in BREAK.split(line)]
    marked = set()
    for piece in annotation.split("&&&")[0].replace("\n", "|||").split("|||"):
        for part in BREAK.split(piece):
            hit = next((s for s in sentences if part in s), None)
            if hit is not None:
                marked.add(hit[6:].strip() if hit.startswith("Input:") else hit)
    spans = [(prompt.index(t), prompt.index(t) + len(t)) for t in marked if t]
    return letters(prompt, spans)


def main(path: str) -> None:
    authors = read_paper_tsv(path, spans="authors")
    literal = read_paper_tsv(path, spans="literal")
    print(f"records: {len(authors)}")
    print("groups:", dict(collections.Counter(paper_group(r.id) for r in authors)))
    for name, records in (("authors", authors), ("literal", literal)):
        bad = [r for r in records if r.error]
        spans = [len(r.instruction_spans) for r in records if not r.error]
        print(f"{name}: {len(bad)} errors; spans per record min {min(spans)}, "
              f"mean {sum(spans) / len(spans):.2f}, max {max(spans)}")
        for r in bad:
            print("   ", r.error)
    print("empty responses:", sum(r.response is None for r in authors))
    annotations = {}
    for line in open(path, encoding="utf-8").read().split("\n")[1:]:
        if line.strip():
            fields = line.split("\t")
            annotations[decode_tsv_field(fields[0]).strip()] = decode_tsv_field(fields[3])
    pairs = [(a, b) for a, b in zip(authors, literal) if not a.error and not b.error]
    differ = sum(letters(a.prompt, a.instruction_spans) != letters(b.prompt, b.instruction_spans) for a, b in pairs)
    print(f"authors vs literal: {differ} of {len(pairs)} prompts differ in instruction letters/digits")
    off = [a.id for a, _ in pairs
           if letters(a.prompt, a.instruction_spans) != reference_letters(a.prompt, annotations[a.id])]
    print(f"authors convention vs independent reference of the authors' rule: {len(off)} differ", off[:10])


if __name__ == "__main__":
    main(sys.argv[1])
