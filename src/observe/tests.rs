use std::sync::Arc;

use super::*;
use crate::config::Config;
use crate::proxy::Snapshot;

fn snapshot(consumers: usize) -> Arc<Snapshot> {
    let mut yaml = String::from(
        "_format_version: \"3.0\"\nservices:\n- name: users\n  url: http://127.0.0.1:9\n  routes:\n  - {name: list, paths: [/a]}\n  - {paths: [/b]}\nconsumers:\n",
    );
    for i in 0..consumers {
        yaml.push_str(&format!("- username: c{i}\n"));
    }
    let config = Config::from_bytes(yaml.as_bytes(), &Default::default()).unwrap();
    Arc::new(Snapshot::new(config))
}

fn sample(route: usize, consumer: Option<usize>, status: u16, request_us: u64) -> Sample {
    Sample {
        route,
        service: 0,
        consumer,
        status,
        source: Source::Service,
        request_us,
        upstream_us: Some(request_us / 2),
        proxy_us: request_us / 4,
        ingress_bytes: 100,
        egress_bytes: 200,
    }
}

#[test]
fn workers_records_fold_by_name_and_reads_see_them() {
    let observe = Arc::new(Observe::new(2, 100));
    let snap = snapshot(0);
    let a = Recorder::new(observe.clone(), 0);
    let b = Recorder::new(observe.clone(), 1);
    for us in [100, 200, 300] {
        a.record(&snap, &sample(0, None, 200, us));
    }
    b.record(&snap, &sample(1, None, 503, 1000));
    a.flush();
    b.flush();
    let published = observe.lock();
    assert_eq!(published.overall.request.len(), 4);
    assert_eq!(published.services["users"].request.len(), 4);
    assert_eq!(published.routes["list"].request.len(), 3);
    // A route without a name is labelled by its id.
    let unnamed = route_label(&snap.config, 1);
    assert!(crate::config::is_uuid(&unnamed), "{unnamed}");
    assert_eq!(published.routes[&unnamed].request.len(), 1);
    drop(published);
    // A service without a name is labelled by its host, as Kong's.
    let config = Config::from_bytes(
        b"_format_version: \"3.0\"\nservices:\n- url: http://billing.internal:9\n",
        &Default::default(),
    )
    .unwrap();
    assert_eq!(&*service_label(&config, 0), "billing.internal");
    let published = observe.lock();
    let summary = hgrm::summary(&published.overall.request);
    assert_eq!(summary["count"], 4);
    assert_eq!(summary["min"], 100);
    assert!(summary["p50"].as_u64() <= summary["p99"].as_u64());
    assert_eq!(
        published.counts[&(
            Label::from("users"),
            Label::from("list"),
            Label::from(""),
            200,
            Source::Service
        )],
        3
    );
}

#[test]
fn a_reload_flushes_the_old_indexes_first() {
    let observe = Arc::new(Observe::new(1, 100));
    let old = snapshot(0);
    let new = snapshot(0);
    let r = Recorder::new(observe.clone(), 0);
    r.record(&old, &sample(0, None, 200, 10));
    r.record(&new, &sample(1, None, 200, 10));
    r.flush();
    let published = observe.lock();
    assert_eq!(published.routes["list"].request.len(), 1);
    assert_eq!(published.overall.request.len(), 2);
}

#[test]
fn consumer_labels_fold_into_other_beyond_the_cap() {
    let observe = Arc::new(Observe::new(1, 2));
    let snap = snapshot(5);
    let r = Recorder::new(observe.clone(), 0);
    for c in 0..5 {
        r.record(&snap, &sample(0, Some(c), 200, 10));
    }
    r.flush();
    let published = observe.lock();
    let mut consumers: Vec<&str> = published.counts.keys().map(|k| &*k.2).collect();
    consumers.sort();
    consumers.dedup();
    // Which two get their own label depends on the order they were folded in.
    assert_eq!(consumers.len(), 3, "{consumers:?}");
    assert_eq!(consumers[2], "other", "{consumers:?}");
    assert_eq!(published.counts.values().sum::<u64>(), 5);
}

/// Kong's consumer label: the username, else the custom_id (Kong 3.11 on).
#[test]
fn a_consumer_without_a_username_is_labelled_by_its_custom_id() {
    let observe = Arc::new(Observe::new(1, 100));
    let config = Config::from_bytes(
        b"_format_version: \"3.0\"\nservices:\n- name: users\n  url: http://127.0.0.1:9\n  routes:\n  - {name: list, paths: [/a]}\nconsumers:\n- custom_id: cid-only\n",
        &Default::default(),
    )
    .unwrap();
    let snap = Arc::new(Snapshot::new(config));
    let r = Recorder::new(observe.clone(), 0);
    r.record(&snap, &sample(0, Some(0), 200, 10));
    r.flush();
    let published = observe.lock();
    let consumers: Vec<&str> = published.counts.keys().map(|k| &*k.2).collect();
    assert_eq!(consumers, ["cid-only"]);
}

#[test]
fn hgrm_text_ends_at_the_total_count() {
    let mut h = Hist::new(3).unwrap();
    for v in 1..=1000u64 {
        h.record(v * 10).unwrap();
    }
    let text = hgrm::percentile_distribution(&h);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(2)
        .take_while(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    let last = rows.last().unwrap();
    assert_eq!(last[2], "1000", "{text}");
    assert_eq!(last[1], "1.000000000000", "{text}");
    assert!(text.contains("Total count    =         1000]"), "{text}");
    assert!(text.contains("SubBuckets     =         2048]"), "{text}");
    let values: Vec<f64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "{text}");
}

