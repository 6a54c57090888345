//! The boot test (`[boot]` in `kiln.toml`): after a successful build, QEMU boots the build's
//! disk image with the kernel and initrd of its root file system and watches the serial
//! console until a pattern (a login prompt by default) shows, a failure pattern (a kernel
//! panic, the initramfs shell) shows, the guest stops, or the time-out passes.
//!
//! - amd64 runs in `qemu-system-x86_64 -machine q35`, arm64 in `qemu-system-aarch64 -machine
//!   virt`; the disk is a virtio disk opened with `snapshot=on` (the artifact stays as built),
//!   the guest has no network.
//! - KVM is used when `/dev/kvm` opens and the guest is the host's architecture; a guest that
//!   prints nothing under KVM within [`KVM_PROBE`] (some hosts open `/dev/kvm` but run no
//!   guest) is stopped and booted again under TCG, and the log says so.
//! - The serial console goes to the build log as it comes, and whole into `boot-serial.log`
//!   (an artifact of a succeeded build); the outcome goes into the image's record.

use crate::backend::Context;
use crate::recipe::BootOptions;
use kiln_shared::record::{BootTest, ImageLayout};
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// The serial log's artifact name.
pub const SERIAL_LOG: &str = "boot-serial.log";
/// How long a guest under KVM may stay silent before it is booted again under TCG.
pub const KVM_PROBE: Duration = Duration::from_secs(20);
/// How long the serial console is still read after a failure pattern showed.
const FAILURE_GRACE: Duration = Duration::from_secs(3);
/// Serial output beyond this goes neither to the build log nor to the serial log.
const MAX_SERIAL_BYTES: u64 = 16 << 20;

/// What the boot test needs, found before QEMU starts.
struct Plan {
    qemu: &'static str,
    machine: &'static str,
    image: PathBuf,
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    append: String,
    kvm: bool,
}

/// Runs the boot test of the build's image. `Err` when it could not be run at all (no image,
/// no kernel, no QEMU): the caller fails the build with that reason. `images` is what the
/// runner recorded of the build's disk images; `arch` the image's architecture.
pub async fn test(
    ctx: &Context,
    o: &BootOptions,
    arch: &str,
    images: &[ImageLayout],
) -> Result<(String, BootTest), String> {
    let layout = match &o.image {
        Some(name) => images
            .iter()
            .find(|i| &i.artifact == name)
            .cloned()
            .unwrap_or_else(|| ImageLayout {
                artifact: name.clone(),
                ..Default::default()
            }),
        None => images.first().cloned().ok_or(
            "the build made no disk image to boot (boot.image names one; raw images are *.img, or *.img.zst/.xz/.gz)",
        )?,
    };
    let plan = plan(ctx, o, arch, &layout).await?;
    ctx.log.note(&format!(
        "boot test: booting {} in {} with {}; waiting up to {} s for \"{}\" on the serial console",
        layout.artifact,
        plan.qemu,
        plan.kernel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        o.timeout_secs,
        o.pattern
    ));
    let mut serial = Serial::create(&ctx.output.join(SERIAL_LOG), ctx.log.clone())
        .map_err(|e| format!("cannot write {SERIAL_LOG}: {e}"))?;
    let mut outcome = None;
    if plan.kvm {
        match boot(&plan, o, true, &mut serial).await? {
            Ended::NoOutput | Ended::Exited { printed: false, .. } => {
                ctx.log.note(&format!(
                    "boot test: the guest printed nothing under KVM within {} s; booting it again under TCG",
                    KVM_PROBE.as_secs()
                ));
                serial.restart();
            }
            e => outcome = Some(("kvm", e)),
        }
    } else {
        ctx.log
            .note("boot test: no usable /dev/kvm for this guest; running under TCG");
    }
    let (accel, ended) = match outcome {
        Some(o) => o,
        None => ("tcg", boot(&plan, o, false, &mut serial).await?),
    };
    let seconds = ended.seconds();
    let (passed, detail) = match ended {
        Ended::Matched { .. } => (
            true,
            format!("\"{}\" on the serial console after {seconds} s", o.pattern),
        ),
        Ended::Failed { pattern, .. } => (
            false,
            format!("the guest printed \"{pattern}\" after {seconds} s"),
        ),
        Ended::Exited { status, stderr, .. } => (
            false,
            format!(
                "the guest stopped after {seconds} s ({}{}) before \"{}\" showed",
                status,
                if stderr.is_empty() {
                    String::new()
                } else {
                    format!(": {stderr}")
                },
                o.pattern
            ),
        ),
        Ended::TimedOut { .. } | Ended::NoOutput => (
            false,
            format!(
                "no \"{}\" on the serial console within {} s",
                o.pattern, o.timeout_secs
            ),
        ),
    };
    serial.finish();
    ctx.log.note(&format!(
        "boot test {}: {detail} ({})",
        if passed { "passed" } else { "failed" },
        accel.to_uppercase()
    ));
    let result = BootTest {
        passed,
        pattern: o.pattern.clone(),
        accel: accel.into(),
        machine: format!("{} -machine {}", plan.qemu, plan.machine),
        seconds,
        detail,
        serial_tail: serial.tail.iter().cloned().collect(),
        log: Some(SERIAL_LOG.into()),
    };
    Ok((layout.artifact, result))
}

