#!/usr/bin/env python3
"""Turns bench/run.sh's raw measurements into the Markdown table and JSON (stdlib only).

  report.py RAWDIR [--md FILE] [--json FILE]   full report (also printed)
  report.py --one RAWDIR/X.meta.json           one-line summary of a single measurement
  report.py --suggest-rate RAWDIR              half of nginx's median small-body req/s, rounded

Each measurement is RAWDIR/r{round}-{scenario}-{target}.meta.json (counters taken before
and after by run.sh) plus the tool's own output (wrk text with a WRKJSON line, oha JSON, or
bench/paced.rs JSON).
"""

import argparse
import glob
import json
import os
import statistics
import sys

TARGETS = ["direct", "ringway", "nginx"]
SCENARIOS = {
    "wrk-small": "Closed-loop saturation, 100-byte body (wrk -t1 -c64)",
    "wrk-16k": "Closed-loop saturation, 16 KiB body (wrk -t1 -c64)",
    "oha-rate": "Fixed rate, 100-byte body (oha -q RATE --latency-correction -c 32)",
    "paced-rate": "Fixed rate evenly paced, 100-byte body (bench/paced.rs --rate RATE --conns 32; "
                  "latency from each request's scheduled instant)",
}
FIXED_RATE = ("oha-rate", "paced-rate")
DEADLINE = "aborted due to deadline"


def wrk_json(path):
    """The WRKJSON line bench/run.sh's wrk script prints, as a dict."""
    line = None
    with open(path) as f:
        for raw in f:
            if raw.startswith("WRKJSON "):
                line = raw[len("WRKJSON "):]
    if line is None:
        raise SystemExit(f"report.py: no WRKJSON line in {path}")
    return json.loads(line)


def load_measurement(meta_path):
    with open(meta_path) as f:
        m = json.load(f)
    out_path = os.path.join(os.path.dirname(meta_path), m["output"])
    r = {k: m[k] for k in ("round", "scenario", "target", "tool", "rate")}
    wall = m["wall_end"] - m["wall_start"]
    if m["tool"] == "wrk":
        w = wrk_json(out_path)
        requests = w["requests"]
        secs = w["duration_us"] / 1e6
        r.update(
            requests=requests,
            rps=requests / secs if secs else 0.0,
            p50_ms=w["p50_us"] / 1000, p99_ms=w["p99_us"] / 1000, p999_ms=w["p999_us"] / 1000,
            non2xx=w["err_status"],
            errors=w["err_connect"] + w["err_read"] + w["err_write"] + w["err_timeout"],
            bytes_per_response=w["bytes"] / requests if requests else 0.0,
        )
    elif m["tool"] == "paced":
        with open(out_path) as f:
            o = json.load(f)
        sched = o["scheduled"]
        r.update(
            requests=o["requests"],
            rps=o["rate"],
            p50_ms=sched["p50_us"] / 1000, p99_ms=sched["p99_us"] / 1000, p999_ms=sched["p999_us"] / 1000,
            # paced.rs counts anything but a 200 framed by Content-Length as an error.
            non2xx=0,
            errors=o["errors"],
        )
    else:
        with open(out_path) as f:
            o = json.load(f)
        codes = {str(k): v for k, v in (o.get("statusCodeDistribution") or {}).items()}
        requests = sum(codes.values())
        ok = sum(v for k, v in codes.items() if k.startswith("2"))
        errs = dict(o.get("errorDistribution") or {})
        aborted = errs.pop(DEADLINE, 0)
        secs = o["summary"].get("total") or wall
        pct = o.get("latencyPercentiles") or {}
        ms = lambda k: (pct.get(k) or 0.0) * 1000
        r.update(
            requests=requests,
            rps=requests / secs if secs else 0.0,
            p50_ms=ms("p50"), p99_ms=ms("p99"), p999_ms=ms("p99.9"),
            non2xx=requests - ok,
            errors=sum(errs.values()),
            error_kinds=errs,
            aborted_at_deadline=aborted,
        )
    ticks = m["clk_tck"]
    req = r["requests"] or 1
    r["cpu_us_per_req"] = m["cpu_ticks"] / ticks * 1e6 / req
    r["upstream_cpu_us_per_req"] = m["upstream_cpu_ticks"] / ticks * 1e6 / req
    r["proxy_cpu_cores"] = m["cpu_ticks"] / ticks / wall if wall else 0.0
    # The "after" /echo probe is itself one new connection: subtract it.
    opened = m["conn_id_after"] - m["conn_id_before"] - 1
    r["upstream_conns_opened"] = opened
    r["upstream_conns_per_1k"] = opened / req * 1000
    if m.get("ringway_conns_after") is not None and m.get("ringway_conns_before") is not None:
        r["ringway_status_conns_opened"] = m["ringway_conns_after"] - m["ringway_conns_before"]
        r["ringway_status_requests"] = m["ringway_total_after"] - m["ringway_total_before"]
    r["rss_kib"] = m["rss_kib"]
    r["upstream_rss_kib"] = m["upstream_rss_kib"]
    b, a = m["proc_stat_before"], m["proc_stat_after"]
    d = [y - x for x, y in zip(b, a)]
    tot = sum(d) or 1
    r["machine_idle_pct"] = 100.0 * (d[3] + d[4]) / tot
    r["steal_pct"] = 100.0 * d[7] / tot if len(d) > 7 else 0.0
    return r


