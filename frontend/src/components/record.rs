//! What a succeeded build's image carries (issue 18), on the build page: its disk images'
//! partitions, the apt sources it was built from, its packages, and what changed since the
//! previous successful build or the last release.
//!
//! Built for the wasm budget: the answers are read as `serde_json::Value` (already in the wasm
//! for other calls) rather than into the record's types, whose derives cost more than the few
//! fields shown; the tables are markup written here (every server text escaped by [`esc`]),
//! not `html!`; one listener on the whole part answers its buttons; one `RefCell` of the build
//! page holds its state (a component of its own would cost more wasm).

use super::human_size;
use crate::api;
use crate::pages::Loaded;
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;
use yew::prelude::*;

/// Slots of [`Data::got`]: the answers this part shows.
const IMAGES: usize = 0;
const PACKAGES: usize = 1;
/// The project's succeeded builds, newest first (`GET /api/builds?project=…&state=succeeded`).
const BUILDS: usize = 2;
/// `Ok(Null)` until a comparison is asked for.
const DIFF: usize = 3;
/// The sources (`?format=json`: both forms; the deb822 one is shown, the one-line form is a download).
const SOURCES: usize = 4;

pub struct Data {
    got: [Loaded<Value>; 5],
}

pub type Shared = Rc<RefCell<Data>>;

/// The text of field `k` (empty when missing or not a string).
fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_default()
}

/// The array in field `k` (empty when missing).
fn arr<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v[k].as_array().map_or(&[], |a| a)
}

/// The size in field `k`, for people ("" when missing).
fn size(v: &Value, k: &str) -> String {
    v[k].as_u64().map(human_size).unwrap_or_default()
}

/// Appends `s` to `out` with HTML's special characters escaped: every text from the server goes
/// through here into the markup of this part.
fn esc(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// Appends a table row of `tag` (`th`, `td`) cells, escaped.
fn row(o: &mut String, tag: &str, cells: &[&str]) {
    o.push_str("<tr>");
    for c in cells {
        o.push('<');
        o.push_str(tag);
        o.push('>');
        esc(o, c);
        o.push_str("</");
        o.push_str(tag);
        o.push('>');
    }
    o.push_str("</tr>");
}

/// Opens a table with its head row; [`END`] closes it.
fn table(o: &mut String, class: &str, head: &[&str]) {
    o.push_str("<table class=\"");
    o.push_str(class);
    o.push_str("\"><thead>");
    row(o, "th", head);
    o.push_str("</thead><tbody>");
}

const END: &str = "</tbody></table>";

/// Opens a titled part of a diff; [`part_end`] closes it.
fn part(o: &mut String, title: &str, head: &[&str]) -> (usize, usize) {
    o.push_str("<h4>");
    o.push_str(title);
    o.push_str("</h4>");
    let start = o.len();
    table(o, "diff", head);
    (start, o.len())
}

/// Closes a part: its table, or "No changes." when no row was written.
fn part_end(o: &mut String, (start, rows): (usize, usize)) {
    if o.len() == rows {
        o.truncate(start);
        o.push_str("<p class=\"muted\">No changes.</p>");
    } else {
        o.push_str(END);
    }
}

/// Appends "Loading…" or the error while `l` is not loaded; gives its value once it is.
fn status<'a>(o: &mut String, l: &'a Loaded<Value>) -> Option<&'a Value> {
    match l {
        Loaded::Ok(v) => return Some(v),
        Loaded::Loading => o.push_str("<p class=\"muted\">Loading…</p>"),
        Loaded::Err(e) => {
            o.push_str("<p class=\"error\" role=\"alert\">");
            esc(o, &e.message);
            o.push_str("</p>");
        }
    }
    None
}

/// Appends a button, disabled with `why` as its title when there is nothing to do.
fn button(o: &mut String, id: &str, label: &str, enabled: bool, why: &str) {
    o.push_str("<button type=\"button\" class=\"secondary\" id=\"");
    o.push_str(id);
    o.push('"');
    if !enabled {
        o.push_str(" disabled title=\"");
        o.push_str(why);
        o.push('"');
    }
    o.push('>');
    o.push_str(label);
    o.push_str("</button> ");
}

