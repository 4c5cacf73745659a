//! A git worktree per task, with real git in temporary repositories: parallel tasks editing one
//! file, merge (with a conflict), squash and rebase, `.worktreeinclude` and setup, work that
//! survives pruning and discard, kill -9 of the dispatcher, workflows sharing a worktree, and
//! every refusal worded.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{self, TestQueue, is_dead, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// git in `dir`, isolated from the caller's configuration; panics on failure, returns stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let o = git_cmd(dir).args(args).output().expect("run git");
    assert!(o.status.success(), "git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim_end().to_string()
}

fn git_cmd(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C")
        .arg(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE");
    c
}

/// Commit everything in the project as the test's author (the queue's HOME has no identity).
fn commit_all(dir: &Path, message: &str) {
    git(dir, &["add", "-A"]);
    git(dir, &["-c", "user.name=Test", "-c", "user.email=test@example.com", "commit", "-q", "-m", message]);
}

/// The project as a real repository on `main` with `file.txt` committed (and `.baton` ignored
/// by the `.gitignore` baton writes there).
fn repo(q: &TestQueue) {
    std::fs::remove_dir_all(q.project.join(".git")).unwrap();
    git(&q.project, &["init", "-q", "-b", "main"]);
    q.ok(&["init"]);
    std::fs::write(q.project.join("file.txt"), "base\n").unwrap();
    commit_all(&q.project, "initial");
}

fn queue() -> TestQueue {
    let q = TestQueue::with_overrides(json!({"retention": {"minAgeMs": 0, "maxAgeMs": 0, "maxJobs": 0}}));
    repo(&q);
    q
}

fn start_isolated(q: &TestQueue, task: &str) -> String {
    q.start(&["--worker", "coder", "--isolation", "worktree", task])
}

fn await_all(q: &TestQueue, ids: &[&str]) -> Vec<Value> {
    let mut args = vec!["task", "await", "--timeout", "60000"];
    args.extend_from_slice(ids);
    let (v, _) = q.json(&args);
    v.as_array().cloned().unwrap_or_else(|| vec![v])
}

/// (state, path, branch) of a task's worktree row.
fn worktree_row(q: &TestQueue, id: &str) -> (String, PathBuf, String) {
    q.raw()
        .query_row("SELECT state, path, branch FROM worktrees WHERE id = ?1", [id], |r| {
            Ok((r.get(0)?, PathBuf::from(r.get::<_, String>(1)?), r.get(2)?))
        })
        .unwrap()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn two_tasks_edit_one_file_each_in_its_own_worktree_then_merge_and_conflict() {
    let _g = common::heavy();
    let q = queue();
    let main_head = git(&q.project, &["rev-parse", "HEAD"]);
    let a = start_isolated(&q, "sleep 0.3; echo A > file.txt; echo made A");
    let b = start_isolated(&q, "echo B > file.txt; echo extra > new.txt");
    q.dispatcher();
    let done = await_all(&q, &[&a, &b]);
    for r in &done {
        assert_eq!(r["status"], "succeeded", "{r}");
    }
    // The requester's checkout is untouched; each branch holds its own edit, auto-committed.
    assert_eq!(read(&q.project.join("file.txt")), "base\n");
    assert_eq!(git(&q.project, &["rev-parse", "HEAD"]), main_head);
    assert_eq!(git(&q.project, &["status", "--porcelain"]), "");
    let (state_a, path_a, branch_a) = worktree_row(&q, &a);
    let (_, path_b, branch_b) = worktree_row(&q, &b);
    assert_eq!(state_a, "ready");
    assert_eq!(branch_a, format!("baton/{}", &a[..8]));
    assert!(path_a.starts_with(q.project.join(".baton/worktrees")), "{}", path_a.display());
    assert_eq!(git(&q.project, &["show", &format!("{branch_a}:file.txt")]), "A");
    assert_eq!(git(&q.project, &["show", &format!("{branch_b}:file.txt")]), "B");
    assert_eq!(git(&q.project, &["show", &format!("{branch_b}:new.txt")]), "extra");
    // The commit baton made has its fallback author (no identity is configured here).
    assert!(git(&q.project, &["log", "-1", "--format=%an <%ae>", &branch_b]).contains("baton <baton@localhost>"));

    // peek shows where it ran.
    let (peek, _) = q.json(&["task", "peek", &a]);
    let peek = if peek.is_array() { peek[0].clone() } else { peek };
    assert_eq!(peek["worktree"]["branch"], branch_a.as_str());
    assert_eq!(peek["worktree"]["base"], main_head.as_str());
    assert_eq!(peek["worktree"]["target"], "main");
    assert_eq!(peek["worktree"]["path"], path_a.display().to_string());
    assert!(q.ok(&["task", "peek", &a]).contains(&format!("branch {branch_a}")));

    // diff against the base.
    let diff = q.ok(&["task", "diff", &a]);
    assert!(diff.contains("-base") && diff.contains("+A"), "{diff}");
    assert!(q.ok(&["task", "diff", "--stat", &b]).contains("new.txt"));

    // Merge A: main (checked out here) moves, and its working tree with it.
    let (m, code) = q.json(&["task", "merge", &a]);
    assert_eq!(code, 0, "{m}");
    assert_eq!(m["action"], "merge");
    assert_eq!(read(&q.project.join("file.txt")), "A\n");
    let merged = git(&q.project, &["rev-parse", "HEAD"]);
    assert_eq!(m["commit"], merged.as_str());
    assert_eq!(git(&q.project, &["rev-list", "--count", "--merges", &format!("{main_head}..HEAD")]), "1");
    assert_eq!(worktree_row(&q, &a).0, "merged");
    assert!(q.refused(&["task", "merge", &a]).contains("already merged"));

    // B now conflicts on file.txt: nothing changes anywhere.
    let err = q.refused(&["task", "merge", &b]);
    assert!(err.contains("Merge conflict") && err.contains("file.txt"), "{err}");
    assert_eq!(git(&q.project, &["rev-parse", "HEAD"]), merged);
    assert_eq!(read(&q.project.join("file.txt")), "A\n");
    assert_eq!(git(&q.project, &["status", "--porcelain"]), "");
    assert_eq!(read(&path_b.join("file.txt")), "B\n");
    assert_eq!(worktree_row(&q, &b).0, "ready");

    // Discard refuses to lose B's commit, and --force removes directory and branch.
    let err = q.refused(&["task", "discard", &b]);
    assert!(err.contains("holds work") && err.contains("1 commit"), "{err}");
    assert!(path_b.exists());
    q.ok(&["task", "discard", "--force", &b]);
    assert!(!path_b.exists());
    assert_eq!(git(&q.project, &["branch", "--list", &branch_b]), "");
    assert_eq!(worktree_row(&q, &b).0, "discarded");
    // A merged worktree is discarded without --force.
    q.ok(&["task", "discard", &a]);
    assert!(!path_a.exists());
}

#[test]
fn squash_and_rebase_land_linear_history() {
    let _g = common::heavy();
    let q = queue();
    let two_commits = "echo 1 > a.txt && git add a.txt && git -c user.name=Agent -c user.email=agent@example.com \
                       commit -qm 'add a' && echo 2 > b.txt";
    let s = start_isolated(&q, two_commits);
    let r = start_isolated(&q, two_commits.replace("a.txt", "c.txt").replace("b.txt", "d.txt").as_str());
    q.dispatcher();
    for rec in await_all(&q, &[&s, &r]) {
        assert_eq!(rec["status"], "succeeded", "{rec}");
    }
    // main moves on meanwhile (an unrelated file), so rebase has something to replay onto.
    std::fs::write(q.project.join("other.txt"), "other\n").unwrap();
    commit_all(&q.project, "other work");
    let before = git(&q.project, &["rev-parse", "HEAD"]);

    let (sq, code) = q.json(&["task", "merge", "--squash", &s]);
    assert_eq!(code, 0, "{sq}");
    assert_eq!(git(&q.project, &["rev-parse", "HEAD^"]), before, "a squash is one commit on top");
    assert_eq!(git(&q.project, &["rev-list", "--count", "--merges", "HEAD"]), "0");
    assert_eq!(read(&q.project.join("a.txt")), "1\n");
    assert_eq!(read(&q.project.join("b.txt")), "2\n");
    let squashed = git(&q.project, &["rev-parse", "HEAD"]);

    let (rb, code) = q.json(&["task", "merge", "--rebase", &r]);
    assert_eq!(code, 0, "{rb}");
    // Two commits replayed on top, authors kept, no merge commit.
    assert_eq!(git(&q.project, &["rev-list", "--count", &format!("{squashed}..HEAD")]), "2");
    assert_eq!(git(&q.project, &["rev-list", "--count", "--merges", "HEAD"]), "0");
    assert_eq!(git(&q.project, &["log", "-1", "--format=%an", "HEAD^"]), "Agent");
    assert_eq!(git(&q.project, &["log", "-1", "--format=%s", "HEAD^"]), "add a");
    assert_eq!(read(&q.project.join("c.txt")), "1\n");
    assert_eq!(read(&q.project.join("d.txt")), "2\n");
    assert_eq!(git(&q.project, &["status", "--porcelain"]), "");
    // Both worktrees are merged: pruning removes them with their tasks.
    q.ok(&["prune"]);
    assert_eq!(q.scalar_i64("SELECT count(*) FROM jobs"), 0);
    assert_eq!(q.scalar_i64("SELECT count(*) FROM worktrees"), 0);
    assert_eq!(git(&q.project, &["branch", "--list", "baton/*"]), "");
}

#[test]
fn apply_stages_the_changes_without_committing() {
    let _g = common::heavy();
    let q = queue();
    let id = start_isolated(&q, "echo applied > file.txt");
    q.dispatcher();
    assert_eq!(await_all(&q, &[&id])[0]["status"], "succeeded");
    let head = git(&q.project, &["rev-parse", "HEAD"]);
    let (v, code) = q.json(&["task", "apply", &id]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(git(&q.project, &["rev-parse", "HEAD"]), head, "apply commits nothing");
    assert_eq!(git(&q.project, &["diff", "--cached", "--name-only"]), "file.txt");
    assert_eq!(read(&q.project.join("file.txt")), "applied\n");
    assert_eq!(worktree_row(&q, &id).0, "merged");
}

#[test]
fn worktreeinclude_files_are_copied_and_a_failing_setup_fails_the_task() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(json!({
        "profiles": [{"id": "fragile", "name": "Fragile", "model": "m", "purpose": "p", "whenToUse": "w",
                      "isolation": "worktree",
                      "setup": ["sh", "-c", "echo installing deps; echo broken >&2; exit 3"]}]
    }));
    repo(&q);
    std::fs::write(q.project.join(".gitignore"), ".env\nnode_modules/\n").unwrap();
    std::fs::write(q.project.join(".worktreeinclude"), ".env\n").unwrap();
    commit_all(&q.project, "ignore rules");
    std::fs::write(q.project.join(".env"), "SECRET=42\n").unwrap();
    std::fs::create_dir_all(q.project.join("node_modules")).unwrap();
    std::fs::write(q.project.join("node_modules/big.js"), "x").unwrap();

    // config setup for every other profile: it runs in the worktree before the agent.
    let cfg_path = q.project.join(".baton/config.json");
    let mut cfg: Value = serde_json::from_str(&read(&cfg_path)).unwrap();
    cfg["worktrees"] = json!({"setup": ["sh", "-c", "pwd > setup-ran"]});
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();

    let ok = start_isolated(&q, "cat .env; cat setup-ran; test ! -e node_modules && echo no-node-modules");
    let bad = q.start(&["--worker", "fragile", "echo never"]);
    q.dispatcher();
    let done = await_all(&q, &[&ok, &bad]);
    let (_, path, branch) = worktree_row(&q, &ok);
    assert_eq!(done[0]["status"], "succeeded", "{}", done[0]);
    let text = done[0]["responseText"].as_str().unwrap();
    assert!(text.contains("SECRET=42"), "{text}");
    assert!(text.contains(&path.display().to_string()), "setup ran elsewhere: {text}");
    assert!(text.contains("no-node-modules"), "{text}");
    // The copied .env is ignored, so it is not committed; setup's file is.
    assert!(git(&q.project, &["ls-tree", "--name-only", &branch]).lines().all(|f| f != ".env"));

    assert_eq!(done[1]["status"], "failed");
    let err = done[1]["error"].as_str().unwrap();
    assert!(err.contains("Setup command `sh -c"), "{err}");
    assert!(err.contains("exit code 3") && err.contains("installing deps") && err.contains("broken"), "{err}");
    assert_eq!(q.scalar_i64(&format!("SELECT count(*) FROM workers WHERE job_id = '{bad}'")), 0, "no worker ran");
}

#[test]
fn dirty_and_unmerged_worktrees_survive_prune_and_discard() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(json!({
        "retention": {"minAgeMs": 0, "maxAgeMs": 0, "maxJobs": 0},
        "worktrees": {"autoCommit": false}
    }));
    repo(&q);
    let dirty = start_isolated(&q, "echo wip > wip.txt");
    let unmerged = start_isolated(
        &q,
        "echo done > done.txt && git add done.txt && git -c user.name=A -c user.email=a@b commit -qm done",
    );
    let clean = start_isolated(&q, "echo looked around");
    q.dispatcher();
    for r in await_all(&q, &[&dirty, &unmerged, &clean]) {
        assert_eq!(r["status"], "succeeded", "{r}");
    }
    let (_, dirty_path, _) = worktree_row(&q, &dirty);
    let (_, unmerged_path, unmerged_branch) = worktree_row(&q, &unmerged);
    let (_, clean_path, clean_branch) = worktree_row(&q, &clean);

    let (report, _) = q.json(&["prune"]);
    assert_eq!(report["worktrees"], json!([clean]), "{report}");
    assert!(!clean_path.exists());
    assert_eq!(git(&q.project, &["branch", "--list", &clean_branch]), "");
    assert!(dirty_path.join("wip.txt").exists(), "pruning lost uncommitted work");
    assert!(unmerged_path.exists());
    assert_eq!(git(&q.project, &["show", &format!("{unmerged_branch}:done.txt")]), "done");
    // Their tasks stay too (the worktree row names them); the clean one's went.
    let jobs = q.scalar_i64(&format!("SELECT count(*) FROM jobs WHERE id IN ('{dirty}', '{unmerged}')"));
    assert_eq!(jobs, 2);
    assert_eq!(q.scalar_i64(&format!("SELECT count(*) FROM jobs WHERE id = '{clean}'")), 0);

    let err = q.refused(&["task", "discard", &dirty]);
    assert!(err.contains("uncommitted changes") && err.contains("wip.txt"), "{err}");
    let err = q.refused(&["task", "discard", &unmerged]);
    assert!(err.contains(&format!("1 commit on {unmerged_branch} that main lacks")), "{err}");
    assert!(dirty_path.join("wip.txt").exists() && unmerged_path.exists());
    // Merging refuses a dirty worktree instead of leaving its files out.
    assert!(q.refused(&["task", "merge", &dirty]).contains("uncommitted changes"));
}

#[test]
fn kill_9_of_the_dispatcher_mid_task_reuses_the_worktree() {
    let _g = common::heavy();
    let q = queue();
    // The first attempt leaves a mark and hangs; the second finds the mark in the same directory.
    let id =
        start_isolated(&q, "if [ -e attempt-mark ]; then echo second-attempt; else touch attempt-mark; sleep 60; fi");
    let first = q.dispatcher() as i32;
    let (_, path, _) = loop_until_ready(&q, &id);
    wait_for(30, "the first attempt's mark", || path.join("attempt-mark").exists());
    kill(Pid::from_raw(first), Signal::SIGKILL).unwrap();
    wait_for(30, "first dispatcher dead", || is_dead(first));
    q.dispatcher();
    let done = await_all(&q, &[&id]);
    assert_eq!(done[0]["status"], "succeeded", "{}", done[0]);
    assert_eq!(done[0]["attempt"], 2);
    assert!(done[0]["responseText"].as_str().unwrap().contains("second-attempt"));
    let (state, again, _) = worktree_row(&q, &id);
    assert_eq!((state.as_str(), again), ("ready", path));
    assert_eq!(git(&q.project, &["worktree", "list", "--porcelain"]).matches("worktree ").count(), 2);
}

fn loop_until_ready(q: &TestQueue, id: &str) -> (String, PathBuf, String) {
    wait_for(30, "the worktree ready", || worktree_row(q, id).0 == "ready");
    worktree_row(q, id)
}

#[test]
fn a_workflows_four_steps_share_one_worktree_and_see_each_others_commits() {
    let _g = common::heavy();
    let step = |i: usize| {
        json!({"id": format!("s{i}"), "workerId": "coder",
               "prompt": format!("test \"$(git rev-list --count HEAD --not main)\" = {} && echo s{i} >> steps.txt", i - 1)})
    };
    let q = TestQueue::with_overrides(json!({
        "workflows": {"limits": {"maxSteps": 4},
                      "definitions": [{"id": "four", "isolation": "worktree", "steps": [step(1), step(2), step(3), step(4)]}]}
    }));
    repo(&q);
    let run = q.ok(&["workflow", "run", "four", "go"]).trim().to_string();
    q.dispatcher();
    let done = await_all(&q, &[&run]);
    assert_eq!(done[0]["status"], "succeeded", "{}", done[0]);
    let (_, path, branch) = worktree_row(&q, &run);
    assert_eq!(read(&path.join("steps.txt")), "s1\ns2\ns3\ns4\n");
    assert_eq!(git(&q.project, &["rev-list", "--count", &branch, "--not", "main"]), "4");
    // Every step's task names the run's worktree.
    assert_eq!(q.scalar_i64(&format!("SELECT count(*) FROM jobs WHERE worktree_id = '{run}'")), 4);
    assert_eq!(read(&q.project.join("file.txt")), "base\n");
    // The run is merged by its id.
    q.ok(&["task", "merge", "--squash", &run]);
    assert_eq!(read(&q.project.join("steps.txt")), "s1\ns2\ns3\ns4\n");
}

#[test]
fn checkouts_that_cannot_hold_a_worktree_are_refused_clearly() {
    let q = TestQueue::new();
    q.ok(&["init"]);
    // Not a repository.
    std::fs::remove_dir_all(q.project.join(".git")).unwrap();
    let err = q.refused(&["task", "start", "--isolation", "worktree", "true"]);
    assert!(err.contains("needs a git repository") && err.contains("is not inside one"), "{err}");
    // No commits yet.
    git(&q.project, &["init", "-q", "-b", "main"]);
    let err = q.refused(&["task", "start", "--isolation", "worktree", "true"]);
    assert!(err.contains("has no commits yet"), "{err}");
    std::fs::write(q.project.join("f"), "x").unwrap();
    commit_all(&q.project, "one");
    // A base that names nothing, one that looks like an option.
    let err = q.refused(&["task", "start", "--isolation", "worktree", "--base", "nope", "true"]);
    assert!(err.contains("--base \"nope\" names no commit"), "{err}");
    let err = q.refused(&["task", "start", "--isolation", "worktree", "--base=--all", "true"]);
    assert!(err.contains("is not a git revision"), "{err}");
    assert!(q.refused(&["task", "start", "--base", "main", "true"]).contains("only to isolation"));
    // Detached HEAD.
    git(&q.project, &["checkout", "-q", "--detach"]);
    let err = q.refused(&["task", "start", "--isolation", "worktree", "true"]);
    assert!(err.contains("detached") && err.contains("--base BRANCH"), "{err}");
    // ...unless the base names a branch to merge back into.
    let id = q.start(&["--isolation", "worktree", "--base", "main", "true"]);
    assert_eq!(
        q.raw().query_row("SELECT target FROM worktrees WHERE id = ?1", [&id], |r| r.get::<_, String>(0)).unwrap(),
        "main"
    );
    git(&q.project, &["checkout", "-q", "main"]);
    // A dirty tree is said, not refused.
    std::fs::write(q.project.join("f"), "changed").unwrap();
    let o = q.run(&["task", "start", "--isolation", "worktree", "true"]);
    assert!(o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("has uncommitted changes (f)") && stderr.contains("without them"), "{stderr}");
    // A configured directory inside the tracked tree.
    let cfg_path = q.project.join(".baton/config.json");
    let mut cfg: Value = serde_json::from_str(&read(&cfg_path)).unwrap();
    cfg["worktrees"] = json!({"dir": "trees"});
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let err = q.refused(&["task", "start", "--isolation", "worktree", "true"]);
    assert!(err.contains("inside the tracked tree"), "{err}");
    // Nothing was written by the refusals: two tasks, two worktree rows.
    assert_eq!(q.scalar_i64("SELECT count(*) FROM worktrees"), 2);
    assert_eq!(q.job_count(), 2);

    // Bare repository.
    let bare = TestQueue::new();
    std::fs::remove_dir_all(bare.project.join(".git")).unwrap();
    git(&bare.project, &["init", "-q", "--bare"]);
    let err = bare.refused(&["task", "start", "--isolation", "worktree", "true"]);
    assert!(err.contains("is a bare repository"), "{err}");
}

#[test]
fn git_missing_or_failing_is_reported() {
    let _g = common::heavy();
    let q = queue();
    // No git on PATH: the start says so and writes nothing.
    let o = q
        .cmd()
        .env("PATH", "/nonexistent")
        .args(["task", "start", "--isolation", "worktree", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("`git` was not found on PATH"), "{err}");
    assert_eq!(q.job_count(), 0);
    // git failing when the dispatcher creates the worktree: the task fails with git's words.
    let id = start_isolated(&q, "echo never");
    let (_, path, _) = worktree_row(&q, &id);
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(path.join("in-the-way"), "x").unwrap();
    q.dispatcher();
    let done = await_all(&q, &[&id]);
    assert_eq!(done[0]["status"], "failed");
    let err = done[0]["error"].as_str().unwrap();
    assert!(err.starts_with("Worktree not ready: git failed while creating the worktree:"), "{err}");
    assert!(err.contains("already exists"), "{err}");
    // A task without a worktree has nothing to review.
    let plain = q.start(&["true"]);
    assert!(q.refused(&["task", "diff", &plain]).contains("has no worktree"));
}

#[test]
fn worktree_transitions_are_enforced_by_the_database() {
    let q = queue();
    let id = q.start(&["--isolation", "worktree", "true"]);
    let c = q.raw();
    let set = |s: &str| c.execute("UPDATE worktrees SET state = ?1 WHERE id = ?2", [s, &id]);
    assert!(set("merged").unwrap_err().to_string().contains("illegal worktree transition"));
    let e = c.execute("UPDATE worktrees SET branch = 'baton/other' WHERE id = ?1", [&id]).unwrap_err();
    assert!(e.to_string().contains("never change"), "{e}");
    let e = c.execute("UPDATE worktrees SET branch = 'main'", []).unwrap_err();
    assert!(e.to_string().contains("never change") || e.to_string().contains("CHECK"), "{e}");
    let e = c.execute("DELETE FROM worktrees WHERE id = ?1", [&id]).unwrap_err();
    assert!(e.to_string().contains("unfinished task"), "{e}");
    set("ready").unwrap();
    assert!(set("planned").unwrap_err().to_string().contains("illegal worktree transition"));
}

#[test]
fn cancel_stops_a_long_setup() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(json!({
        "profiles": [{"id": "slow", "name": "Slow", "model": "m", "purpose": "p", "whenToUse": "w",
                      "isolation": "worktree", "setup": ["sleep", "600"]}]
    }));
    repo(&q);
    let id = q.start(&["--worker", "slow", "echo never"]);
    q.dispatcher();
    wait_for(30, "the setup running", || {
        std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()).any(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x00600\x00")
                && std::fs::read_link(e.path().join("cwd")).is_ok_and(|d| d.to_string_lossy().contains(&id))
        })
    });
    let started = std::time::Instant::now();
    q.ok(&["task", "cancel", &id]);
    let done = await_all(&q, &[&id]);
    assert_eq!(done[0]["status"], "canceled", "{}", done[0]);
    assert!(started.elapsed().as_secs() < 20, "the cancel waited for the setup");
    // The worktree stays planned (setup never finished) and is kept for a retry to set up again.
    assert_eq!(worktree_row(&q, &id).0, "planned");
}

#[test]
fn merges_started_at_once_go_one_at_a_time() {
    let _g = common::heavy();
    let q = queue();
    let ids: Vec<String> = (0..3).map(|i| start_isolated(&q, &format!("echo {i} > part{i}.txt"))).collect();
    q.dispatcher();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    for r in await_all(&q, &refs) {
        assert_eq!(r["status"], "succeeded", "{r}");
    }
    let before = git(&q.project, &["rev-parse", "HEAD"]);
    // Three processes merge at once: each waits for the merge lock and lands on the last one's
    // result (without it, two would read the same old head and one would fail or be lost).
    let children: Vec<_> = ids
        .iter()
        .map(|id| {
            let mut c = q.cmd();
            c.args(["task", "merge", id]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    for (id, child) in ids.iter().zip(children) {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "merge {id}: {}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(git(&q.project, &["rev-list", "--count", "--merges", &format!("{before}..HEAD")]), "3");
    for i in 0..3 {
        assert_eq!(read(&q.project.join(format!("part{i}.txt"))), format!("{i}\n"));
    }
}
