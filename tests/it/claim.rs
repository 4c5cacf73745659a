//! The claim statement (`queries/jobs/claim.sql`) against a model of what it promises, on random
//! queues: which queued jobs one claim takes, given the profiles' and sessions' running counts,
//! the live workers, pauses, due times and the global limits. Each case is a real queue file the
//! store migrated, filled through SQLite (running jobs with their oneshot workers, ready server
//! workers, pauses), then claimed through `store::jobs::claim` as the dispatcher calls it.

use std::collections::{BTreeSet, HashMap};

use baton::store::{self, Durability, jobs::ClaimLimits};
use proptest::prelude::*;
use rusqlite::params;

const NOW: i64 = 1_000_000;
const PROFILES: [&str; 3] = ["coder", "docs", "explorer"];
const SESSIONS: [&str; 3] = ["s-a", "s-b", "s-c"];

#[derive(Debug, Clone)]
struct Queued {
    priority: i64,
    profile: usize,
    limit: Option<i64>,
    session: Option<usize>,
    server: bool,
    due: bool,
}

#[derive(Debug, Clone)]
struct Case {
    queued: Vec<Queued>,
    /// Running oneshot jobs, each with its busy worker: (profile, session).
    running: Vec<(usize, Option<usize>)>,
    /// Ready server workers (live, no session).
    servers: usize,
    /// A paused profile, or 3 for '*'.
    paused: Option<usize>,
    limits: (i64, i64, i64, i64),
}

fn queued() -> impl Strategy<Value = Queued> {
    (
        0..3i64,
        0..3usize,
        prop::option::weighted(0.4, 1..3i64),
        prop::option::weighted(0.6, 0..3usize),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.9),
    )
        .prop_map(|(priority, profile, limit, session, server, due)| Queued {
            priority,
            profile,
            limit,
            session,
            server,
            due,
        })
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(queued(), 0..48),
        prop::collection::vec((0..3usize, prop::option::weighted(0.6, 0..3usize)), 0..6),
        0..3usize,
        prop::option::weighted(0.15, 0..4usize),
        (1..12i64, 1..12i64, 1..4i64, 1..10i64),
    )
        .prop_map(|(queued, running, servers, paused, limits)| Case { queued, running, servers, paused, limits })
}

/// What the claim promises, from the rows alone: the due, unpaused queued jobs in queue order
/// (higher priority, then older), skipping those whose profile or session is already at its
/// limit, up to the look-ahead; of those, each profile and session gets as many as its limit leaves room for, oneshot
/// jobs as many as free workers; then the sessions take turns (a session's first job before any
/// session's second) within a priority, and the global limits cap the count.
fn model(c: &Case, seqs: &[i64]) -> BTreeSet<i64> {
    let (max_running, max_workers, per_session, batch) = c.limits;
    if c.paused == Some(3) {
        return BTreeSet::new();
    }
    let mut running_in: HashMap<usize, i64> = HashMap::new();
    let mut live_in: HashMap<usize, i64> = HashMap::new();
    for &(p, s) in &c.running {
        *running_in.entry(p).or_default() += 1;
        if let Some(s) = s {
            *live_in.entry(s).or_default() += 1;
        }
    }
    let live_total = (c.running.len() + c.servers) as i64;
    let mut order: Vec<usize> = (0..c.queued.len()).collect();
    order.sort_by_key(|&i| (-c.queued[i].priority, seqs[i]));
    let cand: Vec<usize> = order
        .into_iter()
        .filter(|&i| {
            let q = &c.queued[i];
            q.due
                && c.paused != Some(q.profile)
                && q.limit.is_none_or(|l| running_in.get(&q.profile).copied().unwrap_or(0) < l)
                && (q.session.is_none()
                    || q.server
                    || live_in.get(&q.session.unwrap()).copied().unwrap_or(0) < per_session)
        })
        .collect();
    // The look-ahead: 16 + 8 per free place, at most 256.
    let room = batch.min(max_running - c.running.len() as i64).max(0);
    let cand = &cand[..cand.len().min((16 + 8 * room).min(256) as usize)];
    // Places among the candidates, in queue order.
    let (mut pn, mut sn, mut wn) = (HashMap::new(), HashMap::new(), HashMap::new());
    let mut picked: Vec<(i64, i64, i64)> = Vec::new();
    for &i in cand {
        let q = &c.queued[i];
        let p = pn.entry(q.profile).or_insert(running_in.get(&q.profile).copied().unwrap_or(0));
        *p += 1;
        let s =
            sn.entry((q.session, q.server)).or_insert(q.session.map_or(0, |s| live_in.get(&s).copied().unwrap_or(0)));
        *s += 1;
        let w = wn.entry(q.server).or_insert(0i64);
        *w += 1;
        let fits_profile = q.limit.is_none_or(|l| *p <= l);
        let fits_workers = q.server || ((q.session.is_none() || *s <= per_session) && *w <= max_workers - live_total);
        if fits_profile && fits_workers {
            picked.push((-q.priority, if q.session.is_none() { 0 } else { *s }, seqs[i]));
        }
    }
    picked.sort();
    picked.into_iter().take(room as usize).map(|(_, _, seq)| seq).collect()
}

