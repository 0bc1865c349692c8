//! A real full disk: a small tmpfs mounted for the test (skipped, with a message,
//! where mounting is not permitted). The log grows by bounded steps, so once a little
//! space is freed it grows again; while it cannot, the call fails and consumes nothing,
//! and `doctor` says how much space the next growth needs.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::quota;
use flint_core::{Algorithm, CheckLevel, Error, Limiter, Options, SyncMode};

/// A tmpfs of `mib` MiB, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mib: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().join("fs");
        fs::create_dir(&path).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .output()
            .is_ok_and(|out| out.status.success());
        mounted.then_some(Tmpfs { path, _dir: dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the file system with a file of zeros until writing fails.
fn fill(path: &Path) {
    let block = vec![0u8; 64 << 10];
    let mut file = fs::File::create(path).unwrap();
    while std::io::Write::write_all(&mut file, &block).is_ok() {}
    let _ = file.sync_all();
}

#[test]
fn a_full_disk_fails_the_call_and_growth_resumes_once_a_little_space_is_freed() {
    let Some(tmpfs) = Tmpfs::mount(12) else {
        eprintln!("skipped: mounting a tmpfs is not permitted here");
        return;
    };
    let dir = tmpfs.path.join(".flint");
    let options = Options::default()
        .sync(SyncMode::Batch)
        .compact_threshold_bytes(u64::MAX);
    let limiter = Limiter::open(&dir, options).unwrap();
    limiter
        .limit(
            "k",
            quota(1_000_000_000, "1h", Algorithm::FixedWindowCounter),
        )
        .unwrap();
    // Grow the log past 4 MiB: a doubling growth would next want 4 MiB more.
    while limiter.doctor().unwrap().log_bytes < (4 << 20) + (512 << 10) {
        limiter.check("k", 1).unwrap();
    }
    let filler = tmpfs.path.join("filler");
    fill(&filler);
    // Append until the reserved space runs out: that call fails and consumes nothing.
    let before = limiter.status("k").unwrap().unwrap().counters;
    let mut failed = None;
    for _ in 0..1_000_000 {
        match limiter.check("k", 1) {
            Ok(_) => {}
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let error = failed.expect("the disk filled up");
    assert!(matches!(error, Error::Io { .. }), "{error}");
    assert!(error.to_string().contains("No space left"), "{error}");
    let after = limiter.status("k").unwrap().unwrap().counters;
    assert!(after.allowed > before.allowed);
    let report = limiter.doctor().unwrap();
    let disk = report
        .checks
        .iter()
        .find(|c| c.name == "disk_space")
        .unwrap();
    assert_eq!(disk.level, CheckLevel::Fail, "{}", disk.detail);
    assert!(disk.detail.contains("next growth needs"), "{}", disk.detail);
    let counted = limiter.status("k").unwrap().unwrap().counters;
    assert_eq!(counted, after, "the failed call consumed nothing");

    // Free 2 MiB: less than a doubling step (4 MiB), more than a bounded one.
    let file = fs::OpenOptions::new().write(true).open(&filler).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len.saturating_sub(2 << 20)).unwrap();
    drop(file);
    let decision = limiter.check("k", 1).unwrap();
    assert!(decision.allowed);
    limiter.close().unwrap();
    let reopened = Limiter::open(&dir, Options::default()).unwrap();
    assert_eq!(
        reopened.status("k").unwrap().unwrap().counters.allowed,
        after.allowed + 1
    );
    reopened.close().unwrap();
}