/// The build's disk images: each one's partition table and the root file system's system.
fn images(o: &mut String, id: i64, list: &[Value]) {
    if list.is_empty() {
        o.push_str("<p class=\"muted\">No disk image.</p>");
    }
    for img in list {
        o.push_str("<section><h3 class=\"mono\">");
        esc(o, s(img, "artifact"));
        o.push_str("</h3><p>");
        esc(o, &size(img, "size"));
        for (label, k) in [(", table ", "table"), (", disk ", "disk_id")] {
            if let Some(v) = img[k].as_str() {
                o.push_str(label);
                esc(o, v);
            }
        }
        let parts = arr(img, "partitions");
        if let Some(os) = parts
            .iter()
            .find_map(|p| p["os_release"]["PRETTY_NAME"].as_str())
        {
            o.push_str("<br>System: <span class=\"os-release\">");
            esc(o, os);
            o.push_str("</span>");
        }
        let bmap = s(img, "bmap");
        if !bmap.is_empty() {
            o.push_str("<br><a download href=\"");
            esc(o, &format!("/api/builds/{id}/artifacts/{}", api::seg(bmap)));
            o.push_str("\">");
            esc(o, bmap);
            o.push_str("</a>");
        }
        boot(o, &img["boot"]);
        o.push_str("</p>");
        table(
            o,
            "partitions",
            &[
                "#",
                "Type",
                "Start",
                "Size",
                "File system",
                "Label",
                "UUID",
                "Used / free",
            ],
        );
        for p in parts {
            let used = match (p["used_bytes"].as_u64(), p["free_bytes"].as_u64()) {
                (Some(u), Some(f)) => format!("{} / {}", human_size(u), human_size(f)),
                _ => String::new(),
            };
            let number = p["number"].as_u64().unwrap_or_default().to_string();
            let (start, size_) = (size(p, "start"), size(p, "size"));
            row(
                o,
                "td",
                &[
                    &number,
                    s(p, "type"),
                    &start,
                    &size_,
                    s(p, "filesystem"),
                    s(p, "label"),
                    s(p, "uuid"),
                    &used,
                ],
            );
        }
        o.push_str(END);
        o.push_str("</section>");
    }
}

/// The image's boot test (`[boot]`): its outcome, and the serial console's last lines.
fn boot(o: &mut String, t: &Value) {
    if !t.is_object() {
        return;
    }
    let passed = t["passed"].as_bool() == Some(true);
    o.push_str("<br>Boot test: <span class=\"boot-test\">");
    esc(
        o,
        &format!(
            "{} ({}, {})",
            if passed { "passed" } else { "failed" },
            s(t, "accel").to_ascii_uppercase(),
            s(t, "detail")
        ),
    );
    o.push_str("</span><details><summary>Serial console</summary><pre class=\"log\">");
    for l in arr(t, "serial_tail") {
        esc(o, l.as_str().unwrap_or_default());
        o.push('\n');
    }
    o.push_str("</pre></details>");
}

/// `GET /api/builds/{a}/diff/{b}`, as people read it.
fn diff(o: &mut String, d: &Value) {
    o.push_str(&format!(
        "<section id=\"build-diff\"><h3>From #{} to #{}</h3>",
        d["from"].as_i64().unwrap_or_default(),
        d["to"].as_i64().unwrap_or_default()
    ));
    let m = part(o, "Packages", &["Change", "Package", "Version"]);
    for k in ["added", "removed", "upgraded", "downgraded"] {
        for x in arr(&d["packages"], k) {
            let v = match x["version"].as_str() {
                Some(v) => v.into(),
                None => format!("{} → {}", s(x, "from"), s(x, "to")),
            };
            row(o, "td", &[k, s(x, "name"), &v]);
        }
    }
    part_end(o, m);
    let m = part(o, "Artifacts", &["Change", "File", "Size"]);
    for k in ["added", "removed", "changed"] {
        for x in arr(&d["artifacts"], k) {
            let v = match x["size"].as_u64() {
                Some(n) => human_size(n),
                None => format!("{} → {}", size(x, "from_size"), size(x, "to_size")),
            };
            row(o, "td", &[k, s(x, "name"), &v]);
        }
    }
    part_end(o, m);
    let m = part(o, "Apt sources", &["Change", "Line"]);
    for k in ["removed", "added"] {
        for x in arr(&d["sources"], k) {
            row(o, "td", &[k, x.as_str().unwrap_or_default()]);
        }
    }
    part_end(o, m);
    // The commit list is left out to keep the console within its wasm budget.
    o.push_str("</section>");
}

/// GETs `path` into slot `slot` (its JSON) and shows it.
fn fetch(path: String, slot: usize, data: Shared, update: UseForceUpdateHandle) {
    data.borrow_mut().got[slot] = Loaded::Loading;
    update.force_update();
    wasm_bindgen_futures::spawn_local(async move {
        let got = api::get::<Value>(&path).await;
        data.borrow_mut().got[slot] = match got {
            Ok(v) => Loaded::Ok(v),
            Err(e) => Loaded::Err(e),
        };
        update.force_update();
    });
}

