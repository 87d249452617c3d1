use super::*;

fn load(yaml: &str) -> Result<Config, Vec<String>> {
    Config::from_bytes(yaml.as_bytes(), &NodeOverrides::default())
        .map_err(|p| p.0.iter().map(|p| p.to_string()).collect())
}

/// The path each problem starts with.
fn paths_of(found: &[String]) -> Vec<&str> {
    found
        .iter()
        .map(|p| p.split(": ").next().unwrap())
        .collect()
}

fn problems(yaml: &str) -> Vec<String> {
    match load(yaml) {
        Ok(_) => panic!("expected problems in:\n{yaml}"),
        Err(p) => p,
    }
}

#[test]
fn kong_defaults_apply() {
    let config = load(
        r#"
_format_version: "3.0"
services:
  - name: users
    url: http://127.0.0.1:8080/v1
    routes:
      - name: users-api
        paths: [/api/users]
"#,
    )
    .unwrap();
    let service = &config.services[0];
    assert_eq!(&*service.name, "users");
    assert_eq!(service.port, 8080);
    assert_eq!(service.path, "/v1");
    assert_eq!(service.retries, 5);
    assert_eq!(service.connect_timeout, Duration::from_millis(60_000));
    assert_eq!(service.host_header, "127.0.0.1:8080");
    let route = &config.routes[0];
    assert!(route.strip_path && !route.preserve_host && route.http && route.https);
    assert_eq!(
        config.node.proxy_listen[0].addr,
        "0.0.0.0:8000".parse().unwrap()
    );
    assert_eq!(config.node.admin_listen, "127.0.0.1:8001".parse().unwrap());
    assert_eq!(config.node.limits.max_headers, 100);
    assert_eq!(config.hash.len(), 32);
}

#[test]
fn each_problem_prints_on_one_line() {
    let p = problems(
        "_format_version: \"3.0\"\n\"evil\\nkey\": 1\nservices:\n  - name: s\n    url: http://127.0.0.1:9\n    \
         routes:\n      - name: r\n        hosts: [\"a\\r\\nb\"]\n        paths: [\"/a\\nb\"]\n",
    );
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(p.iter().all(|line| !line.contains(['\n', '\r'])), "{p:?}");
    assert!(
        p.iter()
            .any(|line| line.starts_with("evil\\nkey: unknown field")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|line| line.ends_with("invalid host 'a\\r\\nb'")),
        "{p:?}"
    );
}

#[test]
fn route_hosts_take_a_port_up_to_65535() {
    let file = |host: &str| {
        format!(
            "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://127.0.0.1:9\n    \
             routes:\n      - name: r\n        hosts: [\"{host}\"]\n"
        )
    };
    for good in [
        "a.test",
        "a.test:0",
        "a.test:1",
        "a.test:65535",
        "*.a.test:8000",
        "[::1]",
        "[::1]:8443",
        "10.0.0.1:80",
    ] {
        assert!(
            load(&file(good)).is_ok(),
            "{good}: {:?}",
            load(&file(good)).err()
        );
    }
    for bad in [
        "a.test:65536",
        "a.test:99999",
        "a.test:",
        ":80",
        "a:1:2",
        "a.test:8o",
        "[::1]80",
        "[::1]:",
        "a]b",
        "[]:80",
        "[zz]",
        "[1.2.3.4]",
        "[:]",
        "[1::2::3]",
    ] {
        let p = problems(&file(bad));
        assert_eq!(
            p,
            [format!(
                "services[0].routes[0].hosts[0]: invalid host '{bad}'"
            )],
            "{bad}"
        );
    }
}

#[test]
fn sync_rate_without_redis_is_refused_as_kong_does() {
    let file = |config: &str| {
        format!(
            "_format_version: \"3.0\"\nplugins:\n  - name: rate-limiting\n    config: {config}\n"
        )
    };
    assert_eq!(
        load(&file("{minute: 5, sync_rate: 1}")).unwrap_err(),
        ["plugins[0].config.sync_rate: sync_rate can only be used with the redis policy"]
    );
    assert!(load(&file("{minute: 5}")).unwrap().warnings.is_empty());
    assert!(load(&file("{minute: 5, sync_rate: -1}"))
        .unwrap()
        .warnings
        .is_empty());
}

/// An upstream refused for one field still has its targets checked, duplicates too.
#[test]
fn a_refused_upstream_hides_no_problem_of_its_targets() {
    let p = problems(
        "_format_version: \"3.0\"\nupstreams:\n  - name: pool\n    slots: 5\n    targets:\n      \
         - target: z:1\n      - target: Z:1\n      - target: a:b\n",
    );
    for prefix in [
        "upstreams[0].slots: value should be between 10 and 65536",
        "upstreams[0].targets[1].target: duplicate target 'z:1'",
        "upstreams[0].targets[2].target: invalid target 'a:b'",
    ] {
        assert!(
            p.iter().any(|line| line.starts_with(prefix)),
            "{prefix}\n{p:#?}"
        );
    }
}

#[test]
fn a_bad_element_hides_no_other_problem() {
    let p = problems(
        "_format_version: \"3.0\"\nservices:\n  - name: s1\n    url: http://127.0.0.1:9\n    \
         tags: [1]\n    retries: -1\n    routes:\n      - name: r\n        \
         paths: [\"/a\", 5, nope]\n        strip_path: 3\n  - name: s2\n    \
         url: http://127.0.0.1:9\n    retries: -1\n    routes:\n      - name: r2\n        \
         paths: [null]\n",
    );
    for prefix in [
        "services[0].tags[0]: invalid type: integer `1`, expected a string",
        "services[0].retries: invalid value: integer `-1`, expected a non-negative integer",
        "services[0].routes[0].paths[1]: invalid type: integer `5`, expected a string",
        // The list's other elements are still checked.
        "services[0].routes[0].paths[2]: invalid path 'nope'",
        "services[0].routes[0].strip_path: invalid type: integer `3`, expected a boolean",
        "services[1].routes[0].paths[0]: invalid type: null, expected a string",
        "services[1].retries: invalid value",
    ] {
        assert!(
            p.iter().any(|line| line.starts_with(prefix)),
            "{prefix}\n{p:#?}"
        );
    }
}

#[test]
fn a_mistyped_field_hides_no_other_field_of_its_item() {
    let p = problems(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    host: 127.0.0.1\n    \
         port: 70000\n    path: nostartslash\n    protocol: gopher\n    connect_timeout: 0\n    \
         routes:\n      - name: r\n        paths: [nope]\n        strip_path: \"yep\"\n      \
         - name: only-bad-paths\n        paths: 5\n",
    );
    for prefix in [
        "services[0].port: invalid value: integer `70000`, expected a smaller integer",
        "services[0].path:",
        "services[0].protocol:",
        "services[0].connect_timeout:",
        "services[0].routes[0].strip_path: invalid type",
        "services[0].routes[0].paths[0]:",
        "services[0].routes[1].paths: expected an array",
    ] {
        assert!(
            p.iter().any(|line| line.starts_with(prefix)),
            "{prefix}\n{p:#?}"
        );
    }
    // The route whose only match field was mistyped is not also said to have none.
    assert_eq!(p.len(), 7, "{p:#?}");
    // A route with no match field at all still is, whatever else is mistyped in it.
    let p = problems(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://127.0.0.1:9\n    \
         routes:\n      - name: r\n        strip_path: \"yep\"\n",
    );
    assert!(
        p.iter()
            .any(|line| line.starts_with("services[0].routes[0]: must set at least one of")),
        "{p:#?}"
    );
}

/// A mistyped list element hides none of its siblings' problems, in an entity or in
/// the `ringway:` section, and its stand-in adds none of its own.
#[test]
fn a_mistyped_list_element_hides_no_sibling() {
    let p = problems(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://127.0.0.1:9\n    \
         routes:\n      - name: r\n        paths: [nope, 5]\n        hosts: [\"a b\", 7]\n\
         ringway:\n  trusted_ips: [\"1.2.3.4/99\", 5]\n",
    );
    let paths: Vec<&str> = p.iter().map(|l| l.split(": ").next().unwrap()).collect();
    let mut sorted = paths.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "ringway.trusted_ips[0]",
            "ringway.trusted_ips[1]",
            "services[0].routes[0].hosts[0]",
            "services[0].routes[0].hosts[1]",
            "services[0].routes[0].paths[0]",
            "services[0].routes[0].paths[1]",
        ],
        "{p:#?}"
    );
}

#[test]
fn type_errors_name_kongs_types() {
    let p = problems(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://127.0.0.1:9\n    \
         retries: abc\n    read_timeout: 1.5\n    write_timeout: -1\nconsumers:\n  - username: u\n    tags: x\n",
    );
    for expected in [
        r#"services[0].retries: invalid type: string "abc", expected an integer"#,
        "services[0].read_timeout: invalid type: floating point `1.5`, expected an integer",
        "consumers[0].tags: expected an array",
        "services[0].write_timeout: invalid value: integer `-1`, expected a non-negative integer",
    ] {
        assert!(p.iter().any(|line| line == expected), "{expected}\n{p:#?}");
    }
}

