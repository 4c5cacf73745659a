//! The command line's contract: exact messages for every limit and attachment check, exit
//! codes, the JSON shapes, ids by prefix, tables, sessions and configuration errors. No
//! dispatcher runs here unless a test says so: jobs stay queued.

use crate::common::{self, TestQueue};
use serde_json::{Value, json};

fn start_stdin(q: &TestQueue, task: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = q
        .cmd()
        .args(["task", "start", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(task.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn task_limits_have_exact_messages_and_write_nothing() {
    let q = TestQueue::new();
    q.ok(&["init"]);
    // Through stdin (`-`): one argument of this size would pass Linux's 128 KiB cap.
    let o = start_stdin(&q, &"x".repeat(100_001));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Task must be <= 100000 chars"));
    // 100 000 chars is fine; multi-byte chars count as one.
    let o = start_stdin(&q, &"é".repeat(100_000));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(q.job_count(), 1);

    let e = q.refused(&["task", "start", "--kind", "worker", "do it"]);
    assert!(e.contains("Missing workerId"), "{e}");

    std::fs::write(q.project.join("a.txt"), "a").unwrap();
    let mut args = vec!["task", "start", "with files"];
    for _ in 0..11 {
        args.extend(["--attach", "a.txt"]);
    }
    let e = q.refused(&args);
    assert!(e.contains("Max 10 attachments"), "{e}");
    assert_eq!(q.job_count(), 1, "nothing written by refused starts");
}

#[test]
fn attachment_checks_in_order_with_exact_messages() {
    let q = TestQueue::new();
    q.ok(&["init"]);
    let outside = q.dir.path().join("outside.txt");
    std::fs::write(&outside, "secret").unwrap();
    std::fs::write(q.project.join("ok.txt"), "ok").unwrap();
    std::os::unix::fs::symlink(&outside, q.project.join("escape")).unwrap();
    std::os::unix::fs::symlink(q.project.join("ok.txt"), q.project.join("inside-link")).unwrap();
    let cases = [
        ("/etc/passwd", "Invalid attachment path: Attachment path must be relative"),
        ("../outside.txt", "Invalid attachment path: Path traversal not allowed in attachment paths"),
        ("missing.txt", "Invalid attachment path: Attachment file not found: missing.txt"),
        ("escape", "Invalid attachment path: Attachment path must be within project directory"),
        ("inside-link", "Invalid attachment path: Symlink attachments are not allowed"),
    ];
    for (path, msg) in cases {
        let e = q.refused(&["task", "start", "look", "--attach", path]);
        assert!(e.contains(msg), "{path}: {e}");
    }
    assert_eq!(q.job_count(), 0);
    // A good one is stored canonical and absolute.
    let id = q.start(&["look at this", "--attach", "ok.txt", "--worker", "coder"]);
    let stored: String = q.raw().query_row("SELECT attachments FROM jobs WHERE id = ?1", [&id], |r| r.get(0)).unwrap();
    let paths: Vec<String> = serde_json::from_str(&stored).unwrap();
    assert_eq!(paths, vec![q.project.canonicalize().unwrap().join("ok.txt").display().to_string()]);
}

#[test]
fn unknown_profile_is_recorded_failed_with_the_list() {
    let q = TestQueue::new();
    let (v, code) = q.json(&["task", "start", "--worker", "nope", "do it"]);
    assert_eq!(code, 0);
    let msg = "Unknown worker \"nope\". Available profiles: vision, docs, coder, architect, explorer";
    assert_eq!(v["status"], "failed");
    assert_eq!(v["workerId"], "nope");
    assert_eq!(v["error"], msg);
    let id = v["taskId"].as_str().unwrap();
    assert_eq!(q.state(id), "failed");
    let (rec, code) = q.json(&["task", "peek", id]);
    assert_eq!((rec["error"].as_str(), code), (Some(msg), 0));
    // await on a failed job: exit 1.
    let o = q.run(&["task", "await", id]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn start_answers_and_records_what_it_resolved() {
    let q = TestQueue::with_overrides(json!({
        "runner": ["agent", ["--model", "{model}"], "{prompt}"],
        "models": {"fast": "small-model"}
    }));
    let (v, code) = q.json(&["--session", "s1", "task", "start", "where is the parser", "--priority", "5"]);
    assert_eq!(code, 0);
    assert_eq!(v["kind"], "worker");
    assert_eq!(v["workerId"], "explorer", "auto-selection");
    assert_eq!(v["status"], "queued");
    assert_eq!(v["next"], "task_await");
    let id = v["taskId"].as_str().unwrap();
    let (argv, model, prio, session, by): (String, Option<String>, i64, Option<String>, String) = q
        .raw()
        .query_row("SELECT argv, model, priority, session, requested_by FROM jobs WHERE id = ?1", [id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap();
    let argv: Vec<String> = serde_json::from_str(&argv).unwrap();
    assert_eq!(argv, ["agent", "--model", "small-model", "where is the parser"]);
    assert_eq!(model.as_deref(), Some("small-model"));
    assert_eq!(prio, 5);
    assert_eq!(session.as_deref(), Some("s1"));
    assert!(by.starts_with("cli:"), "{by}");
    // coder's tag `node` resolves to nothing: the optional model group is dropped.
    let (v, _) = q.json(&["task", "start", "--worker", "coder", "implement it"]);
    let argv: String = q
        .raw()
        .query_row("SELECT argv FROM jobs WHERE id = ?1", [v["taskId"].as_str().unwrap()], |r| r.get(0))
        .unwrap();
    assert_eq!(serde_json::from_str::<Vec<String>>(&argv).unwrap(), ["agent", "implement it"]);
}

#[test]
fn dedup_key_answers_the_unfinished_job() {
    let q = TestQueue::new();
    let (a, _) = q.json(&["task", "start", "--dedup-key", "k1", "echo one"]);
    let (b, _) = q.json(&["task", "start", "--dedup-key", "k1", "echo two"]);
    assert_eq!(a["taskId"], b["taskId"]);
    assert_eq!(b["deduplicated"], true);
    assert_eq!(q.job_count(), 1);
    // Once that job is finished, the key is free again.
    q.run(&["task", "cancel", a["taskId"].as_str().unwrap()]);
    let (c, _) = q.json(&["task", "start", "--dedup-key", "k1", "echo three"]);
    assert_ne!(c["taskId"], a["taskId"]);
}

#[test]
fn ids_by_prefix_unknown_ids_and_exit_codes() {
    let q = TestQueue::new();
    let id = q.start(&["echo hi"]);
    let (v, code) = q.json(&["task", "peek", &id[..8]]);
    assert_eq!((v["id"].as_str(), code), (Some(id.as_str()), 0));
    assert_eq!(v["dispatcher"], "none", "queued with no dispatcher alive");
    assert_eq!(v["status"], "queued");
    let (v, code) = q.json(&["task", "peek", &id[..7]]);
    assert_eq!(v, json!({"id": &id[..7], "status": "unknown"}));
    assert_eq!(code, 4);
    let (v, code) = q.json(&["task", "peek", &id, "00000000-0000-4000-8000-000000000000"]);
    assert_eq!(code, 4);
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["id"], id.as_str());
    assert_eq!(arr[1]["status"], "unknown");
    // Await with timeout 0 answers at once, timed out: 124.
    let (v, code) = q.json(&["task", "await", &id, "--timeout", "0"]);
    assert_eq!((v["timedOut"].as_bool(), code), (Some(true), 124));
    // Cancel of a queued job: canceled at once with the reason; the cancel did what was asked,
    // so it exits 0 (await of that job exits 3).
    let (v, code) = q.json(&["task", "cancel", &id, "--reason", "changed my mind"]);
    assert_eq!(code, 0);
    assert_eq!(v["status"], "canceled");
    assert_eq!(v["error"], "Canceled: changed my mind");
    let (_, code) = q.json(&["task", "await", &id]);
    assert_eq!(code, 3);
    // Finished jobs are left untouched by a second cancel, which exits 0 too.
    let (v, code) = q.json(&["task", "cancel", &id, "--reason", "again"]);
    assert_eq!((v["error"].as_str(), code), (Some("Canceled: changed my mind"), 0));
    // An unknown id among them: 4.
    let (_, code) = q.json(&["task", "cancel", &id, "00000000-0000-0000-0000-000000000000"]);
    assert_eq!(code, 4);
}

#[test]
fn record_has_every_documented_key() {
    let q = TestQueue::new();
    let id = q.start(&["echo hi"]);
    let (v, _) = q.json(&["task", "peek", &id]);
    let obj = v.as_object().unwrap();
    for k in common::RECORD_KEYS {
        assert!(obj.contains_key(k), "missing key {k}");
    }
    assert_eq!(v["startedAt"], Value::Null);
    assert_eq!(v["maxAttempts"], 3);
}

#[test]
fn list_tables_and_views() {
    let q = TestQueue::new();
    q.ok(&["init"]);
    assert_eq!(q.ok(&["task", "list"]).trim(), "No tasks recorded yet.");
    assert_eq!(q.ok(&["task", "list", "--view", "workers"]).trim(), "No workers are currently registered.");
    let a = q.start(&["echo   first\n\nline"]);
    let b = q.start(&["--worker", "docs", "echo | second"]);
    let table = q.ok(&["task", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("| Task ") && lines[0].contains("| Worker | Status | Started | ms | Message"));
    assert!(lines[1].starts_with("| ---"));
    assert!(lines[2].contains(&b), "newest first");
    assert!(lines[2].contains("echo \\| second"), "pipe escaped: {}", lines[2]);
    assert!(lines[3].contains(&a) && lines[3].contains("echo first line"), "whitespace collapsed: {}", lines[3]);
    let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
    assert!(widths.iter().all(|w| *w == widths[0]), "aligned columns: {widths:?}");
    let (v, _) = q.json(&["task", "list", "--status", "queued", "--worker", "docs"]);
    assert_eq!(v.as_array().unwrap().len(), 1);
    let (v, _) = q.json(&["task", "list", "--limit", "1"]);
    assert_eq!(v.as_array().unwrap().len(), 1);
    let profiles = q.ok(&["profiles"]);
    assert!(profiles.contains("| ID ") && profiles.contains("| coder ") && profiles.contains("Code Implementer"));
    let status = q.ok(&["task", "list", "--view", "status"]);
    assert!(status.starts_with("# Orchestrator Status\n\n## Workers\n(none)\n\n## Recent Tasks\n| Task"));
    let e = q.refused(&["task", "list", "--status", "bogus"]);
    assert!(e.contains("Unknown status \"bogus\""), "{e}");
}

#[test]
fn session_scoped_listing() {
    let q = TestQueue::new();
    q.start(&["echo a"]);
    q.ok(&["--session", "alpha", "task", "start", "echo b"]);
    let (all, _) = q.json(&["task", "list"]);
    assert_eq!(all.as_array().unwrap().len(), 2);
    let (mine, _) = q.json(&["--session", "alpha", "task", "list"]);
    let mine = mine.as_array().unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["sessionId"], "alpha");
}

#[test]
fn session_isolation_forbids_other_sessions() {
    let q = TestQueue::with_overrides(json!({"security": {"sessionIsolation": true}}));
    let e = q.refused(&["task", "start", "echo a"]);
    assert!(e.contains("Session ID required for task tools."), "{e}");
    let id = q.ok(&["--session", "a", "task", "start", "echo a"]).trim().to_string();
    let (v, code) = q.json(&["--session", "b", "task", "peek", &id]);
    assert_eq!((v, code), (json!({"id": id, "status": "forbidden"}), 4));
    let (v, _) = q.json(&["--session", "b", "task", "list"]);
    assert_eq!(v, json!([]));
}

#[test]
fn delay_and_run_at() {
    let q = TestQueue::new();
    let e = q.refused(&["task", "start", "x", "--delay", "10", "--run-at", "2030-01-01T00:00:00Z"]);
    assert!(e.contains("--delay") || e.contains("cannot be used with"), "{e}");
    let e = q.refused(&["task", "start", "x", "--run-at", "tomorrow"]);
    assert!(e.contains("runAt must be an ISO-8601 time"), "{e}");
    let id = q.start(&["x", "--run-at", "2030-01-01T00:00:00Z"]);
    let at: i64 = q.raw().query_row("SELECT run_after_ms FROM jobs WHERE id = ?1", [&id], |r| r.get(0)).unwrap();
    assert_eq!(at, 1_893_456_000_000);
}

#[test]
fn config_errors_name_the_file_and_keep_the_queue() {
    let q = TestQueue::new();
    let id = q.start(&["echo kept"]);
    let cfg = q.project.join(".baton/config.json");
    std::fs::write(&cfg, "{\n  \"autoSpawn\": false,\n  \"limits\": { \"maxConcurrency\": 4,, }\n}").unwrap();
    let e = q.refused(&["task", "list"]);
    assert!(e.contains(&cfg.display().to_string()), "{e}");
    assert!(e.contains("line 3"), "{e}");
    std::fs::write(&cfg, "x".repeat(1_000_001)).unwrap();
    let e = q.refused(&["task", "list"]);
    assert!(e.contains("1000000"), "{e}");
    std::fs::write(&cfg, r#"{"autoSpawn": false, "limits": {"maxConcurrency": "four"}}"#).unwrap();
    let e = q.refused(&["config", "check"]);
    assert!(e.contains("limits.maxConcurrency"), "{e}");
    std::fs::write(&cfg, r#"{"autoSpawn": false}"#).unwrap();
    assert_eq!(q.state(&id), "queued", "the queue is intact");
}

#[test]
fn project_config_merges_over_global_partially() {
    let q = TestQueue::new();
    let global = q.home.join(".config/baton");
    std::fs::create_dir_all(&global).unwrap();
    std::fs::write(
        global.join("config.json"),
        r#"{ // comments are fine
            "limits": {"maxConcurrency": 2}, "jobs": {"killGraceMs": 123},
            "profiles": [{"id": "coder", "name": "X", "model": "m", "purpose": "p", "whenToUse": "w"}],
        }"#,
    )
    .unwrap();
    let (v, code) = q.json(&["config", "show"]);
    assert_eq!(code, 0);
    assert_eq!(v["limits"]["maxConcurrency"], 8, "project value wins");
    assert_eq!(v["jobs"]["killGraceMs"], 500, "project value wins");
    assert_eq!(v["limits"]["maxWorkers"], 50, "default kept");
    std::fs::write(q.project.join(".baton/config.json"), r#"{"autoSpawn": false, "jobs": {"timeoutMs": 5000}}"#)
        .unwrap();
    let (v, _) = q.json(&["config", "show"]);
    assert_eq!(v["limits"]["maxConcurrency"], 2, "global value kept when the project omits it");
    assert_eq!(v["jobs"]["killGraceMs"], 123);
    assert_eq!(v["jobs"]["timeoutMs"], 5000);
    let shown = q.ok(&["config", "show"]);
    assert!(shown.lines().any(|l| l.starts_with("limits.maxConcurrency = 2") && l.contains("global")), "{shown}");
    // A protected profile override is refused with a warning naming it.
    let o = q.run(&["config", "check"]);
    assert!(o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("coder") && e.to_lowercase().contains("built-in"), "{e}");
    let (profiles, _) = q.json(&["profiles"]);
    let coder = profiles.as_array().unwrap().iter().find(|p| p["id"] == "coder").unwrap().clone();
    assert_eq!(coder["name"], "Code Implementer");
}

#[test]
fn project_config_symlink_escaping_the_project_is_refused() {
    let q = TestQueue::new();
    let outside = q.dir.path().join("elsewhere.json");
    std::fs::write(&outside, r#"{"autoSpawn": false}"#).unwrap();
    let cfg = q.project.join(".baton/config.json");
    std::fs::remove_file(&cfg).unwrap();
    std::os::unix::fs::symlink(&outside, &cfg).unwrap();
    let e = q.refused(&["task", "list"]);
    assert!(e.contains(&cfg.display().to_string()), "{e}");
}

#[test]
fn recursive_guard_refuses_start_and_run_inside_a_worker() {
    let q = TestQueue::new();
    q.ok(&["init"]);
    for args in [vec!["task", "start", "echo nested"], vec!["run"]] {
        let o = q.cmd().env("BATON_WORKER", "true").args(&args).output().unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.contains("BATON_WORKER"), "{e}");
    }
    assert_eq!(q.job_count(), 0);
    // peek and list still answer inside a worker.
    let o = q.cmd().env("BATON_WORKER", "true").args(["task", "list"]).output().unwrap();
    assert!(o.status.success());
    // With protection off, nothing is refused.
    let q2 = TestQueue::with_overrides(json!({"security": {"preventRecursiveSpawn": false}}));
    let o = q2.cmd().env("BATON_WORKER", "true").args(["task", "start", "echo ok"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn prune_dry_run_lists_without_deleting() {
    let q = TestQueue::with_overrides(json!({"retention": {"minAgeMs": 0, "maxJobs": 1}}));
    let a = q.start(&["echo a"]);
    let b = q.start(&["echo b"]);
    q.run(&["task", "cancel", &a, &b]);
    let out = q.ok(&["prune", "--dry-run"]);
    assert!(out.contains("Would delete 1"), "{out}");
    assert_eq!(q.job_count(), 2);
    q.ok(&["prune"]);
    assert_eq!(q.job_count(), 1);
}

#[test]
fn logs_retry_and_report_of_a_finished_task() {
    let _g = common::heavy();
    let q = TestQueue::new();
    q.dispatcher();
    let id = q.start(&["printf '## Summary\\ndid it\\n## Risks\\nnone\\n'; echo oops >&2"]);
    let (v, code) = q.json(&["task", "await", &id, "--timeout", "30000"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["exitCode"], 0);
    assert_eq!(v["responseText"], "## Summary\ndid it\n## Risks\nnone");
    assert_eq!(v["report"], json!({"summary": "did it", "details": null, "issues": "none", "notes": null}));
    assert!(v["outputTail"].as_str().unwrap().ends_with("oops"), "{v}");
    let log = v["logPath"].as_str().unwrap();
    assert!(log.ends_with(&format!("logs/{id}/1.out")), "{log}");
    let o = q.run(&["task", "logs", &id[..8]]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout), "## Summary\ndid it\n## Risks\nnone\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "oops\n");
    let (r, code) = q.json(&["task", "retry", &id]);
    assert_eq!(code, 0);
    assert_ne!(r["taskId"], id.as_str());
    let task: String = q
        .raw()
        .query_row("SELECT task FROM jobs WHERE id = ?1", [r["taskId"].as_str().unwrap()], |r| r.get(0))
        .unwrap();
    assert!(task.starts_with("printf"));
    let o = q.run(&["task", "logs", "00000000-dead-beef"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Unknown task"));
}

#[tokio::test]
async fn base64_attachments_are_capped_and_stored_as_private_files() {
    use baton::api::{self, Attachment, AttachmentType, Caller, OpenOptions, Queue, StartParams};
    let q = TestQueue::with_overrides(json!({"limits": {"maxBase64Chars": 12}}));
    // The test's own HOME, so no real global config leaks in.
    let paths = baton::config::ConfigPaths::resolve(&q.project, Some(&q.home), Some(&q.home.join(".config")));
    let opts = OpenOptions { cwd: q.project.clone(), db: Some(q.db.clone()), config_paths: Some(paths) };
    let queue = Queue::open(&opts).await.unwrap();
    let caller = Caller { session: None, requested_by: "test".into() };
    let att = |b64: &str| Attachment {
        kind: AttachmentType::Image,
        path: None,
        base64: Some(b64.into()),
        mime_type: Some("image/png".into()),
    };
    let params = |b64: &str| StartParams {
        task: "look".into(),
        attachments: vec![att(b64)],
        auto_spawn: Some(false),
        ..Default::default()
    };
    let e = api::start(&queue, &caller, params("aGVsbG8gd29ybGQ=")).await.unwrap_err();
    assert_eq!(e.to_string(), "Base64 too large");
    let a = api::start(&queue, &caller, params("aGVsbG8=")).await.unwrap();
    assert_eq!(a.worker_id, "vision", "an image attachment selects vision");
    let id = a.task_id.as_str();
    let stored: String = q.raw().query_row("SELECT attachments FROM jobs WHERE id = ?1", [id], |r| r.get(0)).unwrap();
    let paths: Vec<String> = serde_json::from_str(&stored).unwrap();
    let file = std::path::Path::new(&paths[0]);
    assert!(file.starts_with(q.project.join(".baton/attachments").join(id)), "{file:?}");
    assert_eq!(std::fs::read(file).unwrap(), b"hello");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(file).unwrap().permissions().mode() & 0o777, 0o600);
    let e = api::start(&queue, &caller, params("not base64!")).await.unwrap_err();
    assert!(e.to_string().contains("base64"), "{e}");
}

#[test]
fn an_auto_started_dispatcher_exits_when_idle_and_a_second_starter_reuses_it() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(json!({"autoSpawn": true, "dispatcher": {"idleExitMs": 1000}}));
    let a = q.start(&["echo one"]);
    let b = q.start(&["echo two"]);
    let (v, code) = q.json(&["task", "await", &a, &b, "--timeout", "30000"]);
    assert_eq!(code, 0, "{v}");
    // Both starts raced to start a dispatcher; one leads, the lease says which.
    let pid = q.lease_pid().expect("a dispatcher took the lease");
    assert_eq!(q.scalar_i64("SELECT epoch FROM dispatcher_lease"), 1, "one leader, never replaced");
    common::wait_for(30, "the idle dispatcher to exit", || common::is_dead(pid));
    let log = std::fs::read_to_string(q.project.join(".baton/dispatcher.log")).unwrap();
    assert!(log.contains("idle; exiting"), "{log}");
}

/// The first task with nothing installed says what is missing and what to do.
#[test]
fn a_runner_that_is_not_installed_says_whose_it_is_and_how_to_choose_another() {
    let _g = common::heavy();
    let mut cfg = common::default_config();
    cfg.as_object_mut().unwrap().remove("runner");
    cfg["profiles"] = serde_json::json!([{"id": "mine", "name": "m", "model": "m", "purpose": "p", "whenToUse": "w",
        "command": ["no-such-agent-cli", "{prompt}"]}]);
    let q = TestQueue::with_config(cfg);
    q.ok(&["init"]);
    let empty = q.dir.path().join("empty-path");
    std::fs::create_dir(&empty).unwrap();
    let log = std::fs::File::create(q.dir.path().join("d.log")).unwrap();
    let _d = common::Kill(q.cmd().arg("run").env("PATH", &empty).stderr(log).spawn().unwrap());

    let (v, _) = q.json(&["task", "await", &q.start(&["hello"]), "--timeout", "30000"]);
    let e = v["error"].as_str().unwrap_or_default();
    assert!(
        e.starts_with(&format!("Failed to start worker: `opencode` was not found on PATH ({})", empty.display())),
        "{v}"
    );
    assert!(e.contains("It is the default runner (the `opencode` preset)"), "{e}");
    assert!(e.contains("`baton config show`") && e.contains("\"runner\"") && !e.contains("  "), "{e}");

    let (v, _) = q.json(&["task", "await", &q.start(&["--worker", "mine", "hello"]), "--timeout", "30000"]);
    let e = v["error"].as_str().unwrap_or_default();
    assert!(
        e.contains("`no-such-agent-cli` was not found on PATH") && e.contains("the `command` of profile \"mine\""),
        "{e}"
    );
}