def load_pair(path):
    """One side-by-side measurement: each proxy's requests and CPU µs per request."""
    with open(path) as f:
        m = json.load(f)
    r = {"round": m["round"], "scenario": m["scenario"]}
    for t in ("ringway", "nginx"):
        w = wrk_json(os.path.join(os.path.dirname(path), m[f"{t}_output"]))
        requests = w["requests"]
        errors = w["err_connect"] + w["err_read"] + w["err_write"] + w["err_timeout"] + w["err_status"]
        r[t] = {"requests": requests, "errors": errors,
                "rps": requests / (w["duration_us"] / 1e6) if w["duration_us"] else 0.0,
                "cpu_us_per_req": m[f"{t}_cpu_ns"] / 1000 / requests if requests else None}
    a, b = r["ringway"]["cpu_us_per_req"], r["nginx"]["cpu_us_per_req"]
    r["cpu_ratio"] = a / b if a and b else None
    return r


def load_all(raw):
    rows = [load_measurement(p) for p in sorted(glob.glob(os.path.join(raw, "r*-*.meta.json")))]
    meta_path = os.path.join(raw, "meta.json")
    meta = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
    idle = {}
    for t in ("ringway", "nginx"):
        p = os.path.join(raw, f"idle-{t}.json")
        if os.path.exists(p):
            idle[t] = json.load(open(p))
    pairs = [load_pair(p) for p in sorted(glob.glob(os.path.join(raw, "pair-r*.json")))]
    return rows, meta, idle, pairs


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": values}


METRICS = ["rps", "p50_ms", "p99_ms", "p999_ms", "cpu_us_per_req", "upstream_cpu_us_per_req",
           "upstream_conns_per_1k", "rss_kib", "non2xx", "errors", "machine_idle_pct", "steal_pct",
           "proxy_cpu_cores", "requests"]


def aggregate(rows):
    agg = {}
    for s in SCENARIOS:
        for t in TARGETS:
            sel = [r for r in rows if r["scenario"] == s and r["target"] == t]
            if not sel:
                continue
            a = {k: stats([r.get(k) for r in sel]) for k in METRICS}
            a["capacity"] = stats([1e6 / r["cpu_us_per_req"] for r in sel if r["cpu_us_per_req"] > 0])
            a["rounds"] = len(sel)
            a["non2xx_total"] = sum(r["non2xx"] for r in sel)
            a["errors_total"] = sum(r["errors"] for r in sel)
            if t == "ringway" and "ringway_status_conns_opened" in sel[0]:
                a["ringway_status_conns_per_1k"] = stats(
                    [r["ringway_status_conns_opened"] / max(r["requests"], 1) * 1000 for r in sel])
            agg.setdefault(s, {})[t] = a
    # Added latency at a fixed rate: proxy minus direct, per round, then median.
    added = {}
    for s in FIXED_RATE:
        fixed = [r for r in rows if r["scenario"] == s]
        for t in ("ringway", "nginx"):
            per = {"p50_ms": [], "p99_ms": [], "p999_ms": []}
            for r in fixed:
                if r["target"] != t:
                    continue
                d = next((x for x in fixed if x["target"] == "direct" and x["round"] == r["round"]), None)
                if d:
                    for k in per:
                        per[k].append(r[k] - d[k])
            if per["p50_ms"]:
                added.setdefault(s, {})[t] = {k: stats(v) for k, v in per.items()}
    return agg, added


