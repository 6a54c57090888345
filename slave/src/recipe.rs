//! `kiln.toml` at the root of a configuration branch: which backend builds the image, and its
//! options. Unknown keys are refused and every error names the option at fault.

use serde::Deserialize;
use std::path::Path;

pub const FILE: &str = "kiln.toml";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    backend: String,
    #[serde(default)]
    script: Option<ScriptOptions>,
    #[serde(default)]
    mmdebstrap: Option<MmdebstrapOptions>,
    #[serde(default, rename = "live-build")]
    live_build: Option<LiveBuildOptions>,
    #[serde(default)]
    exec: Option<ExecOptions>,
    #[serde(default)]
    debos: Option<DebosOptions>,
    #[serde(default)]
    vmdb2: Option<Vmdb2Options>,
    /// Files the build must produce; a build without them fails, naming what is missing.
    #[serde(default)]
    outputs: Vec<String>,
    /// A boot test of the image after a successful build (`boot.rs`).
    #[serde(default)]
    boot: Option<BootOptions>,
}

/// `[boot]`: boot the build's disk image in QEMU and wait for a pattern on its serial console.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootOptions {
    /// The disk image artifact to boot; default: the first one the build made.
    #[serde(default)]
    pub image: Option<String>,
    /// `amd64` or `arm64`; default: the image's (mmdebstrap.architecture, else the slave's).
    #[serde(default)]
    pub architecture: Option<String>,
    /// The kernel, a path in the image's root file system; default `/vmlinuz`, else the newest
    /// `/boot/vmlinuz-*`.
    #[serde(default)]
    pub kernel: Option<String>,
    /// Default `/initrd.img`, else the newest `/boot/initrd.img-*` (none: boot without one).
    #[serde(default)]
    pub initrd: Option<String>,
    /// The kernel's `root=`; default the root file system's `UUID=…` (with an initrd) or its
    /// partition (`/dev/vda1`).
    #[serde(default)]
    pub root: Option<String>,
    /// More kernel command line.
    #[serde(default)]
    pub append: Option<String>,
    /// The text on the serial console that means the image booted.
    #[serde(default = "default_boot_pattern")]
    pub pattern: String,
    /// Texts that mean it did not (the test ends at once).
    #[serde(default = "default_boot_fail_patterns")]
    pub fail_patterns: Vec<String>,
    #[serde(default = "default_boot_timeout")]
    pub timeout_secs: u64,
    /// The guest's memory, like "1G".
    #[serde(default = "default_boot_memory")]
    pub memory: String,
}

fn default_boot_pattern() -> String {
    "login:".into()
}
fn default_boot_fail_patterns() -> Vec<String> {
    [
        "Kernel panic - not syncing",
        "(initramfs)",
        "You are in emergency mode",
    ]
    .map(String::from)
    .to_vec()
}
fn default_boot_timeout() -> u64 {
    600
}
fn default_boot_memory() -> String {
    "1G".into()
}

/// Architectures the boot test runs.
pub const BOOT_ARCHITECTURES: [&str; 2] = ["amd64", "arm64"];

impl BootOptions {
    pub fn memory_mib(&self) -> u64 {
        parse_size(&self.memory).unwrap_or(0) >> 20
    }

