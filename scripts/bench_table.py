#!/usr/bin/env python3
"""Prints scripts/bench.sh's results as a Markdown table.

Input: lines `<case label>\\t<JSON>`, the JSON as `ldm-train bench
autoencoder` and scripts/bench_torch.py print it (PyTorch lines carry no
"backend" key).  Per case and backend: median s/step, images/s, peak RSS,
and the ratios of time and RSS to PyTorch's in the same run.
"""

import json
import sys


def main(path: str) -> int:
    rows: dict[str, dict[str, dict]] = {}
    for line in open(path, encoding="utf-8"):
        label, _, blob = line.rstrip("\n").partition("\t")
        rep = json.loads(blob)
        rows.setdefault(label, {})[rep.get("backend", "pytorch")] = rep
    print("| case | backend | median s | images/s | peak RSS MiB | time / PyTorch | RSS / PyTorch |")
    print("|---|---|---|---|---|---|---|")
    for label, by_backend in rows.items():
        ref = by_backend.get("pytorch")
        for name, rep in by_backend.items():
            ratio = rss = "–"
            if ref is not None:
                ratio = f"{rep['median_s'] / ref['median_s']:.2f}×"
                if rep.get("peak_rss_mib") and ref.get("peak_rss_mib"):
                    rss = f"{rep['peak_rss_mib'] / ref['peak_rss_mib']:.2f}×"
            peak = rep.get("peak_rss_mib")
            print(f"| {label} | {name} | {rep['median_s']:.3f} | {rep['images_per_sec']:.2f} | "
                  f"{'–' if peak is None else f'{peak:.0f}'} | {ratio} | {rss} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
