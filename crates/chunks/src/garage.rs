//! A single-node Garage (a self-hosted S3-compatible object store) for tests of [`S3Roots`](crate::S3Roots):
//! [`Garage::start`] runs one in a temp directory on free loopback ports, with a bucket and a key allowed on it;
//! dropping it kills the server (by its process id) and removes the directory.
//!
//! The binary is built once per machine by `scripts/garage` (which `scripts/test` runs) into
//! [`DEFAULT_BINARY`], or named by `IGNIS_GARAGE`. A test that needs Garage fails when there is none: it does not
//! pass silently untested.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{S3Options, S3Roots};

/// Where `scripts/garage` puts the binary (with the default cache directory).
pub const DEFAULT_BINARY: &str = "/var/cache/ignis/garage-2.5.0/bin/garage";

/// The region Garage is told to answer as.
pub const REGION: &str = "garage";

/// Why a Garage did not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start Garage for the S3 chunk store tests: {0}")]
pub struct GarageError(String);

/// A running single-node Garage with one bucket and one key that may read and write it.
#[derive(Debug)]
pub struct Garage {
    child: Child,
    dir: tempfile::TempDir,
    binary: PathBuf,
    /// `http://127.0.0.1:PORT`, its S3 API.
    pub endpoint: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// The Garage binary: `IGNIS_GARAGE`, else [`DEFAULT_BINARY`]; an error telling how to get it if there is none.
pub fn binary() -> Result<PathBuf, GarageError> {
    let binary = std::env::var_os("IGNIS_GARAGE").map_or_else(|| PathBuf::from(DEFAULT_BINARY), PathBuf::from);
    match binary.is_file() {
        true => Ok(binary),
        false => Err(GarageError(format!(
            "no Garage binary at {} (set IGNIS_GARAGE, or run scripts/garage once to build it there)",
            binary.display()
        ))),
    }
}

fn random_hex(bytes: usize) -> Result<String, GarageError> {
    let mut random = vec![0u8; bytes];
    getrandom::fill(&mut random).map_err(|e| GarageError(format!("no randomness: {e}")))?;
    Ok(hex::encode(random))
}

fn free_port() -> Result<u16, GarageError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| GarageError(format!("no free port: {e}")))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| GarageError(format!("no free port: {e}")))
}

impl Garage {
    /// Starts Garage and sets up its layout, bucket and key; waits until it answers, its S3 API too.
    pub fn start() -> Result<Garage, GarageError> {
        let binary = binary()?;
        let dir = tempfile::tempdir().map_err(|e| GarageError(format!("no temp dir: {e}")))?;
        let (rpc, s3, admin) = (free_port()?, free_port()?, free_port()?);
        let config = format!(
            r#"metadata_dir = "{root}/meta"
data_dir = "{root}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#,
            root = dir.path().display(),
            secret = random_hex(32)?,
        );
        let failed = |what: &str| {
            let what = what.to_string();
            move |e: std::io::Error| GarageError(format!("{what}: {e}"))
        };
        std::fs::write(dir.path().join("garage.toml"), config).map_err(failed("writing garage.toml"))?;
        let log = std::fs::File::create(dir.path().join("garage.log")).map_err(failed("creating garage.log"))?;
        let child = Command::new(&binary)
            .arg("-c")
            .arg(dir.path().join("garage.toml"))
            .arg("server")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(failed("garage.log"))?)
            .stderr(log)
            .spawn()
            .map_err(failed(&format!("running {}", binary.display())))?;
        let mut garage = Garage {
            child,
            dir,
            binary,
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket: "ignis-chunks".into(),
            access_key_id: format!("GK{}", random_hex(12)?),
            secret_access_key: random_hex(32)?,
        };
        garage.set_up()?;
        Ok(garage)
    }

    /// Options of a client of the bucket, under `prefix`.
    pub fn options(&self, prefix: &str) -> S3Options {
        S3Options::new(&self.bucket, prefix, REGION, &self.access_key_id, &self.secret_access_key)
            .with_endpoint(&self.endpoint)
    }

    /// The names of the bucket's objects under `prefix`.
    pub async fn object_names(&self, prefix: &str) -> Result<Vec<String>, GarageError> {
        let roots = S3Roots::new(self.options(prefix)).map_err(|e| GarageError(e.to_string()))?;
        roots.object_names().await.map_err(|e| GarageError(e.to_string()))
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    fn set_up(&mut self) -> Result<(), GarageError> {
        self.wait_until_up()?;
        let node = self.cli(&["node", "id", "-q"])?;
        let node = node.trim().split('@').next().unwrap_or_default().to_string();
        self.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node])?;
        self.cli(&["layout", "apply", "--version", "1"])?;
        self.cli(&["bucket", "create", &self.bucket])?;
        self.cli(&["key", "import", "--yes", "-n", "ignis", &self.access_key_id, &self.secret_access_key])?;
        self.cli(&["bucket", "allow", "--read", "--write", "--owner", &self.bucket, "--key", &self.access_key_id])?;
        self.wait_for_s3()
    }

    /// Waits (a bounded number of tries) until the S3 API answers HTTP: the command line answers through the RPC
    /// port first, and a loaded machine may bind the API's port later.
    fn wait_for_s3(&mut self) -> Result<(), GarageError> {
        use std::io::{Read, Write};
        let address = self.endpoint.trim_start_matches("http://").to_string();
        let answers = || -> std::io::Result<bool> {
            let mut stream = std::net::TcpStream::connect(&address)?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(format!("GET / HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes())?;
            let mut head = [0u8; 8];
            stream.read_exact(&mut head)?;
            Ok(head.starts_with(b"HTTP/1."))
        };
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(GarageError(format!("the server exited ({status}):\n{}", self.log())));
            }
            if answers().unwrap_or(false) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(GarageError(format!("the S3 API did not answer in 30 s:\n{}", self.log())))
    }

    /// Waits (a bounded number of tries) until the server answers its command line.
    fn wait_until_up(&mut self) -> Result<(), GarageError> {
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(GarageError(format!("the server exited ({status}):\n{}", self.log())));
            }
            if self.run(&["status"]).is_ok_and(|out| out.status.success()) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(GarageError(format!("the server did not answer in 30 s:\n{}", self.log())))
    }

    fn run(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new(&self.binary).arg("-c").arg(self.config()).args(args).stdin(Stdio::null()).output()
    }

    /// Runs `garage ARGS` against this server; its standard output.
    fn cli(&self, args: &[&str]) -> Result<String, GarageError> {
        let out = self.run(args).map_err(|e| GarageError(format!("garage {}: {e}", args.join(" "))))?;
        match out.status.success() {
            true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
            false => Err(GarageError(format!(
                "garage {} ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))),
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("garage.toml")
    }

    /// The directory the server keeps its data in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