#[test]
fn prometheus_text_escapes_labels_and_sums_buckets() {
    let observe = Observe::new(1, 100);
    let mut published = observe.lock();
    published
        .routes
        .insert(Label::from("r\"1"), Latencies::default());
    published
        .route_services
        .insert(Label::from("r\"1"), Label::from("s"));
    published.counts.insert(
        (
            Label::from("s"),
            Label::from("r\"1"),
            Label::from(""),
            200,
            Source::Kong,
        ),
        2,
    );
    let flags = crate::plugins::prometheus::Config {
        status_code_metrics: true,
        latency_metrics: true,
        ..Default::default()
    };
    let stats = vec![Arc::new(crate::metrics::WorkerStats::default())];
    let node = prometheus::Node {
        node_id: "n",
        version: "v",
        driver: "epoll",
        workers: &stats,
        rate_limit_keys: 0,
        access_log_dropped: 0,
        upstreams: &[],
    };
    let text = prometheus::render(
        &published,
        Some(&prometheus::Kong::everywhere(flags)),
        &node,
    );
    assert!(
        text.contains(r#"kong_http_requests_total{service="s",route="r\"1",code="200",source="kong",workspace="default",consumer=""} 2"#),
        "{text}"
    );
    assert!(text.contains(r#"kong_request_latency_ms_bucket{service="s",route="r\"1",workspace="default",le="+Inf"} 0"#), "{text}");
    assert!(
        text.contains("ringway_info{version=\"v\",driver=\"epoll\"} 1"),
        "{text}"
    );
    let without = prometheus::render(&published, None, &node);
    assert!(!without.contains("kong_"), "{without}");
}

#[test]
fn a_workers_tick_never_waits_for_a_reader_holding_the_tables() {
    let observe = Arc::new(Observe::new(1, 100));
    let snap = snapshot(0);
    let worker = Recorder::new(observe.clone(), 0);
    worker.record(&snap, &sample(0, None, 200, 100));
    observe.requested.fetch_add(1, Ordering::AcqRel);
    {
        // A reader renders under the lock: the worker's tick returns at once, its
        // records kept, and the flush request stays unanswered.
        let _reader = observe.lock();
        worker.tick();
        assert!(!worker.pending.borrow().is_empty());
        assert_eq!(observe.answered[0].load(Ordering::Acquire), 0);
    }
    worker.record(&snap, &sample(0, None, 200, 300));
    worker.tick();
    assert!(worker.pending.borrow().is_empty());
    assert_eq!(observe.answered[0].load(Ordering::Acquire), 1);
    let published = observe.lock();
    assert_eq!(published.overall.request.len(), 2);
    assert_eq!(published.routes["list"].request.len(), 2);
}

#[test]
fn services_and_routes_fold_alike_in_every_series_beyond_the_cap() {
    // label_limit 2: two services and two routes keep labels of their own, taken in
    // config order within one fold; the third of each folds into `other`, in the
    // histograms and in the counters alike, and nothing is lost.
    let yaml = "_format_version: \"3.0\"\nservices:\n\
                - {name: a, url: http://127.0.0.1:9, routes: [{name: ra, paths: [/a]}]}\n\
                - {name: b, url: http://127.0.0.1:9, routes: [{name: rb, paths: [/b]}]}\n\
                - {name: c, url: http://127.0.0.1:9, routes: [{name: rc, paths: [/c]}]}\n";
    let config = Config::from_bytes(yaml.as_bytes(), &Default::default()).unwrap();
    let snap = Arc::new(Snapshot::new(config));
    let observe = Arc::new(Observe::new(1, 2));
    let r = Recorder::new(observe.clone(), 0);
    for route in [2, 1, 0, 2] {
        let mut s = sample(route, None, 200, 100);
        s.service = route;
        r.record(&snap, &s);
    }
    r.flush();
    let published = observe.lock();
    let mut services: Vec<&str> = published.services.keys().map(|k| &**k).collect();
    let mut routes: Vec<&str> = published.routes.keys().map(|k| &**k).collect();
    services.sort_unstable();
    routes.sort_unstable();
    assert_eq!(services, ["a", "b", OTHER]);
    assert_eq!(routes, [OTHER, "ra", "rb"]);
    assert_eq!(published.routes[OTHER].request.len(), 2);
    assert_eq!(published.services[OTHER].request.len(), 2);
    assert_eq!(published.route_services[OTHER].as_ref(), OTHER);
    assert_eq!(published.overall.request.len(), 4);
    let mut counted: Vec<(&str, &str, u64)> = published
        .counts
        .iter()
        .map(|(k, n)| (&*k.0, &*k.1, *n))
        .collect();
    counted.sort_unstable();
    assert_eq!(counted, [("a", "ra", 1), ("b", "rb", 1), (OTHER, OTHER, 2)]);
    assert!(published.route_labels.is_folded("rc") && !published.route_labels.is_folded("ra"));
    let doc = hgrm::document(&published, &snap.config, None, None);
    let listed: Vec<&String> = doc["routes"].as_object().unwrap().keys().collect();
    assert_eq!(listed, ["other", "ra", "rb"], "{doc}");
    let folded = hgrm::pick(
        &published,
        None,
        Some("rc"),
        crate::observe::Metric::Request,
    );
    assert_eq!(
        folded.map(|h| h.len()),
        Some(2),
        "hgrm of a folded route is other's"
    );
    let doc = hgrm::document(&published, &snap.config, None, Some("rc"));
    assert_eq!(
        doc["routes"]["other"]["request"]["count"], 2,
        "a folded route points at other: {doc}"
    );
}
