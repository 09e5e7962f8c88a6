#!/usr/bin/env python3
"""Markdown table of `hush loadtest --json` reports (one row per step)."""
import json
import sys


def row(name, s):
    b = s.get("baseline") or {}
    lat = s["latency"]
    fmt = lambda v, d=0: "n/a" if v is None else f"{v:,.{d}f}"
    return (
        f"| {name} | {s['participants']} | {fmt(s['forwarded_packets_per_sec'])} | "
        f"{fmt(s['forwarded_bits_per_sec'] / 1e6, 2)} | {s['loss_percent']:.2f} | "
        f"{lat['p50_ms']:.1f} / {lat['p95_ms']:.1f} / {lat['p99_ms']:.1f} | "
        f"{fmt(s['sfu_cpu_percent_of_one_core'], 1)} | {fmt(s['forwarded_packets_per_cpu_second'])} | "
        f"{fmt(b.get('forwarded_packets_per_cpu_second'))} | {fmt(s.get('ratio_to_udp_relay'), 3)} | "
        f"{fmt((s['sfu_peak_memory_bytes'] or 0) / 2**20, 1)} | "
        f"{fmt((s['sfu_memory_per_subscriber_bytes'] or 0) / 1024)} | {s['decryption_failures']} |"
    )


print(
    "| scenario | participants | fwd pkt/s | fwd Mbit/s | loss % | latency p50/p95/p99 ms | "
    "SFU CPU % of a core | SFU pkt/CPU-s | relay pkt/CPU-s | ratio | SFU peak MiB | KiB/subscriber | decrypt failures |"
)
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for path in sys.argv[1:]:
    with open(path) as f:
        r = json.load(f)
    name = path.rsplit("/", 1)[-1].removesuffix(".json")
    for s in r["steps"]:
        label = f"{name} ({s['subscribers_per_room']}/room)" if r["config"]["ramp"] else name
        print(row(label, s))
    if r.get("largest_held_subscribers_per_room") is not None:
        print(f"\n{name}: largest load held: {r['largest_held_subscribers_per_room']} subscribers per room\n")