/// Finds the image (decompressed into scratch when it is compressed), the kernel and initrd,
/// and the command line.
async fn plan(
    ctx: &Context,
    o: &BootOptions,
    arch: &str,
    layout: &ImageLayout,
) -> Result<Plan, String> {
    let (qemu, machine, console, package) = match arch {
        "amd64" => ("qemu-system-x86_64", "q35", "ttyS0", "qemu-system-x86"),
        "arm64" => ("qemu-system-aarch64", "virt", "ttyAMA0", "qemu-system-arm"),
        other => {
            return Err(format!(
                "the boot test runs amd64 and arm64 images, not {other} (boot.architecture)"
            ))
        }
    };
    if !crate::machine::have_tool(qemu) {
        return Err(format!(
            "{qemu} is not installed on this slave (apt-get install {package})"
        ));
    }
    let image = image_file(ctx, &layout.artifact).await?;
    // mmdebstrap's root file system, on disk or unpacked into memory from the cache.
    let rootfs = [
        ctx.scratch.join("rootfs"),
        ctx.scratch
            .join(crate::backend::in_memory::DIR)
            .join(crate::backend::in_memory::ROOTFS),
    ]
    .into_iter()
    .find(|r| r.is_dir());
    let base = rootfs.as_ref().unwrap_or(&ctx.output);
    let kernel = match &o.kernel {
        Some(k) => in_root(base, k).ok_or_else(|| {
            format!("boot.kernel = \"{k}\" is not a file in the image's root file system")
        })?,
        None => find_default(base, "vmlinuz").ok_or(
            "the image's root file system has no /vmlinuz or /boot/vmlinuz-* (install a kernel, or name one with boot.kernel)",
        )?,
    };
    let initrd = match &o.initrd {
        Some(i) => Some(in_root(base, i).ok_or_else(|| {
            format!("boot.initrd = \"{i}\" is not a file in the image's root file system")
        })?),
        None => find_default(base, "initrd.img"),
    };
    let root = match &o.root {
        Some(r) => r.clone(),
        None => default_root(layout, initrd.is_some()),
    };
    let mut append = format!("root={root} rw console={console} panic=-1");
    if let Some(more) = &o.append {
        append.push(' ');
        append.push_str(more);
    }
    Ok(Plan {
        qemu,
        machine,
        image,
        kernel,
        initrd,
        append,
        kvm: kvm_usable(arch),
    })
}

/// The raw image to boot: the artifact itself, or its decompressed copy in scratch.
async fn image_file(ctx: &Context, artifact: &str) -> Result<PathBuf, String> {
    let src = ctx.output.join(artifact);
    if !src.is_file() {
        return Err(format!(
            "the disk image '{artifact}' to boot is not among the build's outputs"
        ));
    }
    let Some((stem, tool)) = [(".zst", "zstd"), (".xz", "xz"), (".gz", "gzip")]
        .into_iter()
        .find_map(|(ext, tool)| artifact.strip_suffix(ext).map(|s| (s, tool)))
    else {
        return Ok(src);
    };
    let dir = ctx.scratch.join("boot");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    let dst = dir.join(stem);
    let mut cmd = Command::new(tool);
    if tool == "zstd" {
        cmd.args(["-d", "-q", "-f"]).arg(&src).arg("-o").arg(&dst);
    } else {
        let out = std::fs::File::create(&dst).map_err(|e| e.to_string())?;
        cmd.args(["-d", "-c"]).arg(&src).stdout(out);
    }
    crate::backend::step(ctx, &format!("decompressing {artifact} to boot it"), cmd)
        .await
        .map_err(|e| e.to_string())?;
    Ok(dst)
}

