//! `baton watch` in a real terminal: tmux runs it on a pty of its own size, the test types
//! (`send-keys`) and reads the screen (`capture-pane`), against a real queue with real
//! dispatchers (one killed with SIGKILL and replaced while the view stays up).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{self, TestQueue, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

/// One tmux server of the test's own (its own socket), with one pane running `script`.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// None (and a plain SKIP line) when tmux is not installed.
    fn start(q: &TestQueue, script: &str) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            eprintln!("SKIPPED: tmux is not installed; baton watch needs a terminal to be tested");
            return None;
        }
        let socket = format!("baton-watch-{}-{}", std::process::id(), common::now_nanos());
        let env = format!(
            "cd '{}' && export BATON_DB='{}' HOME='{}' XDG_CONFIG_HOME='{}' BATON_LOG=warn TERM=xterm-256color RUST_BACKTRACE=0; \
             unset BATON_WORKER BATON_SESSION RUST_LOG; {script}",
            q.project.display(),
            q.db.display(),
            q.home.display(),
            q.home.join(".config").display()
        );
        let t = Tmux { socket };
        let ok = t.tmux(&["new-session", "-d", "-x", "140", "-y", "40", "sh", "-c", &env]).status.success();
        assert!(ok, "tmux new-session failed");
        Some(t)
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux").args(["-L", &self.socket, "-f", "/dev/null"]).args(args).output().expect("run tmux")
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            assert!(self.tmux(&["send-keys", "-t", "0", k]).status.success(), "send-keys {k}");
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Type text literally.
    fn type_text(&self, text: &str) {
        assert!(self.tmux(&["send-keys", "-t", "0", "-l", text]).status.success());
        std::thread::sleep(Duration::from_millis(150));
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", "0"]).stdout).into_owned()
    }

    /// Wait until the screen satisfies `what`; the screen is in the failure message.
    fn wait(&self, secs: u64, what: &str, mut cond: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.screen();
            if cond(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out after {secs}s waiting for the screen to show {what}:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn shows(&self, text: &str) -> String {
        let t = text.to_string();
        self.wait(20, &format!("{text:?}"), move |s| s.contains(&t))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// The task table's row of task `id` (its short id first, selected or not).
fn row<'a>(screen: &'a str, id: &str) -> Option<&'a str> {
    let (plain, selected) = (format!("\u{2502}  {} ", &id[..8]), format!("\u{2502}> {} ", &id[..8]));
    screen.lines().find(|l| l.starts_with(&plain) || l.starts_with(&selected))
}

/// The pane's command: watch (its pid written first, kept by exec), then what the terminal's
/// modes are once it is gone, then its exit code, then a pause so the pane stays.
fn watch_then_stty(dir: &Path, watch_env: &str) -> (String, PathBuf, PathBuf) {
    let pid = dir.join("watch.pid");
    let stty = dir.join("stty.txt");
    let bin = env!("CARGO_BIN_EXE_baton");
    let script = format!(
        "sh -c 'echo $$ > {pid}; {watch_env} exec {bin} watch'; code=$?; stty -a > {stty}; echo WATCH-EXITED $code; sleep 60",
        pid = pid.display(),
        stty = stty.display()
    );
    (script, pid, stty)
}

/// Raw mode off again: canonical input and echo, as a shell needs them.
fn assert_sane(stty: &Path) {
    wait_for(10, "stty to run after watch", || std::fs::read_to_string(stty).is_ok_and(|s| s.contains("icanon")));
    let modes = std::fs::read_to_string(stty).unwrap();
    let words: Vec<&str> = modes.split_whitespace().collect();
    for mode in ["icanon", "echo", "isig"] {
        assert!(
            words.contains(&mode) && !words.contains(&format!("-{mode}").as_str()),
            "{mode} not restored:\n{modes}"
        );
    }
}

#[test]
fn watch_follows_the_queue_and_its_keys_open_cancel_retry_and_filter() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let a = q.start(&["--worker", "coder", "--label", "team=web", "echo hello-from-a; sleep 60"]);
    let b = q.start(&["--worker", "coder", "echo broken-b >&2; exit 3"]);
    let c = q.start(&["--worker", "docs", "echo done-c"]);
    let (first_pid, _) = q.dispatcher_with_log();
    q.run(&["task", "await", &b, &c, "--timeout", "30000"]);
    wait_for(20, "a to run", || q.state(&a) == "running");
    let (script, _, stty) = watch_then_stty(q.dir.path(), "");
    let Some(t) = Tmux::start(&q, &script) else { return };

    // Running first, with its output as its activity; its profile, label and elapsed time.
    let s = t.wait(20, "the running task and its output", |s| row(s, &a).is_some_and(|r| r.contains("hello-from-a")));
    let ra = row(&s, &a).unwrap();
    assert!(ra.contains("running") && ra.contains("coder") && ra.contains("team=web"), "{s}");
    assert!(row(&s, &b).is_some_and(|r| r.contains("failed") && r.contains("Worker exited")), "{s}");
    assert!(row(&s, &c).is_some_and(|r| r.contains("succeeded") && r.contains("docs")), "{s}");
    assert!(s.contains(&format!("dispatcher pid {first_pid}")), "{s}");
    assert!(s.contains("running 1") && s.contains("failed 1") && s.contains("succeeded 1"), "{s}");
    assert!(s.contains(" Workers ") && s.contains("coder oneshot busy"), "{s}");
    // The running row is selected: the detail pane names it in full.
    assert!(s.contains(&a), "{s}");

    // A task started elsewhere appears by itself, and its end too.
    let d = q.start(&["--worker", "coder", "echo late-d"]);
    t.wait(20, "the new task, finished", |s| row(s, &d).is_some_and(|r| r.contains("succeeded")));

    // Enter opens the selected task's log; q goes back; e opens its events.
    t.keys(&["Home", "Enter"]);
    let s = t.shows(&format!("Log of {a}"));
    assert!(s.contains("hello-from-a"), "{s}");
    t.keys(&["q"]);
    t.shows(" Tasks (4) ");
    t.keys(&["e"]);
    t.shows(&format!("Events of {a}"));
    t.keys(&["Escape"]);
    t.shows(" Tasks (4) ");

    // Filter: only failed tasks; the log of the failed one shows its stderr.
    t.keys(&["f"]);
    t.shows(" Filter ");
    t.type_text("status:failed");
    t.keys(&["Enter"]);
    let s = t.wait(20, "only the failed task", |s| s.contains(" Tasks (1) ") && row(s, &b).is_some());
    assert!(s.contains("filter: status:failed") && row(&s, &a).is_none(), "{s}");
    t.keys(&["Enter"]);
    t.shows("broken-b");
    t.keys(&["q"]);
    // A bad filter says why and changes nothing.
    t.keys(&["f"]);
    t.type_text(" colour:red");
    t.keys(&["Enter"]);
    t.shows("Unknown filter \"colour\"");
    t.keys(&["Escape"]);
    // r retries the failed task: a new task, which fails the same way and joins the filter.
    t.keys(&["r"]);
    t.shows("Retried");
    t.wait(20, "two failed tasks", |s| s.contains(" Tasks (2) "));
    assert_eq!(q.scalar_i64("SELECT count(*) FROM jobs WHERE task LIKE 'echo broken-b%'"), 2);
    // Esc clears the filter.
    t.keys(&["Escape"]);
    t.shows(" Tasks (5) ");

    // c asks first: any key but y keeps the task; y cancels it (its process group stops).
    t.keys(&["Home", "c"]);
    t.shows("Cancel task");
    t.keys(&["n"]);
    t.shows("Not canceled");
    assert_eq!(q.state(&a), "running");
    t.keys(&["c"]);
    t.shows("Cancel task");
    t.keys(&["y"]);
    wait_for(20, "a to be canceled", || q.state(&a) == "canceled");
    t.wait(20, "a canceled on screen", |s| row(s, &a).is_some_and(|r| r.contains("canceled")));

    // The dispatcher dies (kill -9): the view says so, and follows its successor.
    kill(Pid::from_raw(first_pid as i32), Signal::SIGKILL).unwrap();
    t.shows("no dispatcher");
    let second = q.dispatcher();
    t.shows(&format!("dispatcher pid {second}"));
    let e = q.start(&["--worker", "coder", "echo after-restart"]);
    t.wait(20, "the task after the restart, finished", |s| row(s, &e).is_some_and(|r| r.contains("succeeded")));

    // q quits: the shell's screen is back, in its normal modes.
    t.keys(&["q"]);
    t.shows("WATCH-EXITED 0");
    assert_sane(&stty);
}

