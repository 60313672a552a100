"""The benchmark keeps running: its smoke run (20 small objects against a moto server it
starts, cloudmirror and s5cmd in one run) must finish and report requests and CPU per object.
The figures themselves are judged in docs/benchmarks.md, never here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_smoke_run_writes_its_report(tmp_path):
    out = tmp_path / "bench.md"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "bench.run", "--only", "small", "--objects", "20", "--profile", "off",
                        "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    text = out.read_text()
    assert "--only small --objects 20" in text
    row = re.search(r"\| storage requests per object \(20 x 4 KiB\) \| [^|]+ \| (\d+\.\d+) \|", text)
    assert row, text[-4000:]
    assert 1.0 <= float(row.group(1)) <= 3.0  # every object was copied, each with a bounded number of requests
    assert re.search(r"\| CPU, cloudmirror / s5cmd \(small\) \| - \| \d+\.\d+ \|", text)
