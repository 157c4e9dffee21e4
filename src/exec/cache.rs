//! The content-addressed node cache: `<root>/<key>/` holds a node's output.
//!
//! Protocol, safe against kills at any moment and against concurrent runs:
//! 1. take the exclusive lock `<root>/locks/<key>.lock` (one computation per key,
//!    across processes; the OS drops it if the holder dies);
//! 2. if `<root>/<key>/node.json` now exists, another process made it: done;
//! 3. compute into `<root>/tmp/<key>-<pid>-<n>/`, write `node.json` last;
//! 4. rename the directory to `<root>/<key>` (atomic on one file system).
//!
//! An entry exists exactly when its `node.json` does, so a half-written output is
//! never mistaken for a result.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The marker file of a complete entry, and its description for `--explain`.
pub const NODE_FILE: &str = "node.json";

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// A held lock on one key; released on drop.
pub struct KeyLock {
    _file: File,
}

impl Cache {
    /// Opens (creating if needed) a cache at `root`.
    pub fn open(root: &Path) -> io::Result<Cache> {
        fs::create_dir_all(root.join("locks"))?;
        fs::create_dir_all(root.join("tmp"))?;
        Ok(Cache {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a key's entry (whether or not it exists yet).
    pub fn entry(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entry(key).join(NODE_FILE).is_file()
    }

    /// Blocks until this process holds the key's lock.
    pub fn lock(&self, key: &str) -> io::Result<KeyLock> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("locks").join(format!("{key}.lock")))?;
        file.lock()?;
        Ok(KeyLock { _file: file })
    }

    /// A fresh, empty directory to compute a key's output into.
    pub fn scratch(&self, key: &str) -> io::Result<PathBuf> {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .root
            .join("tmp")
            .join(format!("{key}-{}-{n}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Publishes a scratch directory as the key's entry. `description` becomes
    /// `node.json`, written last so the entry is complete before it is visible.
    pub fn commit(
        &self,
        key: &str,
        scratch: &Path,
        description: &serde_json::Value,
    ) -> io::Result<()> {
        let text = serde_json::to_string_pretty(description).map_err(io::Error::other)?;
        fs::write(scratch.join(NODE_FILE), text)?;
        let entry = self.entry(key);
        if entry.exists() {
            // Made meanwhile by a process that did not use the lock: keep it.
            fs::remove_dir_all(scratch)?;
            return Ok(());
        }
        fs::rename(scratch, &entry)
    }

    /// Removes scratch directories left by killed runs (those no lock protects).
    pub fn clean_scratch(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(self.root.join("tmp"))? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let key = name.split('-').next().unwrap_or_default();
            if key.is_empty() {
                continue;
            }
            let lock = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(self.root.join("locks").join(format!("{key}.lock")))?;
            if lock.try_lock().is_ok() {
                fs::remove_dir_all(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The description stored with a complete entry.
    pub fn description(&self, key: &str) -> Option<serde_json::Value> {
        let text = fs::read_to_string(self.entry(key).join(NODE_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Descriptions of every complete entry (for `--explain`).
    pub fn descriptions(&self) -> Vec<serde_json::Value> {
        let Ok(dir) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok())
            .filter(|e| e.file_name().len() == 64)
            .filter_map(|e| {
                let text = fs::read_to_string(e.path().join(NODE_FILE)).ok()?;
                serde_json::from_str(&text).ok()
            })
            .collect()
    }
}
