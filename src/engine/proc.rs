//! Processes on Linux, read from `/proc`: start times (PID reuse is real), process groups,
//! the attempt tag in a worker's environment, and killing a whole group.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// Fields of `/proc/PID/stat` after the command name: (state, pgid, start time in ticks).
fn stat(pid: i32) -> Option<(char, i32, u64)> {
    stat_full(pid).map(|(st, _, g, start)| (st, g, start))
}

/// (state, ppid, pgid, start time in ticks).
fn stat_full(pid: i32) -> Option<(char, i32, i32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: the fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); pgid is field 5, starttime field 22.
    let state = f.first()?.chars().next()?;
    let ppid = f.get(1)?.parse().ok()?;
    let pgid = f.get(2)?.parse().ok()?;
    let start = f.get(19)?.parse().ok()?;
    Some((state, ppid, pgid, start))
}

/// The start time of a process (clock ticks since boot), if it exists.
pub fn start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|s| s.2)
}

/// Dead means gone or a zombie (some machines' PID 1 never reaps orphans).
pub fn is_dead(pid: i32) -> bool {
    !matches!(stat(pid), Some((state, _, _)) if state != 'Z' && state != 'X')
}

/// Is `pid` still the process that started at `start`, and alive?
pub fn is_same_alive(pid: i32, start: u64) -> bool {
    matches!(stat(pid), Some((state, _, s)) if s == start && state != 'Z' && state != 'X')
}

/// A worker's tag: the environment entries (`NAME=value`) that prove a process is baton's
/// worker for one job attempt, or one server worker.
pub struct Tag(Vec<String>);

impl Tag {
    /// `BATON_TASK_ID=<task>` and `BATON_ATTEMPT=<attempt>`: a oneshot worker.
    pub fn attempt(task_id: &str, attempt: i64) -> Tag {
        Tag(vec![format!("BATON_TASK_ID={task_id}"), format!("BATON_ATTEMPT={attempt}")])
    }

    /// `BATON_WORKER_ID=<id>`: a server worker.
    pub fn server(worker_id: &str) -> Tag {
        Tag(vec![format!("BATON_WORKER_ID={worker_id}")])
    }

    /// Does the process carry every entry of the tag?
    pub fn on(&self, pid: i32) -> bool {
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else { return false };
        let mut found = vec![false; self.0.len()];
        for var in env.split(|b| *b == 0) {
            for (want, f) in self.0.iter().zip(found.iter_mut()) {
                *f |= var == want.as_bytes();
            }
        }
        found.iter().all(|f| *f)
    }
}

/// Stop the process groups proven to be a worker's, and return them. A recorded `(pid, start
/// time)` counts only while that process is alive, started then, and carries `tag`; any live
/// process carrying `tag` counts too (one spawned before its pid was recorded). A row alone is
/// never trusted.
pub async fn stop_proven(recorded: &[(i64, i64)], tag: &Tag, grace: Duration) -> Vec<i32> {
    let mut groups: Vec<i32> = recorded
        .iter()
        .map(|&(pid, start)| (pid as i32, start as u64))
        .filter(|&(pid, start)| is_same_alive(pid, start) && tag.on(pid))
        .map(|(pid, _)| pid)
        .collect();
    groups.extend(find_with_tag(tag).into_iter().map(|(_, pgid)| pgid));
    groups.sort_unstable();
    groups.dedup();
    for &pgid in &groups {
        terminate_group(pgid, grace, None).await;
    }
    groups
}

fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// Live (non-zombie) members of a process group.
pub fn group_members(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| matches!(stat(p), Some((st, g, _)) if g == pgid && st != 'Z' && st != 'X'))
        .collect()
}

/// Zombie members of a group (to reap the ones that are our children).
fn group_zombies(pgid: i32) -> Vec<i32> {
    all_pids().into_iter().filter(|&p| matches!(stat(p), Some(('Z', g, _)) if g == pgid)).collect()
}

