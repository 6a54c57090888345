//! The `slaves` aggregate.

use chrono::{DateTime, Utc};
use kiln_shared::frames::Hello;
use kiln_shared::{api, BuildId, SlaveId};
use sqlx::{FromRow, PgExecutor};

#[derive(Debug, Clone, FromRow)]
pub struct SlaveRow {
    pub id: i64,
    pub name: String,
    pub enabled: bool,
    pub online: bool,
    pub arch: Option<String>,
    pub tags: Vec<String>,
    pub backends: Vec<String>,
    pub capacity: i32,
    pub emulates: Vec<String>,
    pub version: Option<String>,
    pub last_seen: Option<DateTime<Utc>>,
    pub builds: Vec<i64>,
    pub capabilities: Option<sqlx::types::Json<api::Capabilities>>,
}

impl SlaveRow {
    pub fn into_api(self) -> api::Slave {
        api::Slave {
            id: SlaveId(self.id),
            name: self.name,
            online: self.online,
            enabled: self.enabled,
            draining: false,
            arch: self.arch,
            tags: self.tags,
            backends: self.backends,
            capacity: self.capacity,
            emulates: self.emulates,
            version: self.version,
            last_seen: self.last_seen,
            builds: self.builds.into_iter().map(BuildId).collect(),
            capabilities: self.capabilities.map(|c| c.0),
        }
    }
}

const SELECT: &str = "SELECT s.id, s.name, s.enabled, s.online, s.arch, s.tags, s.backends,
        s.capacity, s.emulates, s.version, s.last_seen, s.capabilities,
        ARRAY(SELECT b.id FROM builds b WHERE b.slave_id = s.id
              AND b.state IN ('dispatched','running') ORDER BY b.id) AS builds
    FROM slaves s";

/// Registers a slave; `None` when the name is taken.
/// A new slave with the tags an admin allowed it (`approved_tags`).
pub async fn insert(
    db: impl PgExecutor<'_>,
    name: &str,
    token_sha256: &str,
    approved_tags: &[String],
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "INSERT INTO slaves (name, token_sha256, approved_tags) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO NOTHING RETURNING id",
    )
    .bind(name)
    .bind(token_sha256)
    .bind(approved_tags)
    .fetch_optional(db)
    .await
}

pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<SlaveRow>> {
    sqlx::query_as(&format!("{SELECT} ORDER BY s.name"))
        .fetch_all(db)
        .await
}

pub async fn get(db: impl PgExecutor<'_>, id: SlaveId) -> sqlx::Result<Option<SlaveRow>> {
    sqlx::query_as(&format!("{SELECT} WHERE s.id = $1"))
        .bind(id.0)
        .fetch_optional(db)
        .await
}

pub async fn by_name(db: impl PgExecutor<'_>, name: &str) -> sqlx::Result<Option<SlaveRow>> {
    sqlx::query_as(&format!("{SELECT} WHERE s.name = $1"))
        .bind(name)
        .fetch_optional(db)
        .await
}

pub async fn by_token(
    db: impl PgExecutor<'_>,
    token_sha256: &str,
) -> sqlx::Result<Option<SlaveRow>> {
    sqlx::query_as(&format!(
        "{SELECT} WHERE s.token_sha256 = $1
            OR (s.previous_token_sha256 = $1 AND s.previous_token_expires > now())"
    ))
    .bind(token_sha256)
    .fetch_optional(db)
    .await
}

/// What a hello may claim: the tags an admin approved (the others are dropped, and named), and
/// the architecture of the slave's first connection (another one is refused).
#[derive(Debug)]
pub enum Admitted {
    Yes {
        tags: Vec<String>,
        unapproved: Vec<String>,
    },
    Refused(String),
}

pub async fn admit(
    db: impl PgExecutor<'_>,
    id: SlaveId,
    name: &str,
    h: &Hello,
) -> sqlx::Result<Admitted> {
    let (approved_tags, approved_arch): (Vec<String>, Option<String>) =
        sqlx::query_as("SELECT approved_tags, approved_arch FROM slaves WHERE id = $1")
            .bind(id.0)
            .fetch_one(db)
            .await?;
    if let Some(a) = approved_arch.filter(|a| *a != h.arch) {
        return Ok(Admitted::Refused(format!(
            "slave '{name}' is registered as {a} but says it is {}; an admin must register it again to change its architecture",
            h.arch
        )));
    }
    let (tags, unapproved) = h
        .tags
        .iter()
        .cloned()
        .partition(|t| approved_tags.contains(t));
    Ok(Admitted::Yes { tags, unapproved })
}