/// `root=` for the kernel: the root file system's UUID (an initramfs finds it), else its
/// partition's device.
fn default_root(layout: &ImageLayout, initrd: bool) -> String {
    let root = layout
        .partitions
        .iter()
        .find(|p| p.os_release.is_some())
        .or_else(|| {
            layout.partitions.iter().find(|p| {
                matches!(
                    p.filesystem.as_deref(),
                    Some("ext4" | "ext3" | "ext2" | "btrfs" | "xfs")
                )
            })
        });
    match root {
        Some(p) if initrd && p.uuid.is_some() => format!("UUID={}", p.uuid.as_deref().unwrap()),
        Some(p) => format!("/dev/vda{}", p.number),
        None if layout.table.is_none() && !layout.partitions.is_empty() => "/dev/vda".into(),
        None => "/dev/vda1".into(),
    }
}

/// `/dev/kvm` opens for reading and writing, and the guest is the host's architecture.
fn kvm_usable(arch: &str) -> bool {
    let host = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        _ => return false,
    };
    host == arch && crate::machine::kvm()
}

/// `/NAME`, else the newest `/boot/NAME-*` (by version order), in the root file system.
fn find_default(root: &Path, name: &str) -> Option<PathBuf> {
    if let Some(p) = in_root(root, name) {
        return Some(p);
    }
    let mut found: Vec<String> = std::fs::read_dir(root.join("boot"))
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.strip_prefix(name)
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|v| !v.is_empty() && !v.contains(".dpkg-") && !v.ends_with(".new"))
        })
        .collect();
    found.sort_by(|a, b| kiln_shared::record::version::compare(a, b));
    in_root(root, &format!("boot/{}", found.pop()?))
}

/// The regular file at `path` inside `root`, following symbolic links as the image itself
/// would (an absolute target starts again at `root`), never out of `root`.
pub fn in_root(root: &Path, path: &str) -> Option<PathBuf> {
    let mut todo: Vec<std::ffi::OsString> = Path::new(path)
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            _ => None,
        })
        .collect();
    let mut at: Vec<std::ffi::OsString> = vec![];
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            at.pop();
            continue;
        }
        if name == "." {
            continue;
        }
        let here = at
            .iter()
            .fold(root.to_path_buf(), |p, c| p.join(c))
            .join(&name);
        let meta = std::fs::symlink_metadata(&here).ok()?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > 40 {
                return None;
            }
            let target = std::fs::read_link(&here).ok()?;
            if target.is_absolute() {
                at.clear();
            }
            for c in target.components().rev() {
                match c {
                    Component::Normal(n) => todo.push(n.to_owned()),
                    Component::ParentDir => todo.push("..".into()),
                    _ => {}
                }
            }
        } else {
            at.push(name);
        }
    }
    let file = at.iter().fold(root.to_path_buf(), |p, c| p.join(c));
    std::fs::symlink_metadata(&file)
        .ok()
        .filter(|m| m.is_file())
        .map(|_| file)
}

/// How one boot ended.
enum Ended {
    Matched {
        seconds: u32,
    },
    Failed {
        pattern: String,
        seconds: u32,
    },
    Exited {
        status: String,
        stderr: String,
        printed: bool,
        seconds: u32,
    },
    TimedOut {
        seconds: u32,
    },
    /// Under KVM: nothing on the serial console within [`KVM_PROBE`].
    NoOutput,
}

impl Ended {
    fn seconds(&self) -> u32 {
        match self {
            Ended::Matched { seconds }
            | Ended::Failed { seconds, .. }
            | Ended::Exited { seconds, .. }
            | Ended::TimedOut { seconds } => *seconds,
            Ended::NoOutput => KVM_PROBE.as_secs() as u32,
        }
    }
}

