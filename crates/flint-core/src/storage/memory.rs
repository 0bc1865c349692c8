//! A data directory in memory that knows what a power loss would keep.
//!
//! Every file keeps two contents: the *live* bytes (what the process wrote: what a
//! reader sees, and what survives the process being killed) and the *durable* bytes
//! (what the last sync made stable). The directory likewise keeps its live entries and
//! its durable entries; `sync_dir` makes the live ones durable.
//!
//! [`MemoryBackend::crash_image`] is a simulated power loss: a new directory holding
//! the durable bytes of each file plus a random subset of its unsynced pages, in any
//! order, some of them torn at sector granularity, and the durable directory entries
//! plus a random prefix of the unsynced renames, creations and removals (a journaling
//! file system applies those in order). [`MemoryBackend::crash_at`] arms a power loss
//! before the n-th storage primitive, so tests can cut power at every step of a check,
//! a compaction or a repair; from then on every primitive fails.
//!
//! Used by the engine's tests and fuzz targets; also usable for an in-memory limiter.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::storage::backend::{Backend, DirLock, LogFile, LogSync, StorageFile};

/// The unit the page cache writes back.
pub const PAGE: usize = 4096;
/// The unit a disk usually writes atomically; a torn page keeps some of its sectors
/// (and, now and then, the first bytes of one more).
pub const SECTOR: usize = 512;
/// How much a memory log grows by.
const LOG_GROWTH: usize = 64 << 10;

#[derive(Clone, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Clone)]
enum DirOp {
    Link(String, usize),
    Unlink(String),
    /// Atomic, as a journaling file system makes it: the name moves, or it does not.
    Rename(String, String, usize),
}

#[derive(Clone, Default)]
struct Disk {
    inodes: Vec<Inode>,
    live: BTreeMap<String, usize>,
    durable: BTreeMap<String, usize>,
    /// Directory changes since the last `sync_dir`, in order.
    unsynced: Vec<DirOp>,
    locked: bool,
    /// Primitives run so far.
    ops: u64,
    /// Cut power just before this primitive.
    crash_at: Option<(u64, u64)>,
    /// The state a power loss kept, once it happened.
    image: Option<Box<Disk>>,
    /// Syncs of files (log syncs included) so far.
    syncs: u64,
}

/// A small deterministic random generator (splitmix64), so a seed replays a crash.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

impl Disk {
    fn power_loss(&self, seed: u64) -> Disk {
        let mut rng = Rng(seed);
        // The directory: what was synced, then some prefix of what was not.
        let mut entries = self.durable.clone();
        let kept_ops = rng.below(self.unsynced.len() as u64 + 1) as usize;
        for op in self.unsynced.iter().take(kept_ops) {
            match op {
                DirOp::Link(name, inode) => {
                    entries.insert(name.clone(), *inode);
                }
                DirOp::Unlink(name) => {
                    entries.remove(name);
                }
                DirOp::Rename(from, to, inode) => {
                    entries.remove(from);
                    entries.insert(to.clone(), *inode);
                }
            }
        }
        let mut image = Disk::default();
        for (name, &inode) in &entries {
            let Some(file) = self.inodes.get(inode) else {
                continue;
            };
            let content = written_back(file, &mut rng);
            image.inodes.push(Inode {
                live: content.clone(),
                durable: content,
            });
            image.live.insert(name.clone(), image.inodes.len() - 1);
        }
        image.durable = image.live.clone();
        image
    }
}

