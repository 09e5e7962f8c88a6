#!/usr/bin/env python3
"""Turns the criterion results of `cargo bench -p hush-sframe --bench seal_open`
into the ratio table of BENCHMARKS.md.

A ratio "hush / X" is a speed ratio: X's time per frame divided by hush's,
so 1.00 means as fast, above 1 faster. All numbers come from one bench run.
"""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
IMPLS = ["hush-ring", "hush-rustcrypto", "sframe-crate", "bare-aes-gcm", "bare-ring"]


def median_ns(suite, impl, size):
    f = root / f"seal_open_{suite}" / impl / str(size) / "new" / "estimates.json"
    if not f.exists():
        return None
    return json.loads(f.read_text())["median"]["point_estimate"]


def fmt_ns(v):
    return "n/a" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.1f}")


def ratio(base, mine):
    return "n/a" if base is None or mine is None else f"{base / mine:.2f}"


rows = []
print("| suite | frame | " + " | ".join(f"{i} ns" for i in IMPLS)
      + " | hush/sframe-crate | hush/bare-aes-gcm | hush/bare-ring |")
print("|---" * (2 + len(IMPLS) + 3) + "|")
for suite in ["0004", "0005", "0001"]:
    for size in [60, 1200, 12000]:
        t = {i: median_ns(suite, i, size) for i in IMPLS}
        if all(v is None for v in t.values()):
            continue
        # hush's default backend: ring for GCM when built in, else RustCrypto.
        hush = t["hush-ring"] if t["hush-ring"] is not None else t["hush-rustcrypto"]
        print(f"| 0x{suite} | {size:,} B | " + " | ".join(fmt_ns(t[i]) for i in IMPLS)
              + f" | {ratio(t['sframe-crate'], hush)} | {ratio(t['bare-aes-gcm'], hush)}"
              + f" | {ratio(t['bare-ring'], hush)} |")
