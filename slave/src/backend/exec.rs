//! `backend = "exec"`: a site's own image tool (kiwi, mkosi, Yocto's bitbake, …) run from the
//! branch, so a site plugs one in without changing Kiln. The command (a program in the branch and
//! its arguments) gets the environment of the `script` backend and talks to Kiln in JSON lines on
//! its stdout (`docs/backends.md`):
//!
//! - `{"progress": 0.4, "step": "installing packages"}` (either key alone): what it is doing, a
//!   `[kiln] step: …` note in the log when the step changes, and the build's progress for the
//!   master (through `sandbox/state.json`, which the daemon watches);
//! - `{"artifact": "out/board.img"}`: a file it made, relative to the checkout or absolute, which
//!   must resolve inside the build's work dirs; moved into the output dir under its file name;
//! - `{"error": "…"}`: the failure reason should the command then exit non-zero.
//!
//! Every other line goes to the log as it is, as does stderr: an ordinary tool works too. A line
//! that starts like a message but is none is said in the log with its line number; for an
//! artifact it fails the build, as does an artifact that cannot be taken.

use super::{Backend, BackendError, BoxFuture, Context};
use crate::process;
use crate::recipe::ExecOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

pub struct Exec(pub ExecOptions);

/// The keys of the protocol; a JSON object with none of them is an ordinary line.
const KEYS: [&str; 4] = ["progress", "step", "artifact", "error"];

/// The longest `{"error"}` text kept as a failure reason.
const MAX_ERROR: usize = 1000;

/// One line of the tool's stdout, read.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// Not for Kiln: a line for the log, as it is.
    Text,
    Message(Message),
    /// Meant for Kiln but not valid. `artifact`: it is about an artifact (the build fails).
    Malformed {
        artifact: bool,
        why: String,
    },
}

#[derive(Debug, Default, PartialEq)]
pub struct Message {
    pub step: Option<String>,
    /// 0 to 100, from the protocol's 0 to 1.
    pub percent: Option<u8>,
    pub artifact: Option<String>,
    pub error: Option<String>,
}

/// At most `max` characters of `s`, with "…" when cut.
fn short(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The protocol key a line that is not valid JSON starts with (`{"progress"…`), if any.
fn leading_key(t: &str) -> Option<&'static str> {
    let rest = t.strip_prefix('{')?.trim_start().strip_prefix('"')?;
    KEYS.into_iter()
        .find(|k| rest.strip_prefix(k).is_some_and(|r| r.starts_with('"')))
}

/// Reads one line of the tool's stdout: a JSON object with at least one of the protocol's keys
/// is a message (other keys are ignored, so a tool may add its own); a line that starts like a
/// message (`{"progress"`, `{"step"`, `{"artifact"`, `{"error"`) but is not valid JSON, or a
/// message with a value of the wrong kind, is malformed; anything else is text.
pub fn parse_line(line: &str) -> Line {
    let t = line.trim();
    if !t.starts_with('{') {
        return Line::Text;
    }
    let map = match serde_json::from_str::<serde_json::Value>(t) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(_) => return Line::Text,
        Err(e) => {
            return match leading_key(t) {
                Some(key) => Line::Malformed {
                    artifact: key == "artifact",
                    why: format!("not valid JSON ({e})"),
                },
                None => Line::Text,
            }
        }
    };
    if !KEYS.iter().any(|k| map.contains_key(*k)) {
        return Line::Text;
    }
    let artifact = map.contains_key("artifact");
    let text = |key: &str| match map.get(key) {
        None => Ok(None),
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(v) => Err(format!(
            "\"{key}\" must be a non-empty string, not {}",
            short(&v.to_string(), 100)
        )),
    };
    let percent = match map.get("progress") {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(f) if (0.0..=1.0).contains(&f) => Ok(Some((f * 100.0).round() as u8)),
            _ => Err(format!(
                "\"progress\" must be a number from 0 to 1, not {}",
                short(&v.to_string(), 100)
            )),
        },
    };
    let message = (|| -> Result<Message, String> {
        Ok(Message {
            step: text("step")?,
            percent: percent?,
            artifact: text("artifact")?,
            error: text("error")?,
        })
    })();
    match message {
        Ok(m) => Line::Message(m),
        Err(why) => Line::Malformed { artifact, why },
    }
}

