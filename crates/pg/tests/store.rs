//! The PostgreSQL store's statements (`baton-pg`) on a real, throwaway server: registering
//! nodes, enqueueing with dedup, claiming, writing results fenced by the node's epoch, taking
//! over a silent node, and the notification a listener wakes on.

use baton_pg::sqlx::postgres::PgListener;
use baton_rows::job::NewJob;
use baton_rows::jobs::{ClaimLimits, Inserted, Leader, NewWorker, Outcome};
use baton_rows::state::JobState;

// The throwaway server the integration tests use.
#[path = "common/job.rs"]
mod job;
#[path = "../../../tests/it/common/pg.rs"]
mod pg;
use pg::Pg;

fn new_job(id: &str, dedup: Option<&str>) -> NewJob {
    NewJob {
        max_attempts: 2,
        dedup_key: dedup.map(str::to_string),
        labels: Some("{\"team\":\"a\"}".into()),
        ..job::job(id)
    }
}

fn ok(id: &str) -> Outcome {
    Outcome {
        id: id.into(),
        state: JobState::Succeeded,
        response: Some("done".into()),
        response_chars: Some(4),
        error: None,
        report: None,
        exit_code: Some(0),
        output_tail: None,
        tokens: None,
        input_tokens: None,
        output_tokens: None,
        cached_tokens: None,
        cost_usd: Some(0.25),
    }
}

const LIMITS: ClaimLimits = ClaimLimits { max_running: 4, max_workers: 8, max_per_session: 2, batch: 4 };