#[test]
fn the_terminal_is_restored_after_a_panic_and_after_sigterm() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(json!({}));
    q.ok(&["init"]);
    // SIGTERM.
    let (script, pid, stty) = watch_then_stty(q.dir.path(), "");
    let Some(t) = Tmux::start(&q, &script) else { return };
    t.shows("No tasks yet");
    let watch: i32 = std::fs::read_to_string(&pid).unwrap().trim().parse().unwrap();
    kill(Pid::from_raw(watch), Signal::SIGTERM).unwrap();
    t.shows("WATCH-EXITED 0");
    assert_sane(&stty);
    drop(t);
    if !common::test_hooks("a panic inside baton watch") {
        return;
    }
    // A panic: the hook restores the terminal before the message is printed.
    std::fs::remove_file(&stty).unwrap();
    let (script, _, stty) = watch_then_stty(q.dir.path(), "BATON_TEST_WATCH_PANIC=1");
    let t = Tmux::start(&q, &script).unwrap();
    t.shows("No tasks yet");
    t.keys(&["!"]);
    let s = t.shows("WATCH-EXITED 101");
    assert!(s.contains("a panic asked for by the test hook"), "{s}");
    assert!(!s.contains("No tasks yet"), "the alternate screen is gone: {s}");
    assert_sane(&stty);
}

