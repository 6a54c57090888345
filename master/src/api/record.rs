//! What an image carries (issue 18; `kiln_shared::record`): the slave's record of a build
//! (apt sources, packages, disk image layouts) taken in with the build's upload token, and
//! served to viewers of the build's project, with the site's and the project's rewrite maps
//! applied to the sources.

use crate::auth::{access, Principal, UploadAuth};
use crate::db::{artifacts, builds, records};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_shared::api::{validate_artifact_name, Role};
use kiln_shared::record::diff::{self, ArtifactFacts, Side};
use kiln_shared::record::{
    sources, AptSource, BootTest, BuildDiff, BuildRecord, ImageLayout, Package, MAX_RECORD_BYTES,
};
use kiln_shared::BuildId;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// `PUT /api/slave/builds/{id}/record` with the build's upload token (like its artifacts):
/// the record, checked again here (sizes, names, credentials), replacing any earlier one.
pub async fn put(
    State(st): State<Arc<AppState>>,
    UploadAuth(claims): UploadAuth,
    Path(id): Path<i64>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    crate::api::artifacts::uploading_build(&st, &claims, id).await?;
    if body.len() > MAX_RECORD_BYTES {
        return Err(ApiError::invalid(
            "record",
            format!(
                "the record is {} bytes; at most {MAX_RECORD_BYTES} are taken",
                body.len()
            ),
        ));
    }
    let mut record: BuildRecord = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("record", format!("the record is not valid: {e}")))?;
    check(&mut record).map_err(|m| ApiError::invalid("record", m))?;
    records::put(&st.db, BuildId(id), &record).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What arrives from a slave is the build's word: bounded, named like artifacts, and cleaned of
/// credentials once more.
fn check(r: &mut BuildRecord) -> Result<(), String> {
    const MAX_SOURCES: usize = 1000;
    const MAX_PACKAGES: usize = 200_000;
    const MAX_IMAGES: usize = 256;
    if r.sources.len() > MAX_SOURCES {
        return Err(format!("more than {MAX_SOURCES} apt sources"));
    }
    if r.packages.len() > MAX_PACKAGES {
        return Err(format!("more than {MAX_PACKAGES} packages"));
    }
    if r.images.len() > MAX_IMAGES {
        return Err(format!("more than {MAX_IMAGES} disk images"));
    }
    for p in &r.packages {
        if p.name.is_empty() || p.version.is_empty() {
            return Err(format!(
                "package '{}' has no name or no version",
                p.name.escape_debug()
            ));
        }
    }
    for i in &r.images {
        validate_artifact_name(&i.artifact).map_err(|m| format!("image layout: {m}"))?;
        if let Some(b) = &i.bmap {
            validate_artifact_name(b).map_err(|m| format!("image layout bmap: {m}"))?;
        }
    }
    for b in r.images.iter_mut().filter_map(|i| i.boot.as_mut()) {
        check_boot(b)?;
    }
    sources::clean(&mut r.sources);
    Ok(())
}