/// Records what the slave said about itself in its hello (with only its approved `tags`), pins
/// its architecture on the first connection, and marks it online with this master `instance`.
/// Returns the master instance that held it before (`Some(None)`: never held), or `None` when
/// the slave is gone (revoked while it connected).
pub async fn came_online(
    db: impl PgExecutor<'_>,
    id: SlaveId,
    h: &Hello,
    tags: &[String],
    instance: &str,
) -> sqlx::Result<Option<Option<String>>> {
    sqlx::query_scalar(
        "UPDATE slaves s SET online = true, last_seen = now(), arch = $2, tags = $3,
             backends = $4, capacity = $5, version = $6, emulates = $7, capabilities = $8,
             approved_arch = COALESCE(approved_arch, $2), master_instance = $9
         FROM (SELECT master_instance AS before FROM slaves WHERE id = $1) b
         WHERE s.id = $1
         RETURNING b.before",
    )
    .bind(id.0)
    .bind(&h.arch)
    .bind(tags)
    .bind(&h.backends)
    .bind(h.capacity as i32)
    .bind(&h.version)
    .bind(&h.emulates)
    .bind(sqlx::types::Json(&h.capabilities))
    .bind(instance)
    .fetch_optional(db)
    .await
}

/// Records when each slave was last heard from, in one statement (only where it moved on).
pub async fn seen_at(
    db: impl PgExecutor<'_>,
    heard: &[(SlaveId, DateTime<Utc>)],
) -> sqlx::Result<()> {
    let ids: Vec<i64> = heard.iter().map(|(id, _)| id.0).collect();
    let at: Vec<DateTime<Utc>> = heard.iter().map(|(_, t)| *t).collect();
    sqlx::query(
        "UPDATE slaves SET last_seen = h.at
         FROM unnest($1::BIGINT[], $2::TIMESTAMPTZ[]) AS h(id, at)
         WHERE slaves.id = h.id AND (slaves.last_seen IS NULL OR slaves.last_seen < h.at)",
    )
    .bind(ids)
    .bind(at)
    .execute(db)
    .await
    .map(|_| ())
}

/// The slave's session ended; `last_heard` is when this master last heard from it.
pub async fn went_offline(
    db: impl PgExecutor<'_>,
    id: SlaveId,
    last_heard: Option<DateTime<Utc>>,
    instance: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE slaves SET last_seen = GREATEST(last_seen, $2),
             online = online AND master_instance IS NOT NULL AND master_instance <> $3
         WHERE id = $1",
    )
    .bind(id.0)
    .bind(last_heard)
    .bind(instance)
    .execute(db)
    .await
    .map(|_| ())
}

/// Marks offline every slave no master has heard from since `before`, but those connected here
/// (a master that stopped cannot mark its slaves offline; another master, or this one at its
/// start, does). Returns their ids.
pub async fn unheard_offline(
    db: impl PgExecutor<'_>,
    before: DateTime<Utc>,
    connected_here: &[i64],
) -> sqlx::Result<Vec<SlaveId>> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "UPDATE slaves SET online = false
         WHERE online AND (last_seen IS NULL OR last_seen < $1) AND id <> ALL($2) RETURNING id",
    )
    .bind(before)
    .bind(connected_here)
    .fetch_all(db)
    .await?;
    Ok(ids.into_iter().map(SlaveId).collect())
}

/// An online slave whose session another master instance holds, as the dispatcher sees it.
#[derive(Debug, Clone, FromRow)]
pub struct ElsewhereRow {
    pub id: i64,
    pub name: String,
    pub arch: Option<String>,
    pub emulates: Vec<String>,
    pub tags: Vec<String>,
    pub backends: Vec<String>,
    pub capacity: i32,
    pub enabled: bool,
}

/// The online slaves other master instances than `instance` hold (for waiting reasons that
/// speak of the whole farm).
pub async fn online_elsewhere(
    db: impl PgExecutor<'_>,
    instance: &str,
) -> sqlx::Result<Vec<ElsewhereRow>> {
    sqlx::query_as(
        "SELECT id, name, arch, emulates, tags, backends, capacity, enabled FROM slaves
         WHERE online AND master_instance IS NOT NULL AND master_instance <> $1 ORDER BY id",
    )
    .bind(instance)
    .fetch_all(db)
    .await
}

/// Whether the slave is online through any master now.
pub async fn is_online(db: impl PgExecutor<'_>, id: SlaveId) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT online FROM slaves WHERE id = $1")
        .bind(id.0)
        .fetch_optional(db)
        .await
        .map(|o| o.unwrap_or(false))
}

