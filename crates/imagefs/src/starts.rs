//! The record of a start: which chunks of an image its reads touched first after a mount, kept across mounts and
//! restarts so that the next mount of the same image fetches them at once (prefetch).
//!
//! # The window
//! A mount's [`Recorder`] keeps the index of every chunk a read touches, each once, in first-touch order, while the
//! window is open: the first [`WINDOW`] after the mount, and at most [`MAX_CHUNKS`] chunks. The window closes when
//! either bound is reached or the image is dropped (its last file released), and the record is then written once.
//! The decisions ([`Recorder::touch`], [`Recorder::close`]) are pure: time is given, not read.
//!
//! # The file
//! One file per image id in the starts directory (the worker's own, NOT emptied at start), named by the id in hex,
//! written under a temporary name and renamed into place. Text: the line [`HEADER`], then one decimal chunk index a
//! line. [`parse`] refuses a file over [`MAX_FILE_BYTES`], a wrong header, a line that is not an index below the
//! image's chunk count, a repeated index, more than [`MAX_CHUNKS`] indexes: a file that does not parse is ignored
//! (no prefetch), never trusted beyond being a list of indexes of this image's chunks.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

/// How long after a mount reads are recorded.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);
/// The most chunks one record holds.
pub(crate) const MAX_CHUNKS: usize = 512;
/// The first line of a record file.
pub(crate) const HEADER: &str = "ignis-image-start 1";
/// The largest record file read: the header and [`MAX_CHUNKS`] indexes of up to 10 digits.
pub(crate) const MAX_FILE_BYTES: u64 = (HEADER.len() + 1 + MAX_CHUNKS * 11) as u64;
/// The longest image id that gets a record (its file name is twice as long).
const MAX_ID_BYTES: usize = 100;

/// What a touch did to the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Touch {
    /// Not recorded: seen before, or the window is closed.
    Ignored,
    /// Recorded; the window stays open.
    Recorded,
    /// Recorded, and the record is now full: the window closed with it; here is the record.
    Full(Vec<u32>),
}

/// The chunks one mount's reads touched first (pure: no clock, no IO).
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    chunks: Vec<u32>,
    seen: HashSet<u32>,
    closed: bool,
}

impl Recorder {
    /// A read touched chunk `index`, `elapsed` after the mount.
    pub(crate) fn touch(&mut self, index: u32, elapsed: Duration) -> Touch {
        if self.closed || elapsed >= WINDOW || !self.seen.insert(index) {
            return Touch::Ignored;
        }
        self.chunks.push(index);
        if self.chunks.len() >= MAX_CHUNKS {
            self.closed = true;
            return Touch::Full(std::mem::take(&mut self.chunks));
        }
        Touch::Recorded
    }

    /// Closes the window: the record, the first time (if it holds anything), else nothing.
    pub(crate) fn close(&mut self) -> Option<Vec<u32>> {
        let was_closed = std::mem::replace(&mut self.closed, true);
        match was_closed || self.chunks.is_empty() {
            true => None,
            false => Some(std::mem::take(&mut self.chunks)),
        }
    }
}

/// One mount's record being made: its [`Recorder`], and where it is written when its window closes (by a timer
/// after [`WINDOW`], when full, or when dropped with its image, whichever comes first).
#[derive(Debug)]
pub(crate) struct Start {
    path: PathBuf,
    mounted: Instant,
    recorder: Mutex<Recorder>,
    runtime: Handle,
}

impl Start {
    /// Starts recording the start of a mount into `path`; the window's timer runs on `runtime`.
    pub(crate) fn begin(path: PathBuf, runtime: Handle) -> Arc<Start> {
        let start = Arc::new(Start { path, mounted: Instant::now(), recorder: Mutex::default(), runtime });
        let timer = Arc::downgrade(&start);
        start.runtime.spawn(async move {
            tokio::time::sleep(WINDOW).await;
            if let Some(start) = timer.upgrade() {
                start.close();
            }
        });
        start
    }

    /// A read touched chunk `index`.
    pub(crate) fn touch(&self, index: usize) {
        let Ok(index) = u32::try_from(index) else { return };
        let touch = crate::lock(&self.recorder).touch(index, self.mounted.elapsed());
        if let Touch::Full(chunks) = touch {
            self.write(chunks);
        }
    }

    fn close(&self) {
        let chunks = crate::lock(&self.recorder).close();
        if let Some(chunks) = chunks {
            self.write(chunks);
        }
    }

    fn write(&self, chunks: Vec<u32>) {
        let path = self.path.clone();
        self.runtime.spawn_blocking(move || {
            if let Err(e) = save(&path, &chunks) {
                tracing::warn!(path = %path.display(), error = %e, "writing an image start record");
            }
        });
    }
}

impl Drop for Start {
    fn drop(&mut self) {
        self.close();
    }
}

/// A record's file contents.
pub(crate) fn format(chunks: &[u32]) -> String {
    let mut out = format!("{HEADER}\n");
    for index in chunks.iter().take(MAX_CHUNKS) {
        out.push_str(&index.to_string());
        out.push('\n');
    }
    out
}

/// The chunk indexes of a record file of an image with `chunk_count` chunks, or `None` if it is not a valid one.
pub(crate) fn parse(bytes: &[u8], chunk_count: usize) -> Option<Vec<u32>> {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.strip_suffix('\n')?.split('\n');
    if lines.next()? != HEADER {
        return None;
    }
    let mut seen = HashSet::new();
    let mut chunks = Vec::new();
    for line in lines {
        if line.is_empty() || line.len() > 10 || !line.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let index: u32 = line.parse().ok()?;
        if index as usize >= chunk_count || !seen.insert(index) || chunks.len() >= MAX_CHUNKS {
            return None;
        }
        chunks.push(index);
    }
    Some(chunks)
}

