//! OCI image layouts written to disk for the image benchmarks (layers as plain tars, files of incompressible
//! bytes), and pushing them to a server and naming them in functions.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::harness::{Conn, KEY_ID, SECRET, Server};

/// Longest a CreateFunction that prepares its image may take.
pub const PREPARE_LIMIT: Duration = Duration::from_secs(600);


/// Random bytes (xorshift64), eight a step: incompressible, and no two files alike.
pub struct Noise(pub u64);

impl Noise {
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// `left` bytes of noise, as a reader.
pub struct NoiseReader<'a> {
    noise: &'a mut Noise,
    left: u64,
}

impl Read for NoiseReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        self.noise.fill(&mut buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// Writes a file while hashing it.
pub struct HashingWriter {
    file: std::io::BufWriter<std::fs::File>,
    hasher: Sha256,
    len: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A content-addressed blob of an OCI layout.
#[derive(Clone)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
}

impl Blob {
    pub fn descriptor(&self, media_type: &str) -> Value {
        json!({ "mediaType": media_type, "digest": self.digest, "size": self.size })
    }
}

pub struct Layout {
    dir: PathBuf,
    temp: usize,
}

/// What goes into a layer: a file of `content` or of `noise` bytes.
#[derive(Clone)]
pub enum Body {
    Bytes(Vec<u8>),
    Noise(u64),
}

impl Layout {
    pub fn new(dir: &Path) -> Result<Layout, String> {
        std::fs::create_dir_all(dir.join("blobs/sha256")).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).map_err(|e| e.to_string())?;
        Ok(Layout { dir: dir.to_path_buf(), temp: 0 })
    }

    /// Writes a blob with `write`, then names it by its digest.
    pub fn blob(&mut self, write: impl FnOnce(&mut HashingWriter) -> std::io::Result<()>) -> Result<Blob, String> {
        self.temp += 1;
        let temp = self.dir.join(format!("blobs/tmp-{}", self.temp));
        let file = std::fs::File::create(&temp).map_err(|e| format!("{}: {e}", temp.display()))?;
        let mut writer = HashingWriter { file: std::io::BufWriter::with_capacity(1 << 20, file), hasher: Sha256::new(), len: 0 };
        write(&mut writer).and_then(|()| writer.flush()).map_err(|e| format!("writing a blob: {e}"))?;
        let hex = hex::encode(writer.hasher.finalize());
        std::fs::rename(&temp, self.dir.join("blobs/sha256").join(&hex)).map_err(|e| format!("naming a blob: {e}"))?;
        Ok(Blob { digest: format!("sha256:{hex}"), size: writer.len })
    }

    /// A plain tar layer of `files` (path, body, mode), with the directories above them, owned by root.
    pub fn layer(&mut self, files: &[(String, Body, u32)], noise: &mut Noise) -> Result<Blob, String> {
        let mut dirs = std::collections::BTreeSet::new();
        for (path, _, _) in files {
            let mut parent = Path::new(path).parent();
            while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(dir.to_path_buf());
                parent = dir.parent();
            }
        }
        self.blob(|writer| {
            let mut tar = tar::Builder::new(writer);
            let header = |kind, size, mode| {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(kind);
                header.set_size(size);
                header.set_mode(mode);
                header.set_uid(0);
                header.set_gid(0);
                header.set_mtime(0);
                header
            };
            for dir in &dirs {
                tar.append_data(&mut header(tar::EntryType::Directory, 0, 0o755), dir, std::io::empty())?;
            }
            for (path, body, mode) in files {
                match body {
                    Body::Bytes(bytes) => {
                        tar.append_data(&mut header(tar::EntryType::Regular, bytes.len() as u64, *mode), path, bytes.as_slice())?
                    }
                    Body::Noise(len) => {
                        let reader = NoiseReader { noise: &mut *noise, left: *len };
                        tar.append_data(&mut header(tar::EntryType::Regular, *len, *mode), path, reader)?
                    }
                }
            }
            tar.finish()
        })
    }

    /// An image of `layers` tagged `tag`: its config and manifest blobs and an index entry (returned).
    pub fn image(&mut self, tag: &str, layers: &[Blob]) -> Result<Value, String> {
        const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Entrypoint": ["/var/task/bootstrap"], "WorkingDir": "/var/task" },
            "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>() },
        });
        let config = self.blob(|w| w.write_all(config.to_string().as_bytes()))?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config.descriptor("application/vnd.oci.image.config.v1+json"),
            "layers": layers.iter().map(|l| l.descriptor(LAYER)).collect::<Vec<_>>(),
        });
        let manifest = self.blob(|w| w.write_all(manifest.to_string().as_bytes()))?;
        let mut entry = manifest.descriptor("application/vnd.oci.image.manifest.v1+json");
        entry["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
        Ok(entry)
    }

    pub fn index(&self, entries: &[Value]) -> Result<(), String> {
        let index = json!({ "schemaVersion": 2, "manifests": entries });
        std::fs::write(self.dir.join("index.json"), index.to_string()).map_err(|e| format!("index.json: {e}"))
    }
}

/// The files `binary` needs to run (`ldd`'s libraries and loader), as layer entries.
pub fn libraries(binary: &Path) -> Result<Vec<(String, Body, u32)>, String> {
    let output = Command::new("ldd").arg(binary).output().map_err(|e| format!("ldd: {e}"))?;
    if !output.status.success() {
        return Err(format!("ldd {} failed", binary.display()));
    }
    let mut files = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`
        let path = line.split("=>").last().and_then(|p| p.split_whitespace().next()).unwrap_or("");
        if path.starts_with('/') {
            let content = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
            files.push((path.trim_start_matches('/').to_string(), Body::Bytes(content), 0o755));
        }
    }
    Ok(files)
}

/// `ignis image push` of the layout's image `tag` to `repository:tag`; how long it took.
pub fn push(ignis: &Path, server: &Server, layout: &Path, repository: &str, tag: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let output = Command::new(ignis)
        .args(["image", "push", "--endpoint", &format!("http://{}", server.address), &format!("{repository}:{tag}")])
        .arg(layout)
        .env("IGNIS_ACCESS_KEY_ID", KEY_ID)
        .env("IGNIS_SECRET_ACCESS_KEY", SECRET)
        .output()
        .map_err(|e| format!("ignis image push: {e}"))?;
    if !output.status.success() {
        return Err(format!("ignis image push {tag} failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    Ok(started.elapsed())
}

/// Creates the function `name` on the image `repository:tag`; how long CreateFunction took (which prepares the
/// image the first time it is named).
pub async fn create_image_function(conn: &mut Conn, server: &Server, name: &str, repository: &str, tag: &str) -> Result<Duration, String> {
    let body = json!({
        "FunctionName": name, "Role": "arn:aws:iam::123456789012:role/bench", "PackageType": "Image",
        "Code": { "ImageUri": format!("{}/{repository}:{tag}", server.address) },
    });
    let (elapsed, reply) = conn.request_within(PREPARE_LIMIT, "POST", "/2015-03-31/functions", body.to_string().as_bytes()).await?;
    if reply.status != 201 {
        return Err(format!("CreateFunction {name} answered {}: {}", reply.status, reply.text()));
    }
    Ok(elapsed)
}