/// A boot test's outcome: bounded, one line per line, a known accelerator.
fn check_boot(b: &mut BootTest) -> Result<(), String> {
    if !["kvm", "tcg"].contains(&b.accel.as_str()) {
        return Err(format!(
            "boot test: accel '{}' is not kvm or tcg",
            b.accel.escape_debug()
        ));
    }
    if b.serial_tail.len() > BootTest::TAIL_LINES {
        return Err(format!(
            "boot test: more than {} serial lines",
            BootTest::TAIL_LINES
        ));
    }
    if let Some(l) = &b.log {
        validate_artifact_name(l).map_err(|m| format!("boot test log: {m}"))?;
    }
    let one_line = |s: &str, max: usize| -> String {
        s.chars().filter(|c| !c.is_control()).take(max).collect()
    };
    b.pattern = one_line(&b.pattern, 200);
    b.machine = one_line(&b.machine, 200);
    b.detail = one_line(&b.detail, 1000);
    for l in &mut b.serial_tail {
        *l = one_line(l, BootTest::MAX_LINE);
    }
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesQuery {
    /// `deb822` (the default) or `list`.
    #[serde(default)]
    format: Option<String>,
    /// `GET /api/projects/{name}/sources` only: the release build's.
    #[serde(default)]
    release: Option<String>,
}

/// `GET /api/builds/{id}/sources`: viewers of the build's project.
pub async fn build_sources(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
    Query(q): Query<SourcesQuery>,
) -> ApiResult<Response> {
    if q.release.is_some() {
        return Err(ApiError::invalid(
            "release",
            "release= picks a build of a project: use /api/projects/{name}/sources?release=NAME",
        ));
    }
    let a = access::build(&st, &who, id, Role::Viewer, "reading apt sources").await?;
    let list = records::sources(&st.db, BuildId(id))
        .await?
        .ok_or_else(|| no_record(id))?;
    render(&st, &a.project.source_rewrites.0, list, &q)
}

/// `GET /api/projects/{name}/sources`: the sources of the project's last successful build (of
/// the release `?release=NAME`), for viewers of the project.
pub async fn project_sources(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path(name): Path<String>,
    Query(q): Query<SourcesQuery>,
) -> ApiResult<Response> {
    let a = access::project(&st, &who, &name, Role::Viewer, "reading apt sources").await?;
    let release = q.release.as_deref().filter(|r| !r.is_empty());
    let id = records::latest_with_record(&st.db, a.project.id, release)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(match release {
                Some(r) => format!(
                    "project '{name}' has no successful build of release '{r}' with recorded apt sources"
                ),
                None => format!(
                    "project '{name}' has no successful build with recorded apt sources yet"
                ),
            })
        })?;
    let list = records::sources(&st.db, BuildId(id))
        .await?
        .unwrap_or_default();
    let mut resp = render(&st, &a.project.source_rewrites.0, list, &q)?;
    if let Ok(v) = header::HeaderValue::from_str(&id.to_string()) {
        resp.headers_mut().insert("x-kiln-build", v);
    }
    Ok(resp)
}

/// The site's map with the project's on top (the project's entry wins for the same URL).
fn rewrite_map(st: &AppState, project: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut map = st.cfg.sources.rewrite.clone();
    map.extend(project.iter().map(|(k, v)| (k.clone(), v.clone())));
    map
}

fn rewritten(
    st: &AppState,
    project: &BTreeMap<String, String>,
    mut list: Vec<AptSource>,
) -> Vec<AptSource> {
    sources::rewrite(&mut list, &rewrite_map(st, project));
    list
}

fn render(
    st: &AppState,
    project: &BTreeMap<String, String>,
    list: Vec<AptSource>,
    q: &SourcesQuery,
) -> ApiResult<Response> {
    let list = rewritten(st, project, list);
    let text = match q.format.as_deref().unwrap_or("deb822") {
        "deb822" => sources::to_deb822(&list),
        "list" => sources::to_one_line(&list),
        // Both forms in one JSON answer (the console's).
        "json" => {
            return Ok(Json(serde_json::json!({
                "deb822": sources::to_deb822(&list),
                "list": sources::to_one_line(&list),
            }))
            .into_response())
        }
        other => {
            return Err(ApiError::invalid(
                "format",
                format!("format '{other}' is not one of deb822, list, json"),
            ))
        }
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

fn no_record(id: i64) -> ApiError {
    ApiError::NotFound(format!(
        "build {id} has no record of what its image carries (it has not succeeded, or its backend makes no Debian root file system)"
    ))
}

/// `GET /api/builds/{id}/packages`: viewers of the build's project.
pub async fn packages(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<Package>>> {
    access::build(&st, &who, id, Role::Viewer, "reading packages").await?;
    let list = records::packages(&st.db, BuildId(id))
        .await?
        .ok_or_else(|| no_record(id))?;
    Ok(Json(list))
}

/// `GET /api/builds/{id}/images`: the layouts of all the build's disk images (`[]` when it has
/// none), for viewers of the build's project.
pub async fn images(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<ImageLayout>>> {
    access::build(&st, &who, id, Role::Viewer, "reading image layouts").await?;
    Ok(Json(
        records::images(&st.db, BuildId(id))
            .await?
            .unwrap_or_default(),
    ))
}

/// `GET /api/builds/{id}/artifacts/{name}/layout`: viewers of the build's project.
pub async fn layout(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path((id, name)): Path<(i64, String)>,
) -> ApiResult<Json<ImageLayout>> {
    access::build(&st, &who, id, Role::Viewer, "reading an image layout").await?;
    if artifacts::get(&st.db, BuildId(id), &name).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "build {id} has no artifact '{name}'"
        )));
    }
    records::images(&st.db, BuildId(id))
        .await?
        .unwrap_or_default()
        .into_iter()
        .find(|i| i.artifact == name)
        .map(Json)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "artifact '{name}' of build {id} is not a disk image with a recorded layout"
            ))
        })
}

