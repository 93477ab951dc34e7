"""Rebuild course/data/austen/ from Debian's r-cran-janeaustenr package (run once; the output is committed).

    apt-get download r-cran-janeaustenr        # Jane Austen's six novels, Project Gutenberg texts
    python3 scripts/make_austen_corpus.py r-cran-janeaustenr_1.0.0-1_all.deb

The package keeps the novels as R character vectors (one element per printed
line) in an R lazy-load database, ``data/Rdata.rdb``: a run of records, each a
4-byte big-endian length and a zlib stream holding one object in R's XDR
serialisation.  This script reads that format directly (no R needed), joins
lines into paragraphs, drops front matter and chapter headings, and writes one
JSON object per paragraph: ``{"book", "chapter", "text"}``.  Chapter ``n`` (counted
through the whole book) goes to the validation split when ``n % 20 == 10``,
every other chapter to train: a fixed split by whole chapters, so validation
text is never a neighbour of a training paragraph.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

OUT = Path(__file__).parents[1] / "course" / "data" / "austen"
RDB = "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"
#: The objects in the database, in its order (the .rdx index names them; checked by the first line of each).
TITLES = ["Emma", "Mansfield Park", "Northanger Abbey", "Persuasion", "Pride and Prejudice", "Sense and Sensibility"]
HEADING = re.compile(r"^(CHAPTER|Chapter) [0-9IVXLC]+\.?$")
#: Lines that are not prose: volume headings and end marks (Northanger Abbey's editor's note ends the book).
SKIP = re.compile(r"^(VOLUME [IVX]+|THE END|FINIS|Finis)$")
END = "A NOTE ON THE TEXT"
VALIDATION_EVERY, VALIDATION_AT = 20, 10


def read_character_vectors(rdb: bytes) -> list[list[str]]:
    """Every object of an R lazy-load database, each a character vector (list of lines)."""
    vectors, pos = [], 0
    while pos < len(rdb):
        stream = zlib.decompressobj()
        raw = stream.decompress(rdb[pos + 4 :])
        pos = len(rdb) - len(stream.unused_data)
        assert raw[:2] == b"X\n" and struct.unpack(">i", raw[2:6])[0] == 3, "not XDR serialisation version 3"
        p = 14
        p += 4 + struct.unpack(">i", raw[p : p + 4])[0]  # the native encoding's name
        flags, length = struct.unpack(">ii", raw[p : p + 8])
        assert flags & 0xFF == 16, "expected a character vector (STRSXP) without attributes"
        p += 8
        lines = []
        for _ in range(length):
            _, size = struct.unpack(">ii", raw[p : p + 8])  # CHARSXP flags, byte length (-1: NA)
            p += 8
            lines.append(raw[p : p + size].decode("utf-8") if size >= 0 else "")
            p += max(size, 0)
        vectors.append(lines)
    return vectors


def paragraphs(lines: list[str]) -> list[tuple[int, str]]:
    """(chapter number, paragraph) for the body of one novel; front matter and headings dropped."""
    found, chapter, current = [], 0, []

    def flush() -> None:
        if current and chapter:
            text = re.sub(r"\s+", " ", " ".join(current)).replace("_", "").strip()
            if text:
                found.append((chapter, text))
        current.clear()

    for line in lines:
        line = line.strip()
        if line == END:
            break
        if SKIP.match(line):
            continue
        if HEADING.match(line):
            flush()
            chapter += 1
        elif not line:
            flush()
        else:
            current.append(line)
    flush()
    return found


def main(deb: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg-deb", "-x", deb, tmp], check=True)
        vectors = read_character_vectors((Path(tmp) / RDB).read_bytes())
    splits = {"train": [], "validation": []}
    for title, lines in zip(TITLES, vectors, strict=True):
        assert lines[0].strip().lower().startswith(title.lower()[:6]), (title, lines[0])
        for chapter, text in paragraphs(lines):
            split = "validation" if chapter % VALIDATION_EVERY == VALIDATION_AT else "train"
            splits[split].append({"book": title, "chapter": chapter, "text": text})
    OUT.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        with open(OUT / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        chars = sum(len(row["text"]) for row in rows)
        print(f"{split}: {len(rows)} paragraphs, {chars / 1e6:.2f} M characters")


if __name__ == "__main__":
    main(sys.argv[1])
