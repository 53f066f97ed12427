#!/usr/bin/python3
"""Parses a Prometheus text file with the reference parser (Debian's
python3-prometheus-client) and prints one "NAME{LABELS} VALUE" line per
sample, sorted; exits 1 with the parser's message when the file does not
parse, or when a family lacks HELP/TYPE or a counter does not end in _total.
Test-only."""
import sys

from prometheus_client.parser import text_string_to_metric_families

text = open(sys.argv[1], encoding="utf-8").read()
try:
    families = list(text_string_to_metric_families(text))
except Exception as e:  # the parser raises ValueError and friends
    print(f"prom_check: does not parse: {e}", file=sys.stderr)
    sys.exit(1)
helps = {l.split()[2] for l in text.splitlines() if l.startswith("# HELP ")}
types = {l.split()[2] for l in text.splitlines() if l.startswith("# TYPE ")}
bad = False
for f in families:
    raw = f.name + ("_total" if f.type == "counter" else "")
    if raw not in helps or raw not in types:
        print(f"prom_check: {raw} lacks HELP or TYPE", file=sys.stderr)
        bad = True
    if f.type == "counter" and not raw.endswith("_total"):
        print(f"prom_check: counter {raw} does not end in _total", file=sys.stderr)
        bad = True
    for s in f.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value:g}")
sys.exit(1 if bad else 0)