#[test]
fn tags_follow_kongs_rule() {
    let file = |tags: &str| {
        format!(
            "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://127.0.0.1:9\n    \
             tags: {tags}\n    routes:\n      - name: r\n        paths: [/]\n        tags: [ok]\n"
        )
    };
    for bad in [r#"["a,b"]"#, r#"[ok, "a/b"]"#, r#"[""]"#, r#"["bell\a"]"#] {
        let p = problems(&file(bad));
        assert_eq!(p.len(), 1, "{bad}: {p:?}");
        assert!(
            p[0].starts_with("services[0].tags: invalid tag ["),
            "{bad}: {p:?}"
        );
    }
    // Every bad tag is named, with its place.
    let p = problems(&file(r#"[ok, "", "x/y"]"#));
    assert_eq!(
        p,
        [
            "services[0].tags: invalid tag [1] '', [2] 'x/y': expected printable ascii \
          (except `,` and `/`) or valid utf-8 sequences"
        ]
    );
    let config = load(&file(r#"["team a", "équipe", "x:y=z~!"]"#)).unwrap();
    assert_eq!(config.services[0].tags, ["team a", "équipe", "x:y=z~!"]);
    for section in [
        "consumers:\n  - username: u\n",
        "certificates: []\nupstreams:\n  - name: u\n",
    ] {
        let p = problems(&format!(
            "_format_version: \"3.0\"\n{section}    tags: [\"a,b\"]\n"
        ));
        assert_eq!(p.len(), 1, "{section}: {p:?}");
        assert!(
            p[0].contains("tags: invalid tag [0] 'a,b'"),
            "{section}: {p:?}"
        );
    }
}

#[test]
fn top_level_routes_refer_to_services() {
    let config = load(
        r#"
_format_version: "2.1"
services:
  - name: a
    host: 127.0.0.1
    port: 80
routes:
  - name: by-name
    service: a
    paths: [/a]
  - name: by-object
    service: { name: a }
    hosts: [example.com]
"#,
    )
    .unwrap();
    assert_eq!(config.routes.len(), 2);
    assert_eq!(config.services[0].host_header, "127.0.0.1");
    assert_eq!(config.services[0].path, "/");
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let found = problems(
        r#"
_format_version: "3.0"
services:
  - name: a
    url: http://127.0.0.1:1
    colour: blue
  - name: b
    url: http://127.0.0.1:2
    routes:
      - paths: [/ok, nope, "~(unclosed"]
        hosts: ["*.a.*"]
      - methods: [get]
routes:
  - service: missing
    paths: [/x]
plugins:
  - name: acl-typo
ringway:
  log_level: nope
  proxy_listen: ["0.0.0.0:8443 ssl"]
"#,
    );
    let expect = [
        "services[0].colour: unknown field `colour`",
        "services[1].routes[0].paths[1]: invalid path 'nope'",
        "services[1].routes[0].paths[2]: invalid regex",
        "services[1].routes[0].hosts[0]: invalid host '*.a.*': only one wildcard",
        "services[1].routes[1].methods[0]: invalid method 'get'",
        "routes[0].service: no service named 'missing'",
        "plugins[0].name: unknown plugin 'acl-typo'",
        "ringway.log_level: unknown level 'nope'",
        "ringway.proxy_listen[0]:",
    ];
    for prefix in expect {
        assert!(
            found.iter().any(|p| p.starts_with(prefix)),
            "missing {prefix:?} in {found:#?}"
        );
    }
}

#[test]
fn unsupported_entities_and_versions_are_errors() {
    let found = problems("_format_version: \"1.0\"\nvaults:\n  - name: env\n");
    assert!(found.iter().any(|p| p.starts_with("_format_version:")));
    assert!(found.iter().any(|p| p.starts_with("vaults:")));
    let found = problems("services: []\n");
    assert!(found
        .iter()
        .any(|p| p.starts_with("_format_version: required")));
    // Kong's own plugins are named as such, a typo as unknown.
    let found = problems("_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://a:1\n    plugins:\n      - name: acl\n        enabled: false\n      - name: rate-limiting-advanced\n      - name: acl-typo\n");
    for (path, says) in [
        (
            "services[0].plugins[0].name",
            "plugin 'acl' is not implemented by this version",
        ),
        (
            "services[0].plugins[1].name",
            "`rate-limiting` takes the same limits",
        ),
        ("services[0].plugins[2].name", "unknown plugin 'acl-typo'"),
    ] {
        assert!(
            found
                .iter()
                .any(|p| p.starts_with(path) && p.contains(says)),
            "{path}: {says}: {found:?}"
        );
    }
}

#[test]
fn consumers_credentials_groups_and_plugins() {
    let config = load(
        r#"
_format_version: "3.0"
services:
  - name: users
    url: http://127.0.0.1:9001
    routes:
      - name: users
        paths: [/users]
        plugins:
          - name: jwt
            config: { claims_to_verify: [exp] }
    plugins:
      - name: jwt
  - name: open
    url: http://127.0.0.1:9001
    routes:
      - name: open
        paths: [/open]
consumer_groups:
  - name: premium
consumers:
  - username: mobile-app
    custom_id: app-1
    groups: [premium]
    jwt_secrets:
      - key: mobile-app
        secret: my-secret-key
  - username: partner
    groups: [{ name: premium }]
jwt_secrets:
  - key: partner-key
    secret: s
    algorithm: HS512
    consumer: partner
  - key: by-username
    secret: s
    consumer: { username: partner }
"#,
    )
    .unwrap();
    assert_eq!(config.credentials["by-username"].consumer, 1);
    assert_eq!(config.consumers.len(), 2);
    assert_eq!(config.consumers[0].groups, vec![0]);
    assert_eq!(config.consumers[1].groups, vec![0]);
    assert!(is_uuid(&config.consumers[0].id));
    assert_eq!(config.credentials.len(), 3);
    assert_eq!(config.credentials["partner-key"].consumer, 1);
    // The route-scoped jwt (with claims_to_verify) outranks the service-scoped one.
    let users = config.chain(Some(0), false).jwt.as_ref().unwrap();
    assert!(users.require_exp);
    assert!(config.chain(Some(1), true).jwt.is_none());
    assert!(config.chain(None, false).jwt.is_none());
    // Ids derived from names are stable across loads.
    let again = load("_format_version: \"3.0\"\nconsumers:\n  - username: mobile-app\n").unwrap();
    assert_eq!(again.consumers[0].id, config.consumers[0].id);
}

#[test]
fn entity_problems_have_paths() {
    let found = problems(
        r#"
_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:1
consumers:
  - username: a
    groups: [nope]
    jwt_secrets:
      - key: k1
        algorithm: HS999
      - key: k2
        algorithm: RS256
      - secret: x
  - custom_id: ""
  - username: a
  - username: b
    groups: [{ name: premium, extra: 1 }]
jwt_secrets:
  - key: k3
    secret: s
    consumer: ghost
  - key: k4
    secret: s
    consumer: [a]
  - key: k3
    secret: s
    consumer: a
plugins:
  - name: jwt
    consumer: a
  - name: jwt
    config: { claims_to_verify: [iat], bogus: 1 }
  - name: jwt
    service: missing
"#,
    );
    assert_eq!(
        found
            .iter()
            .filter(|p| p.contains("duplicate consumer"))
            .count(),
        1,
        "a duplicated username is one problem: {found:#?}"
    );
    for prefix in [
        "consumers[0].groups[0]: no consumer group named 'nope'",
        "consumers[0].jwt_secrets[0].algorithm: expected one of",
        "consumers[0].jwt_secrets[1].rsa_public_key: required",
        "consumers[0].jwt_secrets[2].key: required",
        "consumers[1]: at least one of these fields must be non-empty: 'custom_id', 'username'",
        "consumers[2].username: duplicate consumer 'a'",
        "consumers[3].groups[0]: expected a group name, or an object with `name` or `id`",
        "jwt_secrets[0].consumer: no consumer named 'ghost'",
        "jwt_secrets[1].consumer: expected a name or id, or an object with one of",
        "jwt_secrets[2].key: duplicate credential key 'k3'",
        "plugins[0].consumer: plugin 'jwt' authenticates consumers",
        "plugins[1].config.bogus: unknown field",
        "plugins[2].service: no service named 'missing'",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(prefix)),
            "missing {prefix:?} in {found:#?}"
        );
    }
}

#[test]
fn invalid_yaml_is_one_problem() {
    let found = problems("_format_version: \"3.0\"\nservices: [\n");
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("invalid YAML"));
    let found =
        problems("_format_version: \"3.0\"\nservices: [{name: s, url: http://a, url: http://b}]\n");
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with("services[0]: invalid YAML: duplicate entry with key \"url\""),
        "{found:?}"
    );
    let found = problems("- just\n- a list\n");
    assert_eq!(found, vec!["the top level must be a mapping".to_owned()]);
}

#[test]
fn route_needs_a_match_field_and_valid_values() {
    let found = problems(
        r#"
_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:1
    routes:
      - name: empty
      - name: dup
        paths: [/a]
      - name: dup
        paths: [/b//c, /a/../b, /a/./b, /%7Euser, /x/%2f, /%zz, /.., /ok/%2F, /ok/~, '/v\d+/x']
        headers: { host: [x] }
        https_redirect_status_code: 200
"#,
    );
    for prefix in [
        "services[0].routes[2].paths[1]: non-normalized path, consider use '/b' instead",
        "services[0].routes[2].paths[2]: non-normalized path, consider use '/a/b' instead",
        "services[0].routes[2].paths[3]: non-normalized path, consider use '/~user' instead",
        "services[0].routes[2].paths[4]: non-normalized path, consider use '/x/%2F' instead",
        "services[0].routes[2].paths[5]: invalid path '/%zz'",
        "services[0].routes[2].paths[6]: invalid path '/..'",
        "services[0].routes[2].paths[9]: invalid path '/v\\d+/x': a prefix path cannot hold a raw '\\' (for a regex, write '~/v\\d+/x')",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(prefix)),
            "missing {prefix:?} in {found:#?}"
        );
    }
    assert!(
        !found
            .iter()
            .any(|p| p.contains("paths[7]") || p.contains("paths[8]")),
        "normalized paths are valid: {found:#?}"
    );
    for prefix in [
        "services[0].routes[0]: must set at least one of",
        "services[0].routes[2].name: duplicate route name 'dup'",
        "services[0].routes[2].paths[0]: invalid path '/b//c'",
        "services[0].routes[2].headers.host:",
        "services[0].routes[2].https_redirect_status_code:",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(prefix)),
            "missing {prefix:?} in {found:#?}"
        );
    }
}

/// One run names every field to fix: a credential's missing key hides not its missing
/// public key, nor a plugin's config problem its malformed instance_name.
#[test]
fn a_missing_key_or_bad_config_hides_no_other_field() {
    let found = problems(
        "_format_version: \"3.0\"\n\
         consumers:\n\
         - username: x\n\
         \x20 jwt_secrets: [{algorithm: RS256}, {algorithm: HS256}]\n\
         plugins:\n\
         - {name: rate-limiting, instance_name: \"bad name\", config: {minute: 5, hour: 1}}\n",
    );
    for prefix in [
        "consumers[0].jwt_secrets[0].key: required field missing",
        "consumers[0].jwt_secrets[0].rsa_public_key: required for algorithm RS256",
        "consumers[0].jwt_secrets[1].key: required field missing",
        "consumers[0].jwt_secrets[1].secret: required for HS algorithms",
        "plugins[0].instance_name: invalid value 'bad name'",
        "plugins[0].config: The limit for hour",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(prefix)),
            "missing {prefix:?} in {found:#?}"
        );
    }
}

/// The `Host` a service sends has a port only when it is not the scheme's default.
#[test]
fn service_host_has_a_port_unless_the_schemes_default() {
    let config = load(
        "_format_version: \"3.0\"\n\
         services:\n\
         - {name: a, url: \"https://api.example.com\"}\n\
         - {name: b, url: \"https://api.example.com:80\"}\n\
         - {name: c, protocol: https, host: api.example.com, port: 443}\n\
         - {name: d, url: \"http://api.example.com:443\"}\n\
         - {name: e, url: \"http://api.example.com\"}\n",
    )
    .unwrap();
    let hosts: Vec<&str> = config
        .services
        .iter()
        .map(|s| s.host_header.as_str())
        .collect();
    assert_eq!(
        hosts,
        [
            "api.example.com",
            "api.example.com:80",
            "api.example.com",
            "api.example.com:443",
            "api.example.com"
        ]
    );
}

#[test]
fn control_bytes_never_reach_an_upstream_request() {
    // A CR or LF in a service path would split the upstream request line (a header
    // injected by config), so every place that writes config into a request refuses them.
    let found = problems(
        "_format_version: \"3.0\"\n\
         services:\n\
         - {name: a, url: \"http://127.0.0.1:1/a\\r\\nX-Injected: 1\"}\n\
         - {name: b, host: 127.0.0.1, path: \"/b\\tc\\x01d\"}\n\
         - {name: c, host: 127.0.0.1, path: \"/c\\x7f\"}\n\
         upstreams:\n\
         - name: up\n\
         \x20 healthchecks: {active: {http_path: \"/h\\tx\", headers: {x-probe: [\"a\\x00b\"]}}}\n",
    );
    for prefix in [
        "services[0].path: invalid path \"/a\\r\\nX-Injected: 1\": must not contain a control character",
        "services[1].path: invalid path \"/b\\tc\\u{1}d\": must not contain a control character",
        "services[2].path: invalid path",
        "upstreams[0].healthchecks.active.http_path: invalid path \"/h\\tx\"",
        "upstreams[0].healthchecks.active.headers.x-probe: invalid header name or value",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(prefix)),
            "missing {prefix:?} in {found:#?}"
        );
    }
}

