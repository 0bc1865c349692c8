//! A process that forks while it has a limiter open: the child can neither write the
//! parent's log through the inherited limiter nor keep the directory's lock.
//!
//! The defect this protects against: the child kept the parent's `flock` (the lock
//! file's open description is shared across `fork`), so after the parent closed its
//! limiter neither the child nor the parent could open the directory while the child
//! lived.
//!
//! Parent and child talk over two pipes, one byte per step; every wait is bounded. The
//! child reports a failure over its pipe and through its exit code, and always leaves
//! with `_exit`; the parent reaps it by pid (killing it if it overstays).

#![expect(unsafe_code, reason = "fork, pipes, poll, waitpid and _exit")]

mod common;

use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use flint_core::{Algorithm, Error, Limiter, Options, SyncMode};

/// The longest either side waits for the other at one step.
const STEP: Duration = Duration::from_secs(10);

/// The child refused the parent's limiter and is waiting for the parent to close it.
const CHILD_READY: u8 = b'r';
/// The parent closed its limiter.
const PARENT_CLOSED: u8 = b'c';
/// The child opened the directory itself and holds it.
const CHILD_HOLDS: u8 = b'h';
/// The parent tried to open the directory while the child held it.
const PARENT_TRIED: u8 = b't';
/// The child failed; a message follows, up to the end of the pipe.
const CHILD_FAILED: u8 = b'!';

fn options() -> Options {
    Options::default().sync(SyncMode::Always)
}

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [-1; 2];
    // SAFETY: a valid pointer to two descriptors.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    (fds[0], fds[1])
}

fn close(fd: RawFd) {
    // SAFETY: closes a descriptor this test opened and closes only once.
    unsafe { libc::close(fd) };
}

fn send(fd: RawFd, bytes: &[u8]) -> Result<(), String> {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: writes from a valid buffer of `rest.len()` bytes.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("write to the pipe: {error}"));
        }
        rest = &rest[n as usize..];
    }
    Ok(())
}

/// Reads one byte, waiting at most until `deadline`; `None` at the end of the pipe.
fn read_byte(fd: RawFd, deadline: Instant) -> Result<Option<u8>, String> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("nothing came through the pipe within {STEP:?}"));
        }
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&raw mut poll, 1, left.as_millis().max(1) as i32) };
        if ready < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll the pipe: {error}"));
        }
        if ready == 0 {
            continue;
        }
        let mut byte = 0u8;
        // SAFETY: reads into one valid byte.
        let n = unsafe { libc::read(fd, (&raw mut byte).cast(), 1) };
        match n {
            1 => return Ok(Some(byte)),
            0 => return Ok(None),
            _ => {
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(format!("read the pipe: {error}"));
                }
            }
        }
    }
}

/// Waits for `expected` from the other side. A failure report is read to the end.
fn expect(fd: RawFd, expected: u8) -> Result<(), String> {
    let deadline = Instant::now() + STEP;
    match read_byte(fd, deadline)? {
        Some(byte) if byte == expected => Ok(()),
        Some(CHILD_FAILED) => {
            let mut message = Vec::new();
            while let Some(byte) = read_byte(fd, deadline)? {
                message.push(byte);
            }
            Err(format!(
                "the child failed: {}",
                String::from_utf8_lossy(&message)
            ))
        }
        Some(byte) => Err(format!(
            "expected {:?} through the pipe, got {:?}",
            expected as char, byte as char
        )),
        None => Err(format!(
            "the pipe closed while waiting for {:?}",
            expected as char
        )),
    }
}

/// The child's side; an error is reported to the parent.
fn child(
    inherited: &Limiter,
    parent: u32,
    dir: &Path,
    to_parent: RawFd,
    from_parent: RawFd,
) -> Result<(), String> {
    // The inherited limiter refuses every call: the child must not write the log.
    match inherited.check("k", 1) {
        Err(Error::Forked { opened_by }) if opened_by == parent => {}
        other => return Err(format!("check on the parent's limiter returned {other:?}")),
    }
    match inherited.status("k") {
        Err(Error::Forked { .. }) => {}
        other => return Err(format!("status on the parent's limiter returned {other:?}")),
    }
    // Closing it in the child is harmless and does nothing to the parent's.
    inherited
        .close()
        .map_err(|e| format!("close of the parent's limiter failed: {e}"))?;
    send(to_parent, &[CHILD_READY])?;

    expect(from_parent, PARENT_CLOSED)?;
    let own = Limiter::open(dir, options()).map_err(|e| {
        format!("the child could not open the directory after the parent closed it: {e}")
    })?;
    let decision = own
        .check("k", 1)
        .map_err(|e| format!("check in the child failed: {e}"))?;
    let allowed = own
        .status("k")
        .map_err(|e| format!("status in the child failed: {e}"))?
        .map(|s| s.counters.allowed);
    if !decision.allowed || allowed != Some(2) {
        return Err(format!(
            "the child's check: {decision:?}, allowed so far {allowed:?} (expected 2)"
        ));
    }
    send(to_parent, &[CHILD_HOLDS])?;

    expect(from_parent, PARENT_TRIED)?;
    own.close()
        .map_err(|e| format!("close in the child failed: {e}"))
}