const OUTSIDE: &str =
    "is outside the build's work dirs (the checkout, $KILN_SCRATCH_DIR and $KILN_OUTPUT_DIR)";

/// Takes the file a tool reported into `output` under its file name, and returns that name.
/// `reported` is relative to the checkout `src`, or absolute; it must resolve inside `src`,
/// `scratch` or `output` (a symbolic link is followed only while it stays inside them, and what a
/// link leading out points to is never named). A file is moved; a link is copied (the file it
/// points to may be reported too, or be another's target).
pub fn take_artifact(
    src: &Path,
    scratch: &Path,
    output: &Path,
    reported: &str,
) -> Result<String, String> {
    let asked = Path::new(reported);
    let path = if asked.is_absolute() {
        asked.to_path_buf()
    } else {
        src.join(asked)
    };
    let Some(name) = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
    else {
        return Err("does not name a file".into());
    };
    kiln_shared::api::validate_artifact_name(&name)
        .map_err(|m| format!("cannot be an artifact: {m}"))?;
    let link = std::fs::symlink_metadata(&path).map_err(|_| "does not exist".to_string())?;
    let roots: Vec<PathBuf> = [src, scratch, output]
        .iter()
        .filter_map(|d| d.canonicalize().ok())
        .collect();
    let real = match path.canonicalize() {
        Ok(r) => r,
        // A link to nothing: say no more than whether it is where it may be.
        Err(_) => {
            let inside = path
                .parent()
                .and_then(|d| d.canonicalize().ok())
                .is_some_and(|d| roots.iter().any(|r| d.starts_with(r)));
            return Err(if inside {
                "is a symbolic link to nothing".into()
            } else {
                OUTSIDE.into()
            });
        }
    };
    if !roots.iter().any(|r| real.starts_with(r)) {
        return Err(OUTSIDE.into());
    }
    if !std::fs::metadata(&real).is_ok_and(|m| m.is_file()) {
        return Err("is not a regular file".into());
    }
    let out = output
        .canonicalize()
        .map_err(|e| format!("cannot be moved: the output dir: {e}"))?;
    let dest = out.join(&name);
    if real == dest {
        return Ok(name);
    }
    let is_link = link.file_type().is_symlink();
    // The reported path itself (its last part not followed) is the output dir's `name`: a link
    // there is replaced by a copy of its file.
    let here = path
        .parent()
        .and_then(|d| d.canonicalize().ok())
        .map(|d| d.join(&name));
    if is_link && here.as_deref() == Some(dest.as_path()) {
        std::fs::remove_file(&dest).map_err(|e| format!("cannot be replaced by its file: {e}"))?;
    } else if std::fs::symlink_metadata(&dest).is_ok() {
        return Err(format!(
            "would replace the artifact {name} already in $KILN_OUTPUT_DIR"
        ));
    }
    let copy = |from: &Path| {
        std::fs::copy(from, &dest)
            .map(drop)
            .map_err(|e| format!("cannot be copied to $KILN_OUTPUT_DIR: {e}"))
    };
    if is_link {
        return copy(&real).map(|()| name);
    }
    match std::fs::rename(&real, &dest) {
        Ok(()) => Ok(name),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            copy(&real)?;
            let _ = std::fs::remove_file(&real);
            Ok(name)
        }
        Err(e) => Err(format!("cannot be moved to $KILN_OUTPUT_DIR: {e}")),
    }
}

/// What the tool said so far.
#[derive(Default)]
struct Talk {
    /// Lines of stdout read.
    lines: u64,
    step: Option<String>,
    percent: Option<u8>,
    /// The last `{"error"}`.
    error: Option<String>,
    /// Why the build fails whatever the tool's exit: the first artifact that could not be taken.
    failure: Option<String>,
}

