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
//! never mistaken for a result. `node.json` also records every file of the entry
//! with its size, blake3 hash and (for JSON lines) row count; an entry is used
//! only after all of them check out ([`Cache::state`]). A damaged entry (a file
//! deleted, truncated or edited, `node.json` lost) counts as missing: the node is
//! recomputed and its entry replaced, never silently read.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The marker file of a complete entry, and its description for `--explain`.
pub const NODE_FILE: &str = "node.json";

/// What `node.json` records of each file of an entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    pub name: String,
    pub bytes: u64,
    pub blake3: String,
    /// Rows of a JSON lines table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// Whether a key's entry can be used.
#[derive(Debug, Clone, PartialEq)]
pub enum EntryState {
    Missing,
    Complete,
    /// The entry exists but does not match its record: why, naming the file.
    Damaged(String),
}

/// What `lethe cache verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub complete: usize,
    /// Damaged entries: key, what is wrong.
    pub damaged: Vec<(String, String)>,
    pub repaired: usize,
    /// Bytes hashed in the complete entries, and the time it all took.
    pub bytes: u64,
    pub seconds: f64,
}

#[derive(Debug)]
pub struct Cache {
    root: PathBuf,
    /// Keys verified complete by this process: each entry is hashed once.
    verified: Mutex<HashSet<String>>,
    /// Damaged entries found by this process, with the reason (for warnings).
    damaged: Mutex<HashMap<String, String>>,
}