/// Request paths are routed with non-ASCII bytes percent-encoded: a route path that
/// holds them raw, prefix or regex, is refused with the form that would match.
#[test]
fn route_paths_in_kongs_decoded_form_load() {
    // Kong writes a prefix with what a request path cannot carry raw decoded, and reads
    // a regex against the path decoded: both load, a prefix in its encoded form (request
    // paths are matched encoded), a regex as written (it matches the decoded path).
    let config = load(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://127.0.0.1:9\n    \
         routes:\n      - name: r\n        paths: [\"/caf\u{e9}\", \"/a b\", \"/q\\\"x\", \"~/caf\u{e9}$\", \"~/x[\u{e9}a]y\", \"~/caf%C3%A9/\\\\d+$\"]\n",
    )
    .unwrap();
    let shown: Vec<String> = config.routes[0]
        .paths
        .iter()
        .map(|p| match p {
            PathMatch::Prefix(p) => p.clone(),
            PathMatch::Regex(re) => format!("~{}", re.as_str()),
        })
        .collect();
    assert_eq!(
        shown,
        [
            "/caf%C3%A9",
            "/a%20b",
            "/q%22x",
            "~^(?:/caf\u{e9}$)",
            "~^(?:/x[\u{e9}a]y)",
            "~^(?:/caf\u{e9}/\\d+$)",
        ]
    );
    // Escapes that decode to no UTF-8 cannot be matched against a decoded path.
    let found = problems(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://127.0.0.1:9\n    \
         routes:\n      - name: r\n        paths: [\"~/x%FF\"]\n",
    );
    assert!(
        found[0].starts_with("services[0].routes[0].paths[0]: invalid regex path '~/x%FF'"),
        "{found:?}"
    );
}

#[test]
fn verification_settings_need_an_https_service() {
    let found = problems(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://a\n    tls_verify: true\n    tls_verify_depth: 2\n    ca_certificates: []\n  - name: t\n    url: https://a\n    tls_verify_depth: 65\n",
    );
    for field in ["tls_verify", "tls_verify_depth", "ca_certificates"] {
        let prefix = format!("services[0].{field}: value must be null");
        assert!(
            found.iter().any(|p| p.starts_with(&prefix)),
            "{prefix}: {found:?}"
        );
    }
    assert!(
        found
            .iter()
            .any(|p| p == "services[1].tls_verify_depth: value should be between 0 and 64"),
        "{found:?}"
    );
    // What Kong's dumps carry on a plain service loads.
    load("_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://a\n    tls_verify: null\n    tls_verify_depth: null\n    ca_certificates: null\n").unwrap();
}

#[test]
fn urls_and_service_fields() {
    for (url, host, port, path) in [
        ("http://example.com", "example.com", 80, "/"),
        ("http://127.0.0.1:9000/", "127.0.0.1", 9000, "/"),
        ("http://[::1]:9000/x/y", "[::1]", 9000, "/x/y"),
        // Read in decimal, as Kong does (the C resolver would take `010` for octal 8).
        ("http://010.000.000.001:81", "10.0.0.1", 81, "/"),
        ("http://Example.COM", "example.com", 80, "/"),
        ("http://1.2.3.4.:81", "1.2.3.4", 81, "/"),
    ] {
        let config = load(&format!(
            "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: {url}\n"
        ))
        .unwrap();
        let s = &config.services[0];
        assert_eq!(
            (s.host.as_str(), s.port, s.path.as_str()),
            (host, port, path),
            "{url}"
        );
    }
    for (url, prefix) in [
        ("example.com", "services[0].url: invalid url"),
        ("http://a:99999", "services[0].url: invalid port"),
        ("https://a?x", "services[0].host: invalid host"),
        ("http://1.2.3.256", "services[0].host: invalid host"),
        (
            "ftp://a",
            "services[0].protocol: unsupported protocol 'ftp'",
        ),
        ("http://u:p@a", "services[0].url: invalid url"),
    ] {
        let found = problems(&format!(
            "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: {url}\n"
        ));
        assert!(
            found.iter().any(|p| p.starts_with(prefix)),
            "{url}: {found:?}"
        );
    }
    // `url` beside its parts, as decK's examples write it: parts that agree load, a path
    // the url leaves out is taken, parts that disagree are refused (Kong takes the url's).
    let config = load(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://a:81\n    protocol: HTTP\n    host: A\n    port: 81\n    path: /v1\n  - name: t\n    url: https://b/x\n    port: 443\n    path: /x\n",
    )
    .unwrap();
    let (s, t) = (&config.services[0], &config.services[1]);
    assert_eq!((s.host.as_str(), s.port, s.path.as_str()), ("a", 81, "/v1"));
    assert_eq!((t.port, t.path.as_str()), (443, "/x"));
    let found = problems(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://a/v1\n    protocol: https\n    host: b\n    port: 8080\n    path: /v2\n",
    );
    assert_eq!(
        paths_of(&found),
        [
            "services[0].protocol",
            "services[0].host",
            "services[0].port",
            "services[0].path"
        ],
        "{found:?}"
    );
    // A problem quotes a url without its credentials.
    for url in [
        "http://user:s3cret@a/p",
        "user:s3cret@a/p",
        "http://user:s3cret@a:x",
    ] {
        let found = problems(&format!(
            "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: {url}\n"
        ));
        assert!(
            !found.is_empty() && found.iter().all(|p| !p.contains("s3cret")),
            "{url}: {found:?}"
        );
        assert!(
            found.iter().any(|p| p.contains("***@a")),
            "{url}: {found:?}"
        );
    }
    // A path a request target cannot carry raw is sent encoded.
    let config =
        load("_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://a/caf\u{e9}\n")
            .unwrap();
    assert_eq!(config.services[0].path, "/caf%C3%A9");
    let found = problems("_format_version: \"3.0\"\nservices:\n  - name: s\n    host: a\n    retries: 40000\n    read_timeout: 0\n");
    assert!(found.iter().any(|p| p.starts_with("services[0].retries")));
    assert!(found
        .iter()
        .any(|p| p.starts_with("services[0].read_timeout")));
}

/// decK's `${{ env "..." }}` templates are refused: unexpanded, the template's text
/// would be the secret, known to anyone who reads the file.
#[test]
fn deck_templates_are_refused_with_a_pointer_to_vault() {
    let found = problems(
        "_format_version: \"3.0\"\nconsumers:\n  - username: u\n    jwt_secrets: [{key: k, secret: '${{ env \"DECK_JWT_SECRET\" }}'}]\n",
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("consumers[0].jwt_secrets[0].secret: a decK template")
            && found[0].contains("{vault://env/NAME}"),
        "{found:?}"
    );
    // Every action decK would render is one, whatever its form.
    for value in [
        "'${{env `DECK_X`}}'",
        "'${{- env \"DECK_X\" -}}'",
        "'p-${{ .Env.X }}'",
    ] {
        let found = problems(&format!(
            "_format_version: \"3.0\"\nconsumers:\n  - username: u\n    jwt_secrets: [{{key: k, secret: {value}}}]\n"
        ));
        assert_eq!(found.len(), 1, "{value}: {found:?}");
    }
    // Text that only looks alike is text.
    assert!(
        load("_format_version: \"3.0\"\nconsumers: [{username: \"${{ not a template\"}]\n").is_ok()
    );
}

#[test]
fn vault_references_read_the_environment() {
    std::env::set_var("RINGWAY_TEST_UPSTREAM_HOST", "127.0.0.1");
    // Only as the whole value (Kong would take one with spaces around it as text).
    let found = problems("_format_version: \"3.0\"\nservices:\n  - name: s\n    host: \" {vault://env/ringway-test-upstream-host}\"\n");
    assert!(
        found[0].starts_with("services[0].host: a vault reference must be the whole value"),
        "{found:?}"
    );
    let config = load("_format_version: \"3.0\"\nservices:\n  - name: s\n    host: \"{vault://env/ringway-test-upstream-host}\"\n").unwrap();
    assert_eq!(config.services[0].host, "127.0.0.1");
    let found = problems("_format_version: \"3.0\"\nservices:\n  - name: s\n    host: \"{vault://env/ringway-test-not-set}\"\n");
    assert!(
        found[0].starts_with("services[0].host: environment variable RINGWAY_TEST_NOT_SET"),
        "{found:?}"
    );
    // An unset url is that one problem, not also a protocol the reference's text would be.
    let found = problems("_format_version: \"3.0\"\nservices:\n  - name: s\n    url: \"{vault://env/ringway-test-not-set}\"\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("services[0].url: environment variable RINGWAY_TEST_NOT_SET"),
        "{found:?}"
    );
    // A protocol given beside it is still checked, against nothing the url's text says.
    let found = problems("_format_version: \"3.0\"\nservices:\n  - name: s\n    url: \"{vault://env/ringway-test-not-set}\"\n    protocol: ftp\n");
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[1].starts_with("services[0].protocol: unsupported protocol 'ftp'"),
        "{found:?}"
    );
}

/// A warning quotes the reference too: a host from a vault that did not resolve.
#[test]
fn warnings_quote_the_reference_not_the_secret() {
    std::env::set_var("RINGWAY_TEST_SECRET_HOST", "secret-leak-host.invalid");
    let config = load(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    host: \"{vault://env/ringway-test-secret-host}\"\n",
    )
    .unwrap();
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("{vault://env/ringway-test-secret-host}")),
        "{:?}",
        config.warnings
    );
    assert!(
        !config.warnings.iter().any(|w| w.contains("secret-leak")),
        "{:?}",
        config.warnings
    );
}

/// A problem with a value that came from a vault quotes the reference, never the value.
#[test]
fn problems_quote_the_reference_not_the_secret() {
    std::env::set_var("RINGWAY_TEST_SECRET_URL", "bad-s3cr3t-url");
    std::env::set_var("RINGWAY_TEST_SECRET_PORT", "s3cr3t-port");
    std::env::set_var("RINGWAY_TEST_SECRET_LEVEL", "s3cr3t-level");
    let found = problems(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: \"{vault://env/ringway-test-secret-url}\"\n  \
         - name: t\n    host: example.com\n    port: \"{vault://env/ringway-test-secret-port}\"\n\
         ringway:\n  log_level: \"{vault://env/ringway-test-secret-level}\"\n",
    );
    assert!(found.len() >= 3, "{found:#?}");
    for line in &found {
        assert!(!line.contains("s3cr3t"), "{found:#?}");
    }
    for prefix in [
        "services[0].url:",
        "services[1].port:",
        "ringway.log_level:",
    ] {
        assert!(
            found
                .iter()
                .any(|l| l.starts_with(prefix) && l.contains("{vault://env/ringway-test-secret-")),
            "{prefix}\n{found:#?}"
        );
    }
}