def fmt(x, digits=None):
    if x is None:
        return "-"
    if digits is None:
        digits = 0 if abs(x) >= 1000 else (1 if abs(x) >= 100 else (2 if abs(x) >= 1 else 3))
    s = f"{x:,.{digits}f}"
    return s


def cell(st, digits=None, spread=True):
    if st is None:
        return "-"
    if not spread or len(st["values"]) == 1:
        return fmt(st["median"], digits)
    return f"{fmt(st['median'], digits)} ({fmt(st['min'], digits)}–{fmt(st['max'], digits)})"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def med(agg, s, t, k):
    try:
        return agg[s][t][k]["median"]
    except (KeyError, TypeError):
        return None


def build_report(rows, meta, idle, pairs):
    agg, added = aggregate(rows)
    lines = []
    L = lines.append
    L(f"# ringway load benchmark ({meta.get('started_at', '?')})")
    L("")
    L(f"- machine: {meta.get('nproc', '?')} CPU, {meta.get('cpu_model', '?')}, kernel {meta.get('kernel', '?')}")
    L(f"- ringway commit {meta.get('commit', '?')}, driver **{meta.get('ringway_driver', '?')}**, "
      f"--workers {meta.get('workers', '?')}; nginx {meta.get('nginx_version', '?')} worker_processes "
      f"{meta.get('workers', '?')}; wrk {meta.get('wrk_version', '?')}; oha {meta.get('oha_version', '?')}")
    L(f"- {meta.get('pinning', '?')}")
    if meta.get("loadavg_start"):
        L(f"- load average at start {meta['loadavg_start']}, at end {meta.get('loadavg_end', '?')} "
          "(other work on this shared machine shows up here)")
    L(f"- {meta.get('rounds', '?')} interleaved round(s) of {meta.get('duration_s', '?')} s per measurement "
      "(direct, ringway, nginx in turn); cells are median (min–max) over rounds")
    L("- upstream: the bundled ringway-upstream (1 worker); `direct` = load straight to it, so its CPU "
      "column is the upstream's own CPU per request and its req/s is the ceiling of this setup")
    L("")
    for s, title in SCENARIOS.items():
        if s not in agg:
            continue
        t_title = title.replace("RATE", str(meta.get("rate", "?")))
        L(f"## {t_title}")
        L("")
        hdr = ["target", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "proxy CPU µs/req",
               "capacity req/CPU-s", "upstream CPU µs/req", "upstream conns /1k req", "RSS MiB after",
               "non-2xx", "errors"]
        if s in FIXED_RATE:
            hdr[10:10] = ["+p50 ms", "+p99 ms"]
        L("| " + " | ".join(hdr) + " |")
        L("|" + "---|" * len(hdr))
        for t in TARGETS:
            a = agg[s].get(t)
            if not a:
                continue
            rss = a["rss_kib"]
            rss_mib = {k: (v / 1024 if k != "values" else [x / 1024 for x in v]) for k, v in rss.items()}
            row = [
                t + (" (upstream itself)" if t == "direct" else ""),
                cell(a["rps"], 0),
                cell(a["p50_ms"], 3), cell(a["p99_ms"], 3), cell(a["p999_ms"], 3, spread=False),
                cell(a["cpu_us_per_req"], 2),
                cell(a["capacity"], 0, spread=False),
                cell(a["upstream_cpu_us_per_req"], 2, spread=False),
                cell(a["upstream_conns_per_1k"], 3, spread=False),
                cell(rss_mib, 1, spread=False),
                str(a["non2xx_total"]), str(a["errors_total"]),
            ]
            if s in FIXED_RATE:
                ad = added.get(s, {}).get(t)
                row[10:10] = [cell(ad["p50_ms"], 3) if ad else "-", cell(ad["p99_ms"], 3) if ad else "-"]
            L("| " + " | ".join(row) + " |")
        idle_pct = [agg[s][t]["machine_idle_pct"]["median"] for t in agg[s]]
        steal = [agg[s][t]["steal_pct"]["median"] for t in agg[s]]
        L("")
        L(f"machine idle {min(idle_pct):.0f}–{max(idle_pct):.0f} %, steal {min(steal):.1f}–{max(steal):.1f} % "
          "during these runs (medians per target)")
        L("")

    side = {}
    if pairs:
        L("## Side by side: ringway and nginx at once on the proxy core (wrk -t1 -c64 each)")
        L("")
        L("Both saturated at the same time, each by its own wrk, so the machine's drift falls on "
          "both: CPU per request over the same seconds, median (min–max) over rounds.")
        L("")
        L("| body | ringway CPU µs/req | nginx CPU µs/req | ringway / nginx | capacity ratio | ringway req/s | nginx req/s |")
        L("|---|---|---|---|---|---|---|")
        for s, label in (("wrk-small", "100 B"), ("wrk-16k", "16 KiB")):
            ps = [p for p in pairs if p["scenario"] == s]
            rc = stats([p["ringway"]["cpu_us_per_req"] for p in ps])
            nc = stats([p["nginx"]["cpu_us_per_req"] for p in ps])
            rt = stats([p["cpu_ratio"] for p in ps])
            if not (rc and nc and rt):
                continue
            side[s] = {"ringway_cpu_us_per_req": rc, "nginx_cpu_us_per_req": nc, "cpu_ratio": rt}
            rr = stats([p["ringway"]["rps"] for p in ps])
            nr = stats([p["nginx"]["rps"] for p in ps])
            L(f"| {label} | {cell(rc, 2)} | {cell(nc, 2)} | {cell(rt, 3)} | {1 / rt['median']:.2f}x | "
              f"{cell(rr, 0)} | {cell(nr, 0)} |")
        L("")

    ratios = {}
    L("## ringway / nginx")
    L("")
    for s, label in (("wrk-small", "small body"), ("wrk-16k", "16 KiB body")):
        rt = (side.get(s) or {}).get("cpu_ratio")
        if rt:
            ratios[f"cpu_per_request_side_by_side_{s}"] = rt["median"]
            L(f"- CPU per request ratio side by side ({label}): **{rt['median']:.2f}x** "
              f"({rt['min']:.3f}–{rt['max']:.3f} over rounds; capacity {1 / rt['median']:.2f}x)")
    for s, label in (("wrk-small", "small body"), ("wrk-16k", "16 KiB body")):
        thr = ratio(med(agg, s, "ringway", "rps"), med(agg, s, "nginx", "rps"))
        cpu = ratio(med(agg, s, "ringway", "cpu_us_per_req"), med(agg, s, "nginx", "cpu_us_per_req"))
        ratios[f"throughput_{s}"] = thr
        ratios[f"cpu_per_request_{s}"] = cpu
        if thr is not None:
            L(f"- throughput ratio ({label}, wrk): **{thr:.2f}x** "
              f"(ringway {fmt(med(agg, s, 'ringway', 'rps'), 0)} vs nginx {fmt(med(agg, s, 'nginx', 'rps'), 0)} req/s; "
              f"direct ceiling {fmt(med(agg, s, 'direct', 'rps'), 0)} req/s)")
        if cpu is not None:
            cap_r, cap_n = med(agg, s, "ringway", "capacity"), med(agg, s, "nginx", "capacity")
            L(f"- CPU per request ratio ({label}): **{cpu:.2f}x** (lower is better; ringway "
              f"{med(agg, s, 'ringway', 'cpu_us_per_req'):.2f} µs = {fmt(cap_r, 0)} req/CPU-s, nginx "
              f"{med(agg, s, 'nginx', 'cpu_us_per_req'):.2f} µs = {fmt(cap_n, 0)} req/CPU-s; upstream alone "
              f"{fmt(med(agg, s, 'direct', 'capacity'), 0)} req/CPU-s)")
    for s, tool in (("oha-rate", "oha"), ("paced-rate", "evenly paced")):
        ad = added.get(s, {})
        if not (ad.get("ringway") and ad.get("nginx")):
            continue
        for k, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
            rv, nv = ad["ringway"][k]["median"], ad["nginx"][k]["median"]
            rt = ratio(rv, nv) if nv > 0 else None
            # oha's keep the names they had before the paced scenario came.
            ratios[f"added_latency_{label}" + ("" if s == "oha-rate" else "_paced")] = rt
            txt = f"**{rt:.2f}x**" if rt is not None else "n/a (nginx adds nothing measurable)"
            L(f"- added latency ratio {label} at {meta.get('rate', '?')} req/s ({tool}): {txt} "
              f"(ringway {rv:+.3f} ms, nginx {nv:+.3f} ms over direct; medians of per-round differences)")
    if not any(r["scenario"] == "oha-rate" for r in rows):
        L("- added latency with oha: skipped (oha not installed or --no-oha)")
    for s, label in (("wrk-small", "small"), ("wrk-16k", "16 KiB")):
        rc, nc = med(agg, s, "ringway", "upstream_conns_per_1k"), med(agg, s, "nginx", "upstream_conns_per_1k")
        if rc is not None:
            ratios[f"upstream_conns_per_1k_{s}"] = {"ringway": rc, "nginx": nc}
            extra = ""
            st = agg[s]["ringway"].get("ringway_status_conns_per_1k")
            if st:
                extra = f"; ringway /status says {st['median']:.3f}"
            L(f"- upstream connections per 1000 requests ({label}, wrk): ringway {rc:.3f}, nginx {nc:.3f}{extra}")
    if idle:
        L("")
        L(f"## Idle keep-alive connections ({meta.get('idle_conns', '?')} connections, one request each, then idle)")
        L("")
        L("| target | conns open | failed | closed by proxy | RSS before MiB | RSS after MiB | KiB / idle conn | RSS after closing MiB |")
        L("|---|---|---|---|---|---|---|---|")
        for t in ("ringway", "nginx"):
            i = idle.get(t)
            if not i:
                continue
            L(f"| {t} | {i['conns_open']} | {i['failed']} | {i['closed_by_peer']} | {i['rss_before_kib'] / 1024:.1f} | "
              f"{i['rss_after_kib'] / 1024:.1f} | {fmt(i['kib_per_conn'], 2)} | {i['rss_after_close_kib'] / 1024:.1f} |")
        if idle.get("ringway") and idle.get("nginx") and idle["nginx"].get("kib_per_conn"):
            rt = ratio(idle["ringway"]["kib_per_conn"], idle["nginx"]["kib_per_conn"])
            ratios["idle_kib_per_conn"] = rt
            L("")
            L(f"- idle memory per connection ratio: **{rt:.2f}x** (ringway {idle['ringway']['kib_per_conn']:.2f} KiB, "
              f"nginx {idle['nginx']['kib_per_conn']:.2f} KiB)")

    # Things that look wrong.
    warn = []
    for s in agg:
        a = agg[s].get("ringway")
        if not a:
            continue
        if a["non2xx_total"]:
            warn.append(f"ringway answered {a['non2xx_total']} non-2xx responses in {s}")
        if a["errors_total"]:
            warn.append(f"{a['errors_total']} client-side errors against ringway in {s}")
        if s.startswith("wrk") and a["upstream_conns_per_1k"]["max"] > 1:
            warn.append(f"ringway opened {a['upstream_conns_per_1k']['max']:.2f} upstream connections per 1000 requests in {s} (> 1)")
    for s in agg:
        for t in ("direct", "nginx"):
            a = agg[s].get(t)
            if a and (a["non2xx_total"] or a["errors_total"]):
                warn.append(f"{t} in {s}: {a['non2xx_total']} non-2xx, {a['errors_total']} errors")
    if meta.get("ringway_rss_start_kib") and meta.get("ringway_rss_end_kib"):
        g = meta["ringway_rss_end_kib"] - meta["ringway_rss_start_kib"]
        L("")
        L(f"ringway RSS after warm-up {meta['ringway_rss_start_kib'] / 1024:.1f} MiB, after the load scenarios "
          f"{meta['ringway_rss_end_kib'] / 1024:.1f} MiB ({g / 1024:+.1f} MiB); nginx "
          f"{meta['nginx_rss_start_kib'] / 1024:.1f} -> {meta['nginx_rss_end_kib'] / 1024:.1f} MiB")
        if g > max(4096, 0.25 * meta["ringway_rss_start_kib"]):
            warn.append(f"ringway RSS grew by {g / 1024:.1f} MiB over the load scenarios")
    if meta.get("ringway_log_warnings"):
        warn.append(f"ringway logged {meta['ringway_log_warnings']} WARN/ERROR lines")
    if idle.get("ringway") and idle["ringway"]["conns_open"] < idle["ringway"]["conns_requested"]:
        warn.append(f"only {idle['ringway']['conns_open']} of {idle['ringway']['conns_requested']} idle connections "
                    f"to ringway stayed open ({idle['ringway'].get('fail_reasons')})")
    for r in rows:
        if r["target"] == "ringway" and "ringway_status_requests" in r:
            if r["ringway_status_requests"] < r["requests"]:
                warn.append(f"ringway /status counted {r['ringway_status_requests']} requests but the client "
                            f"completed {r['requests']} (round {r['round']}, {r['scenario']})")
    for p in pairs:
        for t in ("ringway", "nginx"):
            if p[t]["errors"]:
                warn.append(f"{p[t]['errors']} errors or non-2xx from {t} side by side "
                            f"(round {p['round']}, {p['scenario']})")
    L("")
    L("## Warnings")
    L("")
    L("\n".join(f"- {w}" for w in warn) if warn else "- none (no errors, no non-2xx, <= 1 upstream connection per 1000 requests)")
    L("")
    md = "\n".join(lines)
    data = {"meta": meta, "scenarios": agg, "side_by_side": side, "pairs": pairs,
            "added_latency_ms": added.get("oha-rate", {}),
            "added_latency_paced_ms": added.get("paced-rate", {}), "ratios_ringway_over_nginx": ratios,
            "idle_conns": idle, "warnings": warn, "measurements": rows}
    return md, data