/// Architectures the slaves have (natively or emulated), for the catalog.
pub async fn architectures(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT DISTINCT a FROM (SELECT arch AS a FROM slaves WHERE arch IS NOT NULL
                                 UNION SELECT unnest(emulates) FROM slaves) x ORDER BY a",
    )
    .fetch_all(db)
    .await
}

pub async fn set_enabled(db: impl PgExecutor<'_>, id: SlaveId, enabled: bool) -> sqlx::Result<()> {
    sqlx::query("UPDATE slaves SET enabled = $2 WHERE id = $1")
        .bind(id.0)
        .bind(enabled)
        .execute(db)
        .await
        .map(|_| ())
}

/// Locks the slave's row until the transaction ends (a build claimed for it waits, since the
/// claim refers to the row).
pub async fn lock(db: impl PgExecutor<'_>, id: SlaveId) -> sqlx::Result<()> {
    sqlx::query("SELECT 1 FROM slaves WHERE id = $1 FOR UPDATE")
        .bind(id.0)
        .execute(db)
        .await
        .map(|_| ())
}

/// Revokes a slave: its row and token go; its builds keep their history.
pub async fn delete(db: impl PgExecutor<'_>, id: SlaveId) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM slaves WHERE id = $1")
        .bind(id.0)
        .execute(db)
        .await
        .map(|_| ())
}

/// Gives the slave a new token; the current one stays valid until `grace_until`.
pub async fn rotate_token(
    db: impl PgExecutor<'_>,
    id: SlaveId,
    new_sha256: &str,
    grace_until: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE slaves SET previous_token_sha256 = token_sha256,
             previous_token_expires = $3, token_sha256 = $2 WHERE id = $1",
    )
    .bind(id.0)
    .bind(new_sha256)
    .bind(grace_until)
    .execute(db)
    .await
    .map(|_| ())
}

/// A registration token as the API lists it.
#[derive(Debug, Clone, FromRow)]
pub struct RegistrationRow {
    pub id: i64,
    pub name: Option<String>,
    pub tags: Vec<String>,
    pub uses_left: i32,
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
    pub created_at: DateTime<Utc>,
}

pub async fn insert_registration(
    db: impl PgExecutor<'_>,
    token_sha256: &str,
    name: Option<&str>,
    tags: &[String],
    uses: i32,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<RegistrationRow> {
    sqlx::query_as(
        "INSERT INTO registration_tokens (token_sha256, name, tags, uses_left, expires_at)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING id, name, tags, uses_left, expires_at, revoked, created_at",
    )
    .bind(token_sha256)
    .bind(name)
    .bind(tags)
    .bind(uses)
    .bind(expires_at)
    .fetch_one(db)
    .await
}

pub async fn list_registrations(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<RegistrationRow>> {
    sqlx::query_as(
        "SELECT id, name, tags, uses_left, expires_at, revoked, created_at
         FROM registration_tokens ORDER BY id DESC",
    )
    .fetch_all(db)
    .await
}

pub async fn revoke_registration(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<bool> {
    let r = sqlx::query("UPDATE registration_tokens SET revoked = true WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Why a registration token cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum Unusable {
    Unknown,
    Revoked,
    Expired(DateTime<Utc>),
    UsedUp,
    OtherName(String),
}

/// Takes one use of a registration token, in the caller's transaction (row-locked, so two
/// boards cannot both take the last use); the token's row, or why not.
pub async fn take_registration(
    tx: &mut sqlx::PgConnection,
    token_sha256: &str,
    name: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<Result<RegistrationRow, Unusable>> {
    let row: Option<RegistrationRow> = sqlx::query_as(
        "SELECT id, name, tags, uses_left, expires_at, revoked, created_at
         FROM registration_tokens WHERE token_sha256 = $1 FOR UPDATE",
    )
    .bind(token_sha256)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(r) = row else {
        return Ok(Err(Unusable::Unknown));
    };
    if r.revoked {
        return Ok(Err(Unusable::Revoked));
    }
    if r.expires_at <= now {
        return Ok(Err(Unusable::Expired(r.expires_at)));
    }
    if r.uses_left <= 0 {
        return Ok(Err(Unusable::UsedUp));
    }
    if let Some(n) = r.name.as_deref().filter(|n| *n != name) {
        return Ok(Err(Unusable::OtherName(n.to_string())));
    }
    sqlx::query("UPDATE registration_tokens SET uses_left = uses_left - 1 WHERE id = $1")
        .bind(r.id)
        .execute(&mut *tx)
        .await?;
    Ok(Ok(r))
}