/// Markup made by this part's functions, everything from the server escaped.
fn raw(s: String) -> Html {
    Html::from_html_unchecked(s.into())
}

/// What this part holds: the answers it shows. The build page keeps it (`use_mut_ref(Record::default)`).
pub type Record = Data;

impl Default for Data {
    fn default() -> Self {
        Data {
            got: [
                Loaded::Loading,
                Loaded::Loading,
                Loaded::Loading,
                Loaded::Ok(Value::Null),
                Loaded::Loading,
            ],
        }
    }
}

/// Starts loading what succeeded build `id` of `project` carries, forgetting what was shown.
pub fn load(id: i64, project: &str, data: &Shared, update: &UseForceUpdateHandle) {
    *data.borrow_mut() = Data::default();
    let project = api::seg(project);
    for (slot, path) in [
        (IMAGES, format!("/api/builds/{id}/images")),
        (PACKAGES, format!("/api/builds/{id}/packages")),
        (
            BUILDS,
            format!("/api/builds?project={project}&state=succeeded&limit=500"),
        ),
        (SOURCES, format!("/api/builds/{id}/sources?format=json")),
    ] {
        fetch(path, slot, data.clone(), update.clone());
    }
}

/// What the image of build `id` carries, from what [`load`] got.
pub fn view(id: i64, data: &Shared, update: &UseForceUpdateHandle) -> Html {
    let d = data.borrow();
    // Builds come newest first: the previous one is the first older one; the last release
    // the newest other one with a release name.
    let bs = match &d.got[BUILDS] {
        Loaded::Ok(v) => v.as_array().map_or(&[][..], |a| a),
        _ => &[],
    };
    let bid = |b: &Value| b["id"].as_i64().unwrap_or(id);
    let prev = bs.iter().map(bid).find(|b| *b < id);
    let release = bs
        .iter()
        .find(|b| bid(b) != id && b["release"].is_string())
        .map(bid);
    let onclick = {
        let (data, update) = (data.clone(), update.clone());
        Callback::from(move |e: MouseEvent| {
            let el = e.target_unchecked_into::<web_sys::Element>().id();
            let other = match el.as_str() {
                "compare-previous" => prev,
                "compare-release" => release,
                _ => None,
            };
            if let Some(o) = other {
                fetch(
                    format!("/api/builds/{o}/diff/{id}"),
                    DIFF,
                    data.clone(),
                    update.clone(),
                );
            }
        })
    };
    let mut top = String::from("<h2>Image</h2><div id=\"image-layout\">");
    if let Some(v) = status(&mut top, &d.got[IMAGES]) {
        images(&mut top, id, v.as_array().map_or(&[][..], |a| a));
    }
    // The one-line form is a download (its own view cost more wasm than the budget had).
    top.push_str(&format!(
        "</div><h2>Apt sources</h2><div id=\"apt-sources\"><div class=\"actions\">\
         <a download=\"build-{id}.sources\" href=\"/api/builds/{id}/sources\">Download deb822</a> \
         <a download=\"build-{id}.list\" href=\"/api/builds/{id}/sources?format=list\">Download sources.list</a></div>"
    ));
    if let Some(v) = status(&mut top, &d.got[SOURCES]) {
        top.push_str("<pre id=\"apt-sources-text\">");
        esc(&mut top, v["deb822"].as_str().unwrap_or_default());
        top.push_str("</pre>");
    }
    top.push_str("</div>");
    let mut pk = String::from("<details id=\"packages\"><summary>Packages");
    let mut rows = String::new();
    let list = status(&mut rows, &d.got[PACKAGES])
        .and_then(|v| v.as_array())
        .map_or(&[][..], |a| a);
    pk.push_str(&format!(" ({})</summary>", list.len()));
    pk.push_str(&rows);
    table(
        &mut pk,
        "package-list",
        &["Package", "Version", "Architecture", "Source"],
    );
    for x in list {
        row(
            &mut pk,
            "td",
            &[
                s(x, "name"),
                s(x, "version"),
                s(x, "architecture"),
                s(x, "source"),
            ],
        );
    }
    pk.push_str(END);
    pk.push_str("</details>");
    let mut bottom = String::from("<div class=\"actions\" id=\"compare\">");
    button(
        &mut bottom,
        "compare-previous",
        "Compare with the previous successful build",
        prev.is_some(),
        "No earlier successful build",
    );
    button(
        &mut bottom,
        "compare-release",
        "Compare with the last release",
        release.is_some(),
        "No other release",
    );
    bottom.push_str("</div>");
    if let Some(v) = status(&mut bottom, &d.got[DIFF]).filter(|v| v.is_object()) {
        diff(&mut bottom, v);
    }
    html! {
        <div id="build-record" {onclick}>
            { raw(top) }
            { raw(pk) }
            { raw(bottom) }
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_cannot_make_markup() {
        let mut o = String::new();
        esc(&mut o, r#"<img src=x onerror="a('b')">&"#);
        assert_eq!(
            o,
            "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt;&amp;"
        );
    }

    #[test]
    fn a_diff_reads_from_to() {
        let d: Value = serde_json::from_str(
            r#"{"from":3,"to":5,
                "packages":{"added":[{"name":"vim","version":"2:9.1","architecture":"arm64","source":"vim"}],
                            "removed":[],"upgraded":[{"name":"libc6","architecture":"arm64","from":"2.40-1","to":"2.40-2"}],"downgraded":[]},
                "artifacts":{"added":[],"removed":[],"changed":[{"name":"disk.img.zst","from_size":1048576,"to_size":2097152}]},
                "sources":{"added":[],"removed":[]},
                "commits":{"from":"a","to":"b","commits":[{"id":"0123456789abcdef","subject":"<b>x</b>"}],"note":null}}"#,
        )
        .unwrap();
        let mut o = String::new();
        diff(&mut o, &d);
        assert!(o.starts_with("<section id=\"build-diff\"><h3>From #3 to #5</h3>"));
        assert!(o.contains("<td>upgraded</td><td>libc6</td><td>2.40-1 → 2.40-2</td>"));
        assert!(o.contains("<td>added</td><td>vim</td><td>2:9.1</td>"));
        assert!(o.contains("<td>changed</td><td>disk.img.zst</td><td>1.0 MiB → 2.0 MiB</td>"));
        assert!(o.contains("<h4>Apt sources</h4><p class=\"muted\">No changes.</p>"));
    }

    #[test]
    fn an_image_shows_its_partitions_and_system() {
        let l: Value = serde_json::from_str(
            r#"[{"artifact":"disk.img.zst","size":4294967296,"table":"gpt","disk_id":"D1","bmap":"disk.img.bmap",
                 "partitions":[{"number":1,"start":1048576,"size":268435456,"type":"C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
                                "filesystem":"vfat","label":"EFI","uuid":"AB-CD","used_bytes":null,"free_bytes":null},
                               {"number":2,"start":269484032,"size":1073741824,"type":"0FC63DAF-8483-4772-8E79-3D69D8477DE4",
                                "filesystem":"ext4","label":"root","uuid":"u2","used_bytes":536870912,"free_bytes":536870912,
                                "os_release":{"PRETTY_NAME":"Debian GNU/Linux 13 (trixie)"}}]}]"#,
        )
        .unwrap();
        let mut o = String::new();
        images(&mut o, 7, l.as_array().unwrap());
        assert!(o.contains("4.0 GiB, table gpt, disk D1"));
        assert!(o.contains("<span class=\"os-release\">Debian GNU/Linux 13 (trixie)</span>"));
        assert!(o.contains("href=\"/api/builds/7/artifacts/disk.img.bmap\""));
        assert!(!o.contains("Boot test"));
        assert!(o.contains("<td>2</td><td>0FC63DAF-8483-4772-8E79-3D69D8477DE4</td><td>257.0 MiB</td><td>1.0 GiB</td><td>ext4</td><td>root</td><td>u2</td><td>512.0 MiB / 512.0 MiB</td>"));
    }

    #[test]
    fn an_image_shows_its_boot_test() {
        let l: Value = serde_json::from_str(
            r#"[{"artifact":"disk.img.zst","size":1,"partitions":[],"boot":{"passed":true,"pattern":"login:",
                 "accel":"tcg","machine":"qemu-system-x86_64 -machine q35","seconds":63,
                 "detail":"\"login:\" on the serial console after 63 s","serial_tail":["<b>", "vm login:"]}}]"#,
        )
        .unwrap();
        let mut o = String::new();
        images(&mut o, 7, l.as_array().unwrap());
        assert!(o.contains("Boot test: <span class=\"boot-test\">passed (TCG, &quot;login:&quot; on the serial console after 63 s)</span>"), "{o}");
        assert!(o.contains("&lt;b&gt;\nvm login:\n</pre>"), "{o}");
    }
}