/// What a power loss leaves of one file: its durable bytes, and each unsynced page
/// written back whole, torn (some sectors), or not at all.
fn written_back(file: &Inode, rng: &mut Rng) -> Vec<u8> {
    let mut out = file.durable.clone();
    let live = &file.live;
    let pages = live.len().max(out.len()).div_ceil(PAGE);
    let mut end = out.len().min(live.len());
    for page in 0..pages {
        let start = page * PAGE;
        let stop = (start + PAGE).min(live.len());
        if start >= stop {
            continue;
        }
        let (Some(new), old) = (live.get(start..stop), out.get(start..stop.min(out.len()))) else {
            continue;
        };
        if old == Some(new) {
            continue;
        }
        let sectors: Vec<usize> = match rng.below(4) {
            0 | 1 => continue,
            2 => (start..stop).step_by(SECTOR).collect(),
            _ => (start..stop)
                .step_by(SECTOR)
                .filter(|_| rng.below(2) == 0)
                .collect(),
        };
        for sector in sectors {
            // Now and then a sector is itself cut short (a disk without atomic sector
            // writes): only its first bytes are new.
            let sector_end = if rng.below(16) == 0 {
                sector + 1 + rng.below(SECTOR as u64 - 1) as usize
            } else {
                sector + SECTOR
            }
            .min(stop);
            if out.len() < sector_end {
                out.resize(sector_end, 0);
            }
            if let (Some(dst), Some(src)) = (
                out.get_mut(sector..sector_end),
                live.get(sector..sector_end),
            ) {
                dst.copy_from_slice(src);
            }
            end = end.max(sector_end);
        }
    }
    // A file shrinks to its live length only if that was synced; it grows to what was
    // written back.
    out.truncate(end.max(file.durable.len().min(live.len())));
    out
}

/// A data directory in memory; see the module documentation.
#[derive(Clone)]
pub struct MemoryBackend {
    dir: PathBuf,
    disk: Arc<Mutex<Disk>>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

fn power_lost() -> io::Error {
    io::Error::other("simulated power loss")
}

impl MemoryBackend {
    /// An empty directory, named `memory` in messages.
    pub fn new() -> Self {
        MemoryBackend {
            dir: PathBuf::from("memory"),
            disk: Arc::new(Mutex::new(Disk::default())),
        }
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.disk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a primitive; cuts power when it is the armed one. Every primitive after a
    /// power loss fails.
    fn step(disk: &mut Disk) -> io::Result<()> {
        if disk.image.is_some() {
            return Err(power_lost());
        }
        disk.ops += 1;
        if let Some((at, seed)) = disk.crash_at {
            if disk.ops >= at {
                disk.image = Some(Box::new(disk.power_loss(seed)));
                return Err(power_lost());
            }
        }
        Ok(())
    }

    /// Arms a power loss just before primitive number `op` (counted from now on),
    /// choosing what survives with `seed`.
    pub fn crash_at(&self, op: u64, seed: u64) {
        let mut disk = self.disk();
        let at = disk.ops + op;
        disk.crash_at = Some((at, seed));
    }

    /// Storage primitives run so far.
    pub fn ops(&self) -> u64 {
        self.disk().ops
    }

    /// File syncs so far.
    pub fn syncs(&self) -> u64 {
        self.disk().syncs
    }

    /// Whether the armed power loss has happened.
    pub fn crashed(&self) -> bool {
        self.disk().image.is_some()
    }

    /// The directory a power loss left: the armed one if it happened, or one now,
    /// with `seed` choosing which unsynced writes survive. The image is unlocked and
    /// independent of this backend.
    #[must_use]
    pub fn crash_image(&self, seed: u64) -> MemoryBackend {
        let disk = self.disk();
        let image = match &disk.image {
            Some(image) => (**image).clone(),
            None => disk.power_loss(seed),
        };
        MemoryBackend {
            dir: self.dir.clone(),
            disk: Arc::new(Mutex::new(image)),
        }
    }

    /// The live content of `name` (what a reader sees now).
    pub fn contents(&self, name: &str) -> Option<Vec<u8>> {
        let disk = self.disk();
        let inode = *disk.live.get(name)?;
        disk.inodes.get(inode).map(|f| f.live.clone())
    }

    /// Replaces the content of `name` (live and durable), creating it: for tests that
    /// build a directory byte by byte.
    pub fn put(&self, name: &str, bytes: &[u8]) {
        let mut disk = self.disk();
        disk.inodes.push(Inode {
            live: bytes.to_vec(),
            durable: bytes.to_vec(),
        });
        let inode = disk.inodes.len() - 1;
        disk.live.insert(name.to_owned(), inode);
        disk.durable.insert(name.to_owned(), inode);
    }

    /// The names in the directory.
    pub fn names(&self) -> Vec<String> {
        self.disk().live.keys().cloned().collect()
    }
}

struct MemoryLock(MemoryBackend);

impl Drop for MemoryLock {
    fn drop(&mut self) {
        self.0.disk().locked = false;
    }
}

impl Backend for MemoryBackend {
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> Result<DirLock> {
        let mut disk = self.disk();
        if disk.locked {
            return Err(Error::Locked {
                dir: self.dir.clone(),
                pid: Some(std::process::id()),
            });
        }
        disk.locked = true;
        drop(disk);
        Ok(DirLock::new(MemoryLock(self.clone())))
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        let mut disk = self.disk();
        Self::step(&mut disk)?;
        Ok(disk
            .live
            .get(name)
            .and_then(|&i| disk.inodes.get(i))
            .map(|f| f.live.clone()))
    }

