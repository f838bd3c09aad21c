//! Content hashes of `file()`/`dir()` inputs, memoised by
//! (path, size, mtime, inode) so a no-op rerun never rereads big inputs.
//!
//! A file whose mtime is less than [`RACY_SECONDS`] old when it is hashed
//! is not memoised: it could still change within the same mtime tick
//! without its stat changing ("racily clean", as git calls it).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::keys::Hex;
use crate::store::{hash_file_content, now, tree_hash, write_atomic, StoreError};

/// Files modified this recently are hashed but not memoised.
pub const RACY_SECONDS: f64 = 2.0;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Entry {
    size: u64,
    mtime_ns: i128,
    inode: u64,
    hash: Hex,
}

/// The memo, loaded from and saved to `inputs.json` in the cache.
#[derive(Debug, Default)]
pub struct InputMemo {
    path: Option<PathBuf>,
    entries: BTreeMap<String, Entry>,
    dirty: bool,
}

fn stat_of(meta: &fs::Metadata) -> (u64, i128, u64) {
    (
        meta.size(),
        meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
        meta.ino(),
    )
}

impl InputMemo {
    /// Loads the memo of a cache (empty if absent or unreadable).
    pub fn load(cache_root: &Path) -> InputMemo {
        let path = cache_root.join("inputs.json");
        let entries = fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        InputMemo {
            path: Some(path),
            entries,
            dirty: false,
        }
    }

    /// Saves the memo if it changed.
    pub fn save(&mut self) -> Result<(), StoreError> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(path) = &self.path {
            if let Some(dir) = path.parent() {
                if !dir.exists() {
                    return Ok(());
                }
            }
            let text = serde_json::to_string(&self.entries).unwrap_or_default();
            write_atomic(path, text.as_bytes())?;
        }
        self.dirty = false;
        Ok(())
    }

    /// The content hash of one file, from the memo when its stat matches.
    pub fn file_hash(&mut self, path: &Path, meta: &fs::Metadata) -> io::Result<Hex> {
        let key = path.to_string_lossy().into_owned();
        let (size, mtime_ns, inode) = stat_of(meta);
        if let Some(e) = self.entries.get(&key) {
            if e.size == size && e.mtime_ns == mtime_ns && e.inode == inode {
                return Ok(e.hash.clone());
            }
        }
        let hash = hash_file_content(path, meta)?;
        let age = now() - mtime_ns as f64 / 1e9;
        if age >= RACY_SECONDS {
            self.entries.insert(
                key,
                Entry {
                    size,
                    mtime_ns,
                    inode,
                    hash: hash.clone(),
                },
            );
            self.dirty = true;
        } else if self.entries.remove(&key).is_some() {
            self.dirty = true;
        }
        Ok(hash)
    }

    /// The content identity of a `file()` (`file:HASH`) or `dir()`
    /// (`dir:TREEHASH`) input.
    pub fn input_key(&mut self, path: &Path, is_dir: bool) -> io::Result<String> {
        let path = fs::canonicalize(path)?;
        let meta = fs::metadata(&path)?;
        if is_dir {
            if !meta.is_dir() {
                return Err(io::Error::other("expected a directory, found a file"));
            }
            let h = tree_hash(&path, &mut |p, m| self.file_hash(p, m))?;
            Ok(format!("dir:{h}"))
        } else {
            if meta.is_dir() {
                return Err(io::Error::other("expected a file, found a directory"));
            }
            Ok(format!("file:{}", self.file_hash(&path, &meta)?))
        }
    }

    /// Rehashes every memoised file whose stat still matches and returns
    /// those whose content changed behind an unchanged stat. Entries of
    /// files that are gone or whose stat changed are dropped.
    pub fn verify(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let keys: Vec<String> = self.entries.keys().cloned().collect();
        for key in keys {
            let path = PathBuf::from(&key);
            let Some(entry) = self.entries.get(&key).cloned() else {
                continue;
            };
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(_) => {
                    self.entries.remove(&key);
                    self.dirty = true;
                    continue;
                }
            };
            let (size, mtime_ns, inode) = stat_of(&meta);
            if (size, mtime_ns, inode) != (entry.size, entry.mtime_ns, entry.inode) {
                self.entries.remove(&key);
                self.dirty = true;
                continue;
            }
            match hash_file_content(&path, &meta) {
                Ok(h) if h == entry.hash => {}
                Ok(_) => {
                    problems.push(format!(
                        "input {key}: content changed but size/mtime did not (memo dropped; the next run rehashes it)"
                    ));
                    self.entries.remove(&key);
                    self.dirty = true;
                }
                Err(e) => problems.push(format!("input {key}: {e}")),
            }
        }
        problems
    }

    /// Number of memoised files.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the memo is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What an input looked like just before it was hashed: the stat of each
/// of its files. A node whose input's stamp differs after it ran read
/// content other than what its key names, so its artifact is not stored
/// (build systems re-stat inputs after a step for the same reason). The
/// stamp holds the change time, which no user tool can set back, so an
/// edit that restores size and mtime is still seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputStamp {
    path: PathBuf,
    files: Vec<FileStamp>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct FileStamp {
    path: PathBuf,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    inode: u64,
}

impl FileStamp {
    fn of(path: PathBuf, meta: &fs::Metadata) -> FileStamp {
        FileStamp {
            path,
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
            inode: meta.ino(),
        }
    }
}

fn stamp_files(path: &Path, out: &mut Vec<FileStamp>) -> io::Result<()> {
    let meta = fs::metadata(path)?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<io::Result<_>>()?;
        entries.sort();
        // The directory itself: an added or removed entry changes it.
        out.push(FileStamp::of(path.to_path_buf(), &meta));
        for entry in entries {
            stamp_files(&entry, out)?;
        }
    } else {
        out.push(FileStamp::of(path.to_path_buf(), &meta));
    }
    Ok(())
}

impl InputStamp {
    /// Stats `path` (every file and directory under it, for a directory).
    pub fn take(path: &Path) -> io::Result<InputStamp> {
        let mut files = Vec::new();
        stamp_files(path, &mut files)?;
        Ok(InputStamp {
            path: path.to_path_buf(),
            files,
        })
    }

    /// The input's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What changed since the stamp was taken, if anything.
    pub fn changed(&self) -> Option<String> {
        let now = match InputStamp::take(&self.path) {
            Ok(s) => s,
            Err(e) => {
                return Some(format!(
                    "{} can no longer be read: {e}",
                    self.path.display()
                ))
            }
        };
        if now.files.len() != self.files.len() {
            return Some(format!(
                "{}: files were added or removed",
                self.path.display()
            ));
        }
        now.files
            .iter()
            .zip(&self.files)
            .find(|(a, b)| a != b)
            .map(|(a, _)| format!("{} was modified", a.path.display()))
    }
}
