"""Pool per-roster comparisons already on disk: `python scripts/pool_rosters.py OUT`.

For rosters compared side by side (one `train.py compare --task fashion-roster<seed> --out
OUT/fashion-roster<seed>` each), this writes OUT/pooled.md and OUT/pooled.json exactly as
`train.py compare --rosters` does after running them one after another.
"""

from __future__ import annotations

import sys
from pathlib import Path

from amalgam.errors import UserError
from amalgam.workflows.roster_compare import pool_finished

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/pool_rosters.py OUT_DIR")
    try:
        pool_finished(Path(sys.argv[1]))
    except UserError as exc:
        sys.exit(f"error: {exc}")
    print(f"pooled report: {Path(sys.argv[1]) / 'pooled.md'}")
