//! The control plane: the two config layers (SPEC §5) and every change to them.
//!
//! The file layer is the declarative config file; the admin layer is what the Admin API
//! created, kept durably in `data_dir` (`store`). Every change (SIGHUP, `POST /config`,
//! an Admin API write) composes both layers into a new `Config` with the same
//! validation, persists what changed, and only then publishes the new snapshot to the
//! workers, so a change is durable before it is acknowledged and an invalid one leaves
//! the running config untouched. Changes are serialized by one mutex; it is never taken
//! on the request path.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use crate::config::{Config, NodeOverrides, Problems, Reading};
use crate::proxy::{Shared, Snapshot};
use crate::store::{self, Store};

/// Why a change was refused.
#[derive(Debug)]
pub enum Refused {
    /// The new state is invalid on its own.
    Invalid(Problems),
    /// The file is valid alone but collides with entities the Admin API created (same
    /// username or key, a consumer that still has Admin-created credentials, ...).
    Conflict(Problems),
    /// The state could not be read or written.
    Io(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Invalid(p) => f.write_str(&p.to_string().replace('\n', "; ")),
            Refused::Conflict(p) => {
                write!(
                    f,
                    "conflicts with Admin API entities: {}",
                    p.to_string().replace('\n', "; ")
                )
            }
            Refused::Io(e) => f.write_str(e),
        }
    }
}

/// The layers as they are now.
pub struct Layers {
    /// Replaced through `set_file` only, which drops `file_doc` with it.
    file: Vec<u8>,
    admin: Value,
    /// The file's document in `config::compact` form, made by the first Admin API write
    /// after the file was read: later writes read it back instead of parsing the
    /// file's YAML again (with 20,000 consumers, ~30 ms instead of ~150).
    file_doc: Option<Vec<u8>>,
}

impl Layers {
    fn set_file(&mut self, bytes: Vec<u8>) {
        self.file = bytes;
        self.file_doc = None;
    }

    /// The file's document, from its compact form when there is one.
    fn file_document(&mut self) -> Result<serde_norway::Value, Refused> {
        if let Some(doc) = self
            .file_doc
            .as_deref()
            .and_then(crate::config::from_compact)
        {
            return Ok(doc);
        }
        let doc = crate::config::parse_document(&self.file).map_err(Refused::Invalid)?;
        self.file_doc = crate::config::compact(&doc);
        Ok(doc)
    }
}

pub struct Control {
    pub shared: Arc<Shared>,
    pub config_path: PathBuf,
    overrides: NodeOverrides,
    store: Store,
    layers: Mutex<Layers>,
    /// The node settings the process started with: the ones a restart-only setting
    /// keeps, whatever a reload since has read.
    started: crate::config::Node,
    /// When the file layer was last read (Unix seconds): the `created_at` of what it
    /// declares without one, as Kong's declarative import stamps entities.
    file_loaded_at: std::sync::atomic::AtomicU64,
}