    fn size(&self, name: &str) -> io::Result<Option<u64>> {
        let disk = self.disk();
        Ok(disk
            .live
            .get(name)
            .and_then(|&i| disk.inodes.get(i))
            .map(|f| f.live.len() as u64))
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let mut disk = self.disk();
        Self::step(&mut disk)?;
        disk.inodes.push(Inode::default());
        let inode = disk.inodes.len() - 1;
        disk.live.insert(name.to_owned(), inode);
        disk.unsynced.push(DirOp::Link(name.to_owned(), inode));
        Ok(Box::new(MemoryFile {
            backend: self.clone(),
            inode,
        }))
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
        let mut disk = self.disk();
        Self::step(&mut disk)?;
        let inode = *disk
            .live
            .get(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(Box::new(MemoryFile {
            backend: self.clone(),
            inode,
        }))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut disk = self.disk();
        Self::step(&mut disk)?;
        let inode = disk
            .live
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        disk.live.insert(to.to_owned(), inode);
        disk.unsynced
            .push(DirOp::Rename(from.to_owned(), to.to_owned(), inode));
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut disk = self.disk();
        Self::step(&mut disk)?;
        disk.durable = disk.live.clone();
        disk.unsynced.clear();
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut disk = self.disk();
        Self::step(&mut disk)?;
        if disk.live.remove(name).is_some() {
            disk.unsynced.push(DirOp::Unlink(name.to_owned()));
        }
        Ok(())
    }

    fn free_space(&self) -> io::Result<u64> {
        Ok(u64::MAX)
    }

    fn dir_mode(&self) -> io::Result<u32> {
        Ok(0o700)
    }
}

/// A file of a [`MemoryBackend`], by inode (it keeps working after a rename).
struct MemoryFile {
    backend: MemoryBackend,
    inode: usize,
}

impl MemoryFile {
    fn with<T>(&self, f: impl FnOnce(&mut Inode) -> T) -> io::Result<T> {
        let mut disk = self.backend.disk();
        MemoryBackend::step(&mut disk)?;
        disk.inodes
            .get_mut(self.inode)
            .map(f)
            .ok_or_else(|| io::Error::other("no such inode"))
    }

    fn sync_inode(&self) -> io::Result<()> {
        let mut disk = self.backend.disk();
        MemoryBackend::step(&mut disk)?;
        disk.syncs += 1;
        let file = disk
            .inodes
            .get_mut(self.inode)
            .ok_or_else(|| io::Error::other("no such inode"))?;
        file.durable.clone_from(&file.live);
        Ok(())
    }
}

fn write_into(buf: &mut Vec<u8>, offset: usize, bytes: &[u8]) {
    let end = offset + bytes.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    if let Some(dst) = buf.get_mut(offset..end) {
        dst.copy_from_slice(bytes);
    }
}

impl StorageFile for MemoryFile {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.with(|f| write_into(&mut f.live, offset as usize, bytes))
    }

    fn allocate(&mut self, _len: u64) -> io::Result<()> {
        // Memory needs no reservation, and zeros past the last record read the same as
        // no bytes at all (the end of the log): materialising them would only make every
        // copy and every simulated power loss slower.
        self.with(|_| ())
    }