#[test]
fn a_job_goes_through_postgres_fenced_by_its_nodes_epoch() {
    let Some(pg) = Pg::start() else { return };
    let url = pg.create_db("q");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let pool = baton_pg::open(&url).await.expect("open and migrate");
        // Opening again finds the schema current.
        baton_pg::open(&url).await.expect("open again");
        let mut c = pool.acquire().await.unwrap();
        let mut listener = PgListener::connect(&url).await.unwrap();
        listener.listen("baton").await.unwrap();

        let e1 = baton_pg::nodes::register(&mut c, "n1", "n1-a", "host1", 11, 100).await.unwrap();
        let e2 = baton_pg::nodes::register(&mut c, "n2", "n2-a", "host2", 22, 100).await.unwrap();
        assert_eq!((e1, e2), (1, 1));
        assert_eq!(baton_pg::jobs::insert(&mut c, &new_job("j1", Some("k"))).await.unwrap(), Inserted::New);
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv()).await.unwrap().unwrap();
        assert_eq!((n.channel(), n.payload()), ("baton", "nodes"), "registration notified first");
        assert_eq!(
            baton_pg::jobs::insert(&mut c, &new_job("j2", Some("k"))).await.unwrap(),
            Inserted::Duplicate("j1".into()),
            "one unfinished task per dedup key"
        );
        baton_pg::jobs::insert(&mut c, &NewJob { node: Some("n2".into()), ..new_job("j3", None) }).await.unwrap();

        // n1 claims what it may: not j3 (n2's), not a project it lacks.
        assert!(baton_pg::jobs::claim(&mut c, "n1", 1, 200, LIMITS, &["/elsewhere".into()]).await.unwrap().is_empty());
        let got = baton_pg::jobs::claim(&mut c, "n1", 1, 200, LIMITS, &["/p".into()]).await.unwrap();
        assert_eq!(got.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["j1"]);
        let j1 = &got[0];
        assert_eq!((j1.state, j1.attempt, j1.owner.as_deref(), j1.epoch), (JobState::Running, 1, Some("n1"), Some(1)));
        assert_eq!(j1.labels.as_deref(), Some("{\"team\":\"a\"}"));
        assert!(!j1.after_any);

        // A stale epoch writes nothing; the holder's result lands.
        assert!(baton_pg::jobs::finish_many(&mut c, &[ok("j1")], "n1", 0, 300).await.unwrap().is_empty());
        assert!(baton_pg::jobs::finish_many(&mut c, &[ok("j1")], "n2", 1, 300).await.unwrap().is_empty());
        assert_eq!(baton_pg::jobs::finish_many(&mut c, &[ok("j1")], "n1", 1, 300).await.unwrap(), ["j1"]);
        let j1 = baton_pg::jobs::get(&mut c, "j1").await.unwrap().unwrap();
        assert_eq!((j1.state, j1.response.as_deref(), j1.finished_ms), (JobState::Succeeded, Some("done"), Some(300)));
        assert_eq!(j1.cost_usd, Some(0.25));
        // Its dedup key is free again.
        assert_eq!(baton_pg::jobs::insert(&mut c, &new_job("j4", Some("k"))).await.unwrap(), Inserted::New);

        // n2 claims j3, then falls silent: n1 takes it over, and n2's heartbeat and result are
        // refused from then on.
        let got = baton_pg::jobs::claim(&mut c, "n2", 1, 400, LIMITS, &["/p".into()]).await.unwrap();
        assert_eq!(got.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["j3", "j4"]);
        assert!(baton_pg::nodes::heartbeat(&mut c, "n1", 1, 1_000).await.unwrap());
        assert!(
            baton_pg::nodes::take_over_stale(&mut c, "n1", 7, 500, 1_000).await.unwrap().is_empty(),
            "n1 is not at 7"
        );
        assert_eq!(
            baton_pg::nodes::take_over_stale(&mut c, "n1", 1, 500, 1_000).await.unwrap(),
            [("n2".to_string(), 2)]
        );
        assert!(!baton_pg::nodes::heartbeat(&mut c, "n2", 1, 1_001).await.unwrap(), "n2 lost its epoch");
        assert!(baton_pg::jobs::finish_many(&mut c, &[ok("j3")], "n2", 1, 1_002).await.unwrap().is_empty());
        assert_eq!(baton_pg::jobs::get(&mut c, "j3").await.unwrap().unwrap().state, JobState::Running);
        // n1 recovers what n2 ran: j3 back in the queue while attempts remain, then failed.
        // (j4, which any node may run, is n2's orphan too.)
        let n1 = Leader { owner: "n1", epoch: 1 };
        let orphans = baton_pg::jobs::orphans(&mut c, "n1", 1).await.unwrap();
        assert_eq!(orphans.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["j3", "j4"]);
        let lost = "Worker lost: its node stopped answering";
        assert_eq!(
            baton_pg::jobs::requeue_lost(&mut c, "j3", "n2", 1, n1, 1_100, 0, lost).await.unwrap(),
            Some(JobState::Queued)
        );
        assert_eq!(
            baton_pg::jobs::requeue_lost(&mut c, "j3", "n2", 1, n1, 1_100, 0, lost).await.unwrap(),
            None,
            "already requeued"
        );
        // j3 is n2's own task: n1 cannot claim it; n2, back at a new epoch, can.
        assert!(baton_pg::jobs::claim(&mut c, "n1", 1, 1_200, LIMITS, &["/p".into()]).await.unwrap().is_empty());
        assert_eq!(baton_pg::nodes::register(&mut c, "n2", "n2-b", "host2", 23, 2_000).await.unwrap(), 3);
        let got = baton_pg::jobs::claim(&mut c, "n2", 3, 2_000, LIMITS, &["/p".into()]).await.unwrap();
        assert_eq!((got.len(), got[0].attempt, got[0].error.as_deref()), (1, 2, None));
        // Lost again with no attempt left: failed, with why.
        let n2 = Leader { owner: "n2", epoch: 3 };
        assert_eq!(
            baton_pg::jobs::requeue_lost(&mut c, "j3", "n2", 3, n2, 2_100, 0, lost).await.unwrap(),
            Some(JobState::Failed)
        );
        let j3 = baton_pg::jobs::get(&mut c, "j3").await.unwrap().unwrap();
        assert_eq!((j3.state, j3.error.as_deref(), j3.finished_ms), (JobState::Failed, Some(lost), Some(2_100)));
        // A node that was taken over recovers nothing.
        let stale = Leader { owner: "n2", epoch: 1 };
        assert_eq!(baton_pg::jobs::requeue_lost(&mut c, "j4", "n2", 1, stale, 2_200, 0, lost).await.unwrap(), None);
    });
}

