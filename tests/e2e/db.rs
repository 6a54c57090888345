//! The master's `db/` module against the real PostgreSQL, each test on a fresh migrated database
//! of its own (the `#[sqlx::test]` way, on the shared test cluster): the state machine's arrows,
//! claiming, the dispatcher's candidates, waiting reasons, retries, time-outs, retention and the
//! scheduler's slot lock.

use chrono::{Duration, Utc};
use kiln_master::db::{self, builds, projects, slaves};
use kiln_shared::api::PatchProject;
use kiln_shared::{BuildId, BuildState, SlaveId};
use kiln_tests::Postgres;
use sqlx::PgPool;

async fn fresh() -> PgPool {
    let url = Postgres::shared().new_database();
    let pool = db::connect(db::Target::Url(&url), 4)
        .await
        .expect("connect");
    db::migrate(&pool).await.expect("migrate");
    pool
}

async fn project(pool: &PgPool, name: &str) -> i64 {
    projects::insert(
        pool,
        projects::NewProject {
            name,
            branch_url: "git://h/r.git",
            branch: "main",
            architecture: None,
            tags: &[],
            lost_retries: 1,
            team_id: None,
            visibility: Default::default(),
        },
    )
    .await
    .unwrap()
    .expect("a new project");
    projects::get(pool, name).await.unwrap().unwrap().id
}

async fn patch(pool: &PgPool, id: i64, p: PatchProject) {
    projects::update(pool, id, &p, None, None).await.unwrap();
}

async fn queue(pool: &PgPool, project_id: i64, priority: i32) -> BuildId {
    let mut conn = pool.acquire().await.unwrap();
    builds::insert(
        &mut conn,
        builds::NewBuild {
            project_id,
            trigger: "manual",
            release: None,
            requested_commit: None,
            branch_url: "git://h/r.git",
            branch: "main",
            path: None,
            retry_of: None,
            attempt: 0,
            priority,
            rebuild_of: None,
            release_notes: None,
            requested_by: None,
        },
    )
    .await
    .unwrap()
}

async fn slave(pool: &PgPool, name: &str) -> SlaveId {
    SlaveId(
        slaves::insert(pool, name, &format!("hash-of-{name}"), &[])
            .await
            .unwrap()
            .unwrap(),
    )
}

async fn claim(pool: &PgPool, b: BuildId, s: SlaveId) -> bool {
    let mut tx = pool.begin().await.unwrap();
    let got = builds::claim(&mut tx, b, s).await.unwrap();
    tx.commit().await.unwrap();
    got.is_some()
}

async fn state(pool: &PgPool, b: BuildId) -> BuildState {
    builds::get(pool, b).await.unwrap().unwrap().state()
}

