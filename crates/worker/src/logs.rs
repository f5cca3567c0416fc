//! A sandbox's log: the runtime's stdout and stderr, cut into lines, with the
//! platform's lines around each invocation (`START` / `END` / `REPORT`, or
//! their JSON records: see `crate::log_format`, which also says which of the
//! runtime's lines are kept).
//!
//! One [`Output`] per sandbox. Its reader task and the invoke path both drain
//! the pipe under the same mutex, so the lines a runtime wrote before posting
//! its response are always in that invocation's log.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::unix::AsyncFd;
use tokio::sync::{Notify, mpsc};

use crate::log_format::{LogFormat, Report};

/// Longest log line kept as one event; longer output is cut (CloudWatch
/// Logs' event limit is 256 KiB).
const MAX_LINE: usize = 256 * 1024;
/// How long lines written during an invocation may wait to go to storage.
const FLUSH_DELAY: std::time::Duration = std::time::Duration::from_millis(200);
/// How many lines, and bytes, may wait.
const HOLD_LINES: usize = 256;
const HOLD_BYTES: usize = 64 * 1024;
/// Most bytes one drain of the pipe reads: a runtime that writes without
/// pause cannot keep the reader (and its lock) busy, nor grow the server's
/// memory; what it writes beyond waits in the pipe, which then blocks it.
const DRAIN_BYTES: usize = 256 * 1024;
/// How much of an invocation's log the `LogType: Tail` answer carries.
pub const TAIL_BYTES: usize = 4096;

/// One log event; `message` ends with a newline, as Lambda's do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub timestamp_ms: i64,
    pub message: String,
}

/// Lines of one log stream, on their way to storage.
#[derive(Debug)]
pub struct LogBatch {
    pub account: String,
    pub group: String,
    pub stream: String,
    pub lines: Vec<LogLine>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[derive(Default)]
struct Collector {
    /// Bytes after the last newline.
    partial: Vec<u8>,
    /// Lines not yet sent to storage, and their bytes.
    pending: Vec<LogLine>,
    pending_bytes: usize,
    /// The end of the current invocation's log text (its last
    /// [`TAIL_BYTES`] at least), from its `START` line.
    invocation: Option<String>,
    eof: bool,
    /// Which of the runtime's lines are kept.
    format: LogFormat,
}

impl Collector {
    /// Adds a line of the runtime's, if the format keeps it.
    fn push_output(&mut self, line: &[u8]) {
        let message = String::from_utf8_lossy(line).into_owned();
        if self.format.keeps(&message) {
            self.push_line(message);
        }
    }

    fn push_line(&mut self, message: String) {
        if let Some(text) = &mut self.invocation {
            text.push_str(&message);
            // Only the tail is ever answered: keep the text bounded.
            if text.len() > 4 * TAIL_BYTES {
                let cut = tail(text).len();
                text.drain(..text.len() - cut);
            }
        }
        self.pending_bytes += message.len();
        self.pending.push(LogLine { timestamp_ms: now_ms(), message });
    }

    /// Whether pending lines may wait for the invocation's end.
    fn may_hold(&self) -> bool {
        self.invocation.is_some() && self.pending.len() < HOLD_LINES && self.pending_bytes < HOLD_BYTES
    }

    fn take_pending(&mut self) -> Vec<LogLine> {
        self.pending_bytes = 0;
        std::mem::take(&mut self.pending)
    }

    fn take_output(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..=pos]);
            rest = &rest[pos + 1..];
            let line = std::mem::take(&mut self.partial);
            self.push_output(&line);
        }
        self.partial.extend_from_slice(rest);
        while self.partial.len() >= MAX_LINE {
            let mut line: Vec<u8> = self.partial.drain(..MAX_LINE).collect();
            line.push(b'\n');
            self.push_output(&line);
        }
    }

    fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            let mut line = std::mem::take(&mut self.partial);
            line.push(b'\n');
            self.push_output(&line);
        }
    }

    /// Reads what the pipe holds now, without blocking, up to [`DRAIN_BYTES`].
    /// Returns whether it stopped at that bound (more may wait).
    fn drain(&mut self, fd: &OwnedFd) -> bool {
        let mut buf = [0u8; 16 * 1024];
        let mut read = 0;
        while !self.eof {
            if read >= DRAIN_BYTES {
                return true;
            }
            // SAFETY: reads into a stack buffer of the given length from an fd we own.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            match n {
                0 => {
                    self.eof = true;
                    self.flush_partial();
                }
                n if n > 0 => {
                    read += n as usize;
                    self.take_output(&buf[..n as usize]);
                }
                _ => {
                    let err = std::io::Error::last_os_error();
                    if err.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    if err.kind() != std::io::ErrorKind::WouldBlock {
                        self.eof = true;
                    }
                    return false;
                }
            }
        }
        false
    }
}

pub(crate) struct Output {
    fd: AsyncFd<OwnedFd>,
    collector: Mutex<Collector>,
    account: String,
    group: String,
    pub(crate) stream: String,
    sink: mpsc::Sender<LogBatch>,
    /// Tells the reader task that platform lines wait to be sent.
    platform: Notify,
    /// The function's log format (the collector has a copy, to filter the runtime's lines under its lock).
    format: LogFormat,
}

