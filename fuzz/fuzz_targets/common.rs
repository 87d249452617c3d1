// Shared by the targets: a config with the kinds of routes the router distinguishes.
use ringway::config::{Config, NodeOverrides};
use ringway::proxy::Snapshot;

pub const CONFIG: &str = r#"_format_version: "3.0"
services:
  - name: users
    url: http://127.0.0.1:9001/v1
    routes:
      - name: users
        paths: [/api/users, "~/api/u/(?<id>\\d+)$"]
        methods: [GET, POST]
      - name: hosts
        hosts: [api.example.com, "*.example.org"]
        headers: {x-version: ["2", "~*^3\\.\\d+$"]}
        strip_path: false
        preserve_host: true
  - name: accounts
    url: http://127.0.0.1:9002
    routes:
      - name: accounts
        paths: [/]
  - name: pooled
    host: pool
    routes:
      - name: pooled
        paths: [/pool]
      - name: pooled-kept
        paths: [/kept]
        preserve_host: true
upstreams:
  - name: pool
    algorithm: consistent-hashing
    hash_on: cookie
    hash_on_cookie: sticky
    targets:
      - target: 127.0.0.1:9003
      - target: 127.0.0.1:9004
"#;

pub fn snapshot() -> Snapshot {
    let config = Config::from_bytes(CONFIG.as_bytes(), &NodeOverrides::default())
        .expect("the fuzz config loads");
    Snapshot::new(config)
}
