//! The PostgreSQL store's statements beyond a job's life (`store.rs`), each module on a real,
//! throwaway server: activity events and their caps, finish hooks and the node that runs them,
//! server workers (one live per profile and node), workflow runs and steps, worktrees, listing,
//! counting, canceling and pruning jobs, and the nodes' own rows.

use baton_pg::sqlx::{self, PgConnection};
use baton_rows::events::{EventCaps, NewEvent, Writer};
use baton_rows::hooks::{MAX_ATTEMPTS, Pending};
use baton_rows::job::NewJob;
use baton_rows::jobs::{ClaimLimits, Inserted, ListFilter, NewWorker, Outcome};
use baton_rows::state::{EventKind, JobState, RunState, StepState, WorkerKind, WorkerState, WorktreeState};
use baton_rows::workers::{NewServer, Registered, SpawnLimits};
use baton_rows::workflow::{NewRun, NewStep};
use baton_rows::worktrees::NewWorktree;

// The throwaway server the integration tests use.
#[path = "common/job.rs"]
mod job;
#[path = "../../../tests/it/common/pg.rs"]
mod pg;
use pg::Pg;

const LIMITS: ClaimLimits = ClaimLimits { max_running: 16, max_workers: 16, max_per_session: 8, batch: 16 };

fn new_job(id: &str) -> NewJob {
    job::job(id)
}

fn outcome(id: &str, state: JobState) -> Outcome {
    Outcome {
        id: id.into(),
        state,
        response: Some(format!("{id} done")),
        response_chars: Some(8),
        error: (state == JobState::Failed).then(|| "exit 1".to_string()),
        report: None,
        exit_code: Some(if state == JobState::Succeeded { 0 } else { 1 }),
        output_tail: None,
        tokens: Some(12),
        input_tokens: Some(10),
        output_tokens: Some(2),
        cached_tokens: None,
        cost_usd: None,
    }
}

/// A fresh, migrated queue on a throwaway server (None when PostgreSQL is not installed), and
/// `body` run on one connection of it.
fn with_queue(body: impl AsyncFnOnce(&mut PgConnection)) {
    let Some(pg) = Pg::start() else { return };
    let url = pg.create_db("q");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let pool = baton_pg::open(&url).await.expect("open and migrate");
        let mut c = pool.acquire().await.unwrap();
        body(&mut c).await;
    });
    drop(pg);
}

/// Insert `job` (it must be new) and claim it, and only it, for `node` at `epoch`.
async fn running(c: &mut PgConnection, job: NewJob, node: &str, epoch: i64, now: i64) {
    let id = job.id.clone();
    assert_eq!(baton_pg::jobs::insert(c, &NewJob { node: Some(node.into()), ..job }).await.unwrap(), Inserted::New);
    let got = baton_pg::jobs::claim(c, node, epoch, now, LIMITS, &["/p".into()]).await.unwrap();
    assert_eq!(got.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), [id.as_str()]);
}

fn ids(rows: &[baton_rows::job::JobRow]) -> Vec<&str> {
    rows.iter().map(|j| j.id.as_str()).collect()
}

/// The message of a database error (the schema's guards start theirs with `baton: `).
fn db_message(e: baton_pg::Error) -> String {
    match e {
        baton_pg::Error::Sqlx(sqlx::Error::Database(d)) => d.message().to_string(),
        other => panic!("expected a database error, got {other:?}"),
    }
}

fn event(at_ms: i64, kind: EventKind, text: &str) -> NewEvent {
    NewEvent { at_ms, kind, text: text.into(), payload: None }
}

#[test]
fn events_are_appended_by_the_running_attempt_trimmed_to_their_caps_and_read_back() {
    with_queue(async |c| {
        assert_eq!(baton_pg::nodes::register(c, "n1", "n1-a", "h", 1, 100).await.unwrap(), 1);
        running(c, new_job("j1"), "n1", 1, 200).await;
        let w = Writer { job_id: "j1", attempt: 1, owner: "n1", epoch: 1 };
        let roomy = EventCaps { max_events: 100, max_bytes: 1 << 20 };

        let first = [
            NewEvent { payload: Some("{\"tool\":\"grep\"}".into()), ..event(210, EventKind::Tool, "grep foo") },
            event(211, EventKind::Message, "hello"),
            event(212, EventKind::Tool, "sed bar"),
        ];
        assert_eq!(baton_pg::events::append(c, w, &first, roomy).await.unwrap(), 3);
        assert_eq!(baton_pg::events::append(c, w, &[], roomy).await.unwrap(), 0, "nothing to write");
        // A stale epoch, another node or another attempt writes nothing.
        for stale in [Writer { epoch: 0, ..w }, Writer { owner: "n2", ..w }, Writer { attempt: 2, ..w }] {
            assert_eq!(baton_pg::events::append(c, stale, &first, roomy).await.unwrap(), 0);
        }

        let all = baton_pg::events::after(c, "j1", 0, 10).await.unwrap();
        let seen: Vec<(i64, i64, EventKind, &str)> =
            all.iter().map(|e| (e.seq, e.at_ms, e.kind, e.text.as_str())).collect();
        assert_eq!(
            seen,
            [
                (1, 210, EventKind::Tool, "grep foo"),
                (2, 211, EventKind::Message, "hello"),
                (3, 212, EventKind::Tool, "sed bar")
            ]
        );
        assert_eq!(all[0].payload.as_deref(), Some("{\"tool\":\"grep\"}"));
        assert_eq!((all[1].payload.as_deref(), all[1].attempt), (None, 1));
        let page = baton_pg::events::after(c, "j1", 1, 1).await.unwrap();
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [2], "after seq 1, at most one");
        let latest = baton_pg::events::latest_by_kind(c, "j1", 1).await.unwrap();
        assert_eq!(
            latest.iter().map(|e| (e.seq, e.kind)).collect::<Vec<_>>(),
            [(2, EventKind::Message), (3, EventKind::Tool)]
        );
        assert!(baton_pg::events::latest_by_kind(c, "j1", 2).await.unwrap().is_empty());

        // Trimmed to the newest two events, numbering on from the newest.
        let rows = EventCaps { max_events: 2, ..roomy };
        let more = [event(220, EventKind::Plan, "step 1"), event(221, EventKind::Thought, "hmm")];
        assert_eq!(baton_pg::events::append(c, w, &more, rows).await.unwrap(), 2);
        let kept = baton_pg::events::after(c, "j1", 0, 10).await.unwrap();
        assert_eq!(kept.iter().map(|e| (e.seq, e.text.as_str())).collect::<Vec<_>>(), [(4, "step 1"), (5, "hmm")]);

        // Trimmed to the newest events whose text and payload fit the bytes: "ünï" (5 bytes),
        // "tail" and "hmm" make 12, "step 1" would not fit.
        let bytes = EventCaps { max_events: 100, max_bytes: 12 };
        let last = [event(230, EventKind::Other, "tail"), event(231, EventKind::Usage, "ünï")];
        assert_eq!(baton_pg::events::append(c, w, &last, bytes).await.unwrap(), 2);
        let kept = baton_pg::events::after(c, "j1", 0, 10).await.unwrap();
        assert_eq!(
            kept.iter().map(|e| (e.seq, e.text.as_str())).collect::<Vec<_>>(),
            [(5, "hmm"), (6, "tail"), (7, "ünï")]
        );

        // Once the job ended, its attempt writes nothing more.
        baton_pg::jobs::finish(c, &outcome("j1", JobState::Succeeded), "n1", 1, 300).await.unwrap();
        assert_eq!(baton_pg::events::append(c, w, &more, roomy).await.unwrap(), 0);
        assert_eq!(baton_pg::events::after(c, "j1", 0, 10).await.unwrap().len(), 3);
    });
}