/// Live processes carrying `tag`, with their process groups: how recovery finds a worker that
/// started just before its dispatcher died, before its pid was recorded.
pub fn find_with_tag(tag: &Tag) -> Vec<(i32, i32)> {
    all_pids()
        .into_iter()
        .filter(|&p| tag.on(p))
        .filter_map(|p| match stat(p) {
            Some((st, g, _)) if st != 'Z' => Some((p, g)),
            _ => None,
        })
        .collect()
}

/// Send a signal to a whole process group; a group that is already gone is fine.
pub fn signal_group(pgid: i32, sig: Signal) {
    if pgid > 1 {
        let _ = killpg(Pid::from_raw(pgid), sig);
    }
}

/// Reap zombies of the group that are our children (re-parented to us as subreaper). By pid,
/// never `waitpid(-1)`, which would steal exit statuses the runtime waits for. `except` is the
/// leader the runtime itself waits on.
pub fn reap_group(pgid: i32, except: Option<i32>) {
    if !group_exists(pgid) {
        return;
    }
    for z in group_zombies(pgid) {
        if Some(z) != except {
            let _ = waitpid(Pid::from_raw(z), Some(WaitPidFlag::WNOHANG));
        }
    }
}

/// Does any process (zombies included) still belong to the group? One syscall, no `/proc` scan:
/// the common case after a worker exits cleanly is an empty group.
pub fn group_exists(pgid: i32) -> bool {
    pgid > 1 && killpg(Pid::from_raw(pgid), None).is_ok()
}

/// Stop a process group: SIGTERM, wait up to `grace`, SIGKILL, then wait (bounded) until no
/// live member is left. Returns the pids that were still alive when SIGTERM was sent.
pub async fn terminate_group(pgid: i32, grace: Duration, leader: Option<i32>) -> Vec<i32> {
    if !group_exists(pgid) {
        return Vec::new();
    }
    let members = group_members(pgid);
    if members.is_empty() {
        reap_group(pgid, leader);
        return members;
    }
    signal_group(pgid, Signal::SIGTERM);
    if !wait_group_gone(pgid, grace, leader).await {
        signal_group(pgid, Signal::SIGKILL);
        wait_group_gone(pgid, Duration::from_secs(10), leader).await;
    }
    members
}

/// Poll until the group has no live member (zombies count as dead) or `limit` passes.
pub async fn wait_group_gone(pgid: i32, limit: Duration, leader: Option<i32>) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        reap_group(pgid, leader);
        if !group_exists(pgid) || group_members(pgid).is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reap zombies re-parented to us (grandchildren of workers that left their group), by pid.
/// `except` holds the worker leaders the runtime waits on itself. A `waitid(WNOWAIT)` peek
/// first: with no exited child at all, there is no `/proc` scan.
pub fn reap_adopted(except: &std::collections::HashSet<i32>) -> usize {
    use nix::sys::wait::{Id, WaitStatus, waitid};
    match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT) {
        Ok(WaitStatus::StillAlive) | Err(_) => return 0,
        Ok(_) => {}
    }
    let me = std::process::id() as i32;
    let mut reaped = 0;
    for pid in all_pids() {
        if let Some(('Z', ppid, _, _)) = stat_full(pid)
            && ppid == me
            && !except.contains(&pid)
            && waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).is_ok()
        {
            reaped += 1;
        }
    }
    reaped
}

/// Make this process a child subreaper, so grandchildren of its workers are re-parented to it
/// (and reaped by it) rather than escaping to PID 1.
pub fn become_subreaper() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument and touches no memory.
        let r = unsafe { nix::libc::prctl(nix::libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if r != 0 {
            tracing::warn!("could not become a child subreaper: {}", std::io::Error::last_os_error());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_stat() {
        let me = std::process::id() as i32;
        assert!(start_time(me).is_some());
        assert!(!is_dead(me));
        assert!(is_same_alive(me, start_time(me).unwrap()));
        assert!(!is_same_alive(me, start_time(me).unwrap() + 1));
        assert!(is_dead(i32::MAX));
    }
}
