//! The terminal face: shell completions (checked by the shells that are installed) and man pages.

use std::process::Command;

use crate::common::TestQueue;

fn custom_profile_queue() -> TestQueue {
    TestQueue::with_overrides(serde_json::json!({
        "profiles": [{"id": "reviewer", "name": "Reviewer", "model": "m", "purpose": "Reviews diffs", "whenToUse": "after a change"}]
    }))
}

#[test]
fn completions_generate_for_each_shell_with_the_projects_profiles() {
    let q = custom_profile_queue();
    for (shell, marker) in [("bash", "_baton()"), ("zsh", "#compdef baton"), ("fish", "complete -c baton")] {
        let script = q.ok(&["completions", shell]);
        assert!(script.contains(marker), "{shell}: no {marker} in\n{script}");
        for word in ["reviewer", "coder", "roocode-boomerang", "--after", "pause"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
        // The shell itself reads the script when it is installed.
        let file = q.dir.path().join(format!("baton.{shell}"));
        std::fs::write(&file, &script).unwrap();
        match Command::new(shell).arg("-n").arg(&file).output() {
            Ok(o) => assert!(o.status.success(), "{shell} -n: {}", String::from_utf8_lossy(&o.stderr)),
            Err(_) => println!("SKIP syntax check of the {shell} script: {shell} is not installed"),
        }
    }
    let err = q.refused(&["completions", "tcsh"]);
    assert!(err.contains("tcsh") && err.contains("bash"), "{err}");
    assert!(!q.db.exists(), "completions open no queue");
}

#[test]
fn man_prints_a_page_and_writes_one_per_command() {
    let q = TestQueue::new();
    let page = q.ok(&["man"]);
    assert!(page.contains(".TH baton 1"), "{page}");
    assert!(page.contains("durable task queue"), "{page}");
    let dir = q.dir.path().join("man");
    q.ok(&["man", "--dir", dir.to_str().unwrap()]);
    for name in ["baton.1", "baton-task-start.1", "baton-task-list.1", "baton-pause.1"] {
        assert!(dir.join(name).is_file(), "{name} missing");
    }
    // man renders it (when man is installed), options and all.
    match Command::new("man").arg("-l").arg(dir.join("baton-task-start.1")).env("MANWIDTH", "100").output() {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(text.contains("--after") && text.contains("--label"), "{text}");
        }
        _ => println!("SKIP rendering with man -l: man is not installed or failed"),
    }
}

/// `baton <args>` in a pseudo-terminal (util-linux `script`); what the terminal showed.
fn on_a_pty(q: &TestQueue, args: &str) -> Option<String> {
    let mut c = Command::new("script");
    q.isolate(&mut c);
    c.args(["-qefc", &format!("{} {args}", crate::common::BIN), "/dev/null"]);
    match c.output() {
        Ok(o) => Some(String::from_utf8_lossy(&o.stdout).into_owned()),
        Err(_) => {
            println!("SKIP the pty half: util-linux `script` is not installed");
            None
        }
    }
}

#[test]
fn await_shows_a_spinner_on_a_terminal_and_nothing_on_a_pipe() {
    let _g = crate::common::heavy();
    let q = TestQueue::new();
    q.dispatcher();
    let id = q.start(&["--worker", "coder", "echo first-step; sleep 2; echo done"]);
    if let Some(screen) = on_a_pty(&q, &format!("task await {id} --timeout 20000")) {
        assert!(screen.contains("1 unfinished"), "{screen}");
        assert!(screen.contains("00:00:0"), "elapsed time shown: {screen}");
        let shown = format!("{} running first-step", &id[..8]);
        assert!(screen.contains(&shown), "the running task's last output shown: {screen}");
        assert!(screen.contains("succeeded"), "{screen}");
    }
    let again = q.start(&["--worker", "coder", "sleep 1; echo again"]);
    let o = q.run(&["task", "await", &again, "--timeout", "20000"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("unfinished"), "no spinner on a pipe: {err}");
    let third = q.start(&["--worker", "coder", "sleep 1; echo third"]);
    if let Some(screen) = on_a_pty(&q, &format!("task await {third} --timeout 20000 --json")) {
        assert!(!screen.contains("unfinished"), "no spinner with --json: {screen}");
        assert!(screen.contains("\"succeeded\""), "{screen}");
    }
}