/// (attempts, done, exit code, error) of a finish hook's row.
async fn hook_row(c: &mut PgConnection, task_id: &str) -> (i64, bool, Option<i64>, Option<String>) {
    sqlx::query_as("SELECT attempts, done_ms IS NOT NULL, exit_code, error FROM finish_hooks WHERE task_id = $1")
        .bind(task_id)
        .fetch_one(c)
        .await
        .unwrap()
}

#[test]
fn finish_hooks_are_synced_and_run_by_one_node_at_a_time() {
    with_queue(async |c| {
        // n1 started first: it runs the hooks while it lives.
        assert_eq!(baton_pg::nodes::register(c, "n1", "n1-a", "h1", 1, 100).await.unwrap(), 1);
        assert_eq!(baton_pg::nodes::register(c, "n2", "n2-a", "h2", 2, 150).await.unwrap(), 1);
        let argv = vec!["notify".to_string(), "{taskId}".to_string()];
        assert!(!baton_pg::hooks::sync(c, Some(&argv), "n2", 0, 160).await.unwrap(), "a stale epoch writes nothing");
        assert!(baton_pg::hooks::sync(c, Some(&argv), "n2", 1, 160).await.unwrap());
        assert!(!baton_pg::hooks::sync(c, Some(&argv), "n1", 1, 170).await.unwrap(), "unchanged");
        let stored: (String, i64) = sqlx::query_as("SELECT argv, updated_ms FROM hooks WHERE name = 'onFinish'")
            .fetch_one(&mut *c)
            .await
            .unwrap();
        assert_eq!(stored, ("[\"notify\",\"{taskId}\"]".to_string(), 160));

        // Jobs that end queue their hook's run.
        for (id, node, at) in [("a", "n1", 300), ("b", "n2", 310)] {
            running(c, new_job(id), node, 1, 200).await;
            assert!(baton_pg::jobs::finish(c, &outcome(id, JobState::Succeeded), node, 1, at).await.unwrap());
        }
        let pending = baton_pg::hooks::pending(c, 10).await.unwrap();
        let fresh = |id: &str| Pending { task_id: id.into(), attempts: 0 };
        assert_eq!(pending, [fresh("a"), fresh("b")]);
        assert_eq!(baton_pg::hooks::pending(c, 1).await.unwrap(), [fresh("a")]);

        // Only n1, at its epoch, begins them.
        assert!(!baton_pg::hooks::begin(c, "a", "n2", 1, 400).await.unwrap(), "n2 is not the hooks' node");
        assert!(!baton_pg::hooks::begin(c, "a", "n1", 0, 400).await.unwrap(), "a stale epoch begins nothing");
        assert!(baton_pg::hooks::begin(c, "a", "n1", 1, 400).await.unwrap());
        assert_eq!(hook_row(c, "a").await, (1, false, None, None));
        assert!(!baton_pg::hooks::done(c, "a", Some(0), None, "n1", 0, 450).await.unwrap(), "stale epoch");
        assert!(baton_pg::hooks::done(c, "a", Some(0), None, "n1", 1, 450).await.unwrap());
        assert!(!baton_pg::hooks::done(c, "a", Some(3), None, "n1", 1, 460).await.unwrap(), "done once");
        assert_eq!(hook_row(c, "a").await, (1, true, Some(0), None));
        assert!(!baton_pg::hooks::begin(c, "a", "n1", 1, 470).await.unwrap(), "a hook that ran never runs again");

        // A hook begun MAX_ATTEMPTS times without an end (its node kept dying) is given up.
        for _ in 0..MAX_ATTEMPTS {
            assert!(baton_pg::hooks::begin(c, "b", "n1", 1, 500).await.unwrap());
        }
        assert_eq!(baton_pg::hooks::pending(c, 10).await.unwrap(), [Pending { task_id: "b".into(), attempts: 3 }]);
        assert!(!baton_pg::hooks::begin(c, "b", "n2", 1, 510).await.unwrap());
        assert!(!hook_row(c, "b").await.1, "only the hooks' node closes it");
        assert!(!baton_pg::hooks::begin(c, "b", "n1", 1, 510).await.unwrap());
        let (attempts, done, code, error) = hook_row(c, "b").await;
        assert_eq!((attempts, done, code), (3, true, None));
        assert!(error.unwrap().starts_with("gave up"));
        assert!(baton_pg::hooks::pending(c, 10).await.unwrap().is_empty());

        // n1 exits: n2 runs the hooks from then on.
        running(c, new_job("c"), "n2", 1, 600).await;
        assert!(baton_pg::jobs::finish(c, &outcome("c", JobState::Failed), "n2", 1, 700).await.unwrap());
        assert!(baton_pg::nodes::stop(c, "n1", 1, 710).await.unwrap());
        assert!(!baton_pg::hooks::begin(c, "c", "n1", 1, 720).await.unwrap());
        assert!(baton_pg::hooks::begin(c, "c", "n2", 1, 720).await.unwrap());

        // Removing the hook closes what it left pending; removing it again changes nothing.
        running(c, new_job("d"), "n2", 1, 800).await;
        assert!(baton_pg::jobs::finish(c, &outcome("d", JobState::Succeeded), "n2", 1, 900).await.unwrap());
        assert!(baton_pg::hooks::sync(c, None, "n2", 1, 1_000).await.unwrap());
        assert!(!baton_pg::hooks::sync(c, None, "n2", 1, 1_001).await.unwrap());
        for id in ["c", "d"] {
            let (_, done, _, error) = hook_row(c, id).await;
            assert!(done, "{id} closed");
            assert_eq!(error.as_deref(), Some("hooks.onFinish was removed from the configuration"));
        }
        // No hook: an ending queues nothing.
        running(c, new_job("e"), "n2", 1, 1_100).await;
        assert!(baton_pg::jobs::finish(c, &outcome("e", JobState::Succeeded), "n2", 1, 1_200).await.unwrap());
        assert!(baton_pg::hooks::pending(c, 10).await.unwrap().is_empty());
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM finish_hooks").fetch_one(&mut *c).await.unwrap();
        assert_eq!(n, 4);
    });
}

