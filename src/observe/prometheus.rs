//! `GET /metrics`: Prometheus text format 0.0.4. Kong's `prometheus` plugin series under
//! its flags (so Kong's dashboards keep working), and `ringway_*` series always.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use super::{Hist, Label, Published, Source};
use crate::config::{Config, PluginConfig, Scope};
use crate::metrics::WorkerStats;
use crate::plugins::prometheus::Config as Flags;

/// Kong's buckets, in milliseconds.
const KONG_LATENCY_BUCKETS: &[u64] = &[
    1, 2, 5, 7, 10, 15, 20, 30, 50, 75, 100, 200, 500, 750, 1000, 3000, 6000,
];
const UPSTREAM_LATENCY_BUCKETS: &[u64] = &[
    25, 50, 80, 100, 250, 400, 700, 1000, 2000, 5000, 10000, 30000, 60000,
];

/// Everything `/metrics` prints besides the recorded tables.
pub struct Node<'a> {
    pub node_id: &'a str,
    pub version: &'a str,
    pub driver: &'a str,
    pub workers: &'a [std::sync::Arc<WorkerStats>],
    pub rate_limit_keys: usize,
    pub access_log_dropped: u64,
    pub upstreams: &'a [crate::config::Upstream],
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"{}\"", escape(v));
    }
    out.push('}');
    out
}