impl Output {
    pub(crate) fn new(
        fd: OwnedFd,
        account: String,
        group: String,
        stream: String,
        sink: mpsc::Sender<LogBatch>,
        format: LogFormat,
    ) -> std::io::Result<Output> {
        let collector = Mutex::new(Collector { format, ..Collector::default() });
        let fd = crate::readable_fd(fd)?;
        Ok(Output { fd, collector, account, group, stream, sink, platform: Notify::new(), format })
    }

    pub(crate) fn format(&self) -> LogFormat {
        self.format
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Collector> {
        self.collector.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends pending lines to storage; waits when storage is behind, which in
    /// turn slows a runtime that writes faster than logs can be kept.
    async fn send_pending(&self) {
        let lines = self.lock().take_pending();
        if !lines.is_empty() {
            let batch = LogBatch {
                account: self.account.clone(),
                group: self.group.clone(),
                stream: self.stream.clone(),
                lines,
            };
            let _ = self.sink.send(batch).await;
        }
    }

    /// The reader task: runs until the runtime's side of the pipe is closed.
    ///
    /// Lines written during an invocation are held back so that its whole log
    /// usually goes to storage at once, when it ends; a long invocation's lines
    /// go at most [`FLUSH_DELAY`] after they were written.
    pub(crate) async fn run(&self) {
        let mut flush_at: Option<tokio::time::Instant> = None;
        loop {
            let flush = async {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                readable = self.fd.readable() => {
                    let Ok(mut guard) = readable else { break };
                    let (eof, more, hold) = {
                        let mut collector = self.lock();
                        let more = collector.drain(self.fd.get_ref());
                        (collector.eof, more, collector.may_hold())
                    };
                    if !more {
                        guard.clear_ready();
                    }
                    if eof {
                        self.send_pending().await;
                        break;
                    }
                    if hold {
                        flush_at.get_or_insert_with(|| tokio::time::Instant::now() + FLUSH_DELAY);
                    } else {
                        self.send_pending().await;
                        flush_at = None;
                    }
                }
                () = flush => {
                    self.send_pending().await;
                    flush_at = None;
                }
                () = self.platform.notified() => {
                    flush_at.get_or_insert_with(|| tokio::time::Instant::now() + FLUSH_DELAY);
                }
            }
        }
    }

    /// Starts an invocation's log with its `START` line (or record), unless it was started.
    pub(crate) fn begin(&self, request_id: &str, version: &str) {
        {
            let mut collector = self.lock();
            if collector.invocation.is_some() {
                return;
            }
            collector.drain(self.fd.get_ref());
            collector.invocation = Some(String::new());
            if let Some(line) = self.format.start(request_id, version, SystemTime::now()) {
                collector.push_line(line);
            }
        }
        self.platform.notify_one();
    }

    /// Adds a platform line to the current invocation's log.
    pub(crate) fn platform_line(&self, message: String) {
        self.lock().push_line(message);
        self.platform.notify_one();
    }

    /// Ends the invocation's log: collects all the runtime wrote so far, adds
    /// the format's lines of `report` (`END` and `REPORT`), and returns the invocation's whole log text.
    pub(crate) async fn finish(&self, report: &Report<'_>) -> String {
        let text = {
            let mut collector = self.lock();
            collector.drain(self.fd.get_ref());
            collector.flush_partial();
            for line in self.format.end(report, SystemTime::now()) {
                collector.push_line(line);
            }
            collector.invocation.take().unwrap_or_default()
        };
        self.send_pending().await;
        text
    }
}

/// The last [`TAIL_BYTES`] of a log, cut at a character boundary.
pub fn tail(log: &str) -> &str {
    let mut start = log.len().saturating_sub(TAIL_BYTES);
    while !log.is_char_boundary(start) {
        start += 1;
    }
    &log[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_format::LogLevel;

    #[test]
    fn lines_are_cut_at_newlines_and_attributed_to_the_invocation() {
        let mut c = Collector::default();
        c.take_output(b"before\npart");
        c.invocation = Some(String::new());
        c.take_output(b"ial\nlast");
        c.flush_partial();
        let messages: Vec<_> = c.pending.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["before\n", "partial\n", "last\n"]);
        assert_eq!(c.invocation.as_deref(), Some("partial\nlast\n"));
    }

    #[test]
    fn the_runtimes_lines_below_the_application_level_are_dropped() {
        let format = LogFormat::Json { application: LogLevel::Warn, system: LogLevel::Info };
        let mut c = Collector { format, invocation: Some(String::new()), ..Collector::default() };
        c.take_output(b"{\"level\":\"DEBUG\"}\nplain\n{\"level\":\"ERROR\"}\n{\"level\":\"INFO\"}");
        c.flush_partial();
        let messages: Vec<_> = c.pending.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["plain\n", "{\"level\":\"ERROR\"}\n"]);
        assert_eq!(c.invocation.as_deref(), Some("plain\n{\"level\":\"ERROR\"}\n"));
    }

    #[test]
    fn long_lines_are_split() {
        let mut c = Collector::default();
        c.take_output(&vec![b'x'; MAX_LINE * 2 + 10]);
        assert_eq!(c.pending.len(), 2);
        c.flush_partial();
        assert_eq!(c.pending.len(), 3);
        assert_eq!(c.pending[2].message.len(), 11);
    }

    #[test]
    fn tail_is_the_last_4k_on_a_char_boundary() {
        let log = "é".repeat(3000);
        let t = tail(&log);
        assert!(t.len() <= TAIL_BYTES && t.len() >= TAIL_BYTES - 1);
        assert_eq!(tail("short"), "short");
    }
}