    fn check(&self) -> Result<(), String> {
        if let Some(i) = &self.image {
            kiln_shared::api::validate_artifact_name(i)
                .map_err(|m| format!("{FILE}: boot.image: {m}"))?;
        }
        if let Some(a) = &self.architecture {
            if !BOOT_ARCHITECTURES.contains(&a.as_str()) {
                return Err(format!(
                    "{FILE}: boot.architecture = \"{a}\" is not one the boot test runs ({})",
                    BOOT_ARCHITECTURES.join(", ")
                ));
            }
        }
        for (key, v) in [("kernel", &self.kernel), ("initrd", &self.initrd)] {
            if let Some(p) = v {
                if p.trim_matches('/').is_empty()
                    || p.split('/').any(|c| c == "..")
                    || p.contains(char::is_control)
                {
                    return Err(format!(
                        "{FILE}: boot.{key} = \"{}\" must be a path in the image's root file system, without '..'",
                        p.escape_debug()
                    ));
                }
            }
        }
        for (key, v) in [("root", &self.root), ("append", &self.append)] {
            if let Some(t) = v {
                if t.len() > 1000 || t.contains(char::is_control) {
                    return Err(format!(
                        "{FILE}: boot.{key} must be one line of at most 1000 characters"
                    ));
                }
            }
        }
        let pattern_ok = |p: &str| !p.trim().is_empty() && p.len() <= 200;
        if !pattern_ok(&self.pattern) {
            return Err(format!(
                "{FILE}: boot.pattern must be a text of 1 to 200 characters"
            ));
        }
        if !self.fail_patterns.iter().all(|p| pattern_ok(p)) {
            return Err(format!(
                "{FILE}: boot.fail_patterns must be texts of 1 to 200 characters"
            ));
        }
        if !(10..=86_400).contains(&self.timeout_secs) {
            return Err(format!(
                "{FILE}: boot.timeout_secs = {} must be between 10 and 86400",
                self.timeout_secs
            ));
        }
        if !(64..=(256 << 10)).contains(&self.memory_mib()) {
            return Err(format!(
                "{FILE}: boot.memory = \"{}\" must be a size like \"1G\" or \"512M\", from 64M to 256G",
                self.memory
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptOptions {
    /// Executable in the branch, relative to its root (e.g. `./build.sh`).
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmdebstrapOptions {
    pub suite: String,
    /// Debian architecture; default: the slave's.
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default = "default_variant")]
    pub variant: String,
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default = "default_components")]
    pub components: Vec<String>,
    /// Default: the mirror the slave's own apt uses.
    #[serde(default)]
    pub mirror: Option<String>,
    /// Size of the raw disk image, like "1G" or "1536M".
    #[serde(default = "default_image_size")]
    pub image_size: String,
    /// "gpt" or "msdos".
    #[serde(default = "default_partition_table")]
    pub partition_table: String,
    /// Scripts in the branch run by mmdebstrap with the root directory as "$1".
    #[serde(default)]
    pub setup_hooks: Vec<String>,
    #[serde(default)]
    pub essential_hooks: Vec<String>,
    #[serde(default)]
    pub customize_hooks: Vec<String>,
    /// Extra apt options, e.g. `Acquire::Retries "3"`.
    #[serde(default)]
    pub aptopts: Vec<String>,
    /// `[[mmdebstrap.layout]]`: the disk image's partitions; none: one ext4 root labelled
    /// `rootfs` (`backend/layout.rs`).
    #[serde(default)]
    pub layout: Vec<LayoutPartition>,
    /// Reuse the root file system of this project's last build on the slave while everything
    /// it is made from is the same (`rootfs_cache.rs`).
    #[serde(default)]
    pub rootfs_cache: bool,
}

/// One `[[mmdebstrap.layout]]` entry: a partition of the disk image holding the root file
/// system's subtree at `mountpoint`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutPartition {
    pub mountpoint: String,
    /// "vfat" or "ext4".
    pub filesystem: String,
    #[serde(default)]
    pub label: Option<String>,
    /// Like "128M"; only the last partition may leave it out (it takes the rest).
    #[serde(default)]
    pub size: Option<String>,
}

fn default_variant() -> String {
    "minbase".into()
}
fn default_components() -> Vec<String> {
    vec!["main".into()]
}
fn default_image_size() -> String {
    "2G".into()
}
fn default_partition_table() -> String {
    "gpt".into()
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveBuildOptions {
    /// Extra arguments for `lb config` (after the branch's auto/config, if any).
    #[serde(default)]
    pub config_args: Vec<String>,
    /// Point live-build at the slave's mirror (default true).
    #[serde(default = "yes")]
    pub use_slave_mirror: bool,
}

fn yes() -> bool {
    true
}

/// `[exec]`: a site's own image tool run from the branch, talking to Kiln in JSON lines on its
/// stdout (`backend/exec.rs`, `docs/backends.md`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecOptions {
    /// The program, a path in the branch relative to its root (e.g. `./tools/build-image`),
    /// followed by its arguments.
    pub command: Vec<String>,
}

impl ExecOptions {
    /// The program (checked to be there by [`Recipe::parse`]).
    pub fn program(&self) -> &str {
        self.command.first().map(String::as_str).unwrap_or_default()
    }

