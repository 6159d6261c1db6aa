"""Training curves as markdown: a run's ``log.csv`` averaged over equal blocks of steps.

    python -m training.curves runs/mvd-small/log.csv [--blocks 10]

One row per block: steps, mean learning rate, mean loss, its confidence-weighted parts and the
mean normalised point distance (the loss's unweighted ‖p̂ − p‖), the Gaussian rendering loss when
the run had one, and the mean seconds a step. Logs of several runs can be given in order (stages
of one recipe); each gets its own table.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Optional, Sequence

COLUMNS = ("lr", "loss", "conf_view0", "conf_others", "distance", "render", "seconds")


def block_means(rows: list[dict[str, str]], blocks: int) -> list[tuple[int, int, dict[str, float]]]:
    """(first step, last step, column means) of `blocks` consecutive, near-equal blocks of `rows`."""
    out = []
    for b in range(blocks):
        part = rows[b * len(rows) // blocks:(b + 1) * len(rows) // blocks]
        if not part:
            continue
        means = {}
        for column in COLUMNS:
            values = [float(r[column]) for r in part if r.get(column)]
            if values:
                means[column] = sum(values) / len(values)
        out.append((int(part[0]["step"]), int(part[-1]["step"]), means))
    return out


def markdown(path: Path, blocks: int) -> str:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{path}: no steps logged")
    table = block_means(rows, blocks)
    columns = [c for c in COLUMNS if c in table[0][2]]
    lines = [f"`{path}` ({len(rows)} steps)", "", "| steps | " + " | ".join(columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for first, last, means in table:
        cells = [f"{means[c]:.2e}" if c == "lr" else f"{means[c]:.3f}" for c in columns]
        lines.append(f"| {first}–{last} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.curves", description=__doc__.split("\n\n")[0])
    p.add_argument("logs", type=Path, nargs="+", help="log.csv files written by training.train")
    p.add_argument("--blocks", type=int, default=10)
    args = p.parse_args(argv)
    print("\n\n".join(markdown(path, args.blocks) for path in args.logs))


if __name__ == "__main__":
    main()