#[test]
fn node_section_and_overrides() {
    let yaml = r#"
_format_version: "3.0"
ringway:
  proxy_listen: ["127.0.0.1:9000", "127.0.0.1:9001 reuseport backlog=128"]
  workers: 3
  client_header_timeout: 500
  trusted_ips: [10.0.0.0/8, 192.168.1.1]
"#;
    let config = load(yaml).unwrap();
    assert_eq!(config.node.proxy_listen.len(), 2);
    assert_eq!(config.node.proxy_listen[1].backlog, 128);
    assert_eq!(config.node.workers, 3);
    assert_eq!(
        config.node.client_header_timeout,
        Duration::from_millis(500)
    );
    assert!(config.node.is_trusted("10.1.2.3".parse().unwrap()));
    assert!(config.node.is_trusted("192.168.1.1".parse().unwrap()));
    assert!(!config.node.is_trusted("192.168.1.2".parse().unwrap()));

    let overrides = NodeOverrides {
        proxy_listen: vec!["127.0.0.1:7000".into()],
        workers: Some(1),
        ..Default::default()
    };
    let config = Config::from_bytes(yaml.as_bytes(), &overrides).unwrap();
    assert_eq!(config.node.proxy_listen.len(), 1);
    assert_eq!(config.node.workers, 1);
    // A flag does not hide a bad value in the file: `check`, which takes no flags,
    // refuses the file, and so does every load of it.
    let bad = "_format_version: \"3.0\"\nringway:\n  proxy_listen: [nonsense]\n  workers: 0\n  log_level: loud\n  admin_listen: 0.0.0.0:8001\n";
    let every_flag = NodeOverrides {
        proxy_listen: vec!["127.0.0.1:7000".into()],
        admin_listen: Some("127.0.0.1:7001".into()),
        workers: Some(1),
        log_level: Some("warn".into()),
        ..Default::default()
    };
    let found: Vec<String> = Config::from_bytes(bad.as_bytes(), &every_flag)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    for prefix in [
        "ringway.proxy_listen[0]",
        "ringway.workers",
        "ringway.log_level",
        "ringway.admin_listen: 0.0.0.0:8001 is not a loopback",
    ] {
        assert_eq!(
            found.iter().filter(|p| p.starts_with(prefix)).count(),
            1,
            "{prefix:?} once in {found:?}"
        );
    }
    // A bad flag is named by the flag; the same bad value in the file by its key.
    let bad_flag = NodeOverrides {
        workers: Some(0),
        ..Default::default()
    };
    let found: Vec<String> = Config::from_bytes(
        b"_format_version: \"3.0\"\nringway:\n  workers: 0\n",
        &bad_flag,
    )
    .unwrap_err()
    .0
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(
        found,
        [
            "--workers: must be between 1 and 1024",
            "ringway.workers: must be between 1 and 1024 (the file's own value, which a flag \
             replaces: a start without the flag would refuse it)"
        ],
        "{found:?}"
    );

    let found = problems("_format_version: \"3.0\"\nringway:\n  admin_listen: 0.0.0.0:8001\n  workers: 0\n  max_headers: 100000\n");
    for prefix in [
        "ringway.admin_listen: 0.0.0.0:8001 is not a loopback",
        "ringway.workers",
        "ringway.max_headers",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(prefix)),
            "missing {prefix:?} in {found:?}"
        );
    }
    let with_token = load(
        "_format_version: \"3.0\"\nringway:\n  admin_listen: 0.0.0.0:8001\n  admin_token: s3cret\n",
    )
    .unwrap();
    assert_eq!(with_token.node.admin_token.as_deref(), Some("s3cret"));
    for token in ["\"  \"", "\" s3cret\"", "\"s3cret\\t\"", "\"s3\\x01cret\""] {
        let found = problems(&format!(
            "_format_version: \"3.0\"\nringway:\n  admin_token: {token}\n"
        ));
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("ringway.admin_token: must not start or end")),
            "{token}: {found:?}"
        );
    }
}

/// Every file shipped in config/ must load, so examples cannot rot.
#[test]
fn every_bundled_config_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            continue;
        }
        if let Err(e) = Config::load(&path, &NodeOverrides::default()) {
            panic!("{}: {e}", path.display());
        }
        seen += 1;
    }
    assert!(
        seen >= 2,
        "expected the example and the demo config in {}",
        dir.display()
    );
}

#[test]
fn admin_layer_entities_are_tagged_and_refer_to_file_entities_by_id() {
    let file = b"_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://127.0.0.1:1\nconsumers:\n  - username: file-user\n";
    let file_user_id = stable_id("consumer", "file-user");
    let service_id = stable_id("service", "s");
    let admin = serde_json::json!({
        "consumers": [{ "id": "c8cf99cf-dde1-44f1-9aba-b9b5f91a718b", "username": "bob", "created_at": 1 }],
        "jwt_secrets": [{ "id": "e05d997b-e1f5-4839-961b-259f6e9d80ad", "key": "k", "secret": "s", "consumer": { "id": file_user_id } }],
        "plugins": [{ "id": "10e37c21-6b76-42d4-8520-9f089e124d0d", "name": "jwt", "service": { "id": service_id } }],
    });
    let config = Config::from_layers(file, Some(&admin), &NodeOverrides::default()).unwrap();
    let bob = config.keys.consumers["bob"];
    assert_eq!(config.consumers[bob].layer, Layer::Admin);
    assert_eq!(
        config.consumers[config.keys.consumers["file-user"]].layer,
        Layer::File
    );
    assert_eq!(config.jwt_secrets[0].layer, Layer::Admin);
    assert_eq!(config.plugins[0].layer, Layer::Admin);
}

/// A self-signed certificate and key, indented as YAML block scalars' contents.
fn test_certificate_pem() -> (String, String) {
    let (cert, key) = crate::tls::tests::generate("a.test");
    let indent = |pem: String| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    (indent(cert), indent(key))
}

/// Found reviewing: a duplicate certificate id used to repoint the id at a certificate
/// that was never kept, and an `snis` entry naming it then indexed past the end.
#[test]
fn a_duplicate_certificate_id_is_an_error_not_a_panic() {
    let (cert, key) = test_certificate_pem();
    let one =
        format!("- id: 3f0c5a52-7a7b-4a5e-9a57-2c1d6f1e0a01\n  cert: |\n{cert}  key: |\n{key}");
    let yaml = format!(
        "_format_version: \"3.0\"\ncertificates:\n{one}{one}snis:\n- name: b.test\n  certificate: {{id: 3f0c5a52-7a7b-4a5e-9a57-2c1d6f1e0a01}}\n"
    );
    let found = problems(&yaml);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("certificates[1].id: duplicate certificate id")),
        "{found:?}"
    );
}

/// As Kong: without proxy_listen, a config with a certificate also listens on 8443 with
/// TLS; an explicit proxy_listen is taken as given.
#[test]
fn a_certificate_adds_the_default_tls_listener() {
    let (cert, key) = test_certificate_pem();
    let yaml = format!("_format_version: \"3.0\"\ncertificates:\n- cert: |\n{cert}  key: |\n{key}");
    let config = Config::from_bytes(yaml.as_bytes(), &NodeOverrides::default()).unwrap();
    let listens: Vec<(String, bool)> = config
        .node
        .proxy_listen
        .iter()
        .map(|l| (l.addr.to_string(), l.ssl))
        .collect();
    assert_eq!(
        listens,
        [
            ("0.0.0.0:8000".to_owned(), false),
            ("0.0.0.0:8443".to_owned(), true)
        ]
    );
    let explicit = yaml.replace(
        "_format_version: \"3.0\"\n",
        "_format_version: \"3.0\"\nringway:\n  proxy_listen: [\"127.0.0.1:9000\"]\n",
    );
    let config = Config::from_bytes(explicit.as_bytes(), &NodeOverrides::default()).unwrap();
    assert_eq!(config.node.proxy_listen.len(), 1);
}

/// SPEC §2: every problem at once. Within one item too: an unknown field or a field of
/// the wrong type does not hide the item's other fields, and a settings section's own
/// checks still run; a mistyped field's absence is not reported as a second problem
/// (`services[1]` has no host once its `url` is out).
#[test]
fn every_problem_of_an_item_is_reported_at_once() {
    let got = problems(
        r#"
_format_version: "3.0"
servces: []
ringway:
  max_headers: -1
  frobnicate: 1
  workers: 0
  log_level: loud
services:
  - name: s
    url: http://127.0.0.1:9
    colour: 1
    shape: 2
  - name: t
    url: 5
    routes:
      - name: r
        paths: 7
        bogus: true
consumers:
  - username: u
    age: 3
    jwt_secrets:
      - key: k
        secret: s
        algorithm: HS999
"#,
    );
    let paths: Vec<&str> = got
        .iter()
        .map(|p| p.split(": ").next().unwrap_or(""))
        .collect();
    assert_eq!(
        paths,
        [
            "servces",
            "ringway.max_headers",
            "ringway.frobnicate",
            "ringway.workers",
            "ringway.log_level",
            "services[0].colour",
            "services[0].shape",
            "services[1].url",
            "services[1].routes[0].paths",
            "services[1].routes[0].bogus",
            "consumers[0].age",
            "consumers[0].jwt_secrets[0].algorithm",
        ],
        "{got:#?}"
    );
}

#[test]
fn a_consumer_id_written_twice_is_one_problem() {
    let found = problems(
        r#"
_format_version: "3.0"
consumers:
  - username: a
    id: 6a0b5d4e-1f2e-4d6c-9a8b-000000000001
  - username: b
    id: 6a0b5d4e-1f2e-4d6c-9a8b-000000000001
"#,
    );
    assert_eq!(
        found,
        ["consumers[1].id: duplicate consumer id '6a0b5d4e-1f2e-4d6c-9a8b-000000000001'"]
    );
}

/// Each problem once, where it is: no second line that a first one's consequence would
/// make (a route left without its only match field, a plugin naming a refused route),
/// and the index of the entry written, not of the ones that parsed.
#[test]
fn one_mistake_is_one_problem_at_its_own_path() {
    let found = problems(
        r#"
_format_version: "3.0"
ringway:
  proxy_listen: ["nohost", "127.0.0.1:81 ssl"]
  ssl_cert_key: /nonexistent/key.pem
services:
  - id: 11111111-1111-1111-1111-111111111111
    url: http://127.0.0.1:1
    routes:
      - name: typed
        headers: {x-c: [1, true]}
      - name: regex
        headers: {x-c: ["~*(bad"]}
  - id: 11111111-1111-1111-1111-111111111111
    url: http://127.0.0.1:2
    routes:
      - name: refused
        paths: [bad]
plugins:
  - name: rate-limiting
    route: refused
    config: {minute: 1}
"#,
    );
    let want = [
        "ringway.proxy_listen[0]: invalid address 'nohost': expected HOST:PORT",
        "ringway.ssl_cert_key: cannot read /nonexistent/key.pem: No such file or directory (os error 2)",
        "ringway.ssl_cert: required with ssl_cert_key",
        "ringway.proxy_listen[1]: a TLS listener needs a certificate",
        "services[0].routes[0].headers.x-c: expected a string or a list of strings",
        "services[0].routes[1].headers.x-c: invalid regex: error: unclosed group",
        "services[1].id: duplicate service '11111111-1111-1111-1111-111111111111': another service has it as its name or id",
        "services[1].routes[0].paths[0]: invalid path 'bad'",
    ];
    for line in &want {
        assert!(
            found.iter().any(|f| f.starts_with(line)),
            "missing {line:?} in {found:#?}"
        );
    }
    assert_eq!(found.len(), want.len(), "{found:#?}");
}

#[test]
fn a_mistyped_secret_is_reported_without_its_value() {
    let found = problems(
        r#"
_format_version: "3.0"
consumers:
  - username: a
jwt_secrets:
  - key: k
    secret: 987654321987
    consumer: a
plugins:
  - name: rate-limiting
    config: {minute: 1, policy: redis, redis_host: localhost, redis_password: 555666777}
ringway:
  admin_token: 123456789
"#,
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("redis_password: invalid type")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p == "jwt_secrets[0].secret: invalid type: integer, expected a string"),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("ringway.admin_token: invalid type")),
        "{found:#?}"
    );
    assert!(
        !found
            .iter()
            .any(|p| ["987654321987", "123456789", "555666777"]
                .iter()
                .any(|v| p.contains(v))),
        "a secret never reaches a message: {found:#?}"
    );
    // A field unknown where it stands is named, with what is expected there, whatever
    // its name: the message quotes names, no value.
    let found = problems("_format_version: \"3.0\"\nsecret: x\nservices:\n- name: s\n  url: http://h\n  password: y\n");
    for (path, field) in [("secret", "secret"), ("services[0].password", "password")] {
        assert!(
            found.iter().any(|p| p.starts_with(&format!(
                "{path}: unknown field `{field}`, expected one of `"
            ))),
            "{found:#?}"
        );
    }
}