impl Clone for Cache {
    fn clone(&self) -> Self {
        Cache {
            root: self.root.clone(),
            verified: Mutex::new(lock(&self.verified).clone()),
            damaged: Mutex::new(lock(&self.damaged).clone()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Size, blake3 hash and (for `.jsonl`) row count of a file.
fn record(path: &Path) -> io::Result<FileRecord> {
    let mut file = File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 1 << 16];
    let (mut bytes, mut newlines) = (0u64, 0u64);
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        bytes += n as u64;
        if jsonl {
            newlines += buffer[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        }
    }
    Ok(FileRecord {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        bytes,
        blake3: hasher.finalize().to_hex().to_string(),
        rows: jsonl.then_some(newlines),
    })
}

/// Records of every file in a directory (sorted by name), `node.json` excepted.
fn records(dir: &Path) -> io::Result<Vec<FileRecord>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == NODE_FILE {
            continue;
        }
        if !entry.file_type()?.is_file() {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                entry.path().display()
            )));
        }
        out.push(record(&entry.path())?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A held lock on one key; released on drop.
pub struct KeyLock {
    _file: File,
}

/// Where live runs record the keys they use.
const ACTIVE_DIR: &str = "active";

/// A run's record of the keys it uses; removed when dropped.
pub struct ActiveRun {
    _file: File,
    path: PathBuf,
}

impl Drop for ActiveRun {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl Cache {
    /// Opens (creating if needed) a cache at `root`.
    pub fn open(root: &Path) -> io::Result<Cache> {
        fs::create_dir_all(root.join("locks"))?;
        fs::create_dir_all(root.join("tmp"))?;
        Ok(Cache {
            root: root.to_path_buf(),
            verified: Mutex::new(HashSet::new()),
            damaged: Mutex::new(HashMap::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a key's entry (whether or not it exists yet).
    pub fn entry(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Whether the key has a complete, undamaged entry (verified once per process).
    pub fn contains(&self, key: &str) -> bool {
        self.state(key) == EntryState::Complete
    }

    /// Checks a key's entry against its `node.json`: every recorded file present
    /// with its size, hash and row count. A damaged entry is remembered for
    /// [`Cache::damaged`].
    pub fn state(&self, key: &str) -> EntryState {
        // Hashed once per process; a removed entry is noticed at once (a stat).
        if lock(&self.verified).contains(key) && self.entry(key).join(NODE_FILE).is_file() {
            return EntryState::Complete;
        }
        let state = self.check(key);
        match &state {
            EntryState::Complete => {
                lock(&self.verified).insert(key.to_string());
                lock(&self.damaged).remove(key);
            }
            EntryState::Damaged(why) => {
                lock(&self.damaged).insert(key.to_string(), why.clone());
            }
            EntryState::Missing => {}
        }
        state
    }

    fn check(&self, key: &str) -> EntryState {
        let dir = self.entry(key);
        if !dir.exists() {
            return EntryState::Missing;
        }
        let node_file = dir.join(NODE_FILE);
        let text = match fs::read_to_string(&node_file) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return EntryState::Damaged(format!("{NODE_FILE} is missing"))
            }
            Err(e) => return EntryState::Damaged(format!("{NODE_FILE}: {e}")),
        };
        let recorded: Vec<FileRecord> = match serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|d| serde_json::from_value(d.get("files")?.clone()).ok())
        {
            Some(files) => files,
            None => {
                return EntryState::Damaged(format!(
                    "{NODE_FILE} is unreadable or does not list the entry's files"
                ))
            }
        };
        for want in &recorded {
            let path = dir.join(&want.name);
            let found = match record(&path) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return EntryState::Damaged(format!("{} is missing", want.name))
                }
                Err(e) => return EntryState::Damaged(format!("{}: {e}", want.name)),
            };
            if let (Some(w), Some(f)) = (want.rows, found.rows) {
                if w != f {
                    return EntryState::Damaged(format!(
                        "{} has {f} rows where {NODE_FILE} records {w}",
                        want.name
                    ));
                }
            }
            if found.bytes != want.bytes {
                return EntryState::Damaged(format!(
                    "{} has {} bytes where {NODE_FILE} records {}",
                    want.name, found.bytes, want.bytes
                ));
            }
            if found.blake3 != want.blake3 {
                return EntryState::Damaged(format!(
                    "{} does not match its recorded hash (its content changed)",
                    want.name
                ));
            }
        }
        EntryState::Complete
    }

    /// The damaged entries this process found so far: key → what is wrong.
    pub fn damaged(&self) -> HashMap<String, String> {
        lock(&self.damaged).clone()
    }

    /// Every entry's key in the cache (complete or not).
    pub fn keys(&self) -> Vec<String> {
        let Ok(dir) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut keys: Vec<String> = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .collect();
        keys.sort();
        keys
    }

    /// Removes a key's entry (under its lock); used to repair a damaged entry.
    pub fn remove(&self, key: &str) -> io::Result<()> {
        let _lock = self.lock(key)?;
        self.discard(key)
    }

    /// Moves an entry aside and deletes it (the caller holds the key's lock).
    fn discard(&self, key: &str) -> io::Result<()> {
        let entry = self.entry(key);
        if !entry.exists() {
            return Ok(());
        }
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let aside = self
            .root
            .join("tmp")
            .join(format!("{key}-discarded-{}-{n}", std::process::id()));
        fs::rename(&entry, &aside)?;
        lock(&self.verified).remove(key);
        fs::remove_dir_all(&aside)
    }

    /// The file whose OS lock stands for the key's (created when missing).
    fn lock_file(&self, key: &str) -> io::Result<File> {
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("locks").join(format!("{key}.lock")))
    }

    /// Blocks until this process holds the key's lock.
    pub fn lock(&self, key: &str) -> io::Result<KeyLock> {
        let file = self.lock_file(key)?;
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

    /// Publishes a scratch directory as the key's entry (the caller holds the
    /// key's lock). `description` becomes `node.json` with the record of every
    /// file added, written last so the entry is complete before it is visible. A
    /// damaged entry in the way is replaced; a complete one is kept.
    pub fn commit(
        &self,
        key: &str,
        scratch: &Path,
        description: &serde_json::Value,
    ) -> io::Result<()> {
        let mut description = description.clone();
        if let Some(map) = description.as_object_mut() {
            map.insert(
                "files".to_string(),
                serde_json::to_value(records(scratch)?).map_err(io::Error::other)?,
            );
        }
        let text = serde_json::to_string_pretty(&description).map_err(io::Error::other)?;
        fs::write(scratch.join(NODE_FILE), text)?;
        let entry = self.entry(key);
        if entry.exists() {
            lock(&self.verified).remove(key);
            if self.state(key) == EntryState::Complete {
                // Made meanwhile by a process that did not use the lock: keep it.
                fs::remove_dir_all(scratch)?;
                return Ok(());
            }
            self.discard(key)?;
        }
        fs::rename(scratch, &entry)?;
        lock(&self.verified).insert(key.to_string());
        lock(&self.damaged).remove(key);
        Ok(())
    }

    /// Verifies every entry (`lethe cache verify`); with `repair`, removes the
    /// damaged ones so that the next run recomputes them.
    pub fn verify_all(&self, repair: bool) -> io::Result<VerifyReport> {
        let started = std::time::Instant::now();
        let mut report = VerifyReport::default();
        for key in self.keys() {
            match self.state(&key) {
                EntryState::Complete => {
                    report.complete += 1;
                    report.bytes += self
                        .description(&key)
                        .and_then(|d| {
                            serde_json::from_value::<Vec<FileRecord>>(d["files"].clone()).ok()
                        })
                        .map_or(0, |files| files.iter().map(|f| f.bytes).sum());
                }
                EntryState::Damaged(why) => {
                    if repair {
                        self.remove(&key)?;
                    }
                    report.damaged.push((key, why));
                }
                EntryState::Missing => {}
            }
        }
        report.repaired = if repair { report.damaged.len() } else { 0 };
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Removes a key's entry unless another process holds its lock (computing
    /// it right now): `Ok(false)` then, and nothing is touched.
    pub fn remove_if_free(&self, key: &str) -> io::Result<bool> {
        let file = self.lock_file(key)?;
        if file.try_lock().is_err() {
            return Ok(false);
        }
        self.discard(key)?;
        Ok(true)
    }

    /// Records that a run is using `keys` until the guard is dropped, so that
    /// `lethe cache gc` in another process leaves them alone. The record is a file
    /// under `<root>/active/` that this process holds locked: when the process
    /// dies, the OS drops the lock and the record counts for nothing.
    pub fn mark_active<'a>(&self, keys: impl Iterator<Item = &'a str>) -> io::Result<ActiveRun> {
        let dir = self.root.join(ACTIVE_DIR);
        fs::create_dir_all(&dir)?;
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{n}", std::process::id());
        // Locked before it has its final name: gc never sees it unlocked.
        let partial = dir.join(format!("{name}.partial"));
        let mut file = File::create(&partial)?;
        file.lock()?;
        let keys: Vec<&str> = keys.collect();
        std::io::Write::write_all(
            &mut file,
            serde_json::to_string(&keys)
                .map_err(io::Error::other)?
                .as_bytes(),
        )?;
        let path = dir.join(format!("{name}.json"));
        fs::rename(&partial, &path)?;
        Ok(ActiveRun { _file: file, path })
    }

    /// Every key a live run has marked active ([`Cache::mark_active`]); records
    /// left by dead processes are removed.
    pub fn active_keys(&self) -> io::Result<HashSet<String>> {
        let mut keys = HashSet::new();
        let Ok(dir) = fs::read_dir(self.root.join(ACTIVE_DIR)) else {
            return Ok(keys);
        };
        for entry in dir {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            if file.try_lock().is_ok() {
                let _ = fs::remove_file(&path);
                continue;
            }
            let text = fs::read_to_string(&path)?;
            let listed: Vec<String> = serde_json::from_str(&text)
                .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
            keys.extend(listed);
        }
        Ok(keys)
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
            let lock = self.lock_file(key)?;
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