    fn check(&self) -> Result<(), String> {
        if self.command.is_empty() {
            return Err(format!(
                "{FILE}: exec.command must name a program in the branch and its arguments, like [\"./tools/build-image\", \"--flag\"]"
            ));
        }
        check_branch_path("exec.command", self.program())?;
        if self.command.iter().any(|a| a.contains('\0')) {
            return Err(format!(
                "{FILE}: exec.command cannot contain a NUL character"
            ));
        }
        Ok(())
    }
}

/// `[debos]`: a debos recipe of the branch (`backend/debos.rs`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebosOptions {
    /// The recipe, a path in the branch (debos runs in its directory).
    pub recipe: String,
    /// Template variables (`-t name:value`).
    #[serde(default)]
    pub variables: std::collections::BTreeMap<String, String>,
    /// Debian architecture of the image, given to the recipe as `architecture`; also what the
    /// master matches slaves on.
    #[serde(default)]
    pub architecture: Option<String>,
    /// The fakemachine's memory and scratch space, like "2G" (debos's defaults otherwise).
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub scratch_size: Option<String>,
    /// "auto" (the fakemachine when /dev/kvm opens, else natively), "kvm" or "none".
    #[serde(default = "default_fakemachine")]
    pub fakemachine: String,
    /// How raw `*.img` artifacts are compressed: "zstd", "xz" or "none".
    #[serde(default = "default_compress")]
    pub compress: String,
    /// Give the recipe the slave's mirrors as `mirror` and `security_mirror` (default true).
    #[serde(default = "yes")]
    pub use_slave_mirror: bool,
}

fn default_fakemachine() -> String {
    "auto".into()
}
fn default_compress() -> String {
    "zstd".into()
}

impl DebosOptions {
    fn check(&self) -> Result<(), String> {
        check_branch_path("debos.recipe", &self.recipe)?;
        for (k, v) in &self.variables {
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "{FILE}: debos.variables: \"{k}\" must be a name of letters, digits and '_'"
                ));
            }
            if v.contains(['\0', '\n']) {
                return Err(format!(
                    "{FILE}: debos.variables.{k} cannot contain a NUL or a line break"
                ));
            }
        }
        if let Some(a) = &self.architecture {
            if a.is_empty() || !a.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(format!(
                    "{FILE}: debos.architecture = \"{a}\" must be a Debian architecture like arm64"
                ));
            }
        }
        for (key, v) in [
            ("memory", &self.memory),
            ("scratch_size", &self.scratch_size),
        ] {
            if let Some(v) = v {
                if parse_size(v).is_none_or(|n| n == 0) {
                    return Err(format!(
                        "{FILE}: debos.{key} = \"{v}\" must be a size like \"2G\" or \"512M\""
                    ));
                }
            }
        }
        if !["auto", "kvm", "none"].contains(&self.fakemachine.as_str()) {
            return Err(format!(
                "{FILE}: debos.fakemachine = \"{}\" must be \"auto\", \"kvm\" or \"none\"",
                self.fakemachine
            ));
        }
        if !["zstd", "xz", "none"].contains(&self.compress.as_str()) {
            return Err(format!(
                "{FILE}: debos.compress = \"{}\" must be \"zstd\", \"xz\" or \"none\"",
                self.compress
            ));
        }
        Ok(())
    }
}

/// `[vmdb2]`: a vmdb2 specification of the branch (`backend/vmdb2.rs`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vmdb2Options {
    /// The specification, a path in the branch (vmdb2 runs in its directory).
    pub spec: String,
    /// The image's file name (`--output`), an artifact once compressed.
    #[serde(default = "default_vmdb2_image")]
    pub image: String,
    /// Given to the specification as the Jinja2 variable `size` (its `mkimg` step's size).
    #[serde(default)]
    pub size: Option<String>,
    /// More Jinja2 variables (`--variable name=value`).
    #[serde(default)]
    pub variables: std::collections::BTreeMap<String, String>,
    /// Keep the root file system vmdb2 caches (`--rootfs-tarball`) as the artifact
    /// `rootfs.tar.gz` (the specification's `cache-rootfs` step writes it).
    #[serde(default)]
    pub rootfs_tarball: bool,
    /// vmdb2's `--verbose`: the output of every command it runs, in the build log.
    #[serde(default)]
    pub verbose: bool,
    /// How the image is compressed: "zstd", "xz" or "none".
    #[serde(default = "default_compress")]
    pub compress: String,
}