#[test]
fn deeply_nested_flow_collections_are_refused_at_once() {
    let deep = format!(
        "_format_version: \"3.0\"\nservices: {}",
        "[".repeat(200_000)
    );
    let found = problems(&deep);
    assert_eq!(found, ["invalid YAML: nests deeper than 256 levels"]);
    // A quote in a comment does not hide what follows.
    let commented = format!(
        "_format_version: \"3.0\"\n# the \"main\" one, or \"\nservices: {}",
        "[".repeat(1000)
    );
    assert_eq!(
        problems(&commented),
        ["invalid YAML: nests deeper than 256 levels"]
    );
    // A quote that opens no string does not hide what follows: an escaped backslash
    // before a closing quote, a double quote inside single quotes, one inside a plain
    // scalar.
    for before in [
        r#"a: "x\\""#,
        r#"a: '"'"#,
        r#"a: 6"2"#,
        r#"a: 'it''s "'"#,
        "a: x '",
        "a: [x '', 1]",
    ] {
        let hidden = format!(
            "_format_version: \"3.0\"\n{before}\nservices: {}",
            "[".repeat(1000)
        );
        assert_eq!(
            problems(&hidden),
            ["invalid YAML: nests deeper than 256 levels"],
            "after {before}"
        );
    }
    // Brackets in quoted strings do not count.
    let quoted = format!(
        "_format_version: \"3.0\"\ntags_note: \"{}\"\n",
        "[".repeat(300)
    );
    assert!(!problems(&quoted).iter().any(|p| p.contains("nests deeper")));
    let single = format!(
        "_format_version: \"3.0\"\ntags_note: 'it''s {}'\n",
        "[".repeat(300)
    );
    assert!(!problems(&single).iter().any(|p| p.contains("nests deeper")));
}

#[test]
fn format_2_1_reads_bare_regex_paths_as_kong_migrates_them() {
    let config = load(
        r#"
_format_version: "2.1"
services:
  - name: s
    url: http://127.0.0.1:1
    routes:
      - name: versioned
        paths: ["/api/v\\d+/users$", "/plain/path-1.2_~", "/esc%2e(x)%2F%41%7c", "~/marked/(\\d+)$", "/caf%c3%a9/x+/%2f%4"]
routes:
  - name: top
    service: s
    paths: ["/items/[0-9]+"]
"#,
    )
    .unwrap();
    let shown: Vec<String> = config
        .routes
        .iter()
        .flat_map(|r| &r.paths)
        .map(|p| match p {
            PathMatch::Prefix(p) => p.clone(),
            PathMatch::Regex(re) => format!("~{}", re.as_str()),
        })
        .collect();
    assert_eq!(
        shown,
        [
            r"~^(?:/api/v\d+/users$)",
            "/plain/path-1.2_~",
            // `.` and `|` decoded escaped, `/` (reserved) kept escaped in upper case,
            // `A` decoded as itself.
            r"~^(?:/esc\.(x)%2FA\|)",
            r"~^(?:/marked/(\d+)$)",
            // Non-ASCII bytes are decoded too (matched against the path read decoded,
            // as Kong's router does); a reserved `/` stays escaped, upper case; a
            // cut-off escape is kept as written.
            "~^(?:/café/x+/%2F%4)",
            "~^(?:/items/[0-9]+)",
        ]
    );
    assert_eq!(config.warnings.len(), 4, "{:?}", config.warnings);
    assert!(
        config.warnings[0].contains("services[0].routes[0].paths[0]")
            && config.warnings[0].contains(r"'~/api/v\d+/users$'"),
        "{:?}",
        config.warnings
    );

    // A "3.0" file means what it says: no `~`, no regex.
    let config = load(
        "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://127.0.0.1:1\n    routes:\n      - paths: [\"/items/[0-9]+\"]\n",
    )
    .unwrap();
    assert!(matches!(&config.routes[0].paths[0], PathMatch::Prefix(p) if p == "/items/[0-9]+"));
    assert!(config.warnings.is_empty());
}

#[test]
fn plugin_protocols_take_kongs_list_and_warn_when_the_plugin_cannot_run() {
    let yaml = |protocols: &str| {
        format!("_format_version: \"3.0\"\nplugins:\n  - name: correlation-id\n    protocols: {protocols}\n")
    };
    // What Kong's exports write.
    let config = load(&yaml("[grpc, grpcs, http, https]")).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert!(config.chain(None, false).correlation_id.is_some());
    let config = load(&yaml("[grpcs]")).unwrap();
    assert!(
        config.warnings.iter().any(|w| w.contains("never runs")),
        "{:?}",
        config.warnings
    );
    assert!(config.chain(None, true).correlation_id.is_none());
    let config = load(&yaml("[grpc]").replace("correlation-id", "prometheus")).unwrap();
    assert!(
        config.warnings.len() == 1 && config.warnings[0].contains("not applied"),
        "{:?}",
        config.warnings
    );
    // A plugin that could never run is refused where that leaves a door open.
    for (protocols, name, want) in [
        (
            "[]",
            "correlation-id",
            "plugins[0].protocols: must not be empty",
        ),
        (
            "[grpc]",
            "jwt",
            "plugins[0].protocols: a jwt without http or https",
        ),
    ] {
        let found = problems(&yaml(protocols).replace("correlation-id", name));
        assert!(
            found.iter().any(|p| p.starts_with(want)),
            "{want}: {found:?}"
        );
    }
    let found = problems(
        "_format_version: \"3.0\"\nconsumer_groups:\n  - name: gold\n    plugins:\n      - name: jwt\n",
    );
    assert!(
        found.iter().any(|p| p
            .starts_with("consumer_groups[0].plugins[0].consumer_group: plugin 'jwt'")
            && p.ends_with("a consumer group")),
        "{found:?}"
    );
    let found = problems(&yaml("[http, tcp]"));
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("plugins[0].protocols[1]: unsupported protocol 'tcp'")),
        "{found:?}"
    );
}

#[test]
fn a_repeated_consumer_group_is_one_problem() {
    let found = problems(
        "_format_version: \"3.0\"\nconsumer_groups:\n  - name: gold\n  - name: gold\n  - name: silver\n    id: 7f6c3f4e-1b9a-4f0e-9a55-3d2f1c0b8a11\n  - name: bronze\n    id: 7f6c3f4e-1b9a-4f0e-9a55-3d2f1c0b8a11\n",
    );
    assert_eq!(
        found,
        [
            "consumer_groups[1].name: duplicate consumer group 'gold'",
            "consumer_groups[3].id: duplicate consumer group id '7f6c3f4e-1b9a-4f0e-9a55-3d2f1c0b8a11'",
        ]
    );
}

