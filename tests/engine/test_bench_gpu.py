"""``bench/gpu.py`` runs on the CPU as it will on a GPU (``--device cpu --views 4``: the reduced
networks), and its table says what each precision did: ``auto`` within float32 parity of ``exact``,
``fast`` measurably different, every pipeline stage timed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_benchmark_runs_on_the_cpu_and_reports_every_precision() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--device", "cpu", "--views", "4"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith("- Software: torch ") and "CUDA" in line for line in lines)
    assert any(line.startswith("- Date: ") for line in lines)
    assert any("model size: reduced" in line for line in lines)
    rows = {}
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 9 and cells[1] == "4":
            rows[(cells[0], cells[2])] = cells
    assert set(rows) == {(v, p) for v in ("MVD", "MVDp") for p in ("exact", "auto", "fast")}
    for variant in ("MVD", "MVDp"):
        assert float(rows[(variant, "exact")][8]) == 0.0
        assert float(rows[(variant, "auto")][8]) < 1e-4            # float32 parity
        assert 1e-4 < float(rows[(variant, "fast")][8]) < 0.05 or "fp32" in rows[(variant, "fast")][3]
        assert all(float(rows[(variant, p)][4]) > 0 for p in ("exact", "auto", "fast"))
    pipeline = [line for line in lines if line.startswith("| MVDp | ") and ("first" in line or "warm" in line)]
    assert len(pipeline) == 6, done.stdout                       # 3 precisions × first + warm
    for line in pipeline:
        stages = [float(c) for c in line.strip("|").split("|")[3:]]
        assert len(stages) == 5 and all(s >= 0 for s in stages) and stages[1] > 0   # network timed