fn default_vmdb2_image() -> String {
    "board.img".into()
}

impl Vmdb2Options {
    fn check(&self) -> Result<(), String> {
        check_branch_path("vmdb2.spec", &self.spec)?;
        if !self.image.ends_with(".img") {
            return Err(format!(
                "{FILE}: vmdb2.image = \"{}\" must be a file name ending in .img",
                self.image
            ));
        }
        kiln_shared::api::validate_artifact_name(&self.image)
            .map_err(|m| format!("{FILE}: vmdb2.image: {m}"))?;
        if let Some(s) = &self.size {
            if parse_size(s).is_none_or(|n| n < 1 << 20) {
                return Err(format!(
                    "{FILE}: vmdb2.size = \"{s}\" must be a size like \"4G\" or \"1536M\""
                ));
            }
        }
        for (k, v) in &self.variables {
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "{FILE}: vmdb2.variables: \"{k}\" must be a name of letters, digits and '_'"
                ));
            }
            if v.contains(['\0', '\n']) {
                return Err(format!(
                    "{FILE}: vmdb2.variables.{k} cannot contain a NUL or a line break"
                ));
            }
        }
        if !["zstd", "xz", "none"].contains(&self.compress.as_str()) {
            return Err(format!(
                "{FILE}: vmdb2.compress = \"{}\" must be \"zstd\", \"xz\" or \"none\"",
                self.compress
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub enum Backend {
    Script(ScriptOptions),
    Mmdebstrap(Box<MmdebstrapOptions>),
    LiveBuild(LiveBuildOptions),
    Exec(ExecOptions),
    Debos(DebosOptions),
    Vmdb2(Vmdb2Options),
}

impl Backend {
    /// The architecture of the image the backend makes, when its options name one.
    pub fn architecture(&self) -> Option<&str> {
        match self {
            Backend::Mmdebstrap(o) => o.architecture.as_deref(),
            Backend::Debos(o) => o.architecture.as_deref(),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Script(_) => "script",
            Backend::Mmdebstrap(_) => "mmdebstrap",
            Backend::LiveBuild(_) => "live-build",
            Backend::Exec(_) => "exec",
            Backend::Debos(_) => "debos",
            Backend::Vmdb2(_) => "vmdb2",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Recipe {
    pub backend: Backend,
    pub outputs: Vec<String>,
    pub boot: Option<BootOptions>,
}

pub const BACKENDS: [&str; 6] = [
    "script",
    "mmdebstrap",
    "live-build",
    "exec",
    "debos",
    "vmdb2",
];

fn section<T>(name: &str, v: Option<T>) -> Result<T, String> {
    v.ok_or_else(|| format!("{FILE}: backend \"{name}\" needs a [{name}] section"))
}

/// "kiln.toml line 4 (`packages = "udev"`): invalid type: string "udev", expected a sequence"
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
            format!("{FILE} line {line_no} (`{line}`): {}", e.message())
        }
        None => format!("{FILE}: {}", e.message()),
    }
}

fn check_branch_path(key: &str, p: &str) -> Result<(), String> {
    let path = Path::new(p);
    if p.is_empty()
        || path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "{FILE}: {key} = \"{p}\" must be a path inside the branch (relative, no '..')"
        ));
    }
    Ok(())
}