#[test]
fn listeners_that_cannot_all_bind_are_named_by_their_entries() {
    let node = |listens: &str, admin: &str| {
        format!("_format_version: \"3.0\"\nringway:\n  proxy_listen: {listens}\n  admin_listen: \"{admin}\"\n")
    };
    let overlapping = |listens: &str, admin: &str| -> Vec<String> {
        problems(&node(listens, admin))
            .into_iter()
            .filter(|p| p.contains("overlaps"))
            .collect()
    };
    // A broken entry before them keeps its place in the numbering.
    assert_eq!(
        overlapping(r#"["nope", "127.0.0.1:8000", "127.0.0.1:8000"]"#, "127.0.0.1:8001"),
        ["ringway.proxy_listen[2]: 127.0.0.1:8000 overlaps ringway.proxy_listen[1] (127.0.0.1:8000)"]
    );
    // Listeners are dual-stack: `[::]` takes the port on every address.
    assert_eq!(
        overlapping(r#"["[::]:8000", "nope"]"#, "127.0.0.1:8000"),
        ["ringway.admin_listen: 127.0.0.1:8000 overlaps ringway.proxy_listen[0] ([::]:8000)"]
    );
    assert_eq!(
        overlapping(r#"["[::ffff:127.0.0.1]:8000", "nope"]"#, "127.0.0.1:8000").len(),
        1
    );
    // Distinct addresses, distinct ports, an IPv4 wildcard beside an IPv6 address, and
    // port 0 are fine.
    let fine = load(&node(
        r#"["127.0.0.1:8000", "127.0.0.2:8000", "0.0.0.0:8002", "[::1]:8002", "127.0.0.1:0", "127.0.0.1:0"]"#,
        "127.0.0.1:8001",
    ));
    assert!(fine.is_ok(), "{:?}", fine.err());
}

/// decK's `_info` as `deck gateway sync` applies it: `defaults` fill what an entity
/// leaves unset (never what its `url` gives), `select_tags` tag every entity; and Kong's
/// bookkeeping (`_comment`, `_ignore`, `ws_id`) loads on any entity, at any depth.
#[test]
fn deck_info_defaults_and_bookkeeping_apply() {
    let config = load(
        r#"
_format_version: "3.0"
_info:
  select_tags: [team-a]
  defaults:
    service: {read_timeout: 1000, retries: 0, port: 9999, path: /from-defaults}
    route: {strip_path: false}
services:
  - name: s
    url: http://127.0.0.1:1/base
    retries: 2
    ws_id: 0b7d3b1d-5b3a-4a4a-9a8a-6b4f3c2d1e0f
    _comment: the one service
    routes:
      - name: r
        paths: [/a]
        _ignore: [x]
        plugins:
          - name: correlation-id
            _comment: nested twice
  - name: bare
    host: 127.0.0.1
  - name: pathless-url
    url: http://127.0.0.1:2
routes:
  - name: top
    service: bare
    paths: [/b]
    strip_path: true
"#,
    )
    .unwrap();
    let s = &config.services[0];
    assert_eq!(s.read_timeout, Duration::from_millis(1000));
    assert_eq!(s.retries, 2, "the entity's own value stands");
    assert_eq!(
        (s.port, s.path.as_str()),
        (1, "/base"),
        "what the url gives stands"
    );
    let bare = &config.services[1];
    assert_eq!((bare.port, bare.path.as_str()), (9999, "/from-defaults"));
    // A url without a path gives none: the default's stands.
    let pathless = &config.services[2];
    assert_eq!(
        (pathless.port, pathless.path.as_str()),
        (2, "/from-defaults")
    );
    assert!(!config.routes[0].strip_path, "a default");
    assert!(config.routes[1].strip_path, "the route's own value");
    assert_eq!(s.tags, ["team-a"]);
    assert_eq!(config.routes[1].tags, ["team-a"]);
    // Records merge field by field, as decK merges them.
    let config = load(
        "_format_version: \"3.0\"\n_info: {defaults: {upstream: {healthchecks: {active: {http_path: /hc}}}}}\nupstreams: [{name: up, healthchecks: {active: {timeout: 5}}}]\n",
    )
    .unwrap();
    let active = &config.upstreams[0].checks.active;
    assert_eq!(
        (active.http_path.as_str(), active.timeout),
        ("/hc", Duration::from_secs(5))
    );

    // Problems in `_info` are said where they are written, once, not at every entity
    // the defaults would fill; what names an entity is no default (as decK).
    let found = problems(
        "_format_version: \"3.0\"\n_info:\n  defaults: {plugin: {enabled: false}, route: 5, service: {colour: red, name: x}, target: {target: 10.0.0.1}}\n  select_tags: [\"a,b\"]\n  colour: red\nservices: [{name: s, url: http://127.0.0.1:1, routes: [{paths: [/a]}]}]\n",
    );
    assert_eq!(
        paths_of(&found),
        [
            "_info.colour",
            "_info.defaults.plugin",
            "_info.defaults.route",
            "_info.defaults.service.name",
            "_info.defaults.service.colour",
            "_info.defaults.target.target",
            "_info.select_tags"
        ],
        "{found:?}"
    );
}

/// What a Kong 3.11 dump writes on every upstream (sticky-session fields at their
/// defaults) and https probe settings on an http probe (inert, as in Kong) load;
/// sticky sessions themselves are refused.
#[test]
fn upstream_fields_kong_dumps_spell_out_load() {
    let file = |extra: &str| {
        format!(
            "_format_version: \"3.0\"\nupstreams:\n  - name: u\n    sticky_sessions_cookie: null\n    sticky_sessions_cookie_path: /\n    healthchecks:\n      active:\n        type: http\n        https_sni: example.com\n        https_verify_certificate: false\n{extra}"
        )
    };
    let config = load(&file("")).unwrap();
    let active = &config.upstreams[0].checks.active;
    assert_eq!(active.https_sni.as_deref(), Some("example.com"));
    assert!(!active.https_verify_certificate);
    let found = problems(&file(
        "  - name: v\n    algorithm: sticky-sessions\n    sticky_sessions_cookie: sid\n",
    ));
    assert_eq!(
        paths_of(&found),
        [
            "upstreams[1].algorithm",
            "upstreams[1].sticky_sessions_cookie"
        ],
        "{found:?}"
    );
}

/// A consumer may be named by its `custom_id` (decK names one without a username so),
/// and a reference object may be the Admin API's whole consumer.
#[test]
fn consumers_are_referred_to_by_custom_id_too() {
    let config = load(
        r#"
_format_version: "3.0"
consumer_groups:
  - name: gold
    consumers:
      - custom_id: ca
      - {username: a2, custom_id: null, created_at: 1, username_lower: a2}
consumers:
  - custom_id: ca
  - username: a2
plugins:
  - name: rate-limiting
    consumer: {custom_id: ca}
    config: {minute: 3}
"#,
    )
    .unwrap();
    assert_eq!(config.consumers[0].groups, [0]);
    assert_eq!(config.consumers[1].groups, [0]);
    assert_eq!(config.plugins[0].scope.consumer, Some(0));
    let found = problems(
        "_format_version: \"3.0\"\nconsumers: [{username: a}]\njwt_secrets:\n  - {key: k, secret: s, consumer: {custom_id: nobody}}\n",
    );
    assert_eq!(
        found,
        ["jwt_secrets[0].consumer: no consumer with custom_id 'nobody'"]
    );
    let found = problems(
        "_format_version: \"3.0\"\nconsumers: [{username: a}]\njwt_secrets:\n  - {key: k, secret: s, consumer: {custom_id: null}}\n",
    );
    assert_eq!(
        found,
        ["jwt_secrets[0].consumer: names no consumer: give its name or id"]
    );
}

/// A byte order mark and empty documents after the config are no part of it; a
/// second document with content is refused (Kong would drop it unread).
#[test]
fn a_bom_and_trailing_empty_documents_load() {
    let config = load("\u{feff}_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://127.0.0.1:1\n---\n").unwrap();
    assert_eq!(config.services.len(), 1);
    let found = problems("_format_version: \"3.0\"\n---\nservices: []\n");
    assert!(found[0].contains("more than one document"), "{found:?}");
}

/// Kong entities of plugins ringway lacks are refused as what they are, not as typos.
#[test]
fn kong_entities_ringway_lacks_are_named_as_such() {
    let found = problems(
        "_format_version: \"3.0\"\nkeyauth_credentials: [{key: x, consumer: a}]\nconsumers:\n  - username: a\n    acls: [{group: g}]\n",
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with("keyauth_credentials: `keyauth_credentials` are not supported"),
        "{found:?}"
    );
    assert!(
        found[1].starts_with("consumers[0].acls: `acls` are not supported"),
        "{found:?}"
    );
    // A typo is still a typo.
    let found = problems("_format_version: \"3.0\"\nservice: []\n");
    assert!(found[0].contains("unknown field `service`"), "{found:?}");
}

#[test]
fn what_kong_and_deck_exports_write_loads() {
    // Fields a Kong 3.x export spells out at their defaults, nulls included.
    let config = load(
        r#"
_format_version: "3.0"
_transform: true
_info: {select_tags: [team-a], defaults: {}}
_konnect: {control_plane_name: default}
services:
  - name: s
    url: http://127.0.0.1:1
    routes:
      - name: r
        paths: [/a]
        expression: null
        priority: 0
        sources: null
        destinations: null
plugins:
  - name: rate-limiting
    ordering: null
    protocols: [grpc, grpcs, http, https]
    config:
      minute: 5
      policy: local
      redis: {host: null, port: null, timeout: 2000, database: 0, ssl: false, ssl_verify: false, username: null, password: null, server_name: null}
      redis_host: null
      redis_port: 6379
      redis_timeout: 2000
  - name: correlation-id
    ordering: {}
consumers:
  - username: Ann
    username_lower: ann
    custom_id: null
"#,
    )
    .unwrap();
    assert_eq!(config.plugins.len(), 2);
    assert_eq!(config.consumers[0].username.as_deref(), Some("Ann"));

    // "1.1", as Kong reads it: like "2.1".
    let config = load(
        "_format_version: \"1.1\"\nservices:\n  - name: s\n    url: http://127.0.0.1:1\n    routes:\n      - paths: [\"/v[0-9]+$\"]\n",
    )
    .unwrap();
    assert!(matches!(&config.routes[0].paths[0], PathMatch::Regex(_)));

    // What ringway cannot do is refused by name, not as an unknown field.
    let found = problems(
        r#"
_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:1
    routes:
      - name: e
        paths: [/e]
        expression: 'http.path == "/e"'
      - name: d
        paths: [/d]
        destinations: [{ip: 10.0.0.1}]
plugins:
  - name: correlation-id
    ordering: {before: {access: [jwt]}}
"#,
    );
    for want in [
        "services[0].routes[0].expression: expression routes",
        "services[0].routes[1].destinations: stream routes",
        "plugins[0].ordering: dynamic plugin ordering",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(want)),
            "{want}: {found:?}"
        );
    }
}

/// A refused service or route does not hide its plugins' problems: one pass reports
/// them all (SPEC §2), and plugins under two refused parents are not duplicates.
#[test]
fn plugins_under_a_refused_parent_are_checked_too() {
    let found = problems(
        r#"
_format_version: "3.0"
services:
  - name: a
    url: ftp://nowhere
    plugins:
      - name: rate-limiting
        config: {minute: 0}
    routes:
      - name: ra
        paths: [/a]
        plugins:
          - name: jwt
            config: {claims_to_verify: [aud]}
  - name: b
    url: http://127.0.0.1:1
    routes:
      - name: rb
        paths: [nope]
        plugins:
          - name: rate-limiting
            config: {second: 20, hour: 10}
      - name: rb2
        paths: [/b]
        bogus: 1
        plugins:
          - name: correlation-id
            config: {generator: dice}
  - name: c
    url: ftp://nowhere-else
    plugins:
      - name: correlation-id
routes:
  - name: top
    paths: [/t]
    service: {name: missing}
    plugins:
      - name: no-such-plugin
"#,
    );
    for prefix in [
        "services[0].protocol",
        "services[0].plugins[0].config.minute",
        "services[0].routes[0].plugins[0].config.claims_to_verify[0]",
        "services[1].routes[0].paths[0]",
        "services[1].routes[0].plugins[0].config",
        "services[1].routes[1].bogus",
        "services[1].routes[1].plugins[0].config.generator",
        "services[2].protocol",
        "routes[0].service",
        "routes[0].plugins[0].name",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(prefix)),
            "missing {prefix:?} in {found:#?}"
        );
    }
    assert!(
        !found.iter().any(|p| p.contains("already configured")),
        "{found:#?}"
    );
}

/// The configuration hash is the content's: format, key order and comments do not
/// change it; a value does.
#[test]
fn the_hash_is_the_contents() {
    let yaml = "_format_version: \"3.0\"\nservices:\n  - name: a\n    url: http://127.0.0.1:1\n    routes:\n      - paths: [/a]\n";
    let reordered = "# the same\nservices:\n  - routes:\n      - paths:\n          - /a\n    url: http://127.0.0.1:1   # here\n    name: a\n_format_version: '3.0'\n";
    let json = r#"{"_format_version": "3.0", "services": [{"name": "a", "url": "http://127.0.0.1:1", "routes": [{"paths": ["/a"]}]}]}"#;
    let changed = yaml.replace("/a]", "/b]");
    let hash = |text: &str| load(text).unwrap().hash;
    assert_eq!(hash(yaml), hash(reordered));
    assert_eq!(hash(yaml), hash(json));
    assert_ne!(hash(yaml), hash(&changed));
}

/// A file plugin's id (and so its rate-limit counts) follows its scope, not its place
/// in the file: reordering the services keeps each plugin's id with its service.
#[test]
fn plugin_ids_follow_their_scope_not_their_place() {
    let service = |name: &str, minute: u32| {
        format!("  - name: {name}\n    url: http://127.0.0.1:1\n    plugins:\n      - name: rate-limiting\n        config: {{minute: {minute}, limit_by: ip}}\n")
    };
    let (strict, loose) = (service("strict", 2), service("loose", 1000));
    let ids = |services: String| {
        let config = load(&format!("_format_version: \"3.0\"\nservices:\n{services}")).unwrap();
        let by_service = |name: &str| {
            let s = config.services.iter().position(|s| &*s.name == name);
            config
                .plugins
                .iter()
                .find(|p| p.scope.service == s)
                .map(|p| p.id.clone())
                .unwrap()
        };
        (by_service("strict"), by_service("loose"))
    };
    let before = ids(format!("{strict}{loose}"));
    let after = ids(format!("{loose}{strict}"));
    assert_eq!(before, after);
    assert_ne!(before.0, before.1);
}

/// An unresolved vault reference is one problem: what the checks would say of the
/// reference's own text (no PEM) is not reported beside it.
#[test]
fn an_unset_vault_key_is_reported_once_and_where_it_is() {
    let (cert, _) = test_certificate_pem();
    std::env::remove_var("RINGWAY_TEST_UNSET_KEY");
    let found = problems(&format!(
        "_format_version: \"3.0\"\ncertificates:\n- cert: |\n{cert}  key: \"{{vault://env/ringway-test-unset-key}}\"\n"
    ));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("certificates[0].key: environment variable RINGWAY_TEST_UNSET_KEY"),
        "{found:?}"
    );
}

/// Ids are UUIDs, one per entity: a route id that is a route's name, or two routes
/// under one id, let a plugin scoped to the id guard one route and leave the other
/// open (the file loaded, and `/open` answered without a token).
#[test]
fn route_and_plugin_ids_are_uuids_and_unique() {
    let found = problems(
        r#"
_format_version: "3.0"
services:
  - name: a
    url: http://127.0.0.1:9
    routes:
      - {name: r1, id: 66666666-1111-4111-8111-111111111111, paths: [/a]}
      - {name: r2, id: 66666666-1111-4111-8111-111111111111, paths: [/b]}
      - {name: open, paths: [/open]}
      - {name: secure, id: open, paths: [/secure]}
plugins:
  - {name: correlation-id, id: 88888888-1111-4111-8111-111111111111}
  - {name: prometheus, id: 88888888-1111-4111-8111-111111111111}
"#,
    );
    assert_eq!(
        found,
        [
            "services[0].routes[3].id: expected a valid UUID",
            "services[0].routes[1].id: duplicate route id '66666666-1111-4111-8111-111111111111' (first at services[0].routes[0])",
            "plugins[1].id: duplicate plugin id '88888888-1111-4111-8111-111111111111' (first at plugins[0])",
        ]
    );
}