fn server<'a>(id: &'a str, profile: &'a str, owner: &'a str, now: i64) -> NewServer<'a> {
    NewServer { id, profile, owner, epoch: 1, session: None, model: Some("m1"), max_sessions: 2, now }
}

const SPAWN: SpawnLimits = SpawnLimits { max_workers: 8, max_per_session: 2, rate_ms: 0 };

#[test]
fn server_workers_are_one_per_profile_and_node_and_answer_their_nodes_requests() {
    with_queue(async |c| {
        baton_pg::nodes::register(c, "n1", "n1-a", "h1", 1, 100).await.unwrap();
        baton_pg::nodes::register(c, "n2", "n2-a", "h2", 2, 100).await.unwrap();
        use baton_pg::workers::{register, spawned};

        // One live server worker per profile and node: n2 may start its own.
        assert_eq!(register(c, &server("w1", "agent", "n1", 1_000), SPAWN).await.unwrap(), Registered::New);
        assert_eq!(register(c, &server("w2", "agent", "n1", 1_001), SPAWN).await.unwrap(), Registered::Exists);
        assert_eq!(register(c, &server("w3", "agent", "n2", 1_002), SPAWN).await.unwrap(), Registered::New);
        let stale = NewServer { epoch: 0, ..server("w4", "docs", "n1", 1_003) };
        assert_eq!(register(c, &stale, SPAWN).await.unwrap(), Registered::NotLeader);
        // The limits count every node's workers; the spawn rate is each node's own.
        let two = SpawnLimits { max_workers: 2, ..SPAWN };
        assert_eq!(register(c, &server("w4", "docs", "n1", 1_003), two).await.unwrap(), Registered::WorkerLimit);
        let s = NewServer { session: Some("s1"), ..server("w4", "docs", "n2", 1_004) };
        assert_eq!(register(c, &s, SPAWN).await.unwrap(), Registered::New);
        let one = SpawnLimits { max_per_session: 1, ..SPAWN };
        let s = NewServer { session: Some("s1"), ..server("w5", "review", "n1", 1_005) };
        assert_eq!(register(c, &s, one).await.unwrap(), Registered::SessionLimit);
        let slow = SpawnLimits { rate_ms: 10_000, ..SPAWN };
        assert_eq!(
            register(c, &server("w5", "review", "n1", 1_005), slow).await.unwrap(),
            Registered::RateLimited(9_995),
            "n1's last spawn was at 1000"
        );
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM workers").fetch_one(&mut *c).await.unwrap();
        assert_eq!(n, 3, "w1, w3, w4");

        // Its process, then ready: only by its node at its epoch, only while starting.
        assert!(!spawned(c, "w1", 4242, 77, "n2", 1).await.unwrap());
        assert!(!spawned(c, "w1", 4242, 77, "n1", 0).await.unwrap());
        assert!(spawned(c, "w1", 4242, 77, "n1", 1).await.unwrap());
        assert!(!baton_pg::workers::ready(c, "w1", "n2", 1, 1_100).await.unwrap());
        assert!(baton_pg::workers::ready(c, "w1", "n1", 1, 1_100).await.unwrap());
        assert!(!baton_pg::workers::ready(c, "w1", "n1", 1, 1_101).await.unwrap(), "ready once");
        assert!(!spawned(c, "w1", 1, 1, "n1", 1).await.unwrap(), "no longer starting");

        // It takes a server job of its profile that n1 claimed, and is busy with it.
        let job = NewJob { profile: "agent".into(), worker_kind: WorkerKind::Server, ..new_job("sj") };
        running(c, job, "n1", 1, 1_200).await;
        let take = baton_pg::workers::take_session;
        assert!(!take(c, "w1", "sj", 1, "acp-1", "n1", 0, 1_210).await.unwrap(), "stale epoch");
        assert!(take(c, "w1", "sj", 1, "acp-1", "n1", 1, 1_210).await.unwrap());
        let live = baton_pg::workers::live_workers(c).await.unwrap();
        let seen: Vec<(&str, &str, WorkerState, Option<&str>)> =
            live.iter().map(|w| (w.id.as_str(), w.profile.as_str(), w.state, w.job_id.as_deref())).collect();
        assert_eq!(
            seen,
            [
                ("w4", "docs", WorkerState::Starting, None),
                ("w3", "agent", WorkerState::Starting, None),
                ("w1", "agent", WorkerState::Busy, Some("sj")),
            ],
            "newest first"
        );
        let w1 = &live[2];
        assert_eq!(
            (w1.jobs(), w1.kind, w1.pid, w1.max_sessions),
            (vec!["sj".to_string()], WorkerKind::Server, Some(4242), 2)
        );
        assert_eq!((w1.model.as_deref(), w1.last_activity_ms), (Some("m1"), 1_210));
        assert!(
            baton_pg::jobs::worker_pids(c, "sj", 1).await.unwrap().is_empty(),
            "a server worker is not the job's own"
        );

        // Requests each node reads for itself: a cancel of its running job, a stop of its worker.
        assert_eq!(
            baton_pg::jobs::request_cancel(c, "sj", Some("enough"), 1_300).await.unwrap(),
            Some(JobState::Running)
        );
        baton_pg::workers::request_stop(c, &["w3".into(), "nope".into()], 1_310).await.unwrap();
        assert_eq!(baton_pg::workers::owner_requests(c, "n1", 1).await.unwrap(), (vec!["sj".to_string()], vec![]));
        assert_eq!(
            baton_pg::workers::owner_requests(c, "n2", 1).await.unwrap(),
            (vec![], vec![("w3".to_string(), "agent".to_string())])
        );
        assert_eq!(baton_pg::workers::owner_requests(c, "n1", 0).await.unwrap(), (vec![], vec![]));
        baton_pg::workers::request_stop(c, &["w1".into()], 1_320).await.unwrap();
        let (_, stops) = baton_pg::workers::owner_requests(c, "n1", 1).await.unwrap();
        assert_eq!(stops, [("w1".to_string(), "agent".to_string())]);

        // The job ends canceled; the worker's session goes with it and it is ready again.
        assert!(baton_pg::jobs::finish(c, &outcome("sj", JobState::Canceled), "n1", 1, 1_400).await.unwrap());
        let sj = baton_pg::jobs::get(c, "sj").await.unwrap().unwrap();
        assert_eq!((sj.state, sj.error.as_deref()), (JobState::Canceled, Some("Canceled: enough")));
        let w1 = baton_pg::workers::get_many(c, &["w1".into()]).await.unwrap();
        assert_eq!((w1[0].state, w1[0].job_id.as_deref(), w1[0].jobs()), (WorkerState::Ready, None, vec![]));

        // Live server workers by profile and by id, and the count of those still live.
        let by_id = |rows: Vec<baton_rows::workers::ServerRow>| {
            let mut v: Vec<(String, Option<i64>, Option<i64>)> =
                rows.into_iter().map(|r| (r.id, r.pid, r.pid_start)).collect();
            v.sort();
            v
        };
        assert_eq!(
            by_id(baton_pg::workers::live_servers(c, "agent").await.unwrap()),
            [("w1".to_string(), Some(4242), Some(77)), ("w3".to_string(), None, None)]
        );
        assert!(baton_pg::workers::end(c, "w3", WorkerState::Stopped, Some(0), None, 1_500).await.unwrap());
        assert!(!baton_pg::workers::end(c, "w3", WorkerState::Error, None, Some("late"), 1_501).await.unwrap());
        assert_eq!(
            by_id(baton_pg::workers::live_servers(c, "agent").await.unwrap()),
            [("w1".to_string(), Some(4242), Some(77))]
        );
        let all: Vec<String> = ["w1", "w3", "w4", "nope"].map(String::from).into();
        assert_eq!(by_id(baton_pg::workers::servers(c, &all).await.unwrap()).len(), 2, "w1 and w4");
        assert_eq!(baton_pg::workers::count_live(c, &all).await.unwrap(), 2);
        let rows = baton_pg::workers::get_many(c, &all).await.unwrap();
        assert_eq!(
            rows.iter().map(|w| (w.id.as_str(), w.state)).collect::<Vec<_>>(),
            [("w1", WorkerState::Ready), ("w3", WorkerState::Stopped), ("w4", WorkerState::Starting)],
            "by seq"
        );

        // n2 restarts: its worker of the old epoch is stale for n1 to clean up (n1's own is not).
        assert_eq!(baton_pg::nodes::register(c, "n2", "n2-b", "h2", 3, 2_000).await.unwrap(), 2);
        let stale = baton_pg::workers::stale(c, "n1", 1).await.unwrap();
        assert_eq!(stale.iter().map(|w| (w.id.as_str(), w.profile.as_str())).collect::<Vec<_>>(), [("w4", "docs")]);
        assert!(baton_pg::workers::stale(c, "n2", 2).await.unwrap().iter().any(|w| w.id == "w4"));

        // Ended server workers' rows go after a while; live ones stay.
        assert!(baton_pg::workers::prune_ended(c, 1_500).await.unwrap().is_empty(), "ended at 1500, not before");
        assert_eq!(baton_pg::workers::prune_ended(c, 1_501).await.unwrap(), ["w3"]);
        assert_eq!(baton_pg::workers::count_live(c, &all).await.unwrap(), 2);

        // Oneshot workers' pids, for a job's attempt.
        running(c, new_job("oj"), "n1", 1, 2_100).await;
        let ow = NewWorker {
            id: "ow".into(),
            profile: "coder".into(),
            pid: 5151,
            pid_start: 99,
            session: None,
            job_id: "oj".into(),
            attempt: 1,
            model: None,
            started_ms: 2_110,
        };
        baton_pg::jobs::insert_oneshot_workers(c, &[ow], "n1", 1).await.unwrap();
        assert_eq!(baton_pg::jobs::worker_pids(c, "oj", 1).await.unwrap(), [(5151, 99)]);
        assert!(baton_pg::jobs::worker_pids(c, "oj", 2).await.unwrap().is_empty());
    });
}