impl Control {
    /// Loads both layers and builds the first config.
    pub fn open(
        config_path: PathBuf,
        overrides: NodeOverrides,
    ) -> Result<(Config, Store, Layers), String> {
        let _give_back = GiveBack;
        let file = crate::config::read_regular_file(&config_path)
            .map_err(|e| format!("cannot read config file {}: {e}", config_path.display()))?;
        let file_only = Config::from_bytes(&file, &overrides).map_err(|p| {
            // Problems only with values given as flags are no fault of the file's.
            let what = if p.0.iter().all(|problem| problem.path.starts_with("--")) {
                "invalid command line".to_owned()
            } else {
                format!("invalid config {}", config_path.display())
            };
            format!("{what}: {}", p.to_string().replace('\n', "; "))
        })?;
        let (store, admin) = Store::open(&file_only.node.data_dir)?;
        if !store.owns() && !overrides.takeover {
            return Err(format!(
                "data_dir {} is in use by another ringway process: stop it first, or start this one with --takeover to upgrade it",
                file_only.node.data_dir.display()
            ));
        }
        // The file's names were just looked up: the full build takes them as found.
        let known = file_only.resolved_names();
        let config =
            Config::from_layers_knowing(&file, Some(&admin), &overrides, &known, Reading::Anywhere)
                .map_err(|p| {
                    // Its entities named as the operator knows them (by where they start
                    // beside the file's), and what can be done: a check this version makes
                    // that an earlier one did not may refuse what that one saved.
                    let offsets = Config::from_layers_knowing(
                        &file,
                        Some(&Value::Null),
                        &overrides,
                        &known,
                        Reading::Anywhere,
                    )
                    .map(|c| c.admin_offsets)
                    .unwrap_or_default();
                    let named = name_admin_items(p, &offsets, &admin, &file_only, &file_only);
                    format!(
                        "the Admin API state in {} does not load beside {}: {} (change the file, \
                         or the entities named: through the Admin API of the version that saved \
                         them, or in the state file while ringway is stopped)",
                        store.path().display(),
                        config_path.display(),
                        named.to_string().replace('\n', "; ")
                    )
                })?;
        let layers = Layers {
            file,
            admin,
            file_doc: None,
        };
        Ok((config, store, layers))
    }

    pub fn new(
        shared: Arc<Shared>,
        config_path: PathBuf,
        overrides: NodeOverrides,
        store: Store,
        layers: Layers,
    ) -> Control {
        let started = shared.snapshot().config.node.clone();
        Control {
            shared,
            config_path,
            overrides,
            store,
            layers: Mutex::new(layers),
            started,
            file_loaded_at: std::sync::atomic::AtomicU64::new(unix_now()),
        }
    }