#[test]
fn ids_are_kept_in_lower_case() {
    let config = load(
        r#"
_format_version: "3.0"
consumers:
  - username: a
    id: ABCDEF00-BBBB-4CCC-8DDD-EEEEEEEEEEEE
"#,
    )
    .unwrap();
    assert_eq!(
        config.consumers[0].id,
        "abcdef00-bbbb-4ccc-8ddd-eeeeeeeeeeee"
    );
}

/// Kong's loader expands YAML merge keys, so a file sharing settings through anchors
/// loads here too.
#[test]
fn yaml_merge_keys_are_expanded() {
    let config = load(
        r#"
_format_version: "3.0"
_comment: &defaults {url: "http://127.0.0.1:9", retries: 1}
services:
  - <<: *defaults
    name: a
  - <<: *defaults
    name: b
    retries: 3
"#,
    )
    .unwrap();
    let retries: Vec<u32> = config.services.iter().map(|s| s.retries).collect();
    assert_eq!(retries, [1, 3]);
}

/// One credential's bad algorithm does not hide the next one's duplicate key.
#[test]
fn a_bad_algorithm_does_not_hide_a_duplicate_key() {
    let found = problems(
        r#"
_format_version: "3.0"
consumers:
  - username: u
    jwt_secrets:
      - {key: k, secret: a, algorithm: HS999}
      - {key: k, secret: b}
"#,
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("consumers[0].jwt_secrets[0].algorithm: expected one of"));
    assert_eq!(
        found[1],
        "consumers[0].jwt_secrets[1].key: duplicate credential key 'k'"
    );
}

/// Values that load but cannot work are refused where they are written.
#[test]
fn malformed_hosts_escapes_groups_and_instance_names_are_refused() {
    let found = problems(
        r#"
_format_version: "3.0"
services:
  - name: a
    url: http://exa_mple..com
  - name: b
    url: "http://127.0.0.1:9/a%zz"
consumer_groups:
  - name: free
plugins:
  - {name: correlation-id, instance_name: "bad name!"}
  - {name: prometheus, instance_name: j1}
  - {name: jwt, instance_name: j1}
"#,
    );
    let fields = paths_of(&found);
    assert_eq!(
        fields,
        [
            "services[0].host",
            "services[1].path",
            "plugins[0].instance_name",
            "plugins[2].instance_name"
        ],
        "{found:#?}"
    );
}

#[test]
fn trusted_ips_may_be_one_comma_separated_string() {
    let config = load(
        r#"
_format_version: "3.0"
ringway:
  trusted_ips: "10.0.0.0/8, 192.168.1.1"
"#,
    )
    .unwrap();
    assert_eq!(config.node.trusted_ips.len(), 2);
    // As in kong.conf, an empty string is none.
    let config = load("_format_version: \"3.0\"\nringway:\n  trusted_ips: \"\"\n").unwrap();
    assert!(config.node.trusted_ips.is_empty());
}

/// A group listed twice on a consumer is kept once, with a warning: a state saved
/// before this was checked may hold such a list, and must still load.
#[test]
fn a_group_listed_twice_is_kept_once_with_a_warning() {
    let config = load(
        r#"
_format_version: "3.0"
consumer_groups:
  - name: free
consumers:
  - username: u
    groups: [free, free]
"#,
    )
    .unwrap();
    assert_eq!(config.consumers[0].groups, [0]);
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("consumers[0].groups[1]")),
        "{:?}",
        config.warnings
    );
}

/// Kong's YAML loader reads YAML 1.1's `yes`/`no`/`on`/`off` as booleans; a boolean field
/// written so loads here too, and the same word elsewhere stays a string.
#[test]
fn yaml_1_1_booleans_are_read_in_boolean_fields() {
    let config = load(
        r#"
_format_version: "3.0"
services:
  - name: "yes"
    url: http://127.0.0.1:9
    enabled: on
    routes:
      - name: r
        paths: [/a]
        strip_path: no
        preserve_host: Yes
"#,
    )
    .unwrap();
    assert_eq!(&*config.services[0].name, "yes");
    assert!(config.services[0].enabled);
    assert!(!config.routes[0].strip_path);
    assert!(config.routes[0].preserve_host);
}

/// A reference names its entity by the id as written there, in any case.
#[test]
fn references_by_upper_case_id_resolve() {
    let config = load(
        r#"
_format_version: "3.0"
services:
  - {name: s, id: AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE, url: "http://127.0.0.1:9",
     routes: [{name: r, id: 11111111-2222-4333-8444-55555555555A, paths: [/a]}]}
routes:
  - {name: r2, service: AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE, paths: [/b]}
consumer_groups:
  - {name: g, id: 99999999-BBBB-4CCC-8DDD-EEEEEEEEEEEE}
consumers:
  - username: alice
    id: CCCCCCCC-BBBB-4CCC-8DDD-EEEEEEEEEEEE
    groups: [99999999-BBBB-4CCC-8DDD-EEEEEEEEEEEE]
plugins:
  - {name: jwt, route: 11111111-2222-4333-8444-55555555555A}
"#,
    )
    .unwrap();
    assert_eq!(config.routes[1].service, 0);
    assert_eq!(config.consumers[0].groups, [0]);
    assert_eq!(config.plugins[0].scope.route, Some(0));
}

/// A mapping that merges another can itself be merged.
#[test]
fn nested_merge_keys_are_expanded() {
    let config = load(
        r#"
_format_version: "3.0"
_ignore:
  - &base {url: "http://127.0.0.1:9", retries: 1}
services:
  - &mid
    <<: *base
    name: a
  - <<: *mid
    name: b
"#,
    )
    .unwrap();
    let names: Vec<&str> = config.services.iter().map(|s| &*s.name).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(config.services[1].retries, 1);
}

/// An Admin API write reuses what the running config's lookups found, failures too (a
/// name that does not resolve would make every write wait for the resolver's timeout).
#[test]
fn every_looked_up_name_is_kept_for_reuse() {
    let config = load(
        r#"
_format_version: "3.0"
services:
  - {name: a, url: "http://127.0.0.1:9"}
  - {name: b, url: "http://no-such-host.invalid:9"}
"#,
    )
    .unwrap();
    let mut names: Vec<_> = config
        .resolved_names()
        .into_iter()
        .map(|((host, _), addr)| (host, addr.is_some()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("127.0.0.1".to_owned(), true),
            ("no-such-host.invalid".to_owned(), false)
        ]
    );
}

/// A plugin instance_name the Admin API's state holds: a bad or repeated one an earlier
/// version saved is a warning (the start goes on); one the file gives too is a
/// conflict, as any unique key the two layers share.
#[test]
fn admin_instance_names_warn_and_collide_with_the_file() {
    let file =
        b"_format_version: \"3.0\"\nplugins:\n  - {name: prometheus, instance_name: shared}\n";
    let admin = |plugins: serde_json::Value| serde_json::json!({ "plugins": plugins });
    let saved = admin(serde_json::json!([
        { "id": "10e37c21-6b76-42d4-8520-9f089e124d0d", "name": "correlation-id", "instance_name": "bad name!" },
    ]));
    let config = Config::from_layers(file, Some(&saved), &NodeOverrides::default()).unwrap();
    assert!(
        config.warnings.iter().any(|w| w.contains("instance_name")),
        "{:?}",
        config.warnings
    );
    let clash = admin(serde_json::json!([
        { "id": "10e37c21-6b76-42d4-8520-9f089e124d0d", "name": "correlation-id", "instance_name": "shared" },
    ]));
    let problems = Config::from_layers(file, Some(&clash), &NodeOverrides::default())
        .expect_err("a file and an Admin plugin under one instance_name");
    assert!(
        problems
            .0
            .iter()
            .any(|p| p.to_string().contains("duplicate instance_name 'shared'")),
        "{problems}"
    );
}

/// Route names follow Kong's `utf8_name`, as service names do: within ASCII a name's
/// characters (a route named `a/b?c` could not be addressed at `/routes/{name}`), beyond
/// it anything. A route the Admin API's state holds with a bad name, from a version that
/// did not check, loads with a warning.
#[test]
fn route_and_service_names_are_kong_utf8_names() {
    let found = problems(
        r#"
_format_version: "3.0"
services:
  - name: b
    url: http://127.0.0.1:9
    routes:
      - {name: "", paths: [/d]}
      - {name: "x y", paths: [/e]}
      - {name: "a/b?c#d", paths: [/f]}
      - {name: "n\nl", paths: [/g]}
  - name: "sp ace"
    url: http://127.0.0.1:9
    routes:
      - {name: "r/slash", paths: [/h]}
"#,
    );
    let fields = paths_of(&found);
    assert_eq!(
        fields,
        [
            "services[0].routes[0].name",
            "services[0].routes[1].name",
            "services[0].routes[2].name",
            "services[0].routes[3].name",
            "services[1].name",
            // Under a refused service, its routes' own problems are reported too.
            "services[1].routes[0].name",
        ],
        "{found:#?}"
    );
    assert!(
        found[0].ends_with("length must be at least 1"),
        "{found:#?}"
    );
    assert!(
        found[1].contains("only accepted ascii characters"),
        "{found:#?}"
    );

    let config = load(
        r#"
_format_version: "3.0"
services:
  - name: café
    url: http://127.0.0.1:9
    routes:
      - {name: größe.v1~x, paths: [/a]}
"#,
    )
    .unwrap();
    assert_eq!(&*config.services[0].name, "café");

    let file = b"_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://127.0.0.1:9\n";
    let saved = serde_json::json!({ "routes": [
        { "id": "10e37c21-6b76-42d4-8520-9f089e124d0e", "name": "old name", "paths": ["/o"], "service": { "name": "s" } },
    ]});
    let config = Config::from_layers(file, Some(&saved), &NodeOverrides::default()).unwrap();
    assert_eq!(config.routes.len(), 1);
    assert!(
        config.warnings.iter().any(|w| w.contains("routes[0].name")),
        "{:?}",
        config.warnings
    );
}

/// A CA certificate's id, like every id, names it in any case; and a route's `headers`
/// map holds header names, whatever a field happens to be called (`enabled: yes` there
/// is a header and its value, not a boolean).
#[test]
fn ca_ids_in_any_case_and_header_names_that_are_field_names() {
    let (cert, _) = test_certificate_pem();
    let yaml = format!(
        "_format_version: \"3.0\"\nca_certificates:\n- id: 7B5D4A3C-1F2E-4D6C-9A8B-000000000001\n  cert: |\n{cert}services:\n- name: s\n  url: https://localhost:9\n  ca_certificates: [7B5D4A3C-1F2E-4D6C-9A8B-000000000001]\n  routes:\n  - name: r\n    paths: [/a]\n    headers: {{enabled: \"yes\"}}\n"
    );
    let config = load(&yaml).unwrap();
    assert!(config.services[0].tls.is_some());
    assert_eq!(config.routes[0].headers.len(), 1);
}

/// A document read back from its compact form builds the same config (the same hash) as the
/// YAML it came from; one JSON cannot hold exactly has no compact form.
#[test]
fn a_compact_document_reads_back_as_the_same_document() {
    let yaml = r#"
_format_version: "3.0"
services:
  - &users
    name: users
    url: http://127.0.0.1:8080/v1
    retries: 3
    tags: [café, "yes", on]
    routes:
      - name: r
        paths: ["/u"]
        strip_path: off
  - <<: *users
    name: orders
    routes: []
consumers:
  - username: ünïcode
    custom_id: "007"
    jwt_secrets:
      - key: k
        secret: "s\u00e9cret"
"#;
    let overrides = NodeOverrides::default();
    let known = lookup::Known::new();
    let doc = parse_document(yaml.as_bytes()).expect("valid YAML");
    let json = compact(&doc).expect("JSON holds this document");
    let back = from_compact(&json).expect("a compact form reads back");
    assert_eq!(back, doc);
    let from_yaml = Config::from_bytes(yaml.as_bytes(), &overrides).expect("valid config");
    let from_back = Config::from_document(back, None, &overrides, &known, Reading::Anywhere)
        .expect("valid config");
    assert_eq!(from_back.hash, from_yaml.hash);
    assert_eq!(from_back.services[1].retries, 3);
    assert!(!from_back.routes[0].strip_path);

    for (what, yaml) in [
        ("a key that is not a string", "a: {1: one}\n"),
        ("a NaN", "a: .nan\n"),
        ("an infinity", "a: -.inf\n"),
    ] {
        let doc = parse_document(yaml.as_bytes()).expect("valid YAML");
        assert_eq!(compact(&doc), None, "{what}");
    }
}