fn step<'a>(run_id: &'a str, idx: i64, step_id: &'a str) -> NewStep<'a> {
    NewStep {
        run_id,
        idx,
        step_id,
        title: "Step",
        worker_id: "coder",
        prompt: "do it",
        carry: idx > 0,
        timeout_ms: 60_000,
        runner: "claude",
        model: None,
        system_prompt: None,
        prompt_via: "arg",
        env: "{}",
        profile_limit: Some(2),
        attachments: "[]",
        output: None,
        worker_kind: WorkerKind::Oneshot,
        permissions: None,
    }
}

fn run<'a>(id: &'a str, session: Option<&'a str>, now: i64) -> NewRun<'a> {
    NewRun {
        id,
        workflow_id: "review",
        name: "Review",
        task: "review it",
        session,
        requested_by: "cli",
        project_dir: "/p",
        priority: 1,
        max_attempts: 1,
        max_carry_chars: 100,
        worktree_id: None,
        now,
    }
}

#[test]
fn workflow_runs_and_steps_start_end_cancel_and_go_whole() {
    with_queue(async |c| {
        use baton_pg::workflow as wf;
        wf::insert_run(c, &run("r1", None, 10)).await.unwrap();
        wf::insert_run(c, &run("r2", Some("s1"), 20)).await.unwrap();
        for r in ["r1", "r2"] {
            wf::insert_step(c, &step(r, 0, "plan")).await.unwrap();
            wf::insert_step(c, &step(r, 1, "write")).await.unwrap();
        }
        let r1 = wf::get_run(c, "r1").await.unwrap().unwrap();
        assert_eq!((r1.state, r1.priority, r1.carry.as_str(), r1.current_step), (RunState::Running, 1, "", None));
        assert!(wf::get_run(c, "r9").await.unwrap().is_none());
        let steps = wf::steps(c, "r1").await.unwrap();
        assert_eq!(
            steps.iter().map(|s| (s.idx, s.step_id.as_str(), s.state, s.carry)).collect::<Vec<_>>(),
            [(0, "plan", StepState::Pending, 0), (1, "write", StepState::Pending, 1)]
        );
        assert_eq!((steps[0].profile_limit, steps[0].worker_kind), (Some(2), WorkerKind::Oneshot));
        let from = wf::steps_from(c, "r1", 1, 5).await.unwrap();
        assert_eq!(from.iter().map(|s| s.idx).collect::<Vec<_>>(), [1]);
        assert_eq!(wf::steps_from(c, "r1", 0, 1).await.unwrap().len(), 1);
        assert_eq!(
            wf::list_runs(c, None, 10).await.unwrap().iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["r2", "r1"]
        );
        assert_eq!(
            wf::list_runs(c, Some("s1"), 10).await.unwrap().iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["r2"]
        );
        assert_eq!(wf::list_runs(c, None, 1).await.unwrap().len(), 1);
        assert_eq!(wf::ids_with_prefix(c, "r").await.unwrap(), ["r1", "r2"]);
        assert_eq!(wf::ids_with_prefix(c, "r2").await.unwrap(), ["r2"]);
        let mut got: Vec<String> =
            wf::get_runs(c, &["r2".into(), "r1".into(), "x".into()]).await.unwrap().into_iter().map(|r| r.id).collect();
        got.sort();
        assert_eq!(got, ["r1", "r2"]);

        // Step 0 of r1 starts with its job; the run's current step and carry follow.
        let sj = |id: &str, run: &str, idx: i64| NewJob {
            workflow_run_id: Some(run.into()),
            workflow_step: Some(idx),
            ..new_job(id)
        };
        baton_pg::jobs::insert(c, &sj("r1-0", "r1", 0)).await.unwrap();
        assert!(wf::start_step(c, "r1", 0, "r1-0", "from the task", 100).await.unwrap());
        assert!(!wf::start_step(c, "r1", 0, "r1-0", "a second start", 101).await.unwrap(), "started once");
        let r1 = wf::get_run(c, "r1").await.unwrap().unwrap();
        assert_eq!((r1.current_step, r1.carry.as_str()), (Some(0), "from the task"), "a refused start leaves the run");
        let s0 = &wf::steps(c, "r1").await.unwrap()[0];
        assert_eq!(
            (s0.state, s0.job_id.as_deref(), s0.carry_in.as_deref(), s0.started_ms),
            (StepState::Running, Some("r1-0"), Some("from the task"), Some(100))
        );
        assert!(!wf::end_step(c, "r1", 1, StepState::Failed, None, None, 150).await.unwrap(), "step 1 never ran");
        assert!(wf::end_step(c, "r1", 0, StepState::Failed, Some("short"), Some("exit 1"), 150).await.unwrap());
        assert!(!wf::end_step(c, "r1", 0, StepState::Succeeded, None, None, 151).await.unwrap(), "ended once");
        wf::set_carry(c, "r1", "after plan").await.unwrap();
        wf::skip_pending(c, "r1", 160).await.unwrap();
        let steps = wf::steps(c, "r1").await.unwrap();
        assert_eq!(
            steps
                .iter()
                .map(|s| (s.state, s.warning.as_deref(), s.error.as_deref(), s.finished_ms))
                .collect::<Vec<_>>(),
            [
                (StepState::Failed, Some("short"), Some("exit 1"), Some(150)),
                (StepState::Skipped, None, None, Some(160))
            ]
        );
        assert!(wf::end_run(c, "r1", RunState::Failed, None, Some("step plan failed"), 170).await.unwrap());
        assert!(!wf::end_run(c, "r1", RunState::Succeeded, Some("no"), None, 171).await.unwrap(), "ended once");
        wf::set_carry(c, "r1", "too late").await.unwrap();
        let r1 = wf::get_run(c, "r1").await.unwrap().unwrap();
        assert_eq!(
            (r1.state, r1.carry.as_str(), r1.current_step, r1.error.as_deref(), r1.finished_ms),
            (RunState::Failed, "after plan", None, Some("step plan failed"), Some(170))
        );
        assert_eq!(baton_pg::jobs::states(c, &["r1".into(), "r2".into()]).await.unwrap().len(), 2);

        // A cancel request on r2 names the job of its running step; the first reason stays.
        assert_eq!(wf::request_cancel(c, "r2", Some("why"), 200).await.unwrap(), None, "no step runs yet");
        baton_pg::jobs::insert(c, &sj("r2-0", "r2", 0)).await.unwrap();
        assert!(wf::start_step(c, "r2", 0, "r2-0", "", 210).await.unwrap());
        assert_eq!(wf::request_cancel(c, "r2", Some("other"), 220).await.unwrap().as_deref(), Some("r2-0"));
        let r2 = wf::get_run(c, "r2").await.unwrap().unwrap();
        assert_eq!((r2.cancel_requested_ms, r2.cancel_reason.as_deref()), (Some(200), Some("why")));
        // Canceling the step's job cancels the run (the schema's trigger).
        assert_eq!(
            baton_pg::jobs::request_cancel(c, "r2-0", Some("why"), 230).await.unwrap(),
            Some(JobState::Canceled)
        );
        let r2 = wf::get_run(c, "r2").await.unwrap().unwrap();
        assert_eq!((r2.state, r2.finished_ms), (RunState::Canceled, Some(230)));
        let s = wf::steps(c, "r2").await.unwrap();
        assert_eq!(s.iter().map(|s| s.state).collect::<Vec<_>>(), [StepState::Canceled, StepState::Canceled]);

        // Pruning: past max age, or beyond the newest max_runs; never younger than min age.
        assert_eq!(wf::prunable(c, 1_000, 100, 0, 10, 10).await.unwrap(), ["r1", "r2"]);
        assert_eq!(wf::prunable(c, 1_000, 100, 0, 10, 1).await.unwrap(), ["r1"], "at most batch");
        assert_eq!(wf::prunable(c, 1_000, 5_000, 0, 1, 10).await.unwrap(), ["r1"], "beyond the newest one");
        assert!(wf::prunable(c, 1_000, 5_000, 0, 2, 10).await.unwrap().is_empty());
        assert_eq!(wf::prunable(c, 1_000, 100, 800, 10, 10).await.unwrap(), ["r1"], "r2 is younger than 800");
        // The r1-0 job is still queued: a run goes whole or not at all.
        let e = wf::delete_runs(c, &["r1".into()]).await.unwrap_err();
        assert!(db_message(e).contains("an unfinished job cannot be deleted"));
        assert!(wf::get_run(c, "r1").await.unwrap().is_some());
        assert!(baton_pg::jobs::fail_queued(c, "r1-0", "run ended", 300).await.unwrap());
        assert_eq!(wf::delete_runs(c, &["r1".into()]).await.unwrap(), ["r1-0"]);
        assert!(wf::get_run(c, "r1").await.unwrap().is_none());
        assert!(wf::steps(c, "r1").await.unwrap().is_empty());
        assert!(baton_pg::jobs::get(c, "r1-0").await.unwrap().is_none());
        assert!(wf::get_run(c, "r2").await.unwrap().is_some());
    });
}

