//! `/histograms`: the summary JSON, and HdrHistogram's percentile-distribution text
//! (the `.hgrm` format its plotter and wrk read).

use std::fmt::Write;

use serde_json::{json, Map, Value};

use super::{route_label, service_label, Hist, Latencies, Metric, Published};
use crate::config::Config;

/// `{"count", "min", "max", "mean", "p50", "p90", "p99", "p999", "p9999"}` in µs.
pub fn summary(h: &Hist) -> Value {
    if h.is_empty() {
        return json!({
            "count": 0, "min": 0, "max": 0, "mean": 0.0,
            "p50": 0, "p90": 0, "p99": 0, "p999": 0, "p9999": 0,
        });
    }
    // One scan of the counts for all five quantiles.
    let mut q = h.value_at_quantiles([0.5, 0.9, 0.99, 0.999, 0.9999]);
    let mut next = || q.next().unwrap_or_default();
    let (p50, p90, p99, p999, p9999) = (next(), next(), next(), next(), next());
    json!({
        "count": h.len(),
        "min": h.min(),
        "max": h.max(),
        "mean": (h.mean() * 1000.0).round() / 1000.0,
        "p50": p50,
        "p90": p90,
        "p99": p99,
        "p999": p999,
        "p9999": p9999,
    })
}

fn latencies(l: Option<&Latencies>) -> Value {
    let empty = Latencies::default();
    let l = l.unwrap_or(&empty);
    json!({
        "request": summary(&l.request),
        "upstream": summary(&l.upstream),
        "proxy": summary(&l.proxy),
    })
}

/// The JSON document: overall, and every configured service and route (zeros before
/// traffic), optionally narrowed to one service or route.
pub fn document(
    published: &Published,
    config: &Config,
    service: Option<&str>,
    route: Option<&str>,
) -> Value {
    // A name beyond the cardinality cap has no entry of its own: its numbers are in
    // `other`, listed whole, or when that name is asked for.
    let mut services = Map::new();
    let mut routes = Map::new();
    // `other` itself may be asked for, as the names folded into it.
    let mut folded_asked = [service == Some(super::OTHER), route == Some(super::OTHER)];
    for i in 0..config.services.len() {
        let name = service_label(config, i);
        if service.is_some_and(|s| s != &*name) {
            continue;
        }
        if published.service_labels.is_folded(&name) {
            folded_asked[0] = true;
            continue;
        }
        services.insert(name.to_string(), latencies(published.services.get(&name)));
    }
    for i in 0..config.routes.len() {
        let name = route_label(config, i);
        if route.is_some_and(|r| r != &*name) {
            continue;
        }
        if published.route_labels.is_folded(&name) {
            folded_asked[1] = true;
            continue;
        }
        routes.insert(name.to_string(), latencies(published.routes.get(&name)));
    }
    let filtered = service.is_some() || route.is_some();
    for ((map, source), asked) in [
        (&mut services, &published.services),
        (&mut routes, &published.routes),
    ]
    .into_iter()
    .zip(folded_asked)
    {
        if let Some(other) = source.get(super::OTHER) {
            if !filtered || asked {
                map.insert(super::OTHER.into(), latencies(Some(other)));
            }
        }
    }
    json!({
        "unit": "us",
        "overall": latencies(Some(&published.overall)),
        "services": services,
        "routes": routes,
    })
}

/// HdrHistogram's sub-bucket count at 3 significant digits (2^ceil(log2(2 × 10^3))).
const SUB_BUCKETS: usize = 2048;

/// HdrHistogram's percentile distribution of `h` (µs values), printed in milliseconds
/// with five ticks per half distance, as Java's `outputPercentileDistribution` does.
pub fn percentile_distribution(h: &Hist) -> String {
    const SCALE: f64 = 1000.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !h.is_empty() {
        let mut total = 0u64;
        for step in h.iter_quantiles(5) {
            total += step.count_since_last_iteration();
            let value = step.value_iterated_to() as f64 / SCALE;
            let quantile = step.quantile_iterated_to();
            if quantile < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:12.3} {quantile:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - quantile)
                );
            } else {
                let _ = writeln!(out, "{value:12.3} {quantile:2.12} {total:10}");
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / SCALE, h.stdev() / SCALE, h.max() as f64 / SCALE)
    };
    let _ = writeln!(
        out,
        "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:12.3}, Total count    = {:12}]",
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        SUB_BUCKETS
    );
    out
}

/// The histogram `?format=hgrm` shows: overall, or the one service or route asked for.
pub fn pick<'a>(
    published: &'a Published,
    service: Option<&str>,
    route: Option<&str>,
    metric: Metric,
) -> Option<&'a Hist> {
    // A name beyond the cardinality cap is counted in `other`, as the JSON shows it.
    let folded = |labels: &super::ScopeLabels, name| {
        if labels.is_folded(name) {
            super::OTHER
        } else {
            name
        }
    };
    let latencies = match (service, route) {
        (_, Some(route)) => published
            .routes
            .get(folded(&published.route_labels, route))?,
        (Some(service), None) => published
            .services
            .get(folded(&published.service_labels, service))?,
        (None, None) => &published.overall,
    };
    Some(latencies.get(metric))
}