/// A queue file with the case's rows; the seq of each queued job, in the case's order.
fn fill(db: &std::path::Path, c: &Case) -> Vec<i64> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(
        "INSERT INTO dispatcher_lease (singleton, owner, epoch, pid, started_ms, heartbeat_ms) VALUES (1, 'me', 1, 1, 0, 0)",
    )
    .unwrap();
    let insert = |id: &str, q: &Queued| -> i64 {
        conn.execute(
            "INSERT INTO jobs (id, state, profile, task, session, requested_by, project_dir, argv, priority,
                               max_attempts, run_after_ms, timeout_ms, profile_limit, created_ms, worker_kind)
             VALUES (?1, 'queued', ?2, 't', ?3, 'test', '/', '[]', ?4, 3, ?5, 1000, ?6, 0, ?7)",
            params![
                id,
                PROFILES[q.profile],
                q.session.map(|s| SESSIONS[s]),
                q.priority,
                if q.due { NOW - 5 } else { NOW + 60_000 },
                q.limit,
                if q.server { "server" } else { "oneshot" },
            ],
        )
        .unwrap();
        conn.last_insert_rowid()
    };
    for (n, &(p, s)) in c.running.iter().enumerate() {
        let id = format!("running-{n}");
        let q = Queued { priority: 0, profile: p, limit: None, session: s, server: false, due: true };
        insert(&id, &q);
        conn.execute(
            "UPDATE jobs SET state = 'running', attempt = 1, owner = 'me', epoch = 1, started_ms = ?2 WHERE id = ?1",
            params![id, NOW - 10],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO workers (id, profile, kind, state, owner, epoch, session, job_id, attempt, started_ms, last_activity_ms)
             VALUES (?1, ?2, 'oneshot', 'busy', 'me', 1, ?3, ?4, 1, 0, 0)",
            params![format!("w-{n}"), PROFILES[p], s.map(|s| SESSIONS[s]), id],
        )
        .unwrap();
    }
    for (n, profile) in PROFILES.iter().enumerate().take(c.servers) {
        conn.execute(
            "INSERT INTO workers (id, profile, kind, state, owner, epoch, started_ms, last_activity_ms)
             VALUES (?1, ?2, 'server', 'starting', 'me', 1, 0, 0)",
            params![format!("srv-{n}"), profile],
        )
        .unwrap();
        conn.execute("UPDATE workers SET state = 'ready' WHERE id = ?1", params![format!("srv-{n}")]).unwrap();
    }
    if let Some(p) = c.paused {
        let name = if p == 3 { "*" } else { PROFILES[p] };
        conn.execute("INSERT INTO pauses (profile, paused_ms, paused_by) VALUES (?1, 0, 'test')", params![name])
            .unwrap();
    }
    c.queued.iter().enumerate().map(|(n, q)| insert(&format!("queued-{n}"), q)).collect()
}