/// As Kong's `ca_certificates` schema: an item that is no CA (a leaf a CA signed) or has
/// expired is refused with Kong's words; a CA is taken, and so is a self-signed
/// certificate without the mark, which pins itself.
#[test]
fn a_ca_certificate_must_be_a_ca_and_unexpired() {
    let fixture = |name: &str| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
        std::fs::read_to_string(path.join(name)).unwrap()
    };
    let config = |pem: &str| {
        let cert: String = pem.lines().map(|l| format!("    {l}\n")).collect();
        format!(
            "_format_version: \"3.0\"\nca_certificates:\n- id: 7b5d4a3c-1f2e-4d6c-9a8b-000000000001\n  cert: |\n{cert}services:\n- name: s\n  url: https://localhost:9\n  ca_certificates: [7b5d4a3c-1f2e-4d6c-9a8b-000000000001]\n"
        )
    };
    let found = problems(&config(&fixture("ca-signed-leaf.pem")));
    assert_eq!(
        found,
        vec!["ca_certificates[0].cert: certificate does not appear to be a CA because it is missing the \"CA\" basic constraint".to_owned()],
        "one problem, the certificate's own"
    );
    // Expired: refused in what the Admin API writes; in a file put in place a warning,
    // so a CA that expires under a running gateway does not stop its next restart.
    let expired = config(&fixture("expired-ca.pem"));
    let written = Config::from_layers_knowing(
        expired.as_bytes(),
        None,
        &NodeOverrides::default(),
        &lookup::Known::new(),
        Reading::SecretFieldsOnly,
    );
    let found: Vec<String> = written
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        found,
        vec![
            "ca_certificates[0].cert: certificate expired, \"Not After\" time is in the past"
                .to_owned()
        ]
    );
    let loaded = load(&expired).expect("an expired CA in the file loads");
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.starts_with("ca_certificates[0].cert: certificate expired")),
        "{:?}",
        loaded.warnings
    );
    let (ca, _) = crate::tls::tests::generate("ca.test");
    load(&config(&ca)).expect("a CA loads");
    load(&config(&fixture("self-signed-leaf.pem"))).expect("a self-signed leaf pins itself");
}

/// Read as the Admin API writes a config: references only in entities' secret fields
/// (nested entities included) and in the node section; anywhere else each is a problem
/// with its path, and nothing of the environment is read for it.
#[test]
fn a_written_config_reads_references_in_secret_fields_only() {
    std::env::set_var("RINGWAY_TEST_WRITTEN_SECRET", "written-secret-value");
    std::env::set_var("RINGWAY_TEST_WRITTEN_LEVEL", "debug");
    std::env::set_var("RINGWAY_TEST_WRITTEN_URL", "http://127.0.0.1:9");
    let yaml = r#"
_format_version: "3.0"
services:
  - name: s
    url: "{vault://env/ringway-test-written-url}"
    routes:
      - name: r
        paths: [/r]
        plugins:
          - name: rate-limiting
            config:
              minute: 1
              policy: redis
              redis: {host: 127.0.0.1, password: "{vault://env/ringway-test-written-secret}"}
consumers:
  - username: c
    jwt_secrets:
      - key: k
        secret: "{vault://env/ringway-test-written-secret}"
ringway:
  log_level: "{vault://env/ringway-test-written-level}"
"#;
    let written = Config::from_layers_knowing(
        yaml.as_bytes(),
        None,
        &NodeOverrides::default(),
        &lookup::Known::new(),
        Reading::SecretFieldsOnly,
    );
    let found: Vec<String> = written
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        found[0].starts_with("services[0].url: a vault reference is read here only"),
        "{found:#?}"
    );
    // Only the url is refused (what its text then fails in the service may follow).
    assert!(
        found.iter().all(|p| p.starts_with("services[0].")
            && !p.contains("written-secret-value")
            && !p.contains("plugins")),
        "{found:#?}"
    );
    // The same file put in place reads them all.
    let config = load(yaml).expect("a file may refer anywhere");
    assert_eq!(config.node.log_level, log::LevelFilter::Debug);
    // Admin API state an earlier version saved with a reference outside secret fields
    // still loads (the Admin API refuses writing one now, not reading one).
    std::env::set_var("RINGWAY_TEST_WRITTEN_HOST", "127.0.0.1");
    let saved = serde_json::json!({ "services": [
        { "id": "5c0a1e52-7a7b-4a5e-9a57-2c1d6f1e0a01", "name": "saved",
          "host": "{vault://env/ringway-test-written-host}" }
    ]});
    let config = Config::from_layers(
        b"_format_version: \"3.0\"\n",
        Some(&saved),
        &NodeOverrides::default(),
    )
    .expect("saved state loads");
    assert_eq!(config.services[0].host, "127.0.0.1");
}

/// Messages say what is wrong in the file's terms: no Rust type names, a flag's bad value
/// is not an unknown flag, a third duplicate names the first, and an unquoted version is
/// told to be quoted.
#[test]
fn problems_name_what_is_wrong_in_the_files_terms() {
    let found = problems(
        r#"_format_version: 3.0
services:
  - name: s
    url: http://127.0.0.1:1
    routes:
      - { name: r1, paths: [/a], headers: { x-a: [1] } }
      - { name: r1, paths: [/b] }
routes:
  - { name: r1, paths: [/c], service: s }
ringway:
  proxy_listen: ["127.0.0.1:8000 backlog=0", "127.0.0.1:8443 http2 ssl"]
"#,
    );
    for (prefix, says) in [
        ("_format_version", "must be a string: quote it (\"3.0\")"),
        (
            "services[0].routes[0].headers.x-a",
            "expected a string or a list of strings",
        ),
        (
            "services[0].routes[1].name",
            "(first at services[0].routes[0])",
        ),
        ("routes[0].name", "(first at services[0].routes[0])"),
        ("ringway.proxy_listen", "backlog must be a whole number"),
        ("ringway.proxy_listen", "HTTP/2 is not supported"),
    ] {
        assert!(
            found
                .iter()
                .any(|p| p.starts_with(prefix) && p.contains(says)),
            "missing {prefix}: ... {says} in {found:#?}"
        );
    }
    assert!(!found.iter().any(|p| p.contains("untagged")), "{found:#?}");
}

/// A mistyped value is one problem: the checks that run without it (a list's check of
/// its elements, a plugin's check across its config) do not report its absence.
#[test]
fn a_mistyped_value_is_one_problem() {
    let found = problems(
        r#"_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:1
    tags: [1, ok]
plugins:
  - name: rate-limiting
    config: { minute: abc }
"#,
    );
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("services[0].tags[0]: invalid type: integer"),
        "{found:#?}"
    );
    assert!(
        found[1].starts_with("plugins[0].config.minute: invalid type"),
        "{found:#?}"
    );
}

/// A file wrapped as `GET /config` answers is unwrapped once: a wrapper inside a wrapper
/// is the config's own (unknown) field, not read again, so no nesting of wrappers makes
/// the loader recurse.
#[test]
fn a_wrapped_config_is_unwrapped_once() {
    let mut text = String::from("_format_version: \"3.0\"\n");
    for _ in 0..200 {
        let indented: String = text.lines().map(|l| format!("  {l}\n")).collect();
        text = format!("config: |\n{indented}");
    }
    let doc = document(&text).unwrap();
    let map = doc.as_mapping().unwrap();
    assert_eq!(map.len(), 1);
    assert!(map.get("config").is_some_and(Value::is_string), "{doc:?}");
    let found = problems(&text);
    assert!(found.iter().any(|p| p.starts_with("config:")), "{found:?}");
}

#[test]
fn a_record_given_as_a_string_is_refused_without_quoting_it() {
    // A certificate pasted as one PEM string, a credential as its secret, a Redis block
    // as a URL with its password: refused as Kong words it, the value never repeated.
    let p = problems(
        "_format_version: \"3.0\"\ncertificates:\n  - \"-----BEGIN PRIVATE KEY-----\\nMIIsecret\\n-----END PRIVATE KEY-----\"\n\
         jwt_secrets:\n  - supersecretvalue\nplugins:\n  - name: rate-limiting\n    config:\n      \
         minute: 5\n      redis: \"redis://:hunter2@localhost:6379\"\n",
    );
    for expected in [
        "certificates[0]: expected a record",
        "jwt_secrets[0]: expected a record",
        "plugins[0].config.redis: expected a record",
    ] {
        assert!(p.iter().any(|line| line == expected), "{expected}\n{p:#?}");
    }
    let all = p.join("\n");
    for secret in ["PRIVATE KEY", "MIIsecret", "supersecretvalue", "hunter2"] {
        assert!(!all.contains(secret), "{secret} in {all}");
    }
}

#[test]
fn a_request_id_read_from_a_token_header_is_refused() {
    // correlation-id's header where a jwt plugin reads its token: the token would be the
    // request ID, and go into logs and answers.
    let p = problems(
        "_format_version: \"3.0\"\nplugins:\n  - name: jwt\n    config: {header_names: [authorization, x-jwt]}\n  \
         - name: correlation-id\n    config: {header_name: X-JWT}\n",
    );
    assert!(
        p.iter().any(|l| l.starts_with(
            "plugins[1].config.header_name: 'X-JWT' is where a jwt plugin reads its token"
        )),
        "{p:#?}"
    );
    // `X_JWT` reads the header `x-jwt` (as Kong's get_header does): the same clash.
    let p = problems(
        "_format_version: \"3.0\"\nplugins:\n  - name: jwt\n    config: {header_names: [x-jwt]}\n  \
         - name: correlation-id\n    config: {header_name: X_JWT}\n",
    );
    assert!(
        p.iter().any(|l| l.starts_with(
            "plugins[1].config.header_name: 'X_JWT' is where a jwt plugin reads its token"
        )),
        "{p:#?}"
    );
    let fine = Config::from_bytes(
        b"_format_version: \"3.0\"\nplugins:\n  - name: jwt\n  - name: correlation-id\n    config: {header_name: X-Request-ID}\n",
        &NodeOverrides::default(),
    );
    assert!(fine.is_ok(), "{:?}", fine.err());
}

#[test]
fn a_username_is_no_other_consumers_id_in_any_case() {
    // Ids are found without regard to case, so a username that is another consumer's id
    // in capitals would be reached as that consumer.
    let id = "7b5d4a3c-1f2e-4d6c-9a8b-0000000000aa";
    for (first, second) in [
        (
            format!("  - username: a\n    id: {id}\n"),
            format!("  - username: \"{}\"\n", id.to_uppercase()),
        ),
        (
            format!("  - username: \"{}\"\n", id.to_uppercase()),
            format!("  - username: a\n    id: {id}\n"),
        ),
    ] {
        let p = problems(&format!(
            "_format_version: \"3.0\"\nconsumers:\n{first}{second}"
        ));
        assert!(
            p.iter()
                .any(|l| l.contains(".username: '")
                    && l.ends_with("' is the id of another consumer")),
            "{p:#?}"
        );
    }
}