def one(meta_path):
    r = load_measurement(meta_path)
    s = (f"{r['rps']:,.0f} req/s, p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms, "
         f"p99.9 {r['p999_ms']:.3f} ms, {r['cpu_us_per_req']:.2f} CPU µs/req, "
         f"{r['upstream_conns_opened']} upstream conns")
    if r["non2xx"] or r["errors"]:
        s += f", NON-2XX {r['non2xx']}, ERRORS {r['errors']}"
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("raw", nargs="?")
    ap.add_argument("--md")
    ap.add_argument("--json")
    ap.add_argument("--one")
    ap.add_argument("--pair")
    ap.add_argument("--suggest-rate")
    a = ap.parse_args()
    if a.one:
        print(one(a.one))
        return
    if a.pair:
        p = load_pair(a.pair)
        print(f"ringway {p['ringway']['cpu_us_per_req']:.2f} µs/req ({p['ringway']['rps']:,.0f} req/s), "
              f"nginx {p['nginx']['cpu_us_per_req']:.2f} µs/req ({p['nginx']['rps']:,.0f} req/s), "
              f"ringway/nginx {p['cpu_ratio']:.3f}")
        return
    if a.suggest_rate:
        rows, _, _, _ = load_all(a.suggest_rate)
        v = [r["rps"] for r in rows if r["scenario"] == "wrk-small" and r["target"] == "nginx"]
        if not v:
            raise SystemExit("report.py: no nginx wrk-small measurement to derive a rate from")
        print(max(100, int(round(statistics.median(v) / 2 / 100.0)) * 100))
        return
    if not a.raw:
        ap.error("RAWDIR is required")
    rows, meta, idle, pairs = load_all(a.raw)
    if not rows:
        raise SystemExit(f"report.py: no measurements in {a.raw}")
    md, data = build_report(rows, meta, idle, pairs)
    print(md)
    if a.md:
        with open(a.md, "w") as f:
            f.write(md + "\n")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
