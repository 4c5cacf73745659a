//! The dispatcher is a child subreaper: a worker's grandchild that leaves its process group is
//! re-parented to the dispatcher and reaped by it (by pid), so no zombies pile up.

use crate::common::{self, TestQueue, wait_for};

/// Zombie children of `parent`.
fn zombie_children(parent: u32) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
            let Some(i) = s.rfind(')') else { return false };
            let f: Vec<&str> = s[i + 2..].split_whitespace().collect();
            f.first() == Some(&"Z") && f.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent)
        })
        .collect()
}

#[test]
fn escaped_grandchildren_are_adopted_and_reaped() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let d = q.dispatcher();
    let out = q.dir.path().join("gc.stat");
    // The grandchild starts its own session (leaving the worker's group), outlives the worker,
    // records its parent, then exits. The worker ends only once the grandchild has left its
    // group: until then it is the worker's straggler, and killing those is the point of
    // `jobs.killStragglers`.
    let left = q.dir.path().join("gc.left");
    let task = format!(
        "setsid sh -c 'touch {left}; sleep 0.5; cat /proc/$$/stat > {out}' & \
         while [ ! -e {left} ]; do sleep 0.01; done; echo started",
        left = left.display(),
        out = out.display()
    );
    let id = q.start(&[&task]);
    let (v, code) = q.json(&["task", "await", &id, "--timeout", "30000"]);
    assert_eq!((v["status"].as_str(), code), (Some("succeeded"), 0), "{v}");
    wait_for(30, "grandchild to record its parent", || std::fs::read_to_string(&out).is_ok_and(|s| s.contains(')')));
    let stat = std::fs::read_to_string(&out).unwrap();
    let ppid: u32 = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(ppid, d, "the grandchild was re-parented to the dispatcher");
    wait_for(30, "no zombie children left on the dispatcher", || zombie_children(d).is_empty());
}