/// The record file of `image_id` in `dir`, or `None` for an id too long to name one.
pub(crate) fn path(dir: &Path, image_id: &str) -> Option<PathBuf> {
    (!image_id.is_empty() && image_id.len() <= MAX_ID_BYTES).then(|| dir.join(hex::encode(image_id)))
}

/// The record at `path` for an image of `chunk_count` chunks: none if absent, unreadable or invalid.
pub(crate) fn load(path: &Path, chunk_count: usize) -> Option<Vec<u32>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).ok()?;
    let chunks = parse(&bytes, chunk_count);
    if chunks.is_none() {
        tracing::warn!(path = %path.display(), "ignoring an invalid image start record");
    }
    chunks
}

/// Writes `chunks` as the record at `path` (made in its directory, renamed into place).
pub(crate) fn save(path: &Path, chunks: &[u32]) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    std::fs::create_dir_all(dir)?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let temp = dir.join(name);
    let written = std::fs::write(&temp, format(chunks)).and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn records_first_touches_in_order_once_each() {
        let mut r = Recorder::default();
        assert_eq!(r.touch(3, MS), Touch::Recorded);
        assert_eq!(r.touch(0, MS), Touch::Recorded);
        assert_eq!(r.touch(3, 2 * MS), Touch::Ignored);
        assert_eq!(r.touch(7, 3 * MS), Touch::Recorded);
        assert_eq!(r.close(), Some(vec![3, 0, 7]));
        assert_eq!(r.close(), None, "closed once");
        assert_eq!(r.touch(9, MS), Touch::Ignored, "nothing after the window closed");
    }

    #[test]
    fn the_window_ends_after_its_time() {
        let mut r = Recorder::default();
        assert_eq!(r.touch(1, WINDOW - MS), Touch::Recorded);
        assert_eq!(r.touch(2, WINDOW), Touch::Ignored);
        assert_eq!(r.close(), Some(vec![1]), "closed by its timer");
        assert_eq!(r.touch(3, MS), Touch::Ignored, "closed for good");
    }

    #[test]
    fn the_window_ends_at_the_most_chunks() {
        let mut r = Recorder::default();
        for i in 0..MAX_CHUNKS as u32 - 1 {
            assert_eq!(r.touch(i, MS), Touch::Recorded);
        }
        let Touch::Full(record) = r.touch(10_000, MS) else { panic!("not full") };
        assert_eq!(record.len(), MAX_CHUNKS);
        assert_eq!(record[MAX_CHUNKS - 1], 10_000);
        assert_eq!(r.touch(10_001, MS), Touch::Ignored);
        assert_eq!(r.close(), None, "a full record is written once");
    }

    #[test]
    fn an_empty_record_is_not_written() {
        assert_eq!(Recorder::default().close(), None);
    }

    #[test]
    fn a_record_reads_back() {
        let chunks: Vec<u32> = (0..MAX_CHUNKS as u32).rev().map(|i| i * 1000).collect();
        let text = format(&chunks);
        assert!(text.len() as u64 <= MAX_FILE_BYTES);
        assert_eq!(parse(text.as_bytes(), 1_000_000), Some(chunks));
        assert_eq!(parse(format(&[]).as_bytes(), 0), Some(vec![]));
    }

    #[test]
    fn bad_records_are_refused() {
        let check = |bytes: &[u8]| assert_eq!(parse(bytes, 10), None, "{:?}", String::from_utf8_lossy(bytes));
        check(b"");
        check(b"\n");
        check(b"ignis-image-start 2\n1\n");
        check(b"ignis-image-start 1");
        check(b"ignis-image-start 1\n1");
        check(b"ignis-image-start 1\n1\n\n");
        check(b"ignis-image-start 1\n10\n");
        check(b"ignis-image-start 1\n4294967296\n");
        check(b"ignis-image-start 1\n99999999999\n");
        check(b"ignis-image-start 1\n-1\n");
        check(b"ignis-image-start 1\n+1\n");
        check(b"ignis-image-start 1\n 1\n");
        check(b"ignis-image-start 1\n1\n1\n");
        check(b"ignis-image-start 1\r\n1\r\n");
        check(b"ignis-image-start 1\n\xff\n");
        let mut long = format!("{HEADER}\n").into_bytes();
        long.resize(MAX_FILE_BYTES as usize + 1, b'0');
        check(&long);
        let too_many: Vec<u32> = (0..=MAX_CHUNKS as u32).collect();
        let mut text = format!("{HEADER}\n");
        for i in &too_many {
            text.push_str(&format!("{i}\n"));
        }
        assert_eq!(parse(text.as_bytes(), 10_000), None, "more than the most chunks");
        assert_eq!(parse(b"ignis-image-start 1\n9\n0\n", 10), Some(vec![9, 0]));
    }

    #[test]
    fn a_record_is_saved_and_loaded_by_image_id() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(path(dir.path(), ""), None);
        assert_eq!(path(dir.path(), &"x".repeat(MAX_ID_BYTES + 1)), None);
        let at = path(dir.path().join("starts").as_path(), "../img:1").unwrap();
        assert_eq!(at.parent().unwrap(), dir.path().join("starts"), "the id never names another directory");
        assert_eq!(load(&at, 10), None, "absent");
        save(&at, &[4, 2]).unwrap();
        assert_eq!(load(&at, 10), Some(vec![4, 2]));
        assert_eq!(load(&at, 4), None, "an index beyond the image's chunks");
        std::fs::write(&at, "garbage").unwrap();
        assert_eq!(load(&at, 10), None);
        assert_eq!(std::fs::read_dir(dir.path().join("starts")).unwrap().count(), 1, "no temporary file left");
    }
}