impl Talk {
    async fn read(&mut self, ctx: &Context, out: impl AsyncRead + Unpin) {
        let mut r = BufReader::new(out);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    self.lines += 1;
                    let line = String::from_utf8_lossy(&buf);
                    self.handle(ctx, &line).await;
                }
            }
        }
    }

    async fn handle(&mut self, ctx: &Context, line: &str) {
        let n = self.lines;
        let m = match parse_line(line) {
            Line::Text => return ctx.log.line(line),
            Line::Malformed { artifact, why } => {
                let said = format!("exec: stdout line {n} is not a valid message: {why}");
                ctx.log
                    .note(&format!("{said}: {}", short(line.trim(), 200)));
                if artifact && self.failure.is_none() {
                    self.failure = Some(said);
                }
                return;
            }
            Line::Message(m) => m,
        };
        if let Some(s) = &m.step {
            if self.step.as_ref() != Some(s) {
                ctx.log.note(&format!("step: {s}"));
                self.step = Some(s.clone());
                self.percent = None;
            }
        }
        if m.percent.is_some() {
            self.percent = m.percent;
        }
        if m.step.is_some() || m.percent.is_some() {
            ctx.progress
                .report(self.step.as_deref().unwrap_or("building"), self.percent);
        }
        if let Some(a) = m.artifact {
            let (src, scratch, output, reported) = (
                ctx.src.clone(),
                ctx.scratch.clone(),
                ctx.output.clone(),
                a.clone(),
            );
            let taken = tokio::task::spawn_blocking(move || {
                take_artifact(&src, &scratch, &output, &reported)
            })
            .await
            .unwrap_or_else(|e| Err(format!("could not be taken: {e}")));
            match taken {
                Ok(name) => ctx.log.note(&format!("artifact: {name} (from {a})")),
                Err(why) => {
                    let said = format!(
                        "exec: stdout line {n}: artifact \"{}\" {why}",
                        short(&a, 300).escape_debug()
                    );
                    ctx.log.note(&said);
                    self.failure.get_or_insert(said);
                }
            }
        }
        if let Some(e) = m.error {
            let e = short(e.trim(), MAX_ERROR);
            ctx.log.note(&format!("the tool reports an error: {e}"));
            self.error = Some(e);
        }
    }
}

fn fail(s: impl Into<String>) -> BackendError {
    BackendError::Failed(s.into())
}