fn worker(id: &str, job: &str, attempt: i64) -> NewWorker {
    NewWorker {
        id: id.into(),
        profile: "coder".into(),
        pid: 4242,
        pid_start: 7,
        session: None,
        job_id: job.into(),
        attempt,
        model: None,
        started_ms: 250,
    }
}

#[test]
fn worker_rows_follow_their_jobs_and_pauses_hold_back_every_node() {
    let Some(pg) = Pg::start() else { return };
    let url = pg.create_db("q");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let pool = baton_pg::open(&url).await.expect("open and migrate");
        let mut c = pool.acquire().await.unwrap();
        baton_pg::nodes::register(&mut c, "n1", "n1-a", "host1", 11, 100).await.unwrap();
        baton_pg::jobs::insert(&mut c, &new_job("j1", None)).await.unwrap();
        baton_pg::jobs::insert(&mut c, &new_job("j2", None)).await.unwrap();

        // A paused profile is held back on every node; `*` pauses them all; a second pause of
        // the same profile keeps the first.
        assert!(baton_pg::pauses::pause(&mut c, "coder", "cli:me", 150).await.unwrap());
        assert!(!baton_pg::pauses::pause(&mut c, "coder", "cli:other", 160).await.unwrap());
        assert!(baton_pg::jobs::claim(&mut c, "n1", 1, 200, LIMITS, &["/p".into()]).await.unwrap().is_empty());
        assert_eq!(baton_pg::pauses::resume(&mut c, Some("coder")).await.unwrap(), 1);
        assert!(baton_pg::pauses::pause(&mut c, baton_pg::pauses::ALL, "cli:me", 170).await.unwrap());
        assert!(baton_pg::jobs::claim(&mut c, "n1", 1, 200, LIMITS, &["/p".into()]).await.unwrap().is_empty());
        let paused = baton_pg::pauses::all(&mut c).await.unwrap();
        assert_eq!(
            paused.iter().map(|p| (p.profile.as_str(), p.paused_by.as_str())).collect::<Vec<_>>(),
            [("*", "cli:me")]
        );
        assert_eq!(baton_pg::pauses::resume(&mut c, None).await.unwrap(), 1);

        // The claimed jobs' worker rows, written by their node; the release trigger ends each
        // with its job.
        let got = baton_pg::jobs::claim(&mut c, "n1", 1, 200, LIMITS, &["/p".into()]).await.unwrap();
        assert_eq!(got.len(), 2);
        let rows = [worker("w1", "j1", 1), worker("w2", "j2", 1)];
        let count = "SELECT count(*) FROM workers";
        baton_pg::jobs::insert_oneshot_workers(&mut c, &rows, "n1", 0).await.unwrap();
        let n: i64 = baton_pg::sqlx::query_scalar(count).fetch_one(&mut *c).await.unwrap();
        assert_eq!(n, 0, "a stale epoch records nothing");
        baton_pg::jobs::insert_oneshot_workers(&mut c, &rows, "n1", 1).await.unwrap();
        let n: i64 = baton_pg::sqlx::query_scalar(count).fetch_one(&mut *c).await.unwrap();
        assert_eq!(n, 2);
        assert_eq!(baton_pg::jobs::finish_many(&mut c, &[ok("j1")], "n1", 1, 300).await.unwrap(), ["j1"]);
        let states: Vec<(String, String, Option<i64>)> =
            baton_pg::sqlx::query_as("SELECT id, state, exit_code FROM workers ORDER BY id")
                .fetch_all(&mut *c)
                .await
                .unwrap();
        assert_eq!(
            states,
            [("w1".to_string(), "stopped".to_string(), Some(0)), ("w2".to_string(), "busy".to_string(), None)]
        );
    });
}
