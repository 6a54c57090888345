//! Upgrades and backups (`docs/operations.md`): a database at the previous schema, filled
//! through it, is upgraded by the current master with every project, build, log and artifact
//! intact, and `kiln-master migrate --check` says beforehand what will happen; `/api/health`
//! tells a database whose schema is not the master's; a `pg_dump` and a copy of the storage dir
//! restore into a master that serves the same build, log and artifacts.

use kiln_shared::api::{Artifact, Build, Project};
use kiln_shared::BuildState;
use kiln_tests::{Farm, FarmOptions, GitServer, Postgres};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::migrate::Migrator;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The PostgreSQL client tools matching the test cluster (the newest server installed).
fn pg_tool(tool: &str) -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL binaries in /usr/lib/postgresql")
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, b): &(u32, PathBuf)| b.join(tool).exists())
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("no /usr/lib/postgresql/*/bin/{tool}"))
        .1
        .join(tool)
}

/// `kiln-master --config CONFIG ARGS…`, run to its end.
fn kiln_master(config: &Path, args: &[&str]) -> Output {
    Command::new(kiln_tests::bin_dir().join("kiln-master"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("KILN_LOG", "warn")
        .output()
        .expect("running kiln-master")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `migrate --check`: its exit code, stdout and stderr.
fn check(config: &Path) -> (i32, String, String) {
    let out = kiln_master(config, &["migrate", "--check"]);
    let (o, e) = text(&out);
    (out.status.code().expect("an exit code"), o, e)
}

/// Polls `/api/health` (public) until `pred` holds for its status and body; the body.
async fn wait_health(farm: &Farm, what: &str, pred: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = (0, Value::Null);
    loop {
        if let Ok(r) = farm.http.get(farm.api("/api/health")).send().await {
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            if pred(status, &body) {
                return body;
            }
            last = (status, body);
        }
        assert!(
            Instant::now() < deadline,
            "health never became {what}; last: {} {}",
            last.0,
            last.1
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Writes a private file, making its directory.
fn put(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Copies a directory tree (files and directories; storage holds nothing else).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let kind = e.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else if kind.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Options for a master on `url` keeping its logs and artifacts in `storage`.
fn on(url: &str, storage: &Path) -> FarmOptions {
    FarmOptions {
        database_url: Some(url.to_string()),
        extra_master_toml: format!("storage_dir = \"{}\"\n", storage.display()),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_upgrade_keeps_every_project_build_log_and_artifact_and_check_says_what_it_will_do() {
    let pg = Postgres::shared();
    let url = pg.new_database();
    // The previous release's schema: this version's migrations but the newest, applied by
    // sqlx as that release's master did.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let mut previous = Migrator::new(dir.as_path()).await.expect("the migrations");
    let all = previous.migrations.to_vec();
    let newest = all.last().expect("migrations").clone();
    previous.migrations = Cow::Owned(all[..all.len() - 1].to_vec());
    let before = &all[all.len() - 2];
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    previous.run(&pool).await.expect("the previous schema");

    // Data written through the previous schema, with its files where the master keeps them.
    let project: i64 = sqlx::query_scalar(
        "INSERT INTO projects (name, branch_url, branch, tags, schedule, next_run)
         VALUES ('board', 'https://git.example.org/board.git', 'main', '{imx6}', 'daily 03:00',
                 now() + interval '1 day')
         RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let log = (1..=500).map(|i| format!("step {i}\n")).collect::<String>();
    let image: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut builds = vec![];
    for (state, reason, release) in [
        ("succeeded", None, Some("v1.0")),
        ("failed", Some("E: Unable to locate package nope"), None),
    ] {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO builds (project_id, state, reason, trigger, release, commit_sha,
                                 branch_url, branch, log_lines, log_bytes, requested_by,
                                 started_at, finished_at)
             VALUES ($1, $2, $3, 'manual', $4, $5, 'https://git.example.org/board.git', 'main',
                     500, $6, 'alice', now() - interval '5 minutes', now())
             RETURNING id",
        )
        .bind(project)
        .bind(state)
        .bind(reason)
        .bind(release)
        .bind("a".repeat(40))
        .bind(log.len() as i64)
        .fetch_one(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO build_events (build_id, from_state, to_state, reason)
             VALUES ($1, NULL, 'queued', NULL), ($1, 'running', $2, $3)",
        )
        .bind(id)
        .bind(state)
        .bind(reason)
        .execute(&pool)
        .await
        .unwrap();
        builds.push(id);
    }
    let good = builds[0];
    sqlx::query(
        "INSERT INTO artifacts (build_id, name, size, sha256) VALUES ($1, 'board.img', $2, $3)",
    )
    .bind(good)
    .bind(image.len() as i64)
    .bind(sha256(&image))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let data = kiln_tests::tempdir("kiln-upgrade-");
    let storage = data.path().join("storage");
    for id in &builds {
        put(&storage.join(format!("builds/{id}/log")), log.as_bytes());
    }
    put(
        &storage.join(format!("builds/{good}/artifacts/board.img")),
        &image,
    );

    // What the upgrade will do, before it is done; nothing changes.
    let config = data.path().join("check.toml");
    std::fs::write(
        &config,
        format!("version = 1\n[database]\nurl = \"{url}\"\n"),
    )
    .unwrap();
    let (code, out, err) = check(&config);
    assert_eq!(code, 1, "pending migrations exit 1:\n{out}{err}");
    let pending = format!("pending {} ({})", newest.version, newest.description);
    assert!(
        out.contains(&pending),
        "names the pending migration:\n{out}"
    );
    assert!(
        out.contains(&format!(
            "applied {} ({})",
            before.version, before.description
        )),
        "lists the applied ones:\n{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("applied ")).count(),
        all.len() - 1,
        "{out}"
    );
    let (code, out2, _) = check(&config);
    assert_eq!(
        (code, out2.as_str()),
        (1, out.as_str()),
        "--check changed nothing"
    );

    // The current master upgrades it at start and finds everything.
    let started = Instant::now();
    let farm = Farm::with(on(&url, &storage)).await;
    eprintln!("upgrade and start: {:?}", started.elapsed());
    let projects: Vec<Project> = farm.get("/api/projects").await;
    assert_eq!(projects.len(), 1);
    assert_eq!(projects[0].name, "board");
    assert_eq!(projects[0].tags, ["imx6"]);
    let b: Build = farm.get(&format!("/api/builds/{good}")).await;
    assert_eq!(b.state, BuildState::Succeeded);
    assert_eq!(b.release.as_deref(), Some("v1.0"));
    assert_eq!(b.commit.as_deref(), Some("a".repeat(40).as_str()));
    let bad: Build = farm.get(&format!("/api/builds/{}", builds[1])).await;
    assert_eq!(bad.state, BuildState::Failed);
    assert_eq!(
        bad.reason.as_deref(),
        Some("E: Unable to locate package nope")
    );
    for id in &builds {
        assert_eq!(
            farm.log(kiln_shared::BuildId(*id)).await,
            log,
            "log of {id}"
        );
    }
    let arts: Vec<Artifact> = farm.get(&format!("/api/builds/{good}/artifacts")).await;
    assert_eq!(arts.len(), 1);
    assert_eq!(arts[0].name, "board.img");
    assert_eq!(arts[0].sha256, sha256(&image));
    let got = farm.download(kiln_shared::BuildId(good), "board.img").await;
    assert_eq!(sha256(&got), sha256(&image), "the artifact's bytes");

    let (code, out, err) = check(farm.config_path());
    assert_eq!(code, 0, "nothing pending after the upgrade:\n{out}{err}");
    assert!(!out.contains("pending "), "{out}");
    assert!(out.contains("nothing to do"), "{out}");
    let health = wait_health(&farm, "ok", |s, _| s == 200).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(
        health["schema"],
        format!(
            "current (migration {} ({}))",
            newest.version, newest.description
        )
    );
}

/// Health against the schema: one migration behind (the newest undone, as a database restored
/// from before an upgrade under a running master would be), a migration changed after it was
/// applied, one only a newer master knows; `migrate --check` agrees, `kiln-master migrate`
/// mends what it can. And an unreachable database is named without its password.
#[tokio::test]
async fn health_names_a_pending_changed_or_unknown_migration_until_it_is_mended() {
    let farm = Farm::start().await;
    let db = farm.database_name().expect("an external database");
    let pg = Postgres::shared();
    let pool = sqlx::PgPool::connect(&kiln_tests::pg::url_for(&pg.socket_dir, &db))
        .await
        .unwrap();
    let newest = kiln_master::db::MIGRATOR.iter().last().expect("migrations");
    let newest = format!("{} ({})", newest.version, newest.description);
    let ok = wait_health(&farm, "ok", |s, _| s == 200).await;
    assert_eq!(
        ok["schema"],
        format!("current (migration {newest})"),
        "{ok}"
    );

    // Migration 11 undone (landed migrations never change, so this is what it made; the ones
    // after it do not touch its table and column), as a database restored from before an
    // upgrade under a running master would be.
    let mut tx = pool.begin().await.unwrap();
    for sql in [
        "DROP TABLE build_records",
        "ALTER TABLE projects DROP COLUMN source_rewrites",
        "DELETE FROM _sqlx_migrations WHERE version = 11",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    let h = wait_health(&farm, "503", |s, _| s == 503).await;
    assert_eq!(h["status"], "unavailable");
    assert_eq!(h["database"], "up");
    let at = if newest.starts_with("11 ") {
        "10 (notifications)".to_string()
    } else {
        newest.clone()
    };
    assert_eq!(
        h["error"],
        format!("the database is at migration {at}; this master needs 11 (image record): run `kiln-master migrate`")
    );
    let (code, out, _) = check(farm.config_path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("pending 11 (image record)"), "{out}");
    let out = kiln_master(farm.config_path(), &["migrate"]);
    let (o, e) = text(&out);
    assert!(out.status.success(), "migrate: {o}{e}");
    assert!(o.contains("applied migration 11 (image record)"), "{o}");
    wait_health(&farm, "ok again", |s, _| s == 200).await;

    // A migration changed after it was applied.
    let original: Vec<u8> =
        sqlx::query_scalar("SELECT checksum FROM _sqlx_migrations WHERE version = 7")
            .fetch_one(&pool)
            .await
            .unwrap();
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 7")
        .execute(&pool)
        .await
        .unwrap();
    let h = wait_health(&farm, "503", |s, _| s == 503).await;
    let e = h["error"].as_str().unwrap();
    assert!(
        e.starts_with("migration 7 (unique release) was changed after it was applied"),
        "{h}"
    );
    let (code, _, err) = check(farm.config_path());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("migration 7 (unique release) was changed"),
        "{err}"
    );
    let out = kiln_master(farm.config_path(), &["migrate"]);
    assert!(!out.status.success(), "migrate refuses a changed migration");
    assert!(
        text(&out)
            .1
            .contains("migration 7 (unique release) was changed"),
        "{}",
        text(&out).1
    );
    sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = 7")
        .bind(&original)
        .execute(&pool)
        .await
        .unwrap();
    wait_health(&farm, "ok again", |s, _| s == 200).await;

    // A migration only a newer master knows.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99, 'from the future', true, '\\x01', 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let h = wait_health(&farm, "503", |s, _| s == 503).await;
    assert!(
        h["error"].as_str().unwrap().starts_with(
            &format!("the database is at migration 99 (from the future), which this master does not know (it knows up to {newest})")
        ),
        "{h}"
    );
    let (code, _, err) = check(farm.config_path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("migration 99 (from the future)"), "{err}");
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 99")
        .execute(&pool)
        .await
        .unwrap();
    wait_health(&farm, "ok again", |s, _| s == 200).await;
    let (code, out, err) = check(farm.config_path());
    assert_eq!(code, 0, "{out}{err}");

    // A database that cannot be reached: exit 2, naming where it looked, never the password.
    let port = kiln_tests::free_port();
    let dir = kiln_tests::tempdir("kiln-unreachable-");
    let config = dir.path().join("kiln.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[database]\nurl = \"postgres://kiln:sw0rdfish@127.0.0.1:{port}/kiln\"\n"
        ),
    )
    .unwrap();
    let (code, out, err) = check(&config);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(&format!("postgres://kiln@127.0.0.1:{port}/kiln"))
            && err.contains("database.url"),
        "{err}"
    );
    assert!(
        !err.contains("sw0rdfish") && !out.contains("sw0rdfish"),
        "{err}"
    );
}

/// A backup as `docs/operations.md` says (a `pg_dump` of the database, then a copy of the
/// storage dir), restored into a fresh database and dir: the master there serves the build,
/// its log and its artifacts as they were.
#[tokio::test]
async fn a_backup_restores_into_a_master_with_the_same_build_log_and_artifacts() {
    let git = GitServer::start();
    let repo = git.repo("board");
    repo.script_branch(
        "main",
        r#"for i in $(seq 1 50); do echo "step $i"; done
head -c 200000 /dev/urandom > "$KILN_OUTPUT_DIR/board.img""#,
    );
    let farm = Farm::start().await;
    let _slave = farm.slave("s1").await;
    farm.project("board", &repo.url, "main").await;
    let b = farm.request_build("board", json!({})).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{:?}", b.reason);
    let log = farm.log(b.id).await;
    assert!(log.contains("step 50"), "{log}");
    let arts = farm.artifacts(b.id).await;
    assert!(arts.iter().any(|a| a.name == "board.img"), "{arts:?}");

    // The backup: the database first, then the files (a file newer than the dump is harmless;
    // a row without its file would not be).
    let pg = Postgres::shared();
    let backup = kiln_tests::tempdir("kiln-backup-");
    let dump = backup.path().join("kiln.dump");
    let out = Command::new(pg_tool("pg_dump"))
        .args(["--format=custom", "-U", "kiln", "-h"])
        .arg(&pg.socket_dir)
        .args(["-d", &farm.database_name().unwrap(), "-f"])
        .arg(&dump)
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_dump: {:?}", text(&out));
    copy_tree(
        &farm.dir.path().join("storage"),
        &backup.path().join("storage"),
    );

    // The restore: a fresh database and data dir.
    let url = pg.new_database();
    let restored_db = url
        .split_once("localhost/")
        .and_then(|(_, r)| r.split('?').next())
        .unwrap()
        .to_string();
    let out = Command::new(pg_tool("pg_restore"))
        .args(["--no-owner", "--exit-on-error", "-U", "kiln", "-h"])
        .arg(&pg.socket_dir)
        .args(["-d", &restored_db])
        .arg(&dump)
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_restore: {:?}", text(&out));
    let place = kiln_tests::tempdir("kiln-restored-");
    let storage = place.path().join("storage");
    copy_tree(&backup.path().join("storage"), &storage);
    drop(farm);

    let restored = Farm::with(on(&url, &storage)).await;
    let again = restored.build(b.id).await;
    assert_eq!(again.state, BuildState::Succeeded);
    assert_eq!(again.commit, b.commit);
    assert_eq!(again.finished_at, b.finished_at);
    assert_eq!(restored.log(b.id).await, log, "the log");
    let arts_again = restored.artifacts(b.id).await;
    assert_eq!(
        arts_again
            .iter()
            .map(|a| (&a.name, &a.sha256))
            .collect::<Vec<_>>(),
        arts.iter()
            .map(|a| (&a.name, &a.sha256))
            .collect::<Vec<_>>()
    );
    for a in &arts_again {
        let data = restored.download(b.id, &a.name).await;
        assert_eq!(sha256(&data), a.sha256, "{}", a.name);
    }
    let (code, out, err) = check(restored.config_path());
    assert_eq!(code, 0, "{out}{err}");
    wait_health(&restored, "ok", |s, _| s == 200).await;
}