impl Backend for Exec {
    fn name(&self) -> &'static str {
        "exec"
    }

    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let program = self.0.program();
            let path = super::branch_program(ctx, "exec.command", program)?;
            let mut cmd = super::branch_command(ctx, &path);
            cmd.args(&self.0.command[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let what = format!("exec {program}");
            ctx.log
                .note(&format!("exec {}", short(&self.0.command.join(" "), 500)));
            let mut child = cmd
                .spawn()
                .map_err(|e| fail(format!("{what}: cannot start it: {e}")))?;
            let stderr = tokio::spawn(process::pump(
                child.stderr.take().expect("piped"),
                ctx.log.clone(),
            ));
            let mut talk = Talk::default();
            let mut reading = Box::pin(talk.read(ctx, child.stdout.take().expect("piped")));
            let mut read_all = false;
            let status = loop {
                tokio::select! {
                    s = child.wait() => break s,
                    _ = &mut reading, if !read_all => read_all = true,
                }
            };
            // A background child still holding the pipes must not hold the build up forever.
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                if !read_all {
                    (&mut reading).await;
                }
                let _ = stderr.await;
            })
            .await;
            drop(reading);
            let status = status.map_err(|e| fail(format!("{what}: waiting for it: {e}")))?;
            if let Some(f) = talk.failure {
                if !status.success() {
                    ctx.log
                        .note(&format!("{what} ended with {}", process::describe(status)));
                }
                return Err(fail(f));
            }
            if status.success() {
                return Ok(());
            }
            Err(fail(format!(
                "{what} failed with {}{}",
                process::describe(status),
                talk.error
                    .or_else(|| ctx.log.first_error())
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Log;
    use crate::store::{BuildDir, Phase, RunnerState};

    fn msg(m: Message) -> Line {
        Line::Message(m)
    }

    #[test]
    fn lines_are_messages_text_or_malformed() {
        assert_eq!(
            parse_line("{\"progress\": 0.4, \"step\": \"installing packages\"}\n"),
            msg(Message {
                step: Some("installing packages".into()),
                percent: Some(40),
                ..Default::default()
            })
        );
        assert_eq!(
            parse_line("  {\"step\": \"kernel\"}"),
            msg(Message {
                step: Some("kernel".into()),
                ..Default::default()
            })
        );
        assert_eq!(
            parse_line("{\"progress\": 1}"),
            msg(Message {
                percent: Some(100),
                ..Default::default()
            })
        );
        assert_eq!(
            parse_line("{\"artifact\": \"out/board.img\", \"by\": \"mkosi\"}"),
            msg(Message {
                artifact: Some("out/board.img".into()),
                ..Default::default()
            })
        );
        assert_eq!(
            parse_line("{\"error\": \"no space\"}"),
            msg(Message {
                error: Some("no space".into()),
                ..Default::default()
            })
        );
        // Ordinary output, JSON or not, is text.
        for text in [
            "Building image…",
            "",
            "{",
            "{not json at all",
            "{\"level\": \"info\", \"msg\": \"hello\"}",
            "[1, 2]",
            "{\"stepping\": 1",
        ] {
            assert_eq!(parse_line(text), Line::Text, "{text:?}");
        }
        // Meant for Kiln, but wrong.
        for (line, artifact, says) in [
            ("{\"progress\": 0.4", false, "not valid JSON"),
            ("{ \"step\": oops}", false, "not valid JSON"),
            ("{\"artifact\": \"x.img}", true, "not valid JSON"),
            ("{\"progress\": 1.5}", false, "from 0 to 1, not 1.5"),
            ("{\"progress\": -0.1}", false, "from 0 to 1"),
            ("{\"progress\": \"40%\"}", false, "from 0 to 1"),
            (
                "{\"step\": 3}",
                false,
                "\"step\" must be a non-empty string",
            ),
            ("{\"step\": \"  \"}", false, "non-empty"),
            ("{\"artifact\": null}", true, "\"artifact\" must be"),
            (
                "{\"artifact\": \"a.img\", \"progress\": 2}",
                true,
                "progress",
            ),
        ] {
            match parse_line(line) {
                Line::Malformed { artifact: a, why } => {
                    assert_eq!(a, artifact, "{line}");
                    assert!(why.contains(says), "{line}: {why}");
                }
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    struct Dirs {
        _tmp: tempfile::TempDir,
        src: PathBuf,
        scratch: PathBuf,
        output: PathBuf,
    }

    fn dirs() -> Dirs {
        let tmp = tempfile::tempdir().unwrap();
        let [src, scratch, output] = ["src", "scratch", "output"].map(|d| {
            let p = tmp.path().join("sandbox").join(d);
            std::fs::create_dir_all(&p).unwrap();
            p
        });
        Dirs {
            _tmp: tmp,
            src,
            scratch,
            output,
        }
    }

    #[test]
    fn artifacts_are_taken_only_from_the_work_dirs() {
        let d = dirs();
        let take = |r: &str| take_artifact(&d.src, &d.scratch, &d.output, r);
        std::fs::create_dir_all(d.src.join("out")).unwrap();
        std::fs::write(d.src.join("out/board.img"), "board").unwrap();
        std::fs::write(d.scratch.join("root.tar"), "root").unwrap();
        std::fs::write(d.output.join("direct.txt"), "direct").unwrap();
        assert_eq!(take("out/board.img").unwrap(), "board.img");
        assert!(!d.src.join("out/board.img").exists(), "moved");
        let abs = d.scratch.join("root.tar");
        assert_eq!(take(abs.to_str().unwrap()).unwrap(), "root.tar");
        // Already in place.
        let direct = d.output.join("direct.txt");
        assert_eq!(take(direct.to_str().unwrap()).unwrap(), "direct.txt");
        for (name, content) in [
            ("board.img", "board"),
            ("root.tar", "root"),
            ("direct.txt", "direct"),
        ] {
            assert_eq!(
                std::fs::read_to_string(d.output.join(name)).unwrap(),
                content
            );
        }
        // A link inside the work dirs is copied, its file left for whoever else uses it.
        std::fs::write(d.scratch.join("image_1.0.raw"), "raw").unwrap();
        std::os::unix::fs::symlink("image_1.0.raw", d.scratch.join("image.raw")).unwrap();
        assert_eq!(
            take(d.scratch.join("image.raw").to_str().unwrap()).unwrap(),
            "image.raw"
        );
        assert_eq!(
            std::fs::read_to_string(d.output.join("image.raw")).unwrap(),
            "raw"
        );
        assert!(d.scratch.join("image_1.0.raw").exists());

        // Out of bounds, missing, or not a file.
        std::os::unix::fs::symlink("/etc/passwd", d.scratch.join("passwd")).unwrap();
        std::os::unix::fs::symlink("/etc", d.src.join("etc")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/x", d.scratch.join("dangling")).unwrap();
        std::fs::create_dir(d.scratch.join("dir")).unwrap();
        let passwd = d.scratch.join("passwd");
        let dangling = d.scratch.join("dangling");
        for (reported, says) in [
            ("/etc/passwd", "outside the build's work dirs"),
            (passwd.to_str().unwrap(), "outside"),
            ("etc/passwd", "outside"),
            ("../../../../../../../etc/passwd", "outside"),
            (dangling.to_str().unwrap(), "symbolic link to nothing"),
            ("missing.img", "does not exist"),
            (
                d.scratch.join("dir").to_str().unwrap(),
                "not a regular file",
            ),
            (".hidden", "cannot be an artifact"),
            ("/", "does not name a file"),
            ("out/board.img", "does not exist"),
        ] {
            let e = take(reported).unwrap_err();
            assert!(e.contains(says), "{reported}: {e}");
            assert!(!e.contains("/etc/passwd") || reported.contains("etc/passwd"));
        }
        // Never over another artifact.
        std::fs::write(d.src.join("direct.txt"), "other").unwrap();
        assert!(take("direct.txt").unwrap_err().contains("would replace"));
    }

    #[tokio::test]
    async fn a_tool_reports_steps_artifacts_and_errors() {
        let d = dirs();
        let bd = BuildDir {
            id: kiln_shared::BuildId(7),
            path: d.src.parent().unwrap().parent().unwrap().to_path_buf(),
        };
        bd.write_state(&RunnerState {
            phase: Phase::Running,
            commit: None,
            result: None,
            progress: None,
        })
        .unwrap();
        let log_path = bd.path.join("log");
        std::fs::create_dir_all(d.src.join("tools")).unwrap();
        let tool = d.src.join("tools/build");
        std::fs::write(
            &tool,
            r#"#!/bin/sh
echo "args: $*"
printf '{"step": "bootstrap", "progress": 0.25}\n'
echo plain output
echo to stderr >&2
printf '{"progress": 0.5}\n'
mkdir -p out && echo img > out/board.img
printf '{"artifact": "out/board.img"}\n'
printf '{"progress": 7}\n'
printf '{"error": "the board is on fire"}\n'
exit 3
"#,
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let ctx = Context {
            build: bd.id,
            progress: super::super::Progress::to(bd.clone()),
            ..Context::for_test(&d.src, &d.output, &d.scratch, Log::open(&log_path).unwrap())
        };
        let exec = Exec(ExecOptions {
            command: vec!["./tools/build".into(), "--flag".into(), "x y".into()],
        });
        let Err(BackendError::Failed(reason)) = exec.run(&ctx).await else {
            panic!("the tool exits 3")
        };
        assert_eq!(
            reason,
            "exec ./tools/build failed with exit status 3: the board is on fire"
        );
        let log = std::fs::read_to_string(&log_path).unwrap();
        for line in [
            "[kiln] exec ./tools/build --flag x y",
            "args: --flag x y",
            "[kiln] step: bootstrap",
            "plain output",
            "to stderr",
            "[kiln] artifact: board.img (from out/board.img)",
            "[kiln] exec: stdout line 6 is not a valid message: \"progress\" must be a number from 0 to 1, not 7: {\"progress\": 7}",
        ] {
            assert!(log.lines().any(|l| l == line), "{line:?} in\n{log}");
        }
        assert!(!log.contains("{\"step\""), "{log}");
        assert_eq!(
            std::fs::read_to_string(d.output.join("board.img")).unwrap(),
            "img\n"
        );
        assert_eq!(
            bd.read_state().unwrap().unwrap().progress,
            Some(("bootstrap".to_string(), Some(50)))
        );

        // An artifact out of bounds fails the build even when the tool exits 0.
        std::fs::write(
            &tool,
            "#!/bin/sh\nprintf '{\"artifact\": \"/etc/passwd\"}\\n'\necho ok > \"$KILN_OUTPUT_DIR/ok\"\n",
        )
        .unwrap();
        let Err(BackendError::Failed(reason)) = exec.run(&ctx).await else {
            panic!("an artifact outside the work dirs")
        };
        assert!(
            reason.starts_with("exec: stdout line 1: artifact \"/etc/passwd\" is outside"),
            "{reason}"
        );
    }
}
