"""Measure every figure of a warehouse ``bench/generate.py`` loaded, and write the results.

Run: ``python bench/run.py DIR [DIR ...]``. For each DIR: the measurements of ``_scale.py``
(each beside a baseline from the same run), written to ``bench/results/scale-<months>m.json``;
then ``bench/RESULTS.md`` is rebuilt from every result there (machine, date, command, the
table against the goals of issue 13). Run it on a 1-month and a 12-month load to see what
grows with history.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _results
import _scale


def main() -> None:
    parser = argparse.ArgumentParser(prog="python bench/run.py")
    parser.add_argument("folders", type=Path, nargs="+", help="folders of bench/generate.py")
    args = parser.parse_args()
    for folder in args.folders:
        result = _scale.run(folder)
        print(f"{folder}: {result['months']} months measured")
    print(f"written: {_results.write()}")


if __name__ == "__main__":
    main()