pub(crate) fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'K' | 'k') => (&s[..i], 1u64 << 10),
        (i, 'M' | 'm') => (&s[..i], 1 << 20),
        (i, 'G' | 'g') => (&s[..i], 1 << 30),
        (i, 'T' | 't') => (&s[..i], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

impl MmdebstrapOptions {
    pub fn image_bytes(&self) -> u64 {
        parse_size(&self.image_size).unwrap_or(0)
    }

    fn check(&self) -> Result<(), String> {
        let word = |key: &str, v: &str| {
            if v.is_empty()
                || v.starts_with('-')
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._+".contains(c))
            {
                Err(format!("{FILE}: mmdebstrap.{key} = \"{v}\" is not valid"))
            } else {
                Ok(())
            }
        };
        word("suite", &self.suite)?;
        if let Some(a) = &self.architecture {
            word("architecture", a)?;
        }
        const VARIANTS: [&str; 8] = [
            "extract",
            "custom",
            "essential",
            "apt",
            "required",
            "minbase",
            "buildd",
            "important",
        ];
        if !VARIANTS.contains(&self.variant.as_str())
            && self.variant != "debootstrap"
            && self.variant != "standard"
        {
            return Err(format!(
                "{FILE}: mmdebstrap.variant = \"{}\" is not one of {}, debootstrap, standard",
                self.variant,
                VARIANTS.join(", ")
            ));
        }
        for p in &self.packages {
            word("packages", p)?;
        }
        for c in &self.components {
            word("components", c)?;
        }
        match self.image_bytes() {
            n if n >= 64 << 20 => {}
            _ => {
                return Err(format!(
                    "{FILE}: mmdebstrap.image_size = \"{}\" must be a size like \"1G\" or \"1536M\", at least 64M",
                    self.image_size
                ))
            }
        }
        if !["gpt", "msdos"].contains(&self.partition_table.as_str()) {
            return Err(format!(
                "{FILE}: mmdebstrap.partition_table = \"{}\" must be \"gpt\" or \"msdos\"",
                self.partition_table
            ));
        }
        if let Some(m) = &self.mirror {
            if !(m.starts_with("http://") || m.starts_with("https://") || m.starts_with("file:/"))
                || m.contains(char::is_whitespace)
            {
                return Err(format!(
                    "{FILE}: mmdebstrap.mirror = \"{m}\" must be an http(s) URL"
                ));
            }
        }
        for (key, hooks) in [
            ("setup_hooks", &self.setup_hooks),
            ("essential_hooks", &self.essential_hooks),
            ("customize_hooks", &self.customize_hooks),
        ] {
            for h in hooks {
                check_branch_path(&format!("mmdebstrap.{key}"), h)?;
            }
        }
        crate::backend::layout::plan(self)?;
        Ok(())
    }
}

impl Recipe {
    pub fn parse(text: &str) -> Result<Recipe, String> {
        let raw: Raw = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
        let backend = match raw.backend.as_str() {
            "script" => {
                let o: ScriptOptions = section("script", raw.script)?;
                check_branch_path("script.command", &o.command)?;
                Backend::Script(o)
            }
            "mmdebstrap" => {
                let o: MmdebstrapOptions = section("mmdebstrap", raw.mmdebstrap)?;
                o.check()?;
                Backend::Mmdebstrap(Box::new(o))
            }
            "live-build" => Backend::LiveBuild(raw.live_build.unwrap_or(LiveBuildOptions {
                config_args: vec![],
                use_slave_mirror: true,
            })),
            "exec" => {
                let o: ExecOptions = section("exec", raw.exec)?;
                o.check()?;
                Backend::Exec(o)
            }
            "debos" => {
                let o: DebosOptions = section("debos", raw.debos)?;
                o.check()?;
                Backend::Debos(o)
            }
            "vmdb2" => {
                let o: Vmdb2Options = section("vmdb2", raw.vmdb2)?;
                o.check()?;
                Backend::Vmdb2(o)
            }
            other => {
                return Err(format!(
                    "{FILE}: unknown backend \"{other}\" (known: {})",
                    BACKENDS.join(", ")
                ))
            }
        };
        for o in &raw.outputs {
            kiln_shared::api::validate_artifact_name(o)
                .map_err(|m| format!("{FILE}: outputs: {m}"))?;
        }
        if let Some(b) = &raw.boot {
            b.check()?;
        }
        Ok(Recipe {
            backend,
            outputs: raw.outputs,
            boot: raw.boot,
        })
    }

    pub fn load(branch_root: &Path) -> Result<Recipe, String> {
        let path = match branch_file(branch_root, FILE) {
            Ok(p) => p,
            Err(BranchFileError::Missing) => {
                return Err(format!(
                    "no {FILE} at the root of the branch; add one that names a backend ({})",
                    BACKENDS.join(", ")
                ))
            }
            Err(e) => return Err(format!("{FILE}: {e}")),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => return Err(format!("cannot read {FILE}: {e}")),
        };
        Recipe::parse(&text)
    }
}

/// Why a file the recipe names cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BranchFileError {
    #[error("does not exist in the branch")]
    Missing,
    #[error(
        "is a symbolic link to something outside the branch; only the branch's own files are read"
    )]
    Outside,
    #[error("is not a regular file")]
    NotAFile,
}

