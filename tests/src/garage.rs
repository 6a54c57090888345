//! [`Garage`]: a real S3-compatible object store (Garage, from crates.io) on loopback, one node,
//! a bucket and a key of its own, for the object-store backend of artifacts.
//!
//! The binary is built once with `cargo install garage --locked` (a pinned version) into a cache
//! outside the repository (`$KILN_CACHE`, default `~/.cache/kiln`), under a lock file so tests
//! running side by side install it once; later runs on the machine find it there.

use crate::proc::{die_with_parent, Killed};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The Garage release the tests run (a 2.x that builds with the project's toolchain).
pub const GARAGE_VERSION: &str = "2.5.0";

/// The bucket a [`Garage`] makes.
pub const BUCKET: &str = "kiln-artifacts";

/// The region Garage signs for (`s3_api.s3_region`).
pub const REGION: &str = "garage";

pub struct Garage {
    pub dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`, the S3 API.
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    binary: PathBuf,
    server: Killed,
}

/// Where the cached tools live.
fn cache_dir() -> PathBuf {
    std::env::var_os("KILN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/kiln")
        })
}

/// The `garage` binary of [`GARAGE_VERSION`], installed first if it is not in the cache yet
/// (this takes a long while, once per machine).
pub fn binary() -> PathBuf {
    let root = cache_dir().join(format!("garage-{GARAGE_VERSION}"));
    let bin = root.join("bin/garage");
    if bin.exists() {
        return bin;
    }
    std::fs::create_dir_all(cache_dir()).expect("the tools' cache dir");
    let lock_path = cache_dir().join(format!("garage-{GARAGE_VERSION}.lock"));
    let lock = std::fs::File::create(&lock_path).expect("the install lock file");
    // SAFETY: flock on a descriptor we own; released when `lock` is closed.
    let locked =
        unsafe { libc::flock(std::os::unix::io::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    assert_eq!(locked, 0, "locking {}", lock_path.display());
    if !bin.exists() {
        eprintln!(
            "installing garage {GARAGE_VERSION} into {} (once per machine; it takes a while)",
            root.display()
        );
        let status = Command::new("cargo")
            .args(["install", "garage", "--locked", "--version", GARAGE_VERSION])
            .arg("--root")
            .arg(&root)
            .arg("--target-dir")
            .arg(cache_dir().join("garage-build"))
            .stdin(Stdio::null())
            .status()
            .expect("running cargo install garage");
        assert!(
            status.success(),
            "cargo install garage {GARAGE_VERSION} failed"
        );
    }
    drop(lock);
    bin
}

impl Garage {
    /// A one-node Garage on free loopback ports, its layout applied, with a key allowed to read,
    /// write and own [`BUCKET`]. Killed on drop, and with the thread that started it (the
    /// parent-death signal): start it from the test's own thread, not `spawn_blocking`, whose
    /// threads end when idle.
    pub fn start() -> Garage {
        let binary = binary();
        let dir = crate::tempdir("kiln-garage-");
        let [s3, rpc, admin, web] = [(); 4].map(|_| crate::free_port());
        let secret: String = (0..32)
            .map(|_| format!("{:02x}", rand_byte()))
            .collect::<String>();
        let d = dir.path().display();
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
replication_factor = 1

rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[s3_web]
bind_addr = "127.0.0.1:{web}"
root_domain = ".web.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#
            ),
        )
        .expect("writing garage.toml");
        let log = dir.path().join("garage.log");
        let mut c = Command::new(&binary);
        c.arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "garage=info,garage_api_common=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_parent(&mut c, libc::SIGKILL);
        let mut child = c.spawn().expect("starting garage server");
        let stderr = child.stderr.take().expect("piped");
        let server = Killed(child);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut copy = std::fs::File::create(&log).expect("garage.log");
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(copy, "{line}");
                if line.contains("S3 API server listening on") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            panic!("garage did not start its S3 API; its log:\n{}", log_text());
        }
        let mut g = Garage {
            dir,
            endpoint: format!("http://127.0.0.1:{s3}"),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            binary,
            server,
        };
        let node = g.cli(&["node", "id", "-q"]);
        let node = node.trim();
        let node = node.split('@').next().unwrap_or(node);
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "10G", node]);
        g.cli(&["layout", "apply", "--version", "1"]);
        g.cli(&["bucket", "create", BUCKET]);
        let key: serde_json::Value =
            serde_json::from_str(&g.cli(&["json-api", "CreateKey", r#"{"name":"kiln-test"}"#]))
                .expect("CreateKey answers JSON");
        g.access_key_id = key["accessKeyId"].as_str().expect("accessKeyId").into();
        g.secret_access_key = key["secretAccessKey"]
            .as_str()
            .expect("secretAccessKey")
            .into();
        let id = g.access_key_id.clone();
        g.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", &id,
        ]);
        g
    }

    /// Runs `garage -c CONFIG ARGS…` against this server; its standard output. The first
    /// commands may meet a node still joining itself: they are tried again for a few seconds.
    pub fn cli(&self, args: &[&str]) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(&self.binary)
                .arg("-c")
                .arg(self.dir.path().join("garage.toml"))
                .args(args)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .output()
                .expect("running garage");
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "garage {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Writes the credentials file `[storage] credentials_file` names, into `dir`; its path.
    pub fn write_credentials(&self, dir: &Path) -> PathBuf {
        let path = dir.join("s3-credentials.toml");
        std::fs::write(
            &path,
            format!(
                "access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
                self.access_key_id, self.secret_access_key
            ),
        )
        .expect("writing the credentials file");
        path
    }

    /// A `[storage]` section for this store (`credentials_file`: a path, e.g. from
    /// [`Garage::write_credentials`]).
    pub fn storage_toml(&self, credentials_file: &Path, prefix: &str, presign: bool) -> String {
        format!(
            "[storage]\nkind = \"s3\"\nendpoint = \"{}\"\nbucket = \"{BUCKET}\"\nregion = \"{REGION}\"\ncredentials_file = \"{}\"\npath_style = true\nprefix = \"{prefix}\"\npresign_downloads = {presign}\npresign_secs = 120\n",
            self.endpoint,
            credentials_file.display()
        )
    }

    /// The keys in the bucket under `prefix`, with their sizes (read with the S3 API).
    pub async fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        use futures_util::TryStreamExt;
        use kiln_master::objects::object_store::{self, ObjectStore};
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_region(REGION)
            .with_access_key_id(&self.access_key_id)
            .with_secret_access_key(&self.secret_access_key)
            .build()
            .expect("an S3 client for garage");
        let prefix = object_store::path::Path::from(prefix);
        store
            .list(Some(&prefix))
            .map_ok(|m| (m.location.to_string(), m.size))
            .try_collect()
            .await
            .expect("listing the bucket")
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.server.pid()
    }
}

impl Drop for Garage {
    /// A test that failed with a store in it says what the store did (an upload that hung, say).
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- garage log (tail):\n{}",
                crate::farm::tail(&self.log(), 40)
            );
        }
    }
}

fn rand_byte() -> u8 {
    use std::io::Read;
    let mut b = [0u8; 1];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("/dev/urandom");
    b[0]
}
