#!/usr/bin/env python3
"""Check the course's bundled sentiment data set and print its counts.

Usage:
    python3 scripts/check_sentiment_data.py [DATA_DIR]

DATA_DIR defaults to course/data/sentiment next to this script's repository.
Standard library only.  Exits 0 when every check passes, 1 otherwise, after
listing every problem found.

Checks:
  * the three files train/validation/test.jsonl exist, are UTF-8, hold one
    JSON object per line, with no blank lines (a final newline is fine);
  * each object has exactly the keys text, label, domain, phenomenon, with
    label 0 or 1, domain in {film, product, place}, phenomenon in
    {plain, negation, contrast, sarcasm, mixed}, and a non-empty,
    whitespace-trimmed text of 4 to 45 words;
  * each split is exactly balanced between labels 0 and 1;
  * the split sizes are 480 / 120 / 120 (at least 600 in all);
  * each domain makes up roughly a third of each split (25% to 42%);
  * hard cases (phenomenon other than plain) make up 20% to 35% of each
    split, and every phenomenon appears in every split;
  * no text appears twice, within a split or across splits, comparing
    case- and whitespace-insensitively;
  * no two texts are near-duplicates (word-set Jaccard similarity >= 0.6).
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from collections import Counter
from pathlib import Path

SPLITS = ("train", "validation", "test")
EXPECTED_SIZES = {"train": 480, "validation": 120, "test": 120}
KEYS = ("text", "label", "domain", "phenomenon")
LABELS = (0, 1)
LABEL_NAMES = {0: "negative", 1: "positive"}
DOMAINS = ("film", "product", "place")
PHENOMENA = ("plain", "negation", "contrast", "sarcasm", "mixed")
MIN_WORDS, MAX_WORDS = 4, 45
DOMAIN_SHARE = (0.25, 0.42)
HARD_SHARE = (0.20, 0.35)
NEAR_DUPLICATE_JACCARD = 0.6

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "course" / "data" / "sentiment"


def normalise(text: str) -> str:
    """Lower-case and collapse whitespace, for duplicate detection."""
    return " ".join(text.lower().split())


def words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9']+", text.lower()))


def load_split(path: Path, problems: list[str]) -> list[dict]:
    """Read one JSONL file, recording every schema problem; return valid rows."""
    rows: list[dict] = []
    if not path.is_file():
        problems.append(f"{path}: file is missing")
        return rows
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(f"{path}: not valid UTF-8 ({exc})")
        return rows
    if content.startswith("\ufeff"):
        problems.append(f"{path}: starts with a byte-order mark")
    if "\r" in content:
        problems.append(f"{path}: contains carriage returns (use LF line endings)")
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    for number, line in enumerate(lines, start=1):
        where = f"{path.name}:{number}"
        if not line.strip():
            problems.append(f"{where}: blank line")
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: not valid JSON ({exc})")
            continue
        if not isinstance(obj, dict):
            problems.append(f"{where}: not a JSON object")
            continue
        ok = True
        if tuple(sorted(obj)) != tuple(sorted(KEYS)):
            problems.append(f"{where}: keys are {sorted(obj)}, expected {sorted(KEYS)}")
            ok = False
        text = obj.get("text")
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{where}: text must be a non-empty string")
            ok = False
        else:
            if text != text.strip():
                problems.append(f"{where}: text has leading or trailing whitespace")
            if "\n" in text or "\t" in text:
                problems.append(f"{where}: text contains a newline or tab")
            n_words = len(text.split())
            if not MIN_WORDS <= n_words <= MAX_WORDS:
                problems.append(f"{where}: text has {n_words} words, expected {MIN_WORDS}-{MAX_WORDS}")
        label = obj.get("label")
        if type(label) is not int or label not in LABELS:  # bool is not a label
            problems.append(f"{where}: label must be the integer 0 or 1, got {label!r}")
            ok = False
        if obj.get("domain") not in DOMAINS:
            problems.append(f"{where}: domain must be one of {DOMAINS}, got {obj.get('domain')!r}")
            ok = False
        if obj.get("phenomenon") not in PHENOMENA:
            problems.append(f"{where}: phenomenon must be one of {PHENOMENA}, got {obj.get('phenomenon')!r}")
            ok = False
        if ok:
            rows.append({**obj, "_where": where})  # text-content problems are reported above
    return rows


def check_split(name: str, rows: list[dict], problems: list[str]) -> None:
    n = len(rows)
    if n != EXPECTED_SIZES[name]:
        problems.append(f"{name}: {n} valid rows, expected {EXPECTED_SIZES[name]}")
    if n == 0:
        return
    labels = Counter(r["label"] for r in rows)
    if labels[0] != labels[1]:
        problems.append(f"{name}: labels not balanced ({labels[0]} negative, {labels[1]} positive)")
    domains = Counter(r["domain"] for r in rows)
    for d in DOMAINS:
        share = domains[d] / n
        if not DOMAIN_SHARE[0] <= share <= DOMAIN_SHARE[1]:
            problems.append(
                f"{name}: domain {d} is {share:.0%} of the split, expected {DOMAIN_SHARE[0]:.0%}-{DOMAIN_SHARE[1]:.0%}"
            )
    phenomena = Counter(r["phenomenon"] for r in rows)
    hard = n - phenomena["plain"]
    if not HARD_SHARE[0] <= hard / n <= HARD_SHARE[1]:
        problems.append(
            f"{name}: hard cases are {hard / n:.1%} of the split, expected {HARD_SHARE[0]:.0%}-{HARD_SHARE[1]:.0%}"
        )
    for p in PHENOMENA:
        if phenomena[p] == 0:
            problems.append(f"{name}: no examples of phenomenon {p}")


def check_duplicates(data: dict[str, list[dict]], problems: list[str]) -> None:
    seen: dict[str, str] = {}
    for name in SPLITS:
        for r in data[name]:
            key = normalise(r["text"])
            if key in seen:
                problems.append(f"duplicate text: {r['_where']} repeats {seen[key]}: {r['text']!r}")
            else:
                seen[key] = r["_where"]
    everything = [r for name in SPLITS for r in data[name]]
    sets = [words(r["text"]) for r in everything]
    for i, j in itertools.combinations(range(len(everything)), 2):
        a, b = sets[i], sets[j]
        if not a or not b:
            continue
        jaccard = len(a & b) / len(a | b)
        if jaccard >= NEAR_DUPLICATE_JACCARD and normalise(everything[i]["text"]) != normalise(everything[j]["text"]):
            problems.append(
                f"near-duplicates (Jaccard {jaccard:.2f}): {everything[i]['_where']} "
                f"{everything[i]['text']!r} ~ {everything[j]['_where']} {everything[j]['text']!r}"
            )


def print_counts(data: dict[str, list[dict]]) -> None:
    header = f"{'':22}" + "".join(f"{s:>12}" for s in (*SPLITS, "total"))
    print(header)

    def row(title: str, predicate) -> None:
        counts = [sum(1 for r in data[s] if predicate(r)) for s in SPLITS]
        print(f"{title:22}" + "".join(f"{c:>12}" for c in (*counts, sum(counts))))

    row("all", lambda r: True)
    for label in LABELS:
        row(f"label {label} ({LABEL_NAMES[label]})", lambda r, v=label: r["label"] == v)
    for d in DOMAINS:
        row(f"domain {d}", lambda r, v=d: r["domain"] == v)
    for p in PHENOMENA:
        row(f"phenomenon {p}", lambda r, v=p: r["phenomenon"] == v)
    row("hard (not plain)", lambda r: r["phenomenon"] != "plain")
    print()
    print("label x domain x phenomenon (negative/positive), per split:")
    print(f"{'':22}" + "".join(f"{s:>12}" for s in SPLITS))
    for d in DOMAINS:
        for p in PHENOMENA:
            cells = []
            for s in SPLITS:
                neg = sum(1 for r in data[s] if (r["domain"], r["phenomenon"], r["label"]) == (d, p, 0))
                pos = sum(1 for r in data[s] if (r["domain"], r["phenomenon"], r["label"]) == (d, p, 1))
                cells.append(f"{neg}/{pos}")
            print(f"{d + ' ' + p:22}" + "".join(f"{c:>12}" for c in cells))
    lengths = [len(r["text"].split()) for s in SPLITS for r in data[s]]
    if lengths:
        print()
        print(f"words per text: min {min(lengths)}, max {max(lengths)}, mean {sum(lengths) / len(lengths):.1f}")


def main(argv: list[str]) -> int:
    data_dir = Path(argv[1]) if len(argv) > 1 else DEFAULT_DIR
    problems: list[str] = []
    data = {name: load_split(data_dir / f"{name}.jsonl", problems) for name in SPLITS}
    for name in SPLITS:
        check_split(name, data[name], problems)
    total = sum(len(rows) for rows in data.values())
    if total < 600:
        problems.append(f"only {total} examples in all, expected at least 600")
    check_duplicates(data, problems)

    print(f"sentiment data in {data_dir}")
    print()
    print_counts(data)
    print()
    if problems:
        print(f"FAILED: {len(problems)} problem(s)")
        for p in problems:
            print(f"  - {p}")
        return 1
    print("OK: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