    /// When the file layer was last read, in Unix seconds.
    pub fn file_loaded_at(&self) -> u64 {
        self.file_loaded_at
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Layers> {
        self.layers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The file layer's bytes (for `GET /config`).
    pub fn file_bytes(&self) -> Vec<u8> {
        self.lock().file.clone()
    }

    /// Reads the admin layer in place (no copy of it).
    pub fn with_admin<T>(&self, read: impl FnOnce(&Value) -> T) -> T {
        read(&self.lock().admin)
    }

    /// Both layers as one config; `reading` says where the file's vault references are
    /// read (secret fields only for a file the Admin API writes).
    ///
    /// The file is validated alone first, as a start and `ringway check` read it: it may
    /// not lean on entities the Admin API created (a file plugin scoped to an Admin-made
    /// consumer would load now and stop the next start).
    fn compose(&self, file: &[u8], admin: &Value, reading: Reading) -> Result<Config, Refused> {
        let known = crate::config::Known::new();
        let file_only =
            Config::from_layers_knowing(file, Some(&Value::Null), &self.overrides, &known, reading)
                .map_err(Refused::Invalid)?;
        if !crate::config::has_entities(admin) {
            return Ok(file_only);
        }
        // The file's names were just looked up: the full build takes them as found.
        Config::from_layers_knowing(
            file,
            Some(admin),
            &self.overrides,
            &file_only.resolved_names(),
            reading,
        )
        .map_err(|problems| {
            Refused::Conflict(name_admin_items(
                problems,
                &file_only.admin_offsets,
                admin,
                &self.shared.snapshot().config,
                &file_only,
            ))
        })
    }

    fn publish(&self, config: Config) -> String {
        let hash = config.hash.clone();
        log::set_max_level(config.node.log_level);
        // A warning is said when it first appears, not again with every Admin API write
        // (or reload) that leaves its cause in place.
        let running = self.shared.snapshot();
        let mut said: std::collections::HashSet<&str> =
            running.config.warnings.iter().map(String::as_str).collect();
        for warning in &config.warnings {
            if said.insert(warning) {
                log::warn!("{warning}");
            }
        }
        // Said when such a setting changes, not again with every later write while it
        // waits.
        let fixed = restart_only_changes(&self.started, &config.node);
        if !fixed.is_empty() && !restart_only_changes(&running.config.node, &config.node).is_empty()
        {
            log::warn!(
                "{} changed: takes effect on restart only; the running values stay",
                fixed.join(", ")
            );
        }
        self.shared.publish(Snapshot::new(config));
        hash
    }

    /// SIGHUP: re-reads the file. Returns the new `configuration_hash`, and whether it
    /// covers Admin API entities besides the file.
    pub fn reload_file(&self) -> Result<(String, bool), Refused> {
        let _give_back = GiveBack;
        let bytes = crate::config::read_regular_file(&self.config_path).map_err(|e| {
            Refused::Io(format!(
                "cannot read config file {}: {e}",
                self.config_path.display()
            ))
        })?;
        let mut layers = self.lock();
        let config = self.compose(&bytes, &layers.admin, Reading::Anywhere)?;
        layers.set_file(bytes);
        self.file_loaded_at
            .store(unix_now(), std::sync::atomic::Ordering::Relaxed);
        let with_admin = crate::config::has_entities(&layers.admin);
        Ok((self.publish(config), with_admin))
    }

    /// Whether the Admin API may write: this process holds the data directory. A process
    /// started with `--takeover` beside a running one does not until that one has ended;
    /// writes meanwhile would be lost to the other's.
    pub fn writable(&self) -> bool {
        self.store.owns()
    }

    /// For a process started with `--takeover`: waits until the process it replaces has
    /// ended, then takes over the data directory and serves the state as that process
    /// left it (its Admin API may have written entities, or `POST /config` the file,
    /// since this one started). Blocks; run on a thread of its own.
    pub fn take_over_state(&self) {
        let _give_back = GiveBack;
        let admin = match self.store.wait_for_lock() {
            Ok(admin) => admin,
            Err(e) => {
                log::error!("takeover: {e}; the Admin API stays read-only");
                return;
            }
        };
        let mut layers = self.lock();
        let file = crate::config::read_regular_file(&self.config_path)
            .unwrap_or_else(|_| layers.file.clone());
        // The state on disk is what later writes build on, whatever happens below; writes
        // open only once it is in place.
        layers.admin = admin;
        layers.set_file(file);
        self.store.claim();
        match self.compose(&layers.file, &layers.admin, Reading::Anywhere) {
            Ok(config) => {
                let hash = self.publish(config);
                log::info!(
                    "takeover: the previous process has ended; serving its Admin API state (configuration_hash {hash}), and Admin API writes are open"
                );
            }
            Err(refused) => log::error!(
                "takeover: the previous process has ended, but its state does not load ({refused}); the running config stays"
            ),
        }
    }

    /// `POST /config`: validates, rewrites the file atomically (keeping `FILE.bak`) and
    /// publishes.
    ///
    /// With `unless_unchanged` (`?check_hash=1`), a file whose config would have the
    /// running `configuration_hash` is neither written nor loaded: `Ok(None)`.
    pub fn replace_file(
        &self,
        bytes: Vec<u8>,
        unless_unchanged: bool,
    ) -> Result<Option<String>, Refused> {
        let _give_back = GiveBack;
        let mut layers = self.lock();
        let bytes = with_node_section(bytes, &layers.file);
        // Written through the Admin API: references only where secrets go.
        let config = self.compose(&bytes, &layers.admin, Reading::SecretFieldsOnly)?;
        if unless_unchanged && config.hash == self.shared.snapshot().config.hash {
            return Ok(None);
        }
        let mut backup = self.config_path.clone().into_os_string();
        backup.push(".bak");
        // A config file that is a symbolic link (a checkout's file linked into place)
        // stays one: the file it leads to is replaced, so what the link shows and what
        // a SIGHUP reads is the new config.
        let target =
            std::fs::canonicalize(&self.config_path).unwrap_or_else(|_| self.config_path.clone());
        store::write_atomically(&target, &bytes, Some(std::path::Path::new(&backup)), None)
            .map_err(|e| Refused::Io(format!("cannot write {}: {e}", target.display())))?;
        layers.set_file(bytes);
        self.file_loaded_at
            .store(unix_now(), std::sync::atomic::Ordering::Relaxed);
        let hash = self.publish(config);
        log::info!(
            "replaced {} through the Admin API (configuration_hash {hash})",
            self.config_path.display()
        );
        Ok(Some(hash))
    }

    /// An Admin API write: `change` edits a copy of the admin layer; the result is
    /// validated, made durable, then published. Returns what `change` returned.
    pub fn update_admin<T>(
        &self,
        change: impl FnOnce(&mut Value) -> T,
    ) -> Result<(T, Arc<Snapshot>), Refused> {
        let _give_back = GiveBack;
        let mut layers = self.lock();
        let mut admin = layers.admin.clone();
        let result = change(&mut admin);
        let snapshot = self.shared.snapshot();
        // The hosts keep the addresses the running config found for them: a reload
        // looks them up again, an Admin API write does not wait for DNS.
        let running = snapshot.config.resolved_names();
        // What the write adds is held to the write's rules; what earlier writes (of an
        // earlier version) saved loads as it did. Its problems go with the build's, so
        // the answer lists them all.
        let added =
            crate::config::what_a_write_adds(&layers.admin, &admin, &snapshot.config.admin_offsets);
        let doc = layers.file_document()?;
        let composed = Config::from_document(
            doc,
            Some(&admin),
            &self.overrides,
            &running,
            Reading::Anywhere,
        );
        let config = match composed {
            Ok(config) if added.is_empty() => config,
            Ok(_) => return Err(Refused::Invalid(Problems(added))),
            Err(Problems(mut problems)) => {
                problems.extend(added);
                return Err(Refused::Invalid(Problems(problems)));
            }
        };
        self.store.save(&admin).map_err(|e| {
            Refused::Io(format!("cannot write {}: {e}", self.store.path().display()))
        })?;
        layers.admin = admin;
        self.publish(config);
        Ok((result, self.shared.snapshot()))
    }
}

/// Hands back to the system the memory a config change used in passing, when dropped
/// (declared first, it drops after the change's other locals). Building a config takes
/// many times the file's size for a moment (the YAML parser's events, the document
/// tree, the typed entities), which the allocator would otherwise keep for the life of
/// the process: with 20,000 consumers in the file, 178 MiB of RSS instead of 49. What it
/// hands back is this thread's: the config a change replaces is freed later, as workers
/// let it go, and handed back at the next change. The binary's allocator is mimalloc
/// (`main.rs`); under another one (the tests') the call finds nothing to do.
struct GiveBack;

impl Drop for GiveBack {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: `mi_collect` has no preconditions: from any thread, it frees only what
        // mimalloc holds unused and touches no live allocation.
        unsafe { libmimalloc_sys::mi_collect(true) };
    }
}

/// Now, in Unix seconds (the Admin API's timestamps).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A conflict's problems about Admin-created entities name them by what the operator
/// knows (`consumers 'zed' (created through the Admin API)`), not by their place after the
/// file's items in the combined list, which the file alone cannot explain.
fn name_admin_items(
    mut problems: Problems,
    offsets: &std::collections::HashMap<&'static str, usize>,
    admin: &Value,
    running: &Config,
    new_file: &Config,
) -> Problems {
    for problem in &mut problems.0 {
        let Some((kind, rest)) = problem.path.split_once('[') else {
            continue;
        };
        // An Admin-created entity refers to its parent by id: a parent the new file drops
        // is named as the operator knows it.
        let key = |kind| crate::config::missing_reference_key(&problem.message, kind);
        let parent = key("consumer")
            .and_then(|id| running.consumers.iter().find(|c| c.id == id))
            .map(|c| ("consumer", c.username.as_deref().unwrap_or(&c.id), &*c.id))
            .or_else(|| {
                key("service")
                    .and_then(|id| running.services.iter().find(|s| s.id == id))
                    .map(|s| ("service", &*s.name, &*s.id))
            })
            .or_else(|| {
                key("route")
                    .and_then(|id| running.routes.iter().find(|r| r.id == id))
                    .map(|r| ("route", r.name.as_deref().unwrap_or(&r.id), &*r.id))
            })
            .or_else(|| {
                key("consumer group")
                    .and_then(|id| running.consumer_groups.iter().find(|g| g.id == id))
                    .map(|g| ("consumer group", g.name.as_str(), &*g.id))
            })
            .or_else(|| {
                key("upstream")
                    .and_then(|id| running.upstreams.iter().find(|u| u.id == id))
                    .map(|u| ("upstream", &*u.name, &*u.id))
            });
        if let Some((parent, name, id)) = parent {
            let what = match kind {
                "plugins" => "plugin",
                "routes" => "route",
                "consumers" => "consumer",
                "targets" => "target",
                "snis" => "SNI",
                _ => "credential",
            };
            // The new file may have it under another id: it is the id that is gone.
            let renamed = match parent {
                "consumer" => new_file
                    .consumers
                    .iter()
                    .any(|c| c.username.as_deref().unwrap_or(&c.id) == name),
                "service" => new_file.services.iter().any(|s| &*s.name == name),
                "route" => new_file
                    .routes
                    .iter()
                    .any(|r| r.name.as_deref() == Some(name)),
                "consumer group" => new_file.consumer_groups.iter().any(|g| g.name == name),
                _ => new_file.upstreams.iter().any(|u| &*u.name == name),
            };
            problem.message = if renamed {
                format!(
                    "{parent} '{name}' has another id in the new file, and this {what} still \
                     refers to the one it had, {id} (give it that id in the file, or delete \
                     the {what} through the Admin API first)"
                )
            } else {
                format!(
                    "{parent} '{name}' is not in the new file, and this {what} still refers to \
                     it (delete the {what} through the Admin API first)"
                )
            };
        }
        let Some((index, rest)) = rest.split_once(']') else {
            continue;
        };
        let (Some(&from), Ok(index)) = (offsets.get(kind), index.parse::<usize>()) else {
            continue;
        };
        let Some(entity) = index
            .checked_sub(from)
            .and_then(|i| admin.get(kind)?.get(i))
        else {
            continue;
        };
        let label = label_fields(kind)
            .iter()
            .find_map(|field| entity.get(*field)?.as_str())
            .unwrap_or("?");
        // `rest` is the field within it (`.target`), if any.
        problem.path = match rest.strip_prefix('.') {
            Some(field) => {
                format!("{kind} '{label}' (created through the Admin API), field {field}")
            }
            None => format!("{kind} '{label}' (created through the Admin API){rest}"),
        };
    }
    problems
}

/// The fields that name an entity of `kind` to an operator, best first. Each is safe to
/// show: a JWT credential's `key` is its tokens' `iss`, while a certificate's `key` is
/// its private key and never names it.
fn label_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "consumers" => &["username", "custom_id", "id"],
        "jwt_secrets" => &["key", "id"],
        "targets" => &["target", "id"],
        "certificates" => &["id"],
        _ => &["name", "id"],
    }
}

