"""bench/bench_train.py --csv: the speed table docs/benchmarks/speed.md renders is the bench's own
output, one row per arm that ran, named by the method and views it timed."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "bench_train.py"
spec = importlib.util.spec_from_file_location("bench_train", SCRIPT)
bench_train = importlib.util.module_from_spec(spec)
sys.path.insert(0, str(SCRIPT.parent))  # the bench imports its sibling arm_process
try:
    spec.loader.exec_module(bench_train)
finally:
    sys.path.remove(str(SCRIPT.parent))


def test_the_table_has_a_row_per_arm_that_ran(tmp_path: Path):
    results = {"ce": {"images_per_s": 200.04, "peak_rss_mb": 1090.4},
               "default": {"images_per_s": 184.46, "peak_rss_mb": 1180.6}}
    out = tmp_path / "speed.csv"
    bench_train.write_table(out, results, "fitnet+uhc-ka", "crop-flip-cached")
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["arm", "images/s", "peak RSS"]
    assert rows[1] == ["`ce`, crop-flip-cached", "200.0", "1090 MiB"]
    default = "default (`fitnet+uhc-ka`), crop-flip-cached, teachers from the cache"
    assert rows[2] == [default, "184.5", "1181 MiB"]
    assert len(rows) == 3
