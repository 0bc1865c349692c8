//! `doctor`: the engine's and the data directory's health, check by check.

use std::fmt::Write as _;

use crate::error::Result;
use crate::inspect::{CheckLevel, DoctorCheck, DoctorReport, TemplateReport};
use crate::limiter::{lock, Shared};
use crate::storage::recovery::TornTail;
use crate::storage::sys;

/// What doctor says about what recovery cut.
fn torn_detail(torn: TornTail) -> String {
    if torn.snapshot_ahead {
        return format!(
            "the snapshot covered {} bytes of log past its end at offset {} (a power loss before the log reached the disk): the state was opened from the snapshot, which holds those records, and a new log started; nothing is lost",
            torn.bytes, torn.offset
        );
    }
    let mut detail = format!(
        "{} bytes at offset {} (past the log's end) were cut on open (a crash mid-write)",
        torn.bytes, torn.offset
    );
    if torn.records > 0 {
        let _ = write!(
            detail,
            ", with {} unsynced records that a power loss wrote back out of order",
            torn.records
        );
    }
    detail.push_str("; every synced decision is kept");
    detail
}

/// "1 key", "2 keys".
fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl Shared {
    pub(crate) fn doctor(&self) -> Result<DoctorReport> {
        let core = self.lock_core()?;
        let log_bytes = core.log.as_ref().map_or(0, |log| log.len());
        let next_growth = core.log.as_ref().map_or(0, |log| log.next_growth());
        let mut checks = Vec::new();
        let mut check = |name, level, detail: String| {
            checks.push(DoctorCheck {
                name,
                level,
                detail,
            });
        };
        check(
            "lock",
            CheckLevel::Ok,
            format!("held by this process (pid {})", std::process::id()),
        );
        match self.backend.dir_mode() {
            Ok(mode) if mode & 0o077 == 0 /* no group or other bits */ => {
                check("permissions", CheckLevel::Ok, format!("directory mode {mode:o}"));
            }
            Ok(mode) => check(
                "permissions",
                CheckLevel::Warn,
                format!(
                    "directory mode {mode:o} lets other users read limiter state: run `chmod 700 {}`",
                    self.dir.display()
                ),
            ),
            Err(e) => check("permissions", CheckLevel::Fail, format!("cannot stat the directory: {e}")),
        }
        let poisoned = self.commit.poisoned();
        match poisoned {
            None => check(
                "log",
                CheckLevel::Ok,
                format!(
                    "generation {}, {log_bytes} bytes, {} records replayed on open",
                    core.generation, core.replayed
                ),
            ),
            Some(cause) => check(
                "log",
                CheckLevel::Fail,
                format!("writes stopped after a storage failure: {cause}; close and reopen"),
            ),
        }
        check(
            "snapshot",
            CheckLevel::Ok,
            if core.snapshot_bytes == 0 {
                "none yet (written by compaction)".to_owned()
            } else {
                format!("{} bytes", core.snapshot_bytes)
            },
        );
        match core.torn {
            None => check("torn_tail", CheckLevel::Ok, "none found on open".into()),
            Some(torn) => check("torn_tail", CheckLevel::Warn, torn_detail(torn)),
        }
        let (written, durable) = self.commit.positions();
        let pending = written.seq - durable.seq.min(written.seq);
        check(
            "pending",
            CheckLevel::Ok,
            format!("{pending} events written but not yet synced"),
        );
        let threshold = self.options.compact_threshold_bytes;
        let due = log_bytes >= threshold && log_bytes >= core.snapshot_bytes;
        let status = format!(
            "log {log_bytes} bytes of {threshold} before automatic compaction{}",
            if due { " (due now)" } else { "" }
        );
        match lock(&self.compaction_failure).as_deref() {
            None => check("compaction", CheckLevel::Ok, status),
            Some(failure) => check(
                "compaction",
                CheckLevel::Warn,
                format!("{status}; the last automatic compaction failed ({failure}), so the log keeps growing: free disk space or run compact()"),
            ),
        }
        match self.backend.free_space() {
            Ok(free) if free < next_growth => check(
                "disk_space",
                CheckLevel::Fail,
                format!("only {free} bytes free, and the log's next growth needs {next_growth}: free at least {} bytes or writes will fail once the log fills its reserved space", next_growth - free),
            ),
            Ok(free) if free < 16 << 20 => check(
                "disk_space",
                CheckLevel::Fail,
                format!("only {free} bytes free: free space or writes will fail"),
            ),
            Ok(free) if free < 256 << 20 => check(
                "disk_space",
                CheckLevel::Warn,
                format!("only {free} bytes free"),
            ),
            Ok(free) => check("disk_space", CheckLevel::Ok, format!("{free} bytes free")),
            Err(e) => check("disk_space", CheckLevel::Warn, format!("cannot tell: {e}")),
        }
        let templates: Vec<TemplateReport> = core
            .registry
            .iter()
            .filter(|(_, e)| e.is_template())
            .filter_map(|(id, e)| {
                let state = core.registry.template_state(id)?;
                Some(TemplateReport {
                    template: e.key.to_string(),
                    live_keys: state.live,
                    remembered_keys: state.top.items().len(),
                })
            })
            .collect();
        let memory_bytes = core.registry.memory_bytes() as u64;
        let live: usize = templates.iter().map(|t| t.live_keys).sum();
        check(
            "memory",
            CheckLevel::Ok,
            format!(
                "{} in about {memory_bytes} bytes; {} with {} holding state (keys back at full capacity are dropped)",
                counted(core.registry.len(), "entry", "entries"),
                counted(templates.len(), "template", "templates"),
                counted(live, "key", "keys"),
            ),
        );
        let ok = checks.iter().all(|c| c.level != CheckLevel::Fail);
        Ok(DoctorReport {
            ok,
            checks,
            sync: self.options.sync.name(),
            version: env!("CARGO_PKG_VERSION"),
            data_dir: self.dir.clone(),
            log_bytes,
            snapshot_bytes: core.snapshot_bytes,
            keys: core.registry.len(),
            pending_events: pending,
            templates,
            memory_bytes,
            process_resident_bytes: sys::resident_bytes(),
        })
    }
}
