#!/usr/bin/env python3
"""Parses a Prometheus text-format (0.0.4) exposition from stdin with the reference
Python client's parser (prometheus_client.parser) and prints what it found as JSON, for
tests/observability.rs to assert on.

Output: {"ok": true, "declared": {name: type}, "help": [names], "families":
[{"name", "type", "samples": [{"name", "labels", "value"}]}], "untyped": [sample names
outside any declared family], "problems": [...]} or {"ok": false, "error": "..."}.

prometheus_client's parser is lax (a sample outside its family becomes an untyped
singleton rather than an error), so the structural checks it leaves out are reported in
`problems`: TYPE declared twice, a family declared after its samples, the same series
twice, invalid metric or label names, and samples that belong to no declared family.
"""

import json
import math
import re
import sys

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as e:  # reported, not raised: the Rust side prints it
    print(json.dumps({"ok": False, "error": "prometheus_client missing: %s" % e}))
    sys.exit(0)

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def number(v):
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    return v


def main():
    text = sys.stdin.read()
    problems = []
    declared = {}
    helps = []
    for line in text.split("\n"):
        parts = line.split(None, 3)
        if len(parts) >= 3 and parts[0] == "#" and parts[1] == "TYPE":
            name = parts[2]
            kind = parts[3].strip() if len(parts) > 3 else ""
            if name in declared:
                problems.append("TYPE declared twice: %s" % name)
            if kind not in ("counter", "gauge", "histogram", "summary", "untyped"):
                problems.append("unknown TYPE %r for %s" % (kind, name))
            if not METRIC_NAME.match(name):
                problems.append("invalid metric name in TYPE: %r" % name)
            declared[name] = kind
        elif len(parts) >= 3 and parts[0] == "#" and parts[1] == "HELP":
            helps.append(parts[2])
    if not text.endswith("\n"):
        problems.append("exposition does not end with a newline")

    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser refused the text
        print(json.dumps({"ok": False, "error": "%s: %s" % (type(e).__name__, e)}))
        return

    out_families = []
    untyped = []
    seen_series = set()
    seen_families = set()
    for fam in families:
        if fam.type == "untyped" and fam.name not in declared:
            untyped.extend(s.name for s in fam.samples)
        if fam.name in seen_families and fam.type != "untyped":
            problems.append("family split in two: %s" % fam.name)
        seen_families.add(fam.name)
        samples = []
        for s in fam.samples:
            if not METRIC_NAME.match(s.name):
                problems.append("invalid sample name %r" % s.name)
            for k in s.labels:
                if not LABEL_NAME.match(k) or k.startswith("__"):
                    problems.append("invalid label name %r on %s" % (k, s.name))
            key = (s.name, tuple(sorted(s.labels.items())))
            if key in seen_series:
                problems.append("series twice: %s %s" % (s.name, sorted(s.labels.items())))
            seen_series.add(key)
            samples.append({"name": s.name, "labels": dict(s.labels), "value": number(s.value)})
        out_families.append({"name": fam.name, "type": fam.type, "samples": samples})

    print(json.dumps({
        "ok": True,
        "declared": declared,
        "help": helps,
        "families": out_families,
        "untyped": untyped,
        "problems": problems,
    }))


if __name__ == "__main__":
    main()