fn worktree(id: &str) -> NewWorktree {
    NewWorktree {
        id: id.into(),
        repo: "/repo".into(),
        path: format!("/repo/.baton/worktrees/{id}"),
        subdir: "sub".into(),
        branch: format!("baton/{id}"),
        base_commit: "0123456789abcdef0123456789abcdef01234567".into(),
        target: "main".into(),
        auto_commit: true,
        setup: Some("[\"make\",\"setup\"]".into()),
        created_ms: 5,
    }
}

#[test]
fn worktrees_move_along_their_states_and_go_once_unused() {
    with_queue(async |c| {
        use baton_pg::worktrees as wt;
        wt::insert(c, &worktree("t1")).await.unwrap();
        wt::insert(c, &NewWorktree { auto_commit: false, setup: None, ..worktree("t2") }).await.unwrap();
        let t1 = wt::get(c, "t1").await.unwrap().unwrap();
        assert_eq!(
            (t1.state, t1.auto_commit, t1.subdir.as_str(), t1.created_ms),
            (WorktreeState::Planned, true, "sub", 5)
        );
        assert_eq!(t1.setup_argv(), Some(vec!["make".to_string(), "setup".to_string()]));
        let t2 = wt::get(c, "t2").await.unwrap().unwrap();
        assert_eq!((t2.auto_commit, t2.setup), (false, None));
        assert!(wt::get(c, "t3").await.unwrap().is_none());
        assert_eq!(wt::get_many(c, &["t1".into(), "t2".into(), "t3".into()]).await.unwrap().len(), 2);

        assert!(!wt::mark_merged(c, "t1", "squash", Some("abc"), "def", 20).await.unwrap(), "not ready yet");
        assert!(wt::mark_ready(c, "t1", 10).await.unwrap());
        assert!(!wt::mark_ready(c, "t1", 11).await.unwrap(), "ready once");
        assert!(wt::mark_merged(c, "t1", "squash", Some("abc"), "def", 20).await.unwrap());
        assert!(!wt::mark_merged(c, "t1", "merge", None, "x", 21).await.unwrap(), "merged once");
        let t1 = wt::get(c, "t1").await.unwrap().unwrap();
        assert_eq!(
            (t1.state, t1.ready_ms, t1.merged_ms, t1.merged_how.as_deref(), t1.merge_commit.as_deref()),
            (WorktreeState::Merged, Some(10), Some(20), Some("squash"), Some("abc"))
        );
        assert_eq!(t1.merged_head.as_deref(), Some("def"));

        // Worktrees still on disk whose task finished: t2's task (the worktree's id) did at 100.
        let job = NewJob { worktree_id: Some("t2".into()), ..new_job("t2") };
        baton_pg::jobs::insert(c, &job).await.unwrap();
        assert!(wt::of_finished(c, 1_000).await.unwrap().is_empty(), "t2's task has not finished");
        assert!(baton_pg::jobs::fail_queued(c, "t2", "no such profile", 100).await.unwrap());
        assert!(wt::of_finished(c, 99).await.unwrap().is_empty());
        assert_eq!(wt::of_finished(c, 100).await.unwrap().iter().map(|w| w.id.as_str()).collect::<Vec<_>>(), ["t2"]);
        // Its task is kept while its worktree is on disk.
        assert!(baton_pg::jobs::prunable(c, 10_000, 1, 0, 0, 10).await.unwrap().is_empty());

        assert!(wt::mark_discarded(c, "t1", 30).await.unwrap());
        assert!(!wt::mark_discarded(c, "t1", 31).await.unwrap(), "discarded once");
        assert_eq!(wt::get(c, "t1").await.unwrap().unwrap().ended_ms, Some(30));
        assert!(wt::mark_discarded(c, "t2", 200).await.unwrap(), "a planned worktree may be discarded");
        assert!(wt::of_finished(c, 1_000).await.unwrap().is_empty());
        // Discarded rows go once nothing names them: t1 now, t2 after its task.
        assert_eq!(wt::delete_unused(c).await.unwrap(), 1);
        assert!(wt::get(c, "t1").await.unwrap().is_none());
        assert_eq!(baton_pg::jobs::prunable(c, 10_000, 1, 0, 0, 10).await.unwrap(), ["t2"]);
        assert_eq!(baton_pg::jobs::delete(c, &["t2".into()]).await.unwrap(), 1);
        assert_eq!(wt::delete_unused(c).await.unwrap(), 1);
        assert!(wt::get_many(c, &["t1".into(), "t2".into()]).await.unwrap().is_empty());
    });
}