/// The real path of a file of the branch, `rel` to its root: symbolic links are followed only
/// while they stay inside the checkout, so a branch cannot make Kiln read (and echo in an error)
/// a file of the slave's. Error messages never quote what such a link points to.
pub fn branch_file(root: &Path, rel: &str) -> Result<std::path::PathBuf, BranchFileError> {
    let root = root.canonicalize().map_err(|_| BranchFileError::Missing)?;
    let joined = root.join(rel);
    if std::fs::symlink_metadata(&joined).is_err() {
        return Err(BranchFileError::Missing);
    }
    let real = joined
        .canonicalize()
        .map_err(|_| BranchFileError::Outside)?;
    if !real.starts_with(&root) {
        return Err(BranchFileError::Outside);
    }
    if !std::fs::metadata(&real)
        .map(|m| m.is_file())
        .unwrap_or(false)
    {
        return Err(BranchFileError::NotAFile);
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_parses() {
        let r = Recipe::parse(
            r#"backend = "mmdebstrap"
[mmdebstrap]
suite = "bookworm"
architecture = "amd64"   # or arm64, armhf ...
variant = "minbase"
packages = ["systemd-sysv", "udev"]
image_size = "1G"
"#,
        )
        .unwrap();
        let Backend::Mmdebstrap(o) = r.backend else {
            panic!()
        };
        assert_eq!(o.image_bytes(), 1 << 30);
        let r =
            Recipe::parse("backend = \"script\"\n[script]\ncommand = \"./build.sh\"\n").unwrap();
        assert_eq!(r.backend.name(), "script");
        assert!(r.boot.is_none());
    }

    #[test]
    fn an_exec_recipe_parses() {
        let r = Recipe::parse(
            "backend = \"exec\"\n[exec]\ncommand = [\"./tools/build-with-mkosi\", \"--flag\"]\n",
        )
        .unwrap();
        assert_eq!(r.backend.name(), "exec");
        let Backend::Exec(o) = r.backend else {
            panic!()
        };
        assert_eq!(o.program(), "./tools/build-with-mkosi");
        assert_eq!(o.command[1..], ["--flag"]);
    }

    #[test]
    fn a_boot_section_has_defaults() {
        let r = Recipe::parse("backend = \"script\"\n[script]\ncommand = \"./build.sh\"\n[boot]\n")
            .unwrap();
        let b = r.boot.unwrap();
        assert_eq!(b.pattern, "login:");
        assert_eq!(b.timeout_secs, 600);
        assert_eq!(b.memory_mib(), 1024);
        assert!(b.fail_patterns.iter().any(|p| p.contains("Kernel panic")));
    }

    #[test]
    fn errors_name_the_option() {
        for (text, says) in [
            ("backend = \"kiwi\"", "unknown backend \"kiwi\""),
            ("backend = \"script\"", "needs a [script] section"),
            ("backend = \"script\"\n[script]\ncomand = \"x\"", "comand"),
            ("backend = \"mmdebstrap\"\n[mmdebstrap]\nsuite = \"bookworm\"\nimage_size = \"huge\"", "mmdebstrap.image_size"),
            ("backend = \"mmdebstrap\"\n[mmdebstrap]\nsuite = \"bookworm\"\nvariant = \"tiny\"", "mmdebstrap.variant"),
            ("backend = \"mmdebstrap\"\n[mmdebstrap]\nsuite = \"-x\"", "mmdebstrap.suite"),
            ("backend = \"mmdebstrap\"\n[mmdebstrap]\nsuite = \"bookworm\"\npackages = \"udev\"", "packages"),
            ("backend = \"mmdebstrap\"\n[mmdebstrap]", "suite"),
            ("backend = \"script\"\n[script]\ncommand = \"../x\"", "script.command"),
            ("backend = \"script\"\n[script]\ncommand = \"x\"\n[boot]\ntimeout_secs = 1", "boot.timeout_secs"),
            ("backend = \"script\"\n[script]\ncommand = \"x\"\n[boot]\narchitecture = \"mips\"", "boot.architecture"),
            ("backend = \"script\"\n[script]\ncommand = \"x\"\n[boot]\nkernel = \"/boot/../../etc/x\"", "boot.kernel"),
            ("backend = \"script\"\n[script]\ncommand = \"x\"\n[boot]\nmemory = \"lots\"", "boot.memory"),
            ("backend = \"script\"\n[script]\ncommand = \"x\"\n[boot]\npattern = \"\"", "boot.pattern"),
            ("backend = \"script\"\n[script]\ncommand = \"x\"\n[boot]\nimage = \"../disk.img\"", "boot.image"),
            ("backend = \"script\"\n[script]\ncommand = \"x\"\n[boot]\nkernal = \"x\"", "kernal"),
            ("backend = \"exec\"", "needs a [exec] section"),
            ("backend = \"exec\"\n[exec]\ncommand = []", "exec.command must name a program"),
            ("backend = \"exec\"\n[exec]\ncommand = \"./x\"", "command"),
            ("backend = \"exec\"\n[exec]\ncommand = [\"../x\"]", "exec.command"),
            ("backend = \"exec\"\n[exec]\ncommand = [\"/usr/bin/mkosi\"]", "exec.command"),
            ("backend = \"exec\"\n[exec]\ncommand = [\"./x\"]\nargs = []", "args"),
            ("backend = \"debos\"", "needs a [debos] section"),
            ("backend = \"debos\"\n[debos]\nrecipe = \"/etc/x.yaml\"", "debos.recipe"),
            ("backend = \"debos\"\n[debos]\nrecipe = \"b.yaml\"\nfakemachine = \"uml\"", "debos.fakemachine"),
            ("backend = \"debos\"\n[debos]\nrecipe = \"b.yaml\"\ncompress = \"gzip\"", "debos.compress"),
            ("backend = \"debos\"\n[debos]\nrecipe = \"b.yaml\"\nmemory = \"lots\"", "debos.memory"),
            ("backend = \"debos\"\n[debos]\nrecipe = \"b.yaml\"\nscratch_size = \"0\"", "debos.scratch_size"),
            ("backend = \"debos\"\n[debos]\nrecipe = \"b.yaml\"\nvariables = { \"a b\" = \"x\" }", "debos.variables"),
            ("backend = \"debos\"\n[debos]\nrecipe = \"b.yaml\"\narchitecture = \"arm 64\"", "debos.architecture"),
            ("backend = \"debos\"\n[debos]\nrecipe = \"b.yaml\"\nrecipes = \"x\"", "recipes"),
            ("backend = \"vmdb2\"", "needs a [vmdb2] section"),
            ("backend = \"vmdb2\"\n[vmdb2]\nspec = \"../b.yaml\"", "vmdb2.spec"),
            ("backend = \"vmdb2\"\n[vmdb2]\nspec = \"b.yaml\"\nimage = \"board.iso\"", "vmdb2.image"),
            ("backend = \"vmdb2\"\n[vmdb2]\nspec = \"b.yaml\"\nimage = \"a/b.img\"", "vmdb2.image"),
            ("backend = \"vmdb2\"\n[vmdb2]\nspec = \"b.yaml\"\nsize = \"big\"", "vmdb2.size"),
            ("backend = \"vmdb2\"\n[vmdb2]\nspec = \"b.yaml\"\ncompress = \"bz2\"", "vmdb2.compress"),
            ("backend = \"vmdb2\"\n[vmdb2]\nspec = \"b.yaml\"\nvariables = { \"x-y\" = \"1\" }", "vmdb2.variables"),
        ] {
            let e = Recipe::parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
