//! Durable Admin API state: the entities created through the Admin API, kept in
//! `data_dir/state.json`.
//!
//! Every write replaces the whole file crash-safely: the new state goes to a temporary
//! file that is fsynced, renamed over the old one, and the directory is fsynced, so a
//! `kill -9` at any moment leaves either the old state or the new one, never a torn
//! file. A write returns only once it is on disk; the Admin API answers after that.
//! Rewriting the whole state is O(entities) per write: fine for the thousands of
//! consumers an edge gateway has; a log would be the next step beyond that.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

const STATE_FILE: &str = "state.json";

const LOCK_FILE: &str = "lock";

/// This node's id (Kong's `node_id`, which Kong keeps in its prefix as `kong.id`).
const NODE_ID_FILE: &str = "node_id";

/// The state file of one data directory, and the lock that makes one process its writer.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// `data_dir/lock`, locked (`flock`, exclusive) by the process that writes the
    /// state: two processes writing one state file would each overwrite the other's
    /// entities. The kernel lets go of it when the process ends, however it ends.
    lock: File,
    owner: std::sync::atomic::AtomicBool,
}

/// Puts the entities' ids and their references' ids (`{"consumer": {"id": ...}}`, also
/// in lists such as `groups`) in lower case, as ids are kept since ringway reads ids in
/// any case: a state an earlier version saved with upper-case ids is then found by the
/// ids the config shows (a DELETE by one answered 204 and removed nothing). Nothing
/// deeper is touched: a plugin's `config` is the operator's.
fn lowercase_ids(state: &mut Value) {
    fn canonical(object: &mut Map<String, Value>) {
        if let Some(Value::String(id)) = object.get_mut("id") {
            *id = crate::config::canonical_key(std::mem::take(id));
        }
    }
    let Value::Object(kinds) = state else {
        return;
    };
    for entity in kinds.values_mut().filter_map(Value::as_array_mut).flatten() {
        let Value::Object(entity) = entity else {
            continue;
        };
        canonical(entity);
        for (name, field) in entity.iter_mut() {
            if name == "config" {
                continue;
            }
            match field {
                Value::Object(reference) => canonical(reference),
                Value::Array(items) => items
                    .iter_mut()
                    .filter_map(Value::as_object_mut)
                    .for_each(canonical),
                _ => {}
            }
        }
    }
}