fn qemu_escape(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

async fn boot(
    plan: &Plan,
    o: &BootOptions,
    kvm: bool,
    serial: &mut Serial,
) -> Result<Ended, String> {
    let mut cmd = Command::new(plan.qemu);
    cmd.args(["-machine", plan.machine])
        .args(["-accel", if kvm { "kvm" } else { "tcg" }])
        .args(["-cpu", if kvm { "host" } else { "max" }])
        .args(["-smp", "1", "-m"])
        .arg(o.memory_mib().to_string())
        .args([
            "-display",
            "none",
            "-nodefaults",
            "-no-user-config",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(&plan.kernel);
    if let Some(i) = &plan.initrd {
        cmd.arg("-initrd").arg(i);
    }
    cmd.arg("-append")
        .arg(&plan.append)
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,snapshot=on",
            qemu_escape(&plan.image)
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", plan.qemu))?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let stderr = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = (&mut err).take(64 << 10).read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).trim().to_string()
    });
    let started = Instant::now();
    let deadline = started + Duration::from_secs(o.timeout_secs);
    let probe = kvm.then(|| started + KVM_PROBE);
    let secs = || started.elapsed().as_secs() as u32;
    let mut buf = vec![0u8; 16 << 10];
    let ended = loop {
        let wake = match probe {
            Some(p) if !serial.printed() => p.min(deadline),
            _ => deadline,
        };
        tokio::select! {
            r = out.read(&mut buf) => match r {
                Ok(0) | Err(_) => break None,
                Ok(n) => match serial.feed(&buf[..n], &o.pattern, &o.fail_patterns) {
                    Some(Seen::Pattern) => break Some(Ended::Matched { seconds: secs() }),
                    Some(Seen::Failure(p)) => {
                        let seconds = secs();
                        // The rest of what the guest says (a panic's reason follows on the same
                        // line; with panic=-1 QEMU stops right after): read on briefly.
                        let grace = tokio::time::Instant::now() + FAILURE_GRACE;
                        loop {
                            tokio::select! {
                                r = out.read(&mut buf) => match r {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => {
                                        serial.feed(&buf[..n], &o.pattern, &o.fail_patterns);
                                    }
                                },
                                _ = tokio::time::sleep_until(grace) => break,
                            }
                        }
                        // The whole line that showed it (the pattern alone when the guest
                        // never ended that line).
                        let line = serial.failure_line.clone().unwrap_or(p);
                        break Some(Ended::Failed { pattern: line, seconds });
                    }
                    None => {}
                },
            },
            _ = tokio::time::sleep_until(wake.into()) => {
                break Some(if Instant::now() >= deadline {
                    Ended::TimedOut { seconds: secs() }
                } else {
                    Ended::NoOutput
                });
            }
        }
    };
    let ended = match ended {
        Some(e) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            e
        }
        // The serial console closed: QEMU is ending.
        None => {
            let status = child
                .wait()
                .await
                .map(crate::process::describe)
                .unwrap_or_else(|e| e.to_string());
            let stderr: String = stderr.await.unwrap_or_default();
            Ended::Exited {
                status,
                stderr: stderr
                    .lines()
                    .last()
                    .unwrap_or("")
                    .chars()
                    .take(300)
                    .collect(),
                printed: serial.printed(),
                seconds: secs(),
            }
        }
    };
    serial.flush_partial();
    Ok(ended)
}

enum Seen {
    Pattern,
    Failure(String),
}

/// The serial console as it comes: into the build log line by line, into the serial log, and
/// its last lines kept for the record.
struct Serial {
    path: PathBuf,
    file: Option<std::fs::File>,
    log: crate::process::Log,
    written: u64,
    partial: Vec<u8>,
    tail: VecDeque<String>,
    printed: bool,
    /// The first whole line that showed a failure pattern: a panic's register dump that follows
    /// can push it out of `tail` before the reason is written.
    failure_line: Option<String>,
}

impl Serial {
    fn create(path: &Path, log: crate::process::Log) -> std::io::Result<Serial> {
        Ok(Serial {
            path: path.to_path_buf(),
            file: Some(std::fs::File::create(path)?),
            log,
            written: 0,
            partial: vec![],
            tail: VecDeque::new(),
            printed: false,
            failure_line: None,
        })
    }