fn filter(sort: &str) -> ListFilter {
    ListFilter { sort: sort.into(), limit: 100, ..ListFilter::default() }
}

#[test]
fn jobs_are_listed_counted_canceled_and_pruned() {
    with_queue(async |c| {
        baton_pg::nodes::register(c, "n1", "n1-a", "h1", 1, 100).await.unwrap();
        use baton_pg::jobs;
        // a: coder, team a, high priority; b: docs in session s1, team b; c: coder, no labels.
        let a =
            NewJob { priority: 5, created_ms: 10, labels: Some("{\"team\":\"a\",\"x\":\"1\"}".into()), ..new_job("a") };
        let b = NewJob {
            profile: "docs".into(),
            session: Some("s1".into()),
            created_ms: 20,
            labels: Some("{\"team\":\"b\"}".into()),
            ..new_job("b")
        };
        let cj = NewJob { created_ms: 30, project_dir: "/q".into(), ..new_job("c") };
        for j in [&a, &b, &cj] {
            assert_eq!(jobs::insert(c, j).await.unwrap(), Inserted::New);
        }
        let mut dirs = jobs::queued_dirs(c).await.unwrap();
        dirs.sort();
        assert_eq!(dirs, ["/p", "/q"]);
        assert_eq!(jobs::pending(c, 0).await.unwrap(), (true, None));

        // a runs (started at 100, now 400), b ends succeeded after 50, c stays queued.
        let got = jobs::claim(c, "n1", 1, 100, LIMITS, &["/p".into()]).await.unwrap();
        assert_eq!(ids(&got), ["a", "b"], "best first");
        assert!(jobs::finish(c, &outcome("b", JobState::Succeeded), "n1", 1, 150).await.unwrap());
        assert_eq!(jobs::queued_dirs(c).await.unwrap(), ["/q"]);

        let list = async |c: &mut PgConnection, f: ListFilter| ids(&jobs::list(c, &f, 400).await.unwrap()).join(",");
        assert_eq!(list(c, filter("newest")).await, "c,b,a");
        assert_eq!(list(c, filter("")).await, "c,b,a", "newest by default");
        assert_eq!(list(c, filter("oldest")).await, "a,b,c");
        assert_eq!(list(c, filter("priority")).await, "a,c,b");
        // a has run for 300 so far, b ran 50, c not at all.
        assert_eq!(list(c, filter("duration")).await, "a,b,c");
        assert_eq!(list(c, ListFilter { limit: 2, ..filter("oldest") }).await, "a,b");
        assert_eq!(list(c, ListFilter { profile: Some("coder".into()), ..filter("newest") }).await, "c,a");
        assert_eq!(list(c, ListFilter { session: Some("s1".into()), ..filter("newest") }).await, "b");
        for (state, want) in [(JobState::Running, "a"), (JobState::Queued, "c"), (JobState::Succeeded, "b")] {
            for sort in ["newest", "oldest", "priority", "duration"] {
                assert_eq!(list(c, ListFilter { state: Some(state), ..filter(sort) }).await, want, "{state} {sort}");
            }
        }
        assert_eq!(list(c, ListFilter { since_ms: Some(20), ..filter("oldest") }).await, "b,c");
        assert_eq!(list(c, ListFilter { until_ms: Some(20), ..filter("oldest") }).await, "a");
        let labels = |l: &[(&str, Option<&str>)]| ListFilter {
            labels: l.iter().map(|(k, v)| (k.to_string(), v.map(str::to_string))).collect(),
            ..filter("oldest")
        };
        assert_eq!(list(c, labels(&[("team", None)])).await, "a,b");
        assert_eq!(list(c, labels(&[("team", Some("b"))])).await, "b");
        assert_eq!(list(c, labels(&[("team", Some("a")), ("x", Some("1"))])).await, "a");
        assert_eq!(list(c, labels(&[("team", Some("a")), ("x", Some("2"))])).await, "");
        assert_eq!(list(c, labels(&[("nope", None)])).await, "");

        assert_eq!(
            jobs::counts(c).await.unwrap(),
            [(JobState::Queued, 1), (JobState::Running, 1), (JobState::Succeeded, 1)]
        );
        assert_eq!(jobs::pending(c, 0).await.unwrap(), (true, None));
        let mut many = ids(&jobs::get_many(c, &["c".into(), "a".into(), "zz".into()]).await.unwrap())
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>();
        many.sort();
        assert_eq!(many, ["a", "c"]);
        let mut st = jobs::states(c, &["a".into(), "b".into(), "zz".into()]).await.unwrap();
        st.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(st, [("a".to_string(), JobState::Running), ("b".to_string(), JobState::Succeeded)]);
        assert_eq!(jobs::ids_with_prefix(c, "").await.unwrap(), ["a", "b"], "at most two");
        assert_eq!(jobs::ids_with_prefix(c, "b").await.unwrap(), ["b"]);
        assert!(jobs::ids_with_prefix(c, "ab").await.unwrap().is_empty());
        assert_eq!(
            jobs::without_row(c, &["a".into(), "gone".into(), "b".into(), "x".into()]).await.unwrap(),
            ["gone", "x"]
        );

        // Cancels: a queued job ends at once, a running one is asked, an unknown one is None,
        // a finished one stays as it is.
        assert_eq!(jobs::request_cancel(c, "c", Some("not needed"), 500).await.unwrap(), Some(JobState::Canceled));
        let cr = jobs::get(c, "c").await.unwrap().unwrap();
        assert_eq!(
            (cr.error.as_deref(), cr.finished_ms, cr.cancel_reason.as_deref()),
            (Some("Canceled: not needed"), Some(500), Some("not needed"))
        );
        assert_eq!(jobs::request_cancel(c, "a", None, 510).await.unwrap(), Some(JobState::Running));
        assert_eq!(jobs::request_cancel(c, "a", Some("again"), 520).await.unwrap(), Some(JobState::Running));
        let ar = jobs::get(c, "a").await.unwrap().unwrap();
        assert_eq!((ar.cancel_requested_ms, ar.cancel_reason), (Some(510), None), "the first request stays");
        assert_eq!(jobs::request_cancel(c, "b", None, 530).await.unwrap(), Some(JobState::Succeeded));
        assert_eq!(jobs::request_cancel(c, "zz", None, 530).await.unwrap(), None);
        assert!(jobs::finish(c, &outcome("a", JobState::Canceled), "n1", 1, 600).await.unwrap());
        assert_eq!(jobs::get(c, "a").await.unwrap().unwrap().error.as_deref(), Some("Canceled"));
        assert!(!jobs::fail_queued(c, "a", "no", 601).await.unwrap(), "a is not queued");
        assert_eq!(jobs::pending(c, 0).await.unwrap(), (false, None));

        // d waits for b (finished) and e (queued, due later): b is kept for it.
        jobs::insert(c, &NewJob { run_after_ms: 5_000, ..new_job("e") }).await.unwrap();
        let d = NewJob { after: Some("[\"b\",\"e\"]".into()), ..new_job("d") };
        jobs::insert(c, &d).await.unwrap();
        assert_eq!(jobs::get(c, "d").await.unwrap().unwrap().state, JobState::Waiting);
        assert_eq!(jobs::pending(c, 1_000).await.unwrap(), (false, Some(5_000)));
        assert_eq!(jobs::pending(c, 5_000).await.unwrap(), (true, None));

        // Finished: b at 150, c at 500, a at 600. Oldest first; b is needed by d.
        assert_eq!(jobs::prunable(c, 1_000, 100, 0, 100, 10).await.unwrap(), ["c", "a"]);
        assert_eq!(jobs::prunable(c, 1_000, 100, 0, 100, 1).await.unwrap(), ["c"], "at most batch");
        assert_eq!(jobs::prunable(c, 1_000, 100, 450, 100, 10).await.unwrap(), ["c"], "a is younger than min age");
        assert!(jobs::prunable(c, 1_000, 10_000, 0, 100, 10).await.unwrap().is_empty(), "none old or beyond max");
        assert_eq!(jobs::prunable(c, 1_000, 10_000, 0, 1, 10).await.unwrap(), ["c"], "beyond the newest one");
        let e = jobs::delete(c, &["b".into()]).await.unwrap_err();
        assert!(db_message(e).contains("a waiting job depends on this one"));
        let e = jobs::delete(c, &["e".into()]).await.unwrap_err();
        assert!(db_message(e).contains("an unfinished job cannot be deleted"));
        assert_eq!(jobs::delete(c, &["c".into(), "a".into(), "zz".into()]).await.unwrap(), 2);
        assert_eq!(jobs::without_row(c, &["a".into(), "b".into(), "c".into()]).await.unwrap(), ["a", "c"]);

        // Once d ends (canceled while it waits), b may go.
        assert_eq!(jobs::request_cancel(c, "d", None, 1_100).await.unwrap(), Some(JobState::Canceled));
        assert_eq!(jobs::prunable(c, 2_000, 100, 0, 100, 10).await.unwrap(), ["b", "d"]);

        // Giving space back: outside a transaction it vacuums, inside one it does nothing.
        jobs::vacuum(c).await.unwrap();
        let mut tx = sqlx::Connection::begin(&mut *c).await.unwrap();
        jobs::vacuum(&mut tx).await.unwrap();
        assert_eq!(jobs::counts(&mut tx).await.unwrap().len(), 3, "the transaction goes on");
        tx.commit().await.unwrap();
        let vacuumed: i64 = sqlx::query_scalar("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'jobs'")
            .fetch_one(&mut *c)
            .await
            .unwrap();
        assert_eq!(vacuumed, 1, "once: the vacuum in the transaction did nothing");
    });
}