impl Store {
    /// Opens (creating the directory) and loads the current state; an absent file is an
    /// empty state. The directory's lock is taken when it is free; `owns()` says so.
    pub fn open(dir: &Path) -> Result<(Store, Value), String> {
        if dir.exists() && !dir.is_dir() {
            return Err(format!("data_dir {} is not a directory", dir.display()));
        }
        fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create data_dir {}: {e}", dir.display()))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                format!(
                    "data_dir {}: cannot open its lock file {}: {e}",
                    dir.display(),
                    lock_path.display()
                )
            })?;
        let owner =
            flock(&lock, false).map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
        let store = Store {
            dir: dir.to_owned(),
            lock,
            owner: std::sync::atomic::AtomicBool::new(owner),
        };
        let state = store.load()?;
        Ok((store, state))
    }

    /// Whether this process holds the directory's lock, and so may write the state.
    pub fn owns(&self) -> bool {
        self.owner.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits until the process holding the lock has ended, takes it, and reads the
    /// state as that process left it. `owns()` stays false until `claim()`: the caller
    /// first puts that state in place, or a write could build on the state before it.
    pub fn wait_for_lock(&self) -> Result<Value, String> {
        flock(&self.lock, true).map_err(|e| format!("cannot lock {}: {e}", self.dir.display()))?;
        self.load()
    }

    /// Opens writes, once the lock is held and its state in place.
    pub fn claim(&self) {
        self.owner.store(true, std::sync::atomic::Ordering::Release);
    }

    fn load(&self) -> Result<Value, String> {
        let path = self.path();
        let state = match crate::config::read_file(&path) {
            Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
                .map_err(|e| format!("{}: not valid state: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Object(Map::new()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        if !state.is_object() {
            return Err(format!(
                "{}: not valid state: expected an object",
                path.display()
            ));
        }
        let mut state = state;
        lowercase_ids(&mut state);
        Ok(state)
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// This node's id, the same across restarts: read from `data_dir/node_id`, or made
    /// and written there when the file is missing or does not hold a UUID. Prometheus
    /// series carry it as a label, so a new id at each start would split every series a
    /// dashboard follows. A directory that cannot take the file costs only that: the id
    /// then lasts as long as the process, and the log says why.
    pub fn node_id(&self) -> String {
        let path = self.dir.join(NODE_ID_FILE);
        match fs::read_to_string(&path) {
            Ok(text) if crate::config::is_uuid(text.trim()) => {
                return text.trim().to_ascii_lowercase();
            }
            Ok(_) => log::warn!(
                "{} does not hold a UUID: writing a new node id",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("cannot read {}: {e}: writing a new node id", path.display()),
        }
        let id = crate::config::random_id();
        let line = format!("{id}\n");
        if let Err(e) = write_atomically(&path, line.as_bytes(), None, Some(0o644)) {
            log::warn!("cannot keep the node id in {}: {e}", path.display());
        }
        id
    }

    /// Writes `state` durably (see the module notes), readable by its owner only: it
    /// holds every Admin-created secret (a state file an older version left readable
    /// to others is made private by the next write).
    pub fn save(&self, state: &Value) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        write_atomically(&self.path(), &bytes, None, Some(0o600))
    }
}

/// Takes `file`'s exclusive lock: waiting for it with `wait`, else only when it is free
/// (`Ok(false)` when another process holds it).
#[allow(unsafe_code)]
fn flock(file: &File, wait: bool) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let operation = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    loop {
        // SAFETY: the descriptor belongs to `file`, open for the whole call.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::Interrupted => continue,
            std::io::ErrorKind::WouldBlock if !wait => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// Replaces `path` with `bytes`: temporary file, fsync, rename, fsync of the directory.
/// With `backup`, the previous content is first kept under that name. The new file gets
/// `mode` when given; else it keeps the old one's permissions and, where the process may
/// set them, its owner (a config file holds secrets an operator may have made private);
/// a file that was not there is made readable by its owner only, whatever the umask.
pub fn write_atomically(
    path: &Path,
    bytes: &[u8],
    backup: Option<&Path>,
    mode: Option<u32>,
) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.tmp"));
    let previous = fs::metadata(path).ok();
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mode = mode.unwrap_or_else(|| previous.as_ref().map_or(0o600, |m| m.mode() & 0o7777));
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some(m) = &previous {
            // Only a privileged process may give a file away; the mode stands either way.
            let _ = std::os::unix::fs::fchown(&file, Some(m.uid()), Some(m.gid()));
        }
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    if let Some(backup) = backup {
        if path.exists() {
            fs::copy(path, backup)?;
            File::open(backup)?.sync_all()?;
        }
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, state) = Store::open(dir.path()).unwrap();
        assert_eq!(state, serde_json::json!({}));
        let new = serde_json::json!({ "consumers": [{ "id": "x", "username": "a" }] });
        store.save(&new).unwrap();
        let (_, loaded) = Store::open(dir.path()).unwrap();
        assert_eq!(loaded, new);
        // Private, whatever an older version left: it holds the Admin API's secrets.
        use std::os::unix::fs::PermissionsExt;
        let state = dir.path().join(STATE_FILE);
        fs::set_permissions(&state, fs::Permissions::from_mode(0o644)).unwrap();
        store.save(&new).unwrap();
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // A torn temporary file from a crash mid-write does not affect the state.
        fs::write(dir.path().join(".state.json.tmp"), b"{\"consum").unwrap();
        let (_, loaded) = Store::open(dir.path()).unwrap();
        assert_eq!(loaded, new);
        fs::write(dir.path().join(STATE_FILE), b"[1]").unwrap();
        assert!(Store::open(dir.path()).is_err());
    }

    #[test]
    fn rewrites_keep_the_mode_and_new_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let fresh = dir.path().join("fresh.json");
        write_atomically(&fresh, b"{}", None, None).unwrap();
        assert_eq!(mode(&fresh), 0o600, "a new file is its owner's only");
        let config = dir.path().join("kong.yaml");
        fs::write(&config, b"old").unwrap();
        fs::set_permissions(&config, fs::Permissions::from_mode(0o640)).unwrap();
        let backup = dir.path().join("kong.yaml.bak");
        write_atomically(&config, b"new", Some(&backup), None).unwrap();
        assert_eq!(fs::read(&config).unwrap(), b"new");
        assert_eq!(fs::read(&backup).unwrap(), b"old");
        assert_eq!(
            mode(&config),
            0o640,
            "the rewrite keeps the operator's mode"
        );
        fs::set_permissions(&config, fs::Permissions::from_mode(0o604)).unwrap();
        write_atomically(&config, b"newer", None, None).unwrap();
        assert_eq!(mode(&config), 0o604);
    }
}