    /// A second boot (TCG after a silent KVM) starts the serial log again.
    fn restart(&mut self) {
        self.file = std::fs::File::create(&self.path).ok();
        self.written = 0;
        self.partial.clear();
        self.tail.clear();
        self.printed = false;
        self.failure_line = None;
    }

    fn printed(&self) -> bool {
        self.printed
    }

    fn feed(&mut self, bytes: &[u8], pattern: &str, failures: &[String]) -> Option<Seen> {
        self.printed = true;
        if self.written < MAX_SERIAL_BYTES {
            if let Some(f) = &mut self.file {
                let _ = f.write_all(bytes);
            }
            self.written += bytes.len() as u64;
            if self.written >= MAX_SERIAL_BYTES {
                self.log.note(&format!(
                    "boot test: more than {} MiB of serial output; the rest is not kept",
                    MAX_SERIAL_BYTES >> 20
                ));
            }
        }
        let mut seen = None;
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.partial);
                let found = self.check(&line, pattern, failures);
                if self.failure_line.is_none() && matches!(found, Some(Seen::Failure(_))) {
                    self.failure_line =
                        Some(clean(&line).chars().take(BootTest::MAX_LINE).collect());
                }
                seen = seen.or(found);
                self.line(&line);
            } else if self.partial.len() < 64 << 10 {
                self.partial.push(b);
            }
        }
        // A prompt ends without a line break.
        let partial = self.partial.clone();
        seen.or_else(|| self.check(&partial, pattern, failures))
    }

    fn check(&self, line: &[u8], pattern: &str, failures: &[String]) -> Option<Seen> {
        let text = clean(line);
        if let Some(f) = failures.iter().find(|f| text.contains(f.as_str())) {
            return Some(Seen::Failure(f.clone()));
        }
        text.contains(pattern).then_some(Seen::Pattern)
    }

    fn line(&mut self, raw: &[u8]) {
        if self.written <= MAX_SERIAL_BYTES {
            self.log.line(&String::from_utf8_lossy(raw));
        }
        let text = clean(raw);
        if text.trim().is_empty() {
            return;
        }
        if self.tail.len() == BootTest::TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail
            .push_back(text.chars().take(BootTest::MAX_LINE).collect());
    }

    /// The line the guest was writing when it ended (a prompt), into the log and the tail.
    fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line);
        }
    }

    fn finish(&mut self) {
        if let Some(f) = &mut self.file {
            let _ = f.flush();
        }
        self.file = None;
    }
}