/// The `ringway:` settings a running process keeps until it restarts (its sockets,
/// threads and driver, state directory, Admin API token, log file, and the sizes of the
/// tables built at start), that differ in `new`.
fn restart_only_changes(old: &crate::config::Node, new: &crate::config::Node) -> Vec<&'static str> {
    [
        ("proxy_listen", old.proxy_listen != new.proxy_listen),
        ("admin_listen", old.admin_listen != new.admin_listen),
        ("workers", old.workers != new.workers),
        ("data_dir", old.data_dir != new.data_dir),
        ("admin_token", old.admin_token != new.admin_token),
        ("access_log", old.access_log != new.access_log),
        ("driver", old.driver != new.driver),
        (
            "rate_limit_max_keys",
            old.rate_limit_max_keys != new.rate_limit_max_keys,
        ),
        (
            "metrics_label_limit",
            old.metrics_label_limit != new.metrics_label_limit,
        ),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

/// A posted config without a `ringway:` section keeps the file's: the node's own
/// settings (listeners, `data_dir`, the Admin API token) are not the entities a config
/// push replaces, and losing them would start the next run on defaults, away from the
/// Admin API's state. A section that is posted, even empty, replaces the file's.
fn with_node_section(posted: Vec<u8>, current: &[u8]) -> Vec<u8> {
    use serde_norway::Value as Yaml;
    // A body the config loader refuses unparsed is not parsed here either.
    if std::str::from_utf8(&posted).map_or(true, crate::config::nests_too_deep) {
        return posted;
    }
    let Ok(Yaml::Mapping(mut doc)) = serde_norway::from_slice::<Yaml>(&posted) else {
        return posted;
    };
    if doc.contains_key("ringway") {
        return posted;
    }
    let Ok(Yaml::Mapping(file)) = serde_norway::from_slice::<Yaml>(current) else {
        return posted;
    };
    let Some(section) = file.get("ringway") else {
        return posted;
    };
    let json = posted.trim_ascii_start().starts_with(b"{");
    // A YAML body is saved as it was sent (its comments and layout), with the file's
    // section appended as the file wrote it (or written out, from a JSON file); kept
    // only when it reads back as meant.
    let raw = top_level_section(current, "ringway")
        .map(<[u8]>::to_vec)
        .or_else(|| {
            let mut only = serde_norway::Mapping::new();
            only.insert("ringway".into(), section.clone());
            serde_norway::to_string(&only).ok().map(String::into_bytes)
        });
    if let (false, Some(raw)) = (json, raw) {
        let mut appended = posted.clone();
        if !appended.ends_with(b"\n") {
            appended.push(b'\n');
        }
        appended.extend_from_slice(&raw);
        let mut meant = doc.clone();
        meant.insert("ringway".into(), section.clone());
        if serde_norway::from_slice::<Yaml>(&appended)
            .is_ok_and(|back| back == Yaml::Mapping(meant))
        {
            return appended;
        }
    }
    // Else the document is written out again: a JSON body as JSON, its strings kept
    // quoted (see the Admin API's `json_config`).
    doc.insert("ringway".into(), section.clone());
    if json {
        return serde_json::to_vec_pretty(&doc).map_or(posted, |mut text| {
            text.push(b'\n');
            text
        });
    }
    serde_norway::to_string(&doc).map_or(posted, String::into_bytes)
}

/// The text of a block-style YAML file's top-level `key:` entry: its line and the
/// indented (or blank, or comment) lines after it.
fn top_level_section<'t>(text: &'t [u8], key: &str) -> Option<&'t [u8]> {
    let mut start = None;
    let mut at = 0;
    for line in text.split_inclusive(|&b| b == b'\n') {
        match start {
            None => {
                let rest = line
                    .strip_prefix(key.as_bytes())
                    .and_then(|r| r.strip_prefix(b":"));
                if rest.is_some_and(|r| r.first().is_none_or(u8::is_ascii_whitespace)) {
                    start = Some(at);
                }
            }
            Some(from) => {
                let inside = matches!(
                    line.first(),
                    None | Some(b' ' | b'\t' | b'\r' | b'\n' | b'#')
                );
                if !inside {
                    return Some(&text[from..at]);
                }
            }
        }
        at += line.len();
    }
    start.map(|from| &text[from..])
}