#[tokio::test]
async fn the_state_machine_refuses_wrong_arrows_and_records_every_change() {
    let pool = fresh().await;
    let p = project(&pool, "p").await;
    let (s1, s2) = (slave(&pool, "s1").await, slave(&pool, "s2").await);
    let b = queue(&pool, p, 0).await;
    // queued → succeeded is not an arrow.
    let t = builds::transition(&pool, b, BuildState::Succeeded, Default::default())
        .await
        .unwrap();
    assert_eq!(
        t,
        builds::Transition::Refused {
            current: BuildState::Queued
        }
    );
    assert!(claim(&pool, b, s1).await);
    assert!(!claim(&pool, b, s2).await, "a build is claimed once");
    // Another slave cannot report it running.
    let t = builds::transition(
        &pool,
        b,
        BuildState::Running,
        builds::Change {
            held_by: Some(s2),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        t,
        builds::Transition::Refused {
            current: BuildState::Dispatched
        }
    );
    let t = builds::transition(
        &pool,
        b,
        BuildState::Running,
        builds::Change {
            held_by: Some(s1),
            commit: Some(&"a".repeat(40)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        t,
        builds::Transition::Done {
            from: BuildState::Dispatched,
            slave: Some(s1)
        }
    );
    let row = builds::get(&pool, b).await.unwrap().unwrap();
    assert_eq!(row.commit_sha.as_deref(), Some("a".repeat(40).as_str()));
    assert!(row.started_at.is_some());
    // A failed build needs a reason (CHECK constraint), and terminal states never change.
    assert!(
        builds::transition(&pool, b, BuildState::Failed, Default::default())
            .await
            .is_err()
    );
    let reason = builds::Change {
        reason: Some("exit status 3"),
        ..Default::default()
    };
    builds::transition(&pool, b, BuildState::Failed, reason)
        .await
        .unwrap();
    let again = builds::Change {
        reason: Some("cancelled"),
        ..Default::default()
    };
    let t = builds::transition(&pool, b, BuildState::Cancelled, again)
        .await
        .unwrap();
    assert_eq!(
        t,
        builds::Transition::Refused {
            current: BuildState::Failed
        }
    );
    let events: Vec<(Option<String>, String)> = sqlx::query_as(
        "SELECT from_state, to_state FROM build_events WHERE build_id = $1 ORDER BY id",
    )
    .bind(b.0)
    .fetch_all(&pool)
    .await
    .unwrap();
    let events: Vec<(Option<&str>, &str)> = events
        .iter()
        .map(|(f, t)| (f.as_deref(), t.as_str()))
        .collect();
    assert_eq!(
        events,
        vec![
            (None, "queued"),
            (Some("queued"), "dispatched"),
            (Some("dispatched"), "running"),
            (Some("running"), "failed"),
        ]
    );
    assert_eq!(
        builds::transition(
            &pool,
            BuildId(999_999),
            BuildState::Lost,
            Default::default()
        )
        .await
        .unwrap(),
        builds::Transition::NotFound
    );
}

#[tokio::test]
async fn candidates_are_the_head_of_each_project_with_what_it_needs() {
    let pool = fresh().await;
    let (a, b) = (project(&pool, "a").await, project(&pool, "b").await);
    patch(
        &pool,
        b,
        PatchProject {
            backend: Some(Some("debos".into())),
            max_running: Some(Some(2)),
            ..Default::default()
        },
    )
    .await;
    let a1 = queue(&pool, a, 0).await;
    let a2 = queue(&pool, a, 5).await;
    let _a3 = queue(&pool, a, 0).await;
    let b1 = queue(&pool, b, 0).await;
    let s = slave(&pool, "s").await;
    let b2 = queue(&pool, b, 0).await;
    assert!(claim(&pool, b2, s).await);

    let one = builds::candidates(&pool, 1, None).await.unwrap();
    let heads: Vec<i64> = one.iter().map(|c| c.id).collect();
    assert_eq!(
        heads,
        vec![a2.0, b1.0],
        "per project, the highest priority first"
    );
    let cb = one.iter().find(|c| c.id == b1.0).unwrap();
    assert_eq!(cb.backend.as_deref(), Some("debos"));
    assert_eq!((cb.max_running, cb.running), (Some(2), 1));
    let two = builds::candidates(&pool, 2, None).await.unwrap();
    let ids: Vec<i64> = two.iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![a1.0, a2.0, b1.0]);
    // A round asks for more of only the projects that more than one free slot fits.
    let only_a = builds::candidates(&pool, 2, Some(&[a])).await.unwrap();
    let ids: Vec<i64> = only_a.iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![a1.0, a2.0]);

    let active = builds::active_per_slave(&pool).await.unwrap();
    assert_eq!(active.get(&s), Some(&1));

    // Waiting reasons go to every queued build of the project, once.
    let changed = builds::set_waiting_reason(&pool, a, "no slave is online")
        .await
        .unwrap();
    assert_eq!(changed.len(), 3);
    assert!(builds::set_waiting_reason(&pool, a, "no slave is online")
        .await
        .unwrap()
        .is_empty());
    let head = builds::candidates(&pool, 1, None).await.unwrap();
    assert!(head.iter().all(|c| c.project_id != a || c.unexplained == 0));
    // A build queued since has no reason yet: the head's project counts it as unexplained.
    queue(&pool, a, 0).await;
    let head = builds::candidates(&pool, 1, None).await.unwrap();
    let ca = head.iter().find(|c| c.project_id == a).unwrap();
    assert_eq!((ca.id, ca.unexplained), (a2.0, 1));
}

#[tokio::test]
async fn a_lost_build_is_retried_as_often_as_its_project_allows() {
    let pool = fresh().await;
    let p = project(&pool, "p").await;
    let s = slave(&pool, "s").await;
    let b = queue(&pool, p, 3).await;
    assert!(claim(&pool, b, s).await);
    let lose = |id| {
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            let t = builds::transition_in(
                &mut tx,
                id,
                BuildState::Lost,
                builds::Change {
                    reason: Some("slave gone"),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            assert!(matches!(t, builds::Transition::Done { .. }));
            let r = builds::queue_retry(&mut tx, id).await.unwrap();
            tx.commit().await.unwrap();
            r
        }
    };
    let retry = lose(b).await.expect("lost_retries = 1: one retry");
    let row = builds::get(&pool, retry).await.unwrap().unwrap();
    assert_eq!((row.retry_of, row.attempt, row.priority), (Some(b.0), 1, 3));
    assert!(claim(&pool, retry, s).await);
    assert_eq!(lose(retry).await, None, "no second retry");
}

#[tokio::test]
async fn time_outs_and_retention_follow_the_project_settings() {
    let pool = fresh().await;
    let p = project(&pool, "p").await;
    patch(
        &pool,
        p,
        PatchProject {
            timeout_minutes: Some(Some(10)),
            keep_builds: Some(Some(1)),
            ..Default::default()
        },
    )
    .await;
    let s = slave(&pool, "s").await;
    let running = queue(&pool, p, 0).await;
    assert!(claim(&pool, running, s).await);
    let now = Utc::now();
    assert!(builds::timed_out(&pool, now).await.unwrap().is_empty());
    let over = builds::timed_out(&pool, now + Duration::minutes(11))
        .await
        .unwrap();
    assert_eq!(over, vec![(running, 10)]);

    // Three ended builds (one a release) and the running one: keep_builds = 1 removes the
    // older plain one only; the release and the active build stay.
    let mut ended = vec![];
    for release in [None, Some("v1"), None] {
        let b = queue(&pool, p, 0).await;
        if let Some(r) = release {
            sqlx::query("UPDATE builds SET release = $2 WHERE id = $1")
                .bind(b.0)
                .bind(r)
                .execute(&pool)
                .await
                .unwrap();
        }
        let c = builds::Change {
            reason: Some("cancelled"),
            ..Default::default()
        };
        builds::transition(&pool, b, BuildState::Cancelled, c)
            .await
            .unwrap();
        ended.push(b);
    }
    let expired = builds::expired(&pool, Utc::now()).await.unwrap();
    assert_eq!(expired, vec![ended[0]]);
    builds::delete(&pool, running).await.unwrap();
    assert_eq!(
        state(&pool, running).await,
        BuildState::Dispatched,
        "active builds are never deleted"
    );
}

#[tokio::test]
async fn a_scheduled_slot_is_locked_once_and_only_while_pending() {
    let pool = fresh().await;
    let p = project(&pool, "nightly").await;
    let due_at = Utc::now() - Duration::minutes(1);
    sqlx::query("UPDATE projects SET schedule = 'daily 02:00', next_run = $2 WHERE id = $1")
        .bind(p)
        .bind(due_at)
        .execute(&pool)
        .await
        .unwrap();
    let due = projects::due(&pool, Utc::now()).await.unwrap();
    assert_eq!(due.len(), 1);
    let slot = due[0].next_run;
    let mut first = pool.begin().await.unwrap();
    assert!(projects::lock_slot(&mut first, p, slot).await.unwrap());
    // A second pass meanwhile skips it rather than waiting or queuing twice.
    let mut second = pool.begin().await.unwrap();
    assert!(!projects::lock_slot(&mut second, p, slot).await.unwrap());
    second.rollback().await.unwrap();
    projects::set_next_run(&mut *first, p, Some(due_at + Duration::days(1)))
        .await
        .unwrap();
    first.commit().await.unwrap();
    // Once handled, the old slot is no longer pending.
    let mut third = pool.begin().await.unwrap();
    assert!(!projects::lock_slot(&mut third, p, slot).await.unwrap());
}

#[tokio::test]
async fn slaves_are_found_by_token_hash_and_report_what_they_hold() {
    let pool = fresh().await;
    let p = project(&pool, "p").await;
    let s = slave(&pool, "board-1").await;
    assert!(slaves::insert(&pool, "board-1", "other", &[])
        .await
        .unwrap()
        .is_none());
    let row = slaves::by_token(&pool, "hash-of-board-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.id, row.online), (s.0, false));
    let b = queue(&pool, p, 0).await;
    assert!(claim(&pool, b, s).await);
    let row = slaves::get(&pool, s).await.unwrap().unwrap();
    assert_eq!(row.builds, vec![b.0]);
    let held: Vec<_> = builds::held(&pool, "this-master")
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.build, h.slave, h.name, h.seen_elsewhere))
        .collect();
    assert_eq!(held, vec![(b, s, "board-1".to_string(), None)]);
    assert_eq!(
        builds::active_for_slave(&pool, s).await.unwrap(),
        vec![(b, BuildState::Dispatched)]
    );
}

/// When slaves were last heard from reaches the database in one statement for all of them, and
/// only ever moves forward; going offline keeps the latest time.
#[tokio::test]
async fn last_seen_is_recorded_in_batches_and_only_moves_forward() {
    use chrono::{TimeZone, Utc};
    let pool = fresh().await;
    let (a, b) = (slave(&pool, "a").await, slave(&pool, "b").await);
    let t = |s| Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, s).unwrap();
    slaves::seen_at(&pool, &[(a, t(10)), (b, t(20))])
        .await
        .unwrap();
    let seen = |id| {
        let pool = pool.clone();
        async move { slaves::get(&pool, id).await.unwrap().unwrap().last_seen }
    };
    assert_eq!((seen(a).await, seen(b).await), (Some(t(10)), Some(t(20))));
    slaves::seen_at(&pool, &[(a, t(5)), (b, t(30))])
        .await
        .unwrap();
    assert_eq!(
        (seen(a).await, seen(b).await),
        (Some(t(10)), Some(t(30))),
        "never backwards"
    );
    slaves::went_offline(&pool, a, Some(t(40)), "m")
        .await
        .unwrap();
    slaves::went_offline(&pool, b, Some(t(1)), "m")
        .await
        .unwrap();
    assert_eq!((seen(a).await, seen(b).await), (Some(t(40)), Some(t(30))));
    let row = slaves::get(&pool, a).await.unwrap().unwrap();
    assert!(!row.online);
}