/// `GET /api/builds/{a}/diff/{b}`: viewers of both builds' projects.
pub async fn diff(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path((a, b)): Path<(i64, i64)>,
) -> ApiResult<Json<BuildDiff>> {
    let pa = access::build(&st, &who, a, Role::Viewer, "comparing builds").await?;
    let pb = access::build(&st, &who, b, Role::Viewer, "comparing builds").await?;
    let side = |id: i64, project: crate::db::projects::ProjectRow| {
        let st = st.clone();
        async move {
            let row = crate::api::builds::find(&st, id).await?;
            let packages = records::packages(&st.db, BuildId(id))
                .await?
                .unwrap_or_default();
            let list = records::sources(&st.db, BuildId(id))
                .await?
                .unwrap_or_default();
            let lines =
                sources::one_line_entries(&rewritten(&st, &project.source_rewrites.0, list));
            let artifacts: Vec<ArtifactFacts> = artifacts::list(&st.db, BuildId(id))
                .await?
                .into_iter()
                .map(|r| ArtifactFacts {
                    name: r.name,
                    size: r.size.max(0) as u64,
                    sha256: r.sha256,
                })
                .collect();
            Ok::<_, ApiError>((row, packages, lines, artifacts))
        }
    };
    let (ra, pka, la, aa) = side(a, pa.project).await?;
    let (rb, pkb, lb, ab) = side(b, pb.project).await?;
    let mut d = diff::diff(
        &Side {
            build: BuildId(a),
            packages: &pka,
            artifacts: &aa,
            sources: &la,
            commit: ra.commit_sha.clone(),
        },
        &Side {
            build: BuildId(b),
            packages: &pkb,
            artifacts: &ab,
            sources: &lb,
            commit: rb.commit_sha.clone(),
        },
    );
    fill_commits(&st, &ra, &rb, &mut d).await;
    Ok(Json(d))
}

/// The commits between the two builds' configuration commits, read from the later build's
/// branch; a note instead when they cannot be read.
async fn fill_commits(
    st: &AppState,
    a: &builds::BuildRow,
    b: &builds::BuildRow,
    d: &mut BuildDiff,
) {
    let (Some(from), Some(to)) = (&a.commit_sha, &b.commit_sha) else {
        d.commits.note = Some("a build without a commit (it never started) has no range".into());
        return;
    };
    if from == to {
        return;
    }
    match crate::git::commits_between(
        &b.branch_url,
        &b.branch,
        from,
        to,
        st.cfg.master.allow_file_urls,
        &st.storage.tmp_dir(),
    )
    .await
    {
        Ok(list) => d.commits.commits = list,
        Err(e) => d.commits.note = Some(e),
    }
}
