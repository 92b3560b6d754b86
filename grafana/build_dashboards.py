"""Writes rigwatch's Grafana dashboards (grafana/dashboards/*.json) from grafana/dashboards_src/.

The JSON files are committed; run `python3 grafana/build_dashboards.py` after changing the
sources, and `--check` (the tests do) to verify the committed files match what they produce.
Needs grafana-foundation-sdk (`pip install '.[dashboards]'`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dashboards_src import render_all

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="only compare the committed files with the generated ones; exit 1 if they differ",
    )
    args = parser.parse_args(argv)
    stale = []
    for name, text in render_all().items():
        path = DASHBOARD_DIR / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            DASHBOARD_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(
            f"out of date: {', '.join(stale)}; run python3 grafana/build_dashboards.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
