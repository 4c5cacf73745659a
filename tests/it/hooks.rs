//! The finish hook (`hooks.onFinish`): run by real dispatchers for real tasks and workflow
//! runs, once each, across a dispatcher killed with SIGKILL while a hook runs, killed with its
//! process group at its timeout, and refused with a clear message when its template is wrong.

use std::path::Path;

use crate::common::{self, Kill, TestQueue, is_dead, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// A queue whose hook runs `script` with the given template arguments after it.
fn queue_with_hook(script_body: &str, args: &[&str], extra: Value) -> (TestQueue, std::path::PathBuf) {
    let q = TestQueue::new();
    let script = q.script("hook.sh", script_body);
    let mut argv = vec![json!(script.display().to_string())];
    argv.extend(args.iter().map(|a| json!(a)));
    let mut cfg = common::default_config();
    cfg["hooks"] = json!({"onFinish": argv, "timeoutMs": 10_000});
    if let Some(e) = extra.as_object() {
        for (k, v) in e {
            cfg[k] = v.clone();
        }
    }
    std::fs::write(q.project.join(".baton/config.json"), cfg.to_string()).unwrap();
    let out = q.dir.path().join("hooks.log");
    (q, out)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect()
}

fn hook_row(q: &TestQueue, id: &str) -> (i64, Option<i64>, Option<i64>, Option<String>) {
    q.raw()
        .query_row("SELECT attempts, done_ms, exit_code, error FROM finish_hooks WHERE task_id = ?1", [id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap_or_else(|e| panic!("no finish_hooks row for {id}: {e}"))
}

#[test]
fn the_hook_runs_once_per_finished_task_with_its_fields_and_record() {
    let _g = common::heavy();
    let (q, out) = queue_with_hook(
        // The arguments, then the id from the JSON record on stdin, then the environment.
        r#"rec=$(cat); id=$(printf '%s' "$rec" | sed -n 's/^{"id":"\([^"]*\)".*/\1/p')
printf '%s|stdin=%s|env=%s,%s\n' "$*" "$id" "$BATON_TASK_ID" "$BATON_STATUS" >> "$(dirname "$0")/hooks.log""#,
        &["{taskId}", "{status}", "[{exitCode}]", "{profile}", "team={label.team}", "{durationMs}", "{logPath}"],
        json!({"workflows": {"definitions": [{"id": "two", "steps": [
            {"id": "a", "prompt": "{task}", "carry": false},
            {"id": "b", "prompt": "{task}", "carry": false}
        ]}]}}),
    );
    let (_, log) = q.dispatcher_with_log();
    wait_for(20, "the dispatcher to record the hook", || {
        q.db.exists() && q.raw().query_row("SELECT count(*) FROM hooks", [], |r| r.get::<_, i64>(0)).unwrap_or(0) == 1
    });
    let ok = q.start(&["--worker", "coder", "--label", "team=web", "echo fine"]);
    let bad = q.start(&["--worker", "coder", "exit 3"]);
    let (run, _) = q.json(&["workflow", "run", "two", "echo step"]);
    let run = run["taskId"].as_str().unwrap().to_string();
    // A task canceled from the command line, before it ran, ends too.
    q.ok(&["pause"]);
    let canceled = q.start(&["--worker", "coder", "echo never"]);
    q.ok(&["task", "cancel", &canceled]);
    q.ok(&["resume"]);
    let (recs, _) = q.json(&["task", "await", &ok, &bad, &run, "--timeout", "30000"]);
    assert_eq!(recs[2]["status"], "succeeded", "{recs}");
    wait_for(20, "four hooks", || lines(&out).len() >= 4);
    std::thread::sleep(std::time::Duration::from_millis(600));
    let got = lines(&out);
    assert_eq!(got.len(), 4, "one hook per task, none for the run's steps: {got:?}\n{}", read(&log));
    let line_of = |id: &str| {
        let mut of = got.iter().filter(|l| l.starts_with(id));
        let l = of.next().unwrap_or_else(|| panic!("no hook for {id}: {got:?}")).clone();
        assert!(of.next().is_none(), "two hooks for {id}: {got:?}");
        l
    };
    let fields = |id: &str| line_of(id).split('|').map(String::from).collect::<Vec<_>>();
    let f = fields(&ok);
    let args: Vec<&str> = f[0].split(' ').collect();
    assert_eq!(&args[..5], [ok.as_str(), "succeeded", "[0]", "coder", "team=web"], "{f:?}");
    assert!(args[5].parse::<i64>().is_ok(), "durationMs is a number: {f:?}");
    assert!(args[6].ends_with(&format!("{ok}/1.out")) && Path::new(args[6]).exists(), "{f:?}");
    assert_eq!(f[1], format!("stdin={ok}"));
    assert_eq!(f[2], format!("env={ok},succeeded"));
    let f = fields(&bad);
    assert!(f[0].starts_with(&format!("{bad} failed [3] coder team= ")), "{f:?}");
    let f = fields(&run);
    assert!(f[0].starts_with(&format!("{run} succeeded [] workflow:two team= ")), "{f:?}");
    assert!(f[0].ends_with("/1.out"), "a run's log is its last step's: {f:?}");
    let f = fields(&canceled);
    assert!(f[0].starts_with(&format!("{canceled} canceled [] coder team=  ")), "no exit code, no duration: {f:?}");
    for id in [&ok, &bad, &run, &canceled] {
        let (attempts, done, code, error) = hook_row(&q, id);
        assert_eq!((attempts, done.is_some(), code, error), (1, true, Some(0), None), "{id}");
    }
    // The hook's own failure never touches its task, and a done hook cannot be made to run again.
    let e = q.raw().execute("UPDATE finish_hooks SET done_ms = NULL WHERE task_id = ?1", [&ok]).unwrap_err();
    assert!(e.to_string().contains("a finish hook that ran never runs again"), "{e}");

    // Removing the hook from the configuration stops it (picked up at the next heartbeat).
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(q.project.join(".baton/config.json")).unwrap()).unwrap();
    cfg["hooks"]["onFinish"] = json!([]);
    std::fs::write(q.project.join(".baton/config.json"), cfg.to_string()).unwrap();
    wait_for(20, "the hook row to go", || q.scalar_i64("SELECT count(*) FROM hooks") == 0);
    let quiet = q.start(&["--worker", "coder", "echo quiet"]);
    q.ok(&["task", "await", &quiet, "--timeout", "30000"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(lines(&out).len(), 4);
    assert_eq!(q.scalar_i64(&format!("SELECT count(*) FROM finish_hooks WHERE task_id = '{quiet}'")), 0);
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn a_hook_cut_short_by_a_dispatcher_crash_runs_again_and_then_never() {
    let _g = common::heavy();
    // The first run of the hook records its pid and hangs; later runs finish.
    let (q, out) = queue_with_hook(
        r#"D=$(dirname "$0")
if [ ! -e "$D/hung" ]; then echo $$ > "$D/hung"; echo "start $1 hung" >> "$D/hooks.log"; exec sleep 60; fi
echo "ran $1" >> "$D/hooks.log""#,
        &["{taskId}"],
        json!({}),
    );
    let mut first = Kill(
        q.cmd().arg("run").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap(),
    );
    let id = q.start(&["--worker", "coder", "echo once"]);
    wait_for(30, "the hook to start and hang", || lines(&out).iter().any(|l| l.starts_with("start")));
    let hung: i32 = read(&q.dir.path().join("hung")).trim().parse().unwrap();
    assert_eq!(q.state(&id), "succeeded");
    let (attempts, done, _, _) = hook_row(&q, &id);
    assert_eq!((attempts, done), (1, None), "started, not done");
    kill(Pid::from_raw(first.pid()), Signal::SIGKILL).unwrap();
    wait_for(10, "the dispatcher to die", || first.exited().is_some());
    // The hung hook is in its own group: it outlives the dispatcher; stop it by hand.
    let _ = kill(Pid::from_raw(hung), Signal::SIGKILL);
    // The next dispatcher runs the hook again, and records it done.
    let mut second = Kill(
        q.cmd().arg("run").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap(),
    );
    wait_for(30, "the hook to run again", || lines(&out).iter().any(|l| l.starts_with("ran")));
    wait_for(10, "the hook to be recorded done", || hook_row(&q, &id).1.is_some());
    let (attempts, _, code, error) = hook_row(&q, &id);
    assert_eq!((attempts, code, error), (2, Some(0), None));
    kill(Pid::from_raw(second.pid()), Signal::SIGKILL).unwrap();
    wait_for(10, "the second dispatcher to die", || second.exited().is_some());
    // A third dispatcher finds nothing to do: the hook never runs a third time.
    let _third = q.dispatcher();
    let later = q.start(&["--worker", "coder", "echo later"]);
    q.ok(&["task", "await", &later, "--timeout", "30000"]);
    wait_for(30, "the later task's hook", || lines(&out).iter().any(|l| l == &format!("ran {later}")));
    let got = lines(&out);
    assert_eq!(got, [format!("start {id} hung"), format!("ran {id}"), format!("ran {later}")], "{got:?}");
}

#[test]
fn a_hanging_hook_is_killed_with_its_group_at_its_timeout_and_the_task_stays_as_it_was() {
    let _g = common::heavy();
    let (q, _out) = queue_with_hook(
        r#"D=$(dirname "$0"); sleep 60 & echo $! > "$D/child"; echo $$ > "$D/hook"; echo "about to hang" >&2; wait"#,
        &[],
        json!({}),
    );
    let cfg_path = q.project.join(".baton/config.json");
    let mut cfg: Value = serde_json::from_str(&read(&cfg_path)).unwrap();
    cfg["hooks"]["timeoutMs"] = json!(700);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    q.dispatcher();
    let id = q.start(&["--worker", "coder", "echo fine"]);
    let (rec, code) = q.json(&["task", "await", &id, "--timeout", "30000"]);
    assert_eq!((rec["status"].as_str(), code), (Some("succeeded"), 0));
    wait_for(20, "the hook to be killed", || hook_row(&q, &id).1.is_some());
    let (attempts, _, code, error) = hook_row(&q, &id);
    assert_eq!((attempts, code), (1, None));
    assert_eq!(error.as_deref(), Some("timed out after 700 ms: killed"));
    for f in ["hook", "child"] {
        let pid: i32 = read(&q.dir.path().join(f)).trim().parse().unwrap();
        wait_for(5, &format!("the hook's {f} process to be gone"), || is_dead(pid));
    }
    let (after, _) = q.json(&["task", "peek", &id]);
    assert_eq!((after["status"].as_str(), after["error"].as_str()), (Some("succeeded"), None), "{after}");
    // A failing hook is recorded with what it said; the dispatcher goes on.
    cfg["hooks"] = json!({"onFinish": ["sh", "-c", "echo broken >&2; exit 4"], "timeoutMs": 5000});
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    wait_for(20, "the new hook to be read", || {
        q.raw().query_row("SELECT argv FROM hooks", [], |r| r.get::<_, String>(0)).is_ok_and(|a| a.contains("exit 4"))
    });
    let next = q.start(&["--worker", "coder", "echo next"]);
    q.ok(&["task", "await", &next, "--timeout", "30000"]);
    wait_for(20, "the failing hook to be recorded", || hook_row(&q, &next).1.is_some());
    let (_, _, code, error) = hook_row(&q, &next);
    assert_eq!((code, error.as_deref()), (Some(4), Some("exit code 4: broken")));
    assert_eq!(q.state(&next), "succeeded");
}

#[test]
fn a_wrong_hook_template_is_refused_with_the_key_and_the_placeholders() {
    let q = TestQueue::with_overrides(json!({"hooks": {"onFinish": ["notify-send", "done {taskid}"]}}));
    let e = q.refused(&["status"]);
    assert!(e.contains("hooks.onFinish[1]"), "{e}");
    assert!(e.contains("unknown placeholder {taskid} (did you mean {taskId}?)"), "{e}");
    assert!(e.contains("{label.KEY}"), "{e}");
    let q = TestQueue::with_overrides(json!({"hooks": {"onFinish": "notify-send"}}));
    let e = q.refused(&["status"]);
    assert!(e.contains("hooks.onFinish"), "{e}");
    // A JSON body's braces are not placeholders.
    let q = TestQueue::with_overrides(
        json!({"hooks": {"onFinish": ["curl", "-d", "{\"id\": \"{taskId}\"}", "http://127.0.0.1:9/"]}}),
    );
    q.ok(&["init"]);
}