#[test]
fn nodes_stop_come_back_when_stale_and_say_who_is_live() {
    with_queue(async |c| {
        use baton_pg::nodes;
        assert_eq!(baton_pg::lease::schema_version(c).await.unwrap(), 13);
        assert!(nodes::get(c, "n1").await.unwrap().is_none());
        assert_eq!(nodes::register(c, "n1", "n1-a", "h1", 11, 100).await.unwrap(), 1);
        assert_eq!(nodes::register(c, "n2", "n2-a", "h2", 22, 100).await.unwrap(), 1);
        let n1 = nodes::get(c, "n1").await.unwrap().unwrap();
        assert_eq!(
            (n1.owner.as_str(), n1.epoch, n1.pid, n1.started_ms, n1.heartbeat_ms),
            ("n1", 1, 11, 100, 100),
            "a node's lease names the node"
        );
        assert!(nodes::heartbeat(c, "n1", 1, 500).await.unwrap());

        // A fresh node is not taken back; a stale one is, at the next epoch.
        assert_eq!(nodes::take_back_stale(c, "n1", "n1-b", "h1", 12, 600, 400).await.unwrap(), None);
        assert_eq!(nodes::get(c, "n1").await.unwrap().unwrap().pid, 11);
        assert_eq!(nodes::take_back_stale(c, "n2", "n2-b", "h2", 23, 600, 400).await.unwrap(), Some(2));
        let n2 = nodes::get(c, "n2").await.unwrap().unwrap();
        assert_eq!((n2.epoch, n2.pid, n2.started_ms, n2.heartbeat_ms), (2, 23, 600, 600));
        assert!(!nodes::heartbeat(c, "n2", 1, 601).await.unwrap(), "the old process lost its epoch");
        assert_eq!(nodes::take_back_stale(c, "n9", "n9-a", "h9", 9, 600, 400).await.unwrap(), None, "no such node");

        let live = nodes::live(c, 450).await.unwrap();
        assert_eq!(live.iter().map(|n| (n.id.as_str(), n.epoch)).collect::<Vec<_>>(), [("n1", 1), ("n2", 2)]);
        assert_eq!((live[1].owner.as_str(), live[1].host.as_str(), live[1].labels.as_deref()), ("n2-b", "h2", None));
        assert_eq!(nodes::live(c, 550).await.unwrap().iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["n2"]);

        // A clean exit, fenced by the epoch: the node is gone from the live ones and its lease.
        assert!(!nodes::stop(c, "n2", 1, 700).await.unwrap());
        assert!(nodes::stop(c, "n2", 2, 700).await.unwrap());
        assert!(!nodes::stop(c, "n2", 2, 701).await.unwrap(), "stopped once");
        assert!(nodes::get(c, "n2").await.unwrap().is_none());
        assert!(!nodes::heartbeat(c, "n2", 2, 702).await.unwrap());
        assert_eq!(nodes::live(c, 0).await.unwrap().iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["n1"]);
        let stopped: (i64, Option<i64>) =
            sqlx::query_as("SELECT epoch, stopped_ms FROM nodes WHERE id = 'n2'").fetch_one(&mut *c).await.unwrap();
        assert_eq!(stopped, (2, Some(700)));
        // A stopped node is taken back whatever its heartbeat says.
        assert_eq!(nodes::take_back_stale(c, "n2", "n2-c", "h2", 24, 800, 0).await.unwrap(), Some(3));
        assert_eq!(nodes::get(c, "n2").await.unwrap().unwrap().epoch, 3);
    });
}