/// A running task behind a backlog deeper than what the view reads of the newest tasks is
/// still shown, first.
#[test]
fn watch_shows_the_running_task_behind_a_deep_backlog() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(json!({"limits": {"maxConcurrency": 1}}));
    let a = q.start(&["echo running-a; sleep 60"]);
    q.dispatcher();
    wait_for(20, "a to run", || q.state(&a) == "running");
    let seed = q.start(&["true"]);
    q.copy_queued(&seed, 400);
    assert_eq!(q.state(&a), "running");
    for sort in ["newest", "oldest", "priority", "duration"] {
        let (v, code) = q.json(&["task", "list", "--status", "running", "--sort", sort]);
        let ids: Vec<&str> = v.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!((ids, code), (vec![a.as_str()], 0), "--sort {sort}");
    }
    let (script, _, _) = watch_then_stty(q.dir.path(), "");
    let Some(t) = Tmux::start(&q, &script) else { return };
    let s = t.wait(20, "the running task", |s| row(s, &a).is_some_and(|r| r.contains("running")));
    assert!(s.contains("running 1") && s.contains("queued 401"), "{s}");
    t.keys(&["q"]);
    t.shows("WATCH-EXITED 0");
}

#[test]
fn watch_on_a_pipe_is_refused_with_what_to_use_instead() {
    let q = TestQueue::new();
    q.ok(&["init"]);
    let e = q.refused(&["watch"]);
    assert!(e.contains("baton watch needs a terminal"), "{e}");
    assert!(e.contains("baton task list"), "{e}");
    let e = q.refused(&["watch", "--status", "runing"]);
    assert!(e.contains("Unknown status \"runing\""), "{e}");
}

#[test]
fn watch_on_a_postgres_queue_follows_its_tasks_and_nodes() {
    let _g = common::heavy();
    let Some(pg) = crate::common::pg::Pg::start() else { return };
    let mut q = TestQueue::new();
    q.db = PathBuf::from(pg.create_db("q"));
    q.ok(&["init"]);
    let (script, _, _) = watch_then_stty(q.dir.path(), "");
    let Some(t) = Tmux::start(&q, &script) else { return };
    t.shows(" Tasks (0) ");
    // A task started elsewhere appears, queued; a node comes up and runs it; its end shows.
    let a = q.start(&["--worker", "coder", "echo from-postgres; sleep 2"]);
    t.wait(20, "the new task, queued", |s| row(s, &a).is_some_and(|r| r.contains("queued")));
    let _node = q.dispatcher();
    t.wait(30, "the task running, with its output", |s| {
        row(s, &a).is_some_and(|r| r.contains("running") && r.contains("from-postgres"))
    });
    t.wait(30, "the task succeeded", |s| row(s, &a).is_some_and(|r| r.contains("succeeded")));
    // A cancel from another process shows too.
    let b = q.start(&["--worker", "coder", "--delay", "600000", "echo never"]);
    t.wait(20, "the delayed task", |s| row(s, &b).is_some());
    q.ok(&["task", "cancel", &b]);
    let s = t.wait(20, "the canceled task", |s| row(s, &b).is_some_and(|r| r.contains("canceled")));
    assert!(s.contains(" Tasks (2) "), "{s}");
}
