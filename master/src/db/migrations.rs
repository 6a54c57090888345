//! Where the database's schema stands against the migrations this binary embeds
//! ([`super::MIGRATOR`], `sqlx::migrate!` over `/migrations`): which are applied, which are
//! pending, and whether any was changed after it was applied or is one this master does not
//! know. Read from sqlx's own table (`_sqlx_migrations`); nothing here changes the database.
//!
//! Used by `kiln-master migrate --check` (what an upgrade will do), by `kiln-master migrate`
//! and the master's start (refusing, in words, a database they must not touch), and by the
//! database watchdog for `GET /api/health`.

use chrono::{DateTime, Utc};
use sqlx::migrate::Migration;
use sqlx::PgConnection;

/// A row of `_sqlx_migrations`.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Applied {
    pub version: i64,
    pub description: String,
    pub checksum: Vec<u8>,
    /// False when it failed part-way (sqlx marks it so; only for migrations run without a
    /// transaction).
    pub success: bool,
    pub installed_on: DateTime<Utc>,
}

/// One migration: its version and description (the file name's words: `0011_image_record.sql`
/// is `11 (image record)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub version: i64,
    pub description: String,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.version, self.description)
    }
}

/// The database's schema against this binary's migrations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// Every row of `_sqlx_migrations`, by version.
    pub applied: Vec<Applied>,
    /// Known here, not applied there: what `kiln-master migrate` will apply, in order.
    pub pending: Vec<Step>,
    /// Applied with another checksum than this binary's copy.
    pub changed: Vec<Step>,
    /// Applied there, unknown here (a newer master migrated the database).
    pub unknown: Vec<Step>,
    /// Marked as failed part-way.
    pub failed: Vec<Step>,
    /// The newest migration this binary knows.
    pub newest_known: Option<Step>,
}

fn step(version: i64, description: &str) -> Step {
    Step {
        version,
        description: description.to_string(),
    }
}

/// Compares `known` (this binary's migrations) with `applied` (the database's rows).
pub fn compare(known: &[Migration], mut applied: Vec<Applied>) -> Status {
    applied.sort_by_key(|a| a.version);
    let known: Vec<&Migration> = known
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .collect();
    let mut s = Status {
        newest_known: known
            .iter()
            .max_by_key(|m| m.version)
            .map(|m| step(m.version, &m.description)),
        ..Status::default()
    };
    for m in &known {
        match applied.iter().find(|a| a.version == m.version) {
            None => s.pending.push(step(m.version, &m.description)),
            Some(a) if !a.success => s.failed.push(step(a.version, &m.description)),
            Some(a) if a.checksum != *m.checksum => s.changed.push(step(a.version, &m.description)),
            Some(_) => {}
        }
    }
    s.pending.sort_by_key(|p| p.version);
    for a in &applied {
        if !known.iter().any(|m| m.version == a.version) {
            s.unknown.push(step(a.version, &a.description));
        }
    }
    s.applied = applied;
    s
}