/// The forked child, reaped by pid when dropped (killed first if still running).
struct Child {
    pid: libc::pid_t,
    status: Option<libc::c_int>,
}

impl Child {
    /// Waits (bounded) for the child to exit; kills it if it does not.
    fn reap(&mut self) -> libc::c_int {
        if let Some(status) = self.status {
            return status;
        }
        let deadline = Instant::now() + STEP;
        let mut status = 0;
        loop {
            // SAFETY: waits for our own child, by pid, with a valid out pointer.
            let rc = unsafe { libc::waitpid(self.pid, &raw mut status, libc::WNOHANG) };
            if rc == self.pid {
                break;
            }
            assert!(
                rc == 0
                    || std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted,
                "waitpid: {}",
                std::io::Error::last_os_error()
            );
            if Instant::now() >= deadline {
                // SAFETY: kills our own child, which has not been reaped, by pid.
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                // SAFETY: as above; it exits at once after SIGKILL.
                unsafe { libc::waitpid(self.pid, &raw mut status, 0) };
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.status = Some(status);
        status
    }

    fn describe(&mut self) -> String {
        let status = self.reap();
        if libc::WIFEXITED(status) {
            format!("exited with code {}", libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            format!("killed by signal {}", libc::WTERMSIG(status))
        } else {
            format!("wait status {status:#x}")
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.reap();
    }
}

#[test]
fn a_forked_child_refuses_the_inherited_limiter_and_does_not_hold_the_lock() {
    let (_tmp, dir) = common::data_dir();
    let limiter = Limiter::open(&dir, options()).unwrap();
    limiter
        .limit("k", common::quota(1000, "1h", Algorithm::TokenBucket))
        .unwrap();
    assert!(limiter.check("k", 1).unwrap().allowed);
    let log_before = common::log_len(&limiter);

    let (from_child, child_writes) = pipe();
    let (child_reads, to_child) = pipe();
    let parent = std::process::id();
    // SAFETY: the child runs only `child` (no locks another thread could hold: the
    // inherited limiter refuses before taking any) and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        close(from_child);
        close(to_child);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            child(&limiter, parent, &dir, child_writes, child_reads)
        }));
        let (code, message) = match outcome {
            Ok(Ok(())) => (0, None),
            Ok(Err(message)) => (1, Some(message)),
            Err(_) => (2, Some("the child panicked".to_owned())),
        };
        if let Some(message) = message {
            let _ = send(child_writes, &[CHILD_FAILED]);
            let _ = send(child_writes, message.as_bytes());
        }
        // SAFETY: leaves the child at once, running no destructor of the parent's state.
        unsafe { libc::_exit(code) };
    }
    let mut child = Child { pid, status: None };
    close(child_writes);
    close(child_reads);
    let step = |child: &mut Child, what: &str, result: Result<(), String>| {
        if let Err(error) = result {
            panic!("{what}: {error} (child {})", child.describe());
        }
    };

    step(
        &mut child,
        "the child's refusal of the inherited limiter",
        expect(from_child, CHILD_READY),
    );
    assert_eq!(
        common::log_len(&limiter),
        log_before,
        "the child wrote the parent's log"
    );
    limiter.close().unwrap();
    step(
        &mut child,
        "telling the child",
        send(to_child, &[PARENT_CLOSED]),
    );
    step(
        &mut child,
        "the child opening the directory itself",
        expect(from_child, CHILD_HOLDS),
    );

    match Limiter::open(&dir, options()) {
        Err(Error::Locked { pid: holder, .. }) => assert_eq!(
            holder,
            Some(pid as u32),
            "the Locked error names the child's pid"
        ),
        other => panic!("the parent opened the directory the child holds: {other:?}"),
    }
    step(
        &mut child,
        "telling the child",
        send(to_child, &[PARENT_TRIED]),
    );
    // The child now closes its limiter and exits; it writes nothing more unless it fails.
    let deadline = Instant::now() + STEP;
    let mut report = Vec::new();
    while let Ok(Some(byte)) = read_byte(from_child, deadline) {
        report.push(byte);
    }
    close(from_child);
    close(to_child);
    let status = child.reap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child {}: {}",
        child.describe(),
        String::from_utf8_lossy(&report)
    );
    assert!(report.is_empty(), "{}", String::from_utf8_lossy(&report));

    let limiter = Limiter::open(&dir, options()).unwrap();
    let allowed = limiter.status("k").unwrap().unwrap().counters.allowed;
    assert_eq!(allowed, 2, "the parent's check and the child's");
    limiter.close().unwrap();
}