fn claim(c: &Case) -> (BTreeSet<i64>, BTreeSet<i64>) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("baton.db");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let st = rt.block_on(store::Store::open(&db, &dir.path().join("migrate.lock"), Durability::Normal)).unwrap();
    let seqs = fill(&db, c);
    let (max_running, max_workers, max_per_session, batch) = c.limits;
    let limits = ClaimLimits { max_running, max_workers, max_per_session, batch };
    let rows = rt.block_on(async {
        let mut conn = st.conn().await.unwrap();
        store::jobs::claim(&mut conn, "me", 1, NOW, limits).await.unwrap()
    });
    for r in &rows {
        assert_eq!((r.owner.as_deref(), r.epoch, r.attempt), (Some("me"), Some(1), 1), "{r:?}");
    }
    let got: BTreeSet<i64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(got.len(), rows.len(), "a job claimed twice");
    rt.block_on(st.close());
    (got, model(c, &seqs))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn one_claim_takes_what_the_limits_allow_in_queue_order(c in case()) {
        let (got, want) = claim(&c);
        prop_assert_eq!(got, want);
    }
}

/// A replaced leader (another owner or an older epoch) claims nothing, however much is queued.
#[test]
fn a_replaced_leader_claims_nothing() {
    let c = Case {
        queued: vec![Queued { priority: 0, profile: 0, limit: None, session: None, server: false, due: true }; 3],
        running: vec![],
        servers: 0,
        paused: None,
        limits: (8, 8, 2, 8),
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("baton.db");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let st = rt.block_on(store::Store::open(&db, &dir.path().join("migrate.lock"), Durability::Normal)).unwrap();
    fill(&db, &c);
    let limits = ClaimLimits { max_running: 8, max_workers: 8, max_per_session: 2, batch: 8 };
    rt.block_on(async {
        let mut conn = st.conn().await.unwrap();
        assert!(store::jobs::claim(&mut conn, "other", 1, NOW, limits).await.unwrap().is_empty());
        assert!(store::jobs::claim(&mut conn, "me", 0, NOW, limits).await.unwrap().is_empty());
        assert_eq!(store::jobs::claim(&mut conn, "me", 1, NOW, limits).await.unwrap().len(), 3);
    });
}

/// A claim looks 16 + 8 per free place past the head of the queue: two free places, 40 queued
/// jobs of a profile limited to one at a time, then one of another profile. The first claim
/// takes one of the first profile (the rest it skips, and the other job is past its look-ahead);
/// the next claim skips the whole profile at its limit and takes the other one.
#[test]
fn a_profile_at_its_limit_is_skipped_by_the_next_claim() {
    let limited = Queued { priority: 0, profile: 0, limit: Some(1), session: None, server: false, due: true };
    let mut queued = vec![limited; 40];
    queued.push(Queued { priority: 0, profile: 1, limit: None, session: None, server: false, due: true });
    let c = Case { queued, running: vec![], servers: 0, paused: None, limits: (2, 8, 2, 2) };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("baton.db");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let st = rt.block_on(store::Store::open(&db, &dir.path().join("migrate.lock"), Durability::Normal)).unwrap();
    let seqs = fill(&db, &c);
    let (first, second) = rt.block_on(async {
        let mut conn = st.conn().await.unwrap();
        let first = store::jobs::claim(
            &mut conn,
            "me",
            1,
            NOW,
            ClaimLimits { max_running: 2, max_workers: 8, max_per_session: 2, batch: 2 },
        )
        .await
        .unwrap();
        let second = store::jobs::claim(
            &mut conn,
            "me",
            1,
            NOW,
            ClaimLimits { max_running: 2, max_workers: 8, max_per_session: 2, batch: 1 },
        )
        .await
        .unwrap();
        (first, second)
    });
    assert_eq!(first.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![seqs[0]]);
    assert_eq!(second.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![seqs[40]]);
    assert_eq!(model(&c, &seqs), BTreeSet::from([seqs[0]]));
}