    fn len(&self) -> io::Result<u64> {
        let disk = self.backend.disk();
        disk.inodes
            .get(self.inode)
            .map(|f| f.live.len() as u64)
            .ok_or_else(|| io::Error::other("no such inode"))
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_inode()
    }

    fn into_log(self: Box<Self>, logical_len: u64) -> io::Result<Box<dyn LogFile>> {
        Ok(Box::new(MemoryLog {
            file: Arc::new(*self),
            len: logical_len,
        }))
    }
}

struct MemoryLog {
    file: Arc<MemoryFile>,
    len: u64,
}

impl LogFile for MemoryLog {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let at = self.len as usize;
        self.file.with(|f| {
            if f.live.len() < at + bytes.len() {
                // Grow as the file backend does: zeros past the end, the end marker.
                let target = (at + bytes.len()).div_ceil(LOG_GROWTH) * LOG_GROWTH;
                f.live.resize(target, 0);
            }
            write_into(&mut f.live, at, bytes);
        })?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn read_from(&self, from: u64) -> io::Result<Vec<u8>> {
        let disk = self.file.backend.disk();
        disk.inodes
            .get(self.file.inode)
            .and_then(|f| f.live.get(from as usize..self.len as usize))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::other("read past the end of the log"))
    }

    fn syncer(&self) -> Arc<dyn LogSync> {
        Arc::clone(&self.file) as Arc<dyn LogSync>
    }
}

impl LogSync for MemoryFile {
    fn sync(&self) -> io::Result<()> {
        self.sync_inode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_power_loss_keeps_synced_bytes_and_loses_unsynced_renames() {
        let backend = MemoryBackend::new();
        let mut file = backend.create("a.tmp").unwrap();
        file.write_at(0, b"hello").unwrap();
        file.sync().unwrap();
        backend.rename("a.tmp", "a").unwrap();
        for seed in 0..64 {
            let image = backend.crash_image(seed);
            let names = image.names();
            // Creation and rename were never made durable: any prefix may survive, and
            // the rename is atomic (never both names).
            assert!(
                names.is_empty() || names == ["a.tmp"] || names == ["a"],
                "{names:?}"
            );
            for name in names {
                assert_eq!(image.contents(&name).unwrap(), b"hello");
            }
        }
        backend.sync_dir().unwrap();
        assert_eq!(backend.crash_image(1).names(), ["a"]);
    }

    #[test]
    fn unsynced_pages_come_back_in_any_subset_and_torn() {
        let backend = MemoryBackend::new();
        backend.put("log", &[0u8; 4 * PAGE]);
        let mut file = backend.open("log").unwrap();
        file.write_at(0, &[1u8; 4 * PAGE]).unwrap();
        let mut seen_whole = [false; 4];
        let mut seen_torn = false;
        let mut seen_cut_sector = false;
        for seed in 0..200 {
            let bytes = backend.crash_image(seed).contents("log").unwrap();
            assert_eq!(bytes.len(), 4 * PAGE);
            for (page, chunk) in bytes.chunks(PAGE).enumerate() {
                let ones: usize = chunk.iter().map(|&b| usize::from(b == 1)).sum();
                seen_whole[page] |= ones == PAGE;
                seen_torn |= ones != 0 && ones != PAGE;
                seen_cut_sector |= !ones.is_multiple_of(SECTOR);
            }
        }
        assert!(seen_whole.iter().all(|s| *s) && seen_torn && seen_cut_sector);
        file.sync().unwrap();
        assert_eq!(
            backend.crash_image(3).contents("log").unwrap(),
            vec![1u8; 4 * PAGE]
        );
    }

    #[test]
    fn an_armed_crash_fails_every_later_primitive() {
        let backend = MemoryBackend::new();
        backend.crash_at(2, 7);
        let mut file = backend.create("x").unwrap();
        assert!(file.write_at(0, b"x").is_err());
        assert!(backend.crashed());
        assert!(backend.sync_dir().is_err());
        // The creation was never synced: it may or may not survive, empty either way.
        let image = backend.crash_image(0);
        for name in image.names() {
            assert_eq!(name, "x");
            assert_eq!(image.contents(&name).unwrap(), b"");
        }
    }
}