/// One Prometheus histogram (ms) from an HdrHistogram (µs).
fn histogram(out: &mut String, name: &str, pairs: &[(&str, &str)], h: &Hist, buckets: &[u64]) {
    let base = labels(pairs);
    let inner = &base[1..base.len() - 1];
    let sep = if inner.is_empty() { "" } else { "," };
    let (cumulative, sum_us) = bucket_counts(h, buckets);
    for (le, count) in buckets.iter().zip(cumulative) {
        let _ = writeln!(out, "{name}_bucket{{{inner}{sep}le=\"{le}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{{inner}{sep}le=\"+Inf\"}} {}", h.len());
    let sum_ms = sum_us as f64 / 1000.0;
    let _ = writeln!(out, "{name}_sum{base} {sum_ms}");
    let _ = writeln!(out, "{name}_count{base} {}", h.len());
}

/// The cumulative count at each bucket bound (ms) and the sum of the values (µs), in one
/// pass over the recorded values: what `count_between(0, bound)` per bucket and `mean()`
/// would give, without a scan of the whole range per bucket, so a scrape costs the
/// proxy's core little. A value counts under a bound when it falls in the bound's
/// HdrHistogram bucket or a lower one, as `count_between` counts it.
fn bucket_counts(h: &Hist, buckets: &[u64]) -> (Vec<u64>, u128) {
    let bounds: Vec<u64> = buckets
        .iter()
        .map(|ms| h.lowest_equivalent(ms * 1000))
        .collect();
    let mut per_bucket = vec![0u64; buckets.len()];
    let mut sum = 0u128;
    for v in h.iter_recorded() {
        let value = v.value_iterated_to();
        let count = v.count_at_value();
        sum += u128::from(h.median_equivalent(value)) * u128::from(count);
        let first = bounds.partition_point(|&b| b < h.lowest_equivalent(value));
        if let Some(slot) = per_bucket.get_mut(first) {
            *slot += count;
        }
    }
    let mut total = 0;
    for slot in &mut per_bucket {
        total += *slot;
        *slot = total;
    }
    (per_bucket, sum)
}

/// The whole exposition. `flags` is `None` when no `prometheus` plugin is configured:
/// then only the `ringway_*` series are printed.
pub fn render(published: &Published, kong: Option<&Kong>, node: &Node<'_>) -> String {
    let mut out = String::with_capacity(8192);
    if let Some(kong) = kong {
        kong_series(&mut out, published, kong, node);
    }
    ringway_series(&mut out, published, node);
    out
}

/// What Kong's series show. Kong's plugin counts a request in its log phase, with the
/// config that applies to that request, so each route has the flags of the instance
/// that wins there by precedence (a service's plugin counts that service's routes, a
/// global one every route); routes no instance applies to are not counted.
/// (It cannot be scoped to consumers or groups, as in Kong, so a route decides.)
pub struct Kong {
    /// Every enabled instance's flags together: the node-wide series follow them.
    pub flags: Flags,
    /// `None`: every route, with `flags`. Otherwise each counted route label's flags; a
    /// route folded into `other` brings its flags to `other`.
    routes: Option<HashMap<Label, Flags>>,
}

impl Kong {
    /// `None` when no enabled `prometheus` plugin is configured.
    pub fn of(config: &Config, published: &Published) -> Option<Kong> {
        let instances: Vec<(&Scope, &Flags)> = config
            .plugins
            .iter()
            .filter(|p| p.enabled)
            .filter_map(|p| match &p.config {
                PluginConfig::Prometheus(flags) => Some((&p.scope, flags.as_ref())),
                _ => None,
            })
            .collect();
        let flags = instances
            .iter()
            .map(|(_, f)| (*f).clone())
            .reduce(|all, f| all.union(&f))?;
        let mut routes: HashMap<Label, Flags> = HashMap::new();
        for (i, route) in config.routes.iter().enumerate() {
            let at = Some((i, route.service));
            let mut best: Option<(u8, &Flags)> = None;
            for (scope, these) in &instances {
                match crate::config::rank(scope, at) {
                    Some(rank) if best.is_none_or(|(b, _)| rank < b) => best = Some((rank, these)),
                    _ => {}
                }
            }
            let Some((_, these)) = best else {
                continue;
            };
            let these = these.clone();
            let label = super::route_label(config, i);
            if published.route_labels.is_folded(&label) {
                let other = routes.entry(Label::from(super::OTHER)).or_default();
                *other = other.union(&these);
            }
            let entry = routes.entry(label).or_default();
            *entry = entry.union(&these);
        }
        Some(Kong {
            flags,
            routes: Some(routes),
        })
    }

    /// Flags that count every route, as a global plugin's do.
    pub fn everywhere(flags: Flags) -> Kong {
        Kong {
            flags,
            routes: None,
        }
    }

    /// The flags a route's requests are counted with, when they are.
    fn flags_for(&self, route: &Label) -> Option<&Flags> {
        match &self.routes {
            None => Some(&self.flags),
            Some(routes) => routes.get(route),
        }
    }
}

fn kong_series(out: &mut String, published: &Published, kong: &Kong, node: &Node<'_>) {
    let flags = &kong.flags;
    let totals = crate::metrics::totals(node.workers.iter().map(|w| &**w));
    header(
        out,
        "kong_nginx_connections_total",
        "gauge",
        "Number of connections by subsystem",
    );
    // Kong's states, nginx's stub_status figures.
    for (state, value) in [
        ("accepted", totals.connections_taken()),
        ("active", totals.connections_active),
        ("handled", totals.connections_accepted),
        ("reading", totals.connections_reading),
        ("total", totals.total_requests),
        ("waiting", totals.connections_waiting()),
        ("writing", totals.connections_writing),
    ] {
        let _ = writeln!(
            out,
            "kong_nginx_connections_total{} {value}",
            labels(&[
                ("node_id", node.node_id),
                ("subsystem", "http"),
                ("state", state)
            ])
        );
    }
    header(
        out,
        "kong_nginx_requests_total",
        "gauge",
        "Number of requests total",
    );
    let _ = writeln!(
        out,
        "kong_nginx_requests_total{} {}",
        labels(&[("node_id", node.node_id), ("subsystem", "http")]),
        totals.total_requests
    );
    header(
        out,
        "kong_datastore_reachable",
        "gauge",
        "Datastore reachable from Kong, 0 is unreachable",
    );
    let _ = writeln!(out, "kong_datastore_reachable 1");
    header(
        out,
        "kong_node_info",
        "gauge",
        "Kong Node metadata information",
    );
    let _ = writeln!(
        out,
        "kong_node_info{} 1",
        // Kong's version, which `GET /` answers as: what dashboards built on Kong's
        // series read (ringway's own is on `ringway_info`).
        labels(&[
            ("node_id", node.node_id),
            ("version", crate::KONG_COMPATIBLE_VERSION)
        ])
    );
    header(
        out,
        "kong_nginx_metric_errors_total",
        "counter",
        "Number of nginx-lua-prometheus errors",
    );
    let _ = writeln!(out, "kong_nginx_metric_errors_total 0");

    if flags.upstream_health_metrics {
        header(
            out,
            "kong_upstream_target_health",
            "gauge",
            "Health status of targets of upstream. States = healthchecks_off|healthy|unhealthy|dns_error, value is 1 when state is populated.",
        );
        for up in node.upstreams {
            for t in &up.targets {
                let current = crate::balance::state(up, t);
                let address = t.addr.map(|a| a.to_string()).unwrap_or_default();
                for state in ["healthchecks_off", "healthy", "unhealthy", "dns_error"] {
                    let _ = writeln!(
                        out,
                        "kong_upstream_target_health{} {}",
                        labels(&[
                            ("upstream", &up.name),
                            ("target", &t.target),
                            ("address", &address),
                            ("state", state),
                            ("subsystem", "http"),
                        ]),
                        u8::from(state == current)
                    );
                }
            }
        }
    }

    if flags.status_code_metrics {
        header(
            out,
            "kong_http_requests_total",
            "counter",
            "HTTP status codes per consumer/service/route in Kong",
        );
        // Without per_consumer the consumer label is empty: fold the consumers.
        let mut rows: BTreeMap<(Label, Label, u16, &str, Label), u64> = BTreeMap::new();
        for ((service, route, consumer, code, source), n) in &published.counts {
            let Some(these) = kong.flags_for(route).filter(|f| f.status_code_metrics) else {
                continue;
            };
            let consumer = if these.per_consumer {
                consumer.clone()
            } else {
                Label::from("")
            };
            let source = match source {
                Source::Service => "service",
                Source::Kong => "kong",
            };
            *rows
                .entry((service.clone(), route.clone(), *code, source, consumer))
                .or_default() += n;
        }
        for ((service, route, code, source, consumer), n) in rows {
            let code = code.to_string();
            let _ = writeln!(
                out,
                "kong_http_requests_total{} {n}",
                labels(&[
                    ("service", &service),
                    ("route", &route),
                    ("code", &code),
                    ("source", source),
                    ("workspace", "default"),
                    ("consumer", &consumer),
                ])
            );
        }
    }
    if flags.latency_metrics {
        let routes: BTreeMap<&str, _> = published
            .routes
            .iter()
            .filter(|(route, _)| kong.flags_for(route).is_some_and(|f| f.latency_metrics))
            .map(|(route, l)| (&**route, l))
            .collect();
        let service_of = |route: &str| -> Label {
            published
                .route_services
                .get(route)
                .cloned()
                .unwrap_or_else(|| Label::from(""))
        };
        for (name, help, buckets, pick) in [
            (
                "kong_kong_latency_ms",
                "Latency added by Kong and enabled plugins for each service/route in Kong",
                KONG_LATENCY_BUCKETS,
                super::Metric::Proxy,
            ),
            (
                "kong_upstream_latency_ms",
                "Latency added by upstream response for each service/route in Kong",
                UPSTREAM_LATENCY_BUCKETS,
                super::Metric::Upstream,
            ),
            (
                "kong_request_latency_ms",
                "Total latency incurred during requests for each service/route in Kong",
                UPSTREAM_LATENCY_BUCKETS,
                super::Metric::Request,
            ),
        ] {
            header(out, name, "histogram", help);
            for (route, latencies) in &routes {
                let service = service_of(route);
                histogram(
                    out,
                    name,
                    &[
                        ("service", &service),
                        ("route", route),
                        ("workspace", "default"),
                    ],
                    latencies.get(pick),
                    buckets,
                );
            }
        }
    }
    if flags.bandwidth_metrics {
        header(
            out,
            "kong_bandwidth_bytes",
            "counter",
            "Total bandwidth (ingress/egress) throughput in bytes",
        );
        let mut rows: BTreeMap<(Label, Label, Label), (u64, u64)> = BTreeMap::new();
        for ((service, route, consumer), (ingress, egress)) in &published.bytes {
            let Some(these) = kong.flags_for(route).filter(|f| f.bandwidth_metrics) else {
                continue;
            };
            let consumer = if these.per_consumer {
                consumer.clone()
            } else {
                Label::from("")
            };
            let row = rows
                .entry((service.clone(), route.clone(), consumer))
                .or_default();
            row.0 += ingress;
            row.1 += egress;
        }
        for ((service, route, consumer), (ingress, egress)) in rows {
            for (direction, n) in [("ingress", ingress), ("egress", egress)] {
                let _ = writeln!(
                    out,
                    "kong_bandwidth_bytes{} {n}",
                    labels(&[
                        ("service", &service),
                        ("route", &route),
                        ("direction", direction),
                        ("workspace", "default"),
                        ("consumer", &consumer),
                    ])
                );
            }
        }
    }
}

fn ringway_series(out: &mut String, published: &Published, node: &Node<'_>) {
    header(
        out,
        "ringway_info",
        "gauge",
        "ringway version and io driver",
    );
    let _ = writeln!(
        out,
        "ringway_info{} 1",
        labels(&[("version", node.version), ("driver", node.driver)])
    );
    type Read = fn(&WorkerStats) -> u64;
    let per_worker: [(&str, &str, &str, Read); 11] = [
        (
            "ringway_connections_active",
            "gauge",
            "Client connections open, per worker",
            |w| w.connections_active.get(),
        ),
        (
            "ringway_connections_accepted_total",
            "counter",
            "Client connections served (not refused at max_connections), per worker",
            |w| w.connections_accepted.get(),
        ),
        (
            "ringway_connections_refused_total",
            "counter",
            "Client connections closed at once because the process was at max_connections",
            |w| w.connections_refused.get(),
        ),
        (
            "ringway_requests_total",
            "counter",
            "Requests read, per worker",
            |w| w.total_requests.get(),
        ),
        (
            "ringway_tls_failures_total",
            "counter",
            "TLS handshakes that failed or timed out, per worker",
            |w| w.tls_failures.get(),
        ),
        (
            "ringway_upstream_connections_opened_total",
            "counter",
            "Upstream connections opened, per worker",
            |w| w.upstream_connects.get(),
        ),
        (
            "ringway_upstream_connections_reused_total",
            "counter",
            "Requests sent on a pooled upstream connection, per worker",
            |w| w.upstream_reused.get(),
        ),
        (
            "ringway_upstream_retries_total",
            "counter",
            "Upstream attempts retried, per worker",
            |w| w.upstream_retries.get(),
        ),
        (
            "ringway_client_errors_total",
            "counter",
            "Requests answered with a generated client-side error, per worker",
            |w| w.client_errors.get(),
        ),
        (
            "ringway_upstream_errors_total",
            "counter",
            "Requests answered with a generated upstream error (502/504), per worker",
            |w| w.upstream_errors.get(),
        ),
        (
            "ringway_upstream_cut_responses_total",
            "counter",
            "Proxied responses the upstream broke off after their head (closed, reset, stalled or malformed body), per worker",
            |w| w.upstream_cut.get(),
        ),
    ];
    for (name, kind, help, read) in per_worker {
        header(out, name, kind, help);
        for (i, worker) in node.workers.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}{} {}",
                labels(&[("worker", &i.to_string())]),
                read(worker)
            );
        }
    }
    header(
        out,
        "ringway_rate_limit_rejections_total",
        "counter",
        "Requests refused by rate-limiting",
    );
    let _ = writeln!(
        out,
        "ringway_rate_limit_rejections_total {}",
        published.rate_limited
    );
    header(
        out,
        "ringway_rate_limit_keys",
        "gauge",
        "Rate-limiting buckets held (plugin instance x client)",
    );
    let _ = writeln!(out, "ringway_rate_limit_keys {}", node.rate_limit_keys);
    header(
        out,
        "ringway_jwt_failures_total",
        "counter",
        "JWT authentications refused, by reason",
    );
    let failures: BTreeMap<_, _> = published.jwt_failures.iter().collect();
    for (reason, n) in failures {
        let _ = writeln!(
            out,
            "ringway_jwt_failures_total{} {n}",
            labels(&[("reason", reason)])
        );
    }
    header(
        out,
        "ringway_access_log_dropped_total",
        "counter",
        "Access log lines dropped because the writer fell behind",
    );
    let _ = writeln!(
        out,
        "ringway_access_log_dropped_total {}",
        node.access_log_dropped
    );
    if node.upstreams.iter().any(|u| !u.targets.is_empty()) {
        header(
            out,
            "ringway_upstream_target_healthy",
            "gauge",
            "1 when the target takes traffic (healthy or unchecked), 0 when unhealthy or unresolved",
        );
        for up in node.upstreams {
            for t in &up.targets {
                let healthy = t.addr.is_some() && t.health.is_healthy();
                let _ = writeln!(
                    out,
                    "ringway_upstream_target_healthy{} {}",
                    labels(&[("upstream", &up.name), ("target", &t.target)]),
                    u8::from(healthy)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass bucket counts and sum are what the per-bucket range queries and the
    /// mean give, for spreads of values across HdrHistogram's buckets and Kong's bounds.
    #[test]
    fn bucket_counts_match_range_queries() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..50 {
            let mut h = crate::observe::new_hist();
            let samples = if round == 0 { 0 } else { 1 + next() % 2000 };
            for _ in 0..samples {
                // Spread over 1 µs .. ~70 s, with exact bucket bounds (whole ms) mixed in.
                let us = match next() % 4 {
                    0 => (next() % 70) * 1000,
                    1 => 1 + next() % 2_000,
                    2 => 1 + next() % 200_000,
                    _ => 1 + next() % 70_000_000,
                };
                crate::observe::record(&mut h, us);
            }
            for buckets in [KONG_LATENCY_BUCKETS, UPSTREAM_LATENCY_BUCKETS] {
                let (counts, sum) = bucket_counts(&h, buckets);
                for (le, count) in buckets.iter().zip(&counts) {
                    let expected = if h.is_empty() {
                        0
                    } else {
                        h.count_between(0, le * 1000)
                    };
                    assert_eq!(*count, expected, "round {round}, le {le} ms");
                }
                let mean_sum = h.mean() * h.len() as f64;
                assert!(
                    (sum as f64 - mean_sum).abs() <= mean_sum * 1e-9 + 1e-6,
                    "round {round}: {sum} vs {mean_sum}"
                );
            }
        }
    }
}
