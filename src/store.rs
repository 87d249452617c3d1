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

/// The state file of one data directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating the directory) and loads the current state; an absent file is an
    /// empty state.
    pub fn open(dir: &Path) -> Result<(Store, Value), String> {
        fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create data_dir {}: {e}", dir.display()))?;
        let store = Store {
            dir: dir.to_owned(),
        };
        let path = store.path();
        let state = match fs::read(&path) {
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
        Ok((store, state))
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Writes `state` durably (see the module notes).
    pub fn save(&self, state: &Value) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        write_atomically(&self.path(), &bytes, None)
    }
}

/// Replaces `path` with `bytes`: temporary file, fsync, rename, fsync of the directory.
/// With `backup`, the previous content is first kept under that name.
pub fn write_atomically(path: &Path, bytes: &[u8], backup: Option<&Path>) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
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
        // A torn temporary file from a crash mid-write does not affect the state.
        fs::write(dir.path().join(".state.json.tmp"), b"{\"consum").unwrap();
        let (_, loaded) = Store::open(dir.path()).unwrap();
        assert_eq!(loaded, new);
        fs::write(dir.path().join(STATE_FILE), b"[1]").unwrap();
        assert!(Store::open(dir.path()).is_err());
    }
}
