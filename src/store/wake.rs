//! Waking on queue changes without spinning: inotify on the queue's `-wal` file (every commit
//! writes it) wakes a waiter at once; a bounded-rate `PRAGMA data_version` check is the safety
//! net, and the whole mechanism when inotify is not available.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

struct Watch(Inotify);

impl AsRawFd for Watch {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Waits for the next write to a queue file.
pub struct Waker {
    wal: PathBuf,
    fd: Option<AsyncFd<Watch>>,
    watching: bool,
}

impl Waker {
    /// Watch `<db>-wal`. Without inotify, `wait` is a plain bounded sleep.
    pub fn new(db: &Path) -> Waker {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let fd = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok().and_then(|i| {
            // SAFETY: `Watch` owns the inotify descriptor for as long as the AsyncFd lives and
            // always answers that same descriptor.
            unsafe { AsyncFd::register_with_interest(Watch(i), Interest::READABLE) }.ok()
        });
        let mut w = Waker { wal: PathBuf::from(wal), fd, watching: false };
        w.rewatch();
        w
    }

    /// Whether writes wake waiters at once (else only the bounded poll does).
    pub fn is_live(&self) -> bool {
        self.fd.is_some() && self.watching
    }

    fn rewatch(&mut self) {
        if let Some(fd) = &self.fd {
            let flags = AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF;
            self.watching = fd.get_ref().0.add_watch(&self.wal, flags).is_ok();
        }
    }

    /// Wait until the WAL file is written to, or `max` passes (whichever is first). Callers
    /// then check `data_version`, so a spurious wake costs one cheap query.
    pub async fn wait(&mut self, max: Duration) {
        if !self.watching {
            // The WAL may not exist yet (no connection opened it), or was replaced.
            self.rewatch();
        }
        let Some(fd) = self.fd.as_ref().filter(|_| self.watching) else {
            tokio::time::sleep(max).await;
            return;
        };
        let gone = AddWatchFlags::IN_IGNORED | AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF;
        let mut lost = false;
        if let Ok(Ok(mut guard)) = tokio::time::timeout(max, fd.readable()).await {
            // Drain every pending event, then let the fd report readiness afresh.
            while let Ok(events) = guard.get_inner().0.read_events() {
                lost |= events.iter().any(|e| e.mask.intersects(gone));
            }
            guard.clear_ready();
        }
        if lost {
            self.watching = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Instant;

    #[tokio::test]
    async fn a_write_to_the_wal_wakes_the_waiter() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("q.db");
        let wal = d.path().join("q.db-wal");
        std::fs::write(&wal, b"").unwrap();
        let mut w = Waker::new(&db);
        assert!(w.is_live(), "inotify should be available on Linux");
        let writer = tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(100));
            std::fs::OpenOptions::new().append(true).open(&wal).unwrap().write_all(b"frame").unwrap();
        });
        let t = Instant::now();
        w.wait(Duration::from_secs(60)).await;
        assert!(t.elapsed() < Duration::from_secs(30), "woke by the write, not the 60 s bound");
        writer.await.unwrap();
        // With nothing written, the bound applies.
        let t = Instant::now();
        w.wait(Duration::from_millis(200)).await;
        assert!(t.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn without_a_wal_file_it_is_a_bounded_sleep_until_one_appears() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("none.db");
        let mut w = Waker::new(&db);
        assert!(!w.is_live());
        w.wait(Duration::from_millis(20)).await;
        std::fs::write(d.path().join("none.db-wal"), b"").unwrap();
        w.wait(Duration::from_millis(20)).await;
        assert!(w.is_live(), "the watch is set once the file exists");
    }
}
