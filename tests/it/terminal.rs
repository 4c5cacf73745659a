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