/// A serial line as text: escape sequences (colours, cursor moves) and other control
/// characters removed.
pub fn clean(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte; other escapes: ESC and one character.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            } else if chars.peek() == Some(&']') {
                // OSC (a window title): up to BEL or ESC.
                for c in chars.by_ref() {
                    if c == '\u{7}' || c == '\u{1b}' {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c == '\t' {
            out.push(' ');
        } else if !c.is_control() {
            out.push(c);
        }
    }
    out.trim_end().to_string()
}

/// The reason a failed boot test gives the build: what happened and the last serial lines.
pub fn failure_reason(t: &BootTest) -> String {
    let last: Vec<&str> = t
        .serial_tail
        .iter()
        .rev()
        .take(10)
        .rev()
        .map(String::as_str)
        .collect();
    if last.is_empty() {
        format!(
            "boot test failed: {}; the serial console stayed empty",
            t.detail
        )
    } else {
        format!(
            "boot test failed: {}; last serial lines:\n{}",
            t.detail,
            last.join("\n")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_leave_the_text() {
        assert_eq!(
            clean(b"[\x1b[0;32m  OK  \x1b[0m] Started \x1b]0;x\x07getty\r"),
            "[  OK  ] Started getty"
        );
        assert_eq!(clean(b"vm login: "), "vm login:");
    }

    #[test]
    fn links_resolve_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("boot")).unwrap();
        std::fs::write(r.join("boot/vmlinuz-6.1.0-9-amd64"), b"k").unwrap();
        std::fs::write(r.join("boot/vmlinuz-6.1.0-10-amd64"), b"k").unwrap();
        std::os::unix::fs::symlink("boot/vmlinuz-6.1.0-9-amd64", r.join("vmlinuz")).unwrap();
        std::os::unix::fs::symlink("/boot/vmlinuz-6.1.0-9-amd64", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/passwd", r.join("escape")).unwrap();
        let want = r.join("boot/vmlinuz-6.1.0-9-amd64");
        assert_eq!(in_root(r, "/vmlinuz"), Some(want.clone()));
        assert_eq!(in_root(r, "abs"), Some(want));
        // `..` stops at the root, as in a chroot: /etc/passwd of the image, which is absent.
        assert_eq!(in_root(r, "escape"), None);
        assert_eq!(in_root(r, "boot"), None, "a directory is no kernel");
        std::fs::remove_file(r.join("vmlinuz")).unwrap();
        assert_eq!(
            find_default(r, "vmlinuz"),
            Some(r.join("boot/vmlinuz-6.1.0-10-amd64")),
            "the newest by version, not by name"
        );
        assert_eq!(find_default(r, "initrd.img"), None);
    }

    #[test]
    fn the_pattern_is_seen_without_a_line_break_and_failures_first() {
        let d = tempfile::tempdir().unwrap();
        let log =
            crate::process::Log::from_file(std::fs::File::create(d.path().join("l")).unwrap());
        let mut s = Serial::create(&d.path().join("s"), log).unwrap();
        let fails = vec!["Kernel panic".to_string()];
        assert!(s.feed(b"Booting\r\nvm lo", "login:", &fails).is_none());
        assert!(matches!(
            s.feed(b"gin: ", "login:", &fails),
            Some(Seen::Pattern)
        ));
        assert_eq!(
            std::fs::read(d.path().join("s")).unwrap(),
            b"Booting\r\nvm login: "
        );
        // A second boot starts afresh; a failure pattern wins over the pattern after it.
        s.restart();
        assert!(matches!(
            s.feed(
                b"[ 1.0] Kernel panic - not syncing\nlogin:",
                "login:",
                &fails
            ),
            Some(Seen::Failure(_))
        ));
        s.flush_partial();
        let tail: Vec<&str> = s.tail.iter().map(String::as_str).collect();
        assert_eq!(tail, ["[ 1.0] Kernel panic - not syncing", "login:"]);
    }

    /// The line that showed a failure is kept whole, though it came in two reads and a register
    /// dump longer than the tail followed it.
    #[test]
    fn the_failure_line_outlives_the_dump_after_it() {
        let d = tempfile::tempdir().unwrap();
        let log =
            crate::process::Log::from_file(std::fs::File::create(d.path().join("l")).unwrap());
        let mut s = Serial::create(&d.path().join("s"), log).unwrap();
        let fails = vec!["Kernel panic - not syncing".to_string()];
        assert!(matches!(
            s.feed(
                b"[ 20.9] Kernel panic - not syncing: Attemp",
                "login:",
                &fails
            ),
            Some(Seen::Failure(_))
        ));
        assert_eq!(s.failure_line, None, "the line is not whole yet");
        s.feed(b"ted to kill init! exitcode=0x00000100\n", "login:", &fails);
        for i in 0..BootTest::TAIL_LINES + 5 {
            s.feed(
                format!("[ 20.9] R{i:02}: 0000\n").as_bytes(),
                "login:",
                &fails,
            );
        }
        assert!(!s.tail.iter().any(|l| l.contains("Kernel panic")));
        assert_eq!(
            s.failure_line.as_deref(),
            Some("[ 20.9] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100")
        );
        s.restart();
        assert_eq!(s.failure_line, None);
    }

    #[test]
    fn the_root_is_the_root_file_systems() {
        use kiln_shared::record::Partition;
        let mut l = ImageLayout {
            table: Some("gpt".into()),
            partitions: vec![
                Partition {
                    number: 1,
                    filesystem: Some("vfat".into()),
                    ..Default::default()
                },
                Partition {
                    number: 2,
                    filesystem: Some("ext4".into()),
                    uuid: Some("u-u-i-d".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(default_root(&l, true), "UUID=u-u-i-d");
        assert_eq!(default_root(&l, false), "/dev/vda2");
        l.partitions.clear();
        assert_eq!(default_root(&l, true), "/dev/vda1");
    }
}