/// `(version, description)` lists as "11 (image record)", "10 (notifications) and 11 (image
/// record)", "1 (foundation), 2 (queue rules) and 3 (backend)".
fn list(steps: &[Step]) -> String {
    let words: Vec<String> = steps.iter().map(Step::to_string).collect();
    match words.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

impl Status {
    /// Every migration this binary embeds is applied, as it is here, and nothing else.
    pub fn is_current(&self) -> bool {
        self.problem().is_none()
    }

    /// The newest migration applied successfully.
    pub fn at(&self) -> Option<Step> {
        self.applied
            .iter()
            .filter(|a| a.success)
            .max_by_key(|a| a.version)
            .map(|a| step(a.version, &a.description))
    }

    /// What `kiln-master migrate` cannot fix, in words that say what to do; `None` when the
    /// only gap (if any) is pending migrations.
    pub fn error(&self) -> Option<String> {
        if let Some(f) = self.failed.first() {
            return Some(format!(
                "migration {f} failed part-way and is marked so in _sqlx_migrations: repair the \
                 schema by hand, delete that row, then run `kiln-master migrate`"
            ));
        }
        if !self.changed.is_empty() {
            let which = list(&self.changed);
            let (noun, verb) = if self.changed.len() == 1 {
                ("migration", "was")
            } else {
                ("migrations", "were")
            };
            return Some(format!(
                "{noun} {which} {verb} changed after it was applied: the database holds another \
                 checksum than this master's copy (a landed migration was edited, or a different \
                 build of kiln-master migrated this database); run the kiln-master that migrated \
                 it, or restore a backup"
            ));
        }
        if let Some(newest) = self.unknown.last() {
            let knows = self
                .newest_known
                .as_ref()
                .map_or_else(|| "none".to_string(), Step::to_string);
            return Some(format!(
                "the database is at migration {newest}, which this master does not know (it \
                 knows up to {knows}): a newer kiln-master migrated it; run that version, or \
                 restore the backup taken before the upgrade"
            ));
        }
        None
    }

    /// What is wrong, in words: [`Status::error`], else the pending migrations; `None` when
    /// the schema is current.
    pub fn problem(&self) -> Option<String> {
        if let Some(e) = self.error() {
            return Some(e);
        }
        if self.pending.is_empty() {
            return None;
        }
        let at = match self.at() {
            Some(at) => format!("the database is at migration {at}"),
            None => "the database has no migrations applied".to_string(),
        };
        let needs = list(&self.pending);
        Some(format!(
            "{at}; this master needs {needs}: run `kiln-master migrate`"
        ))
    }

    /// How the schema stands, in a few words (health's `schema` field).
    pub fn summary(&self) -> String {
        match (self.problem(), self.at()) {
            (Some(p), _) => p,
            (None, Some(at)) => format!("current (migration {at})"),
            (None, None) => "current".into(),
        }
    }
}

/// The rows of `_sqlx_migrations`; none when the table does not exist (a database never
/// migrated). One query.
pub async fn applied(conn: &mut PgConnection) -> sqlx::Result<Vec<Applied>> {
    let rows = sqlx::query_as(
        "SELECT version, description, checksum, success, installed_on
         FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(conn)
    .await;
    match rows {
        // undefined_table
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Ok(vec![]),
        other => other,
    }
}

/// The database's schema against this binary's migrations.
pub async fn status(conn: &mut PgConnection) -> sqlx::Result<Status> {
    Ok(compare(
        super::MIGRATOR.iter().as_slice(),
        applied(conn).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::migrate::MigrationType;
    use std::borrow::Cow;

    fn known() -> Vec<Migration> {
        [
            (1, "foundation"),
            (10, "notifications"),
            (11, "image record"),
        ]
        .into_iter()
        .map(|(v, d)| {
            Migration::new(
                v,
                Cow::Borrowed(d),
                MigrationType::Simple,
                Cow::Owned(format!("-- {d}")),
                false,
            )
        })
        .collect()
    }

    fn row(m: &Migration) -> Applied {
        Applied {
            version: m.version,
            description: m.description.to_string(),
            checksum: m.checksum.to_vec(),
            success: true,
            installed_on: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn every_migration_applied_as_it_is_here_is_current() {
        let k = known();
        let s = compare(&k, k.iter().map(row).collect());
        assert!(s.is_current(), "{s:?}");
        assert_eq!(s.summary(), "current (migration 11 (image record))");
        assert_eq!(s.error(), None);
    }

    #[test]
    fn a_missing_newest_migration_is_pending_and_named() {
        let k = known();
        let s = compare(&k, k[..2].iter().map(row).collect());
        assert_eq!(s.pending, vec![step(11, "image record")]);
        assert_eq!(s.error(), None, "pending is no error");
        assert_eq!(
            s.problem().unwrap(),
            "the database is at migration 10 (notifications); this master needs 11 (image \
             record): run `kiln-master migrate`"
        );
        let empty = compare(&k, vec![]);
        assert_eq!(
            empty.problem().unwrap(),
            "the database has no migrations applied; this master needs 1 (foundation), 10 \
             (notifications) and 11 (image record): run `kiln-master migrate`"
        );
    }

    #[test]
    fn a_changed_checksum_is_an_error_naming_the_migration() {
        let k = known();
        let mut rows: Vec<Applied> = k.iter().map(row).collect();
        rows[1].checksum = vec![0; 48];
        let s = compare(&k, rows);
        assert_eq!(s.changed, vec![step(10, "notifications")]);
        let e = s.error().unwrap();
        assert!(
            e.starts_with("migration 10 (notifications) was changed after it was applied"),
            "{e}"
        );
        assert_eq!(s.problem(), Some(e));
    }

    #[test]
    fn a_newer_unknown_migration_is_an_error_naming_both_ends() {
        let k = known();
        let mut rows: Vec<Applied> = k.iter().map(row).collect();
        rows.push(Applied {
            version: 12,
            description: "shiny".into(),
            checksum: vec![1; 48],
            success: true,
            installed_on: DateTime::UNIX_EPOCH,
        });
        let s = compare(&k, rows);
        let e = s.error().unwrap();
        assert!(
            e.starts_with(
                "the database is at migration 12 (shiny), which this master does not know (it knows up to 11 (image record))"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_failed_migration_is_an_error() {
        let k = known();
        let mut rows: Vec<Applied> = k.iter().map(row).collect();
        rows[2].success = false;
        let s = compare(&k, rows);
        assert_eq!(s.failed, vec![step(11, "image record")]);
        assert!(s
            .error()
            .unwrap()
            .contains("migration 11 (image record) failed part-way"));
        assert_eq!(s.at(), Some(step(10, "notifications")));
    }
}
