#!/usr/bin/env python3
"""Prints scripts/bench.sh's results as Markdown tables.

Input: lines `<case label>\\t<JSON>`, the JSON as `ldm-train bench
autoencoder|diffusion` and scripts/bench_torch.py print it (PyTorch's
autoencoder lines carry no "backend" key; its diffusion lines say
"pytorch"). One table per suite, told apart by the rate key: autoencoder
lines have "images_per_sec", diffusion lines "samples_per_sec". Per case and
backend: median s per iteration, the rate, peak RSS, and the ratios of time
and RSS to PyTorch's in the same run; the diffusion table adds the UNet's
parameter count (a mismatch between backends is marked with "≠").
"""

import json
import sys

# rate key -> (title, rate column)
SUITES = {
    "images_per_sec": ("Autoencoder", "images/s"),
    "samples_per_sec": ("Diffusion UNet", "samples/s"),
}


def ratio(a, b) -> str:
    return f"{a / b:.2f}×" if a and b else "–"


def table(rate_key: str, rows: dict[str, dict[str, dict]]) -> None:
    title, rate_col = SUITES[rate_key]
    diffusion = rate_key == "samples_per_sec"
    cols = ["case", "backend", "median s", rate_col, "peak RSS MiB", "time / PyTorch", "RSS / PyTorch"]
    if diffusion:
        cols.append("params")
    print(f"### {title}\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for label, by_backend in rows.items():
        ref = by_backend.get("pytorch")
        for name, rep in by_backend.items():
            peak = rep.get("peak_rss_mib")
            cells = [label, name, f"{rep['median_s']:.3f}", f"{rep[rate_key]:.2f}",
                     "–" if peak is None else f"{peak:.0f}",
                     ratio(rep["median_s"], ref and ref["median_s"]),
                     ratio(peak, ref and ref.get("peak_rss_mib"))]
            if diffusion:
                p = rep.get("params")
                mark = " ≠" if ref is not None and p != ref.get("params") else ""
                cells.append(("–" if p is None else f"{p:,}") + mark)
            print("| " + " | ".join(cells) + " |")
    print()


def main(path: str) -> int:
    suites: dict[str, dict[str, dict[str, dict]]] = {}
    for line in open(path, encoding="utf-8"):
        label, _, blob = line.rstrip("\n").partition("\t")
        rep = json.loads(blob)
        rate_key = next((k for k in SUITES if k in rep), None)
        if rate_key is None:
            print(f"bench_table.py: {label}: no {' or '.join(SUITES)} in {blob}", file=sys.stderr)
            return 1
        suites.setdefault(rate_key, {}).setdefault(label, {})[rep.get("backend", "pytorch")] = rep
    for rate_key in SUITES:
        if rate_key in suites:
            table(rate_key, suites[rate_key])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
