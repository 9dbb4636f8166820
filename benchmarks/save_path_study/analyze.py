from __future__ import annotations

import json
import sys

raw = json.load(open(sys.argv[1]))
names = sorted({k.split("|")[0] for k in raw}, key=lambda n: (n != "base", n))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


for fig, reg in (("a", "a:tracked"), ("a", "a:wb"), ("b", "b:tracked")):
    div = 100 if fig == "b" else 1
    for n in names:
        P = [x / 1000 / div for x in raw[f"{n}|{fig}:plain"]]
        T = [x / 1000 / div for x in raw[f"{n}|{reg}"]]
        print(
            f"{reg:9} {n:6} twin p10/p25/p50 {pct(P, 0.1):6.0f} {pct(P, 0.25):6.0f} {pct(P, 0.5):6.0f} | registered {pct(T, 0.1):6.0f} {pct(T, 0.25):6.0f} {pct(T, 0.5):6.0f} | "
            f"extra at p10 {pct(T, 0.1) - pct(P, 0.1):5.0f}, p25 {pct(T, 0.25) - pct(P, 0.25):5.0f}, p50 {pct(T, 0.5) - pct(P, 0.5):5.0f}; ratio p10 {pct(T, 0.1) / pct(P, 0.1):.2f} p25 {pct(T, 0.25) / pct(P, 0.25):.2f} p50 {pct(T, 0.5) / pct(P, 0.5):.2f}"
        )
