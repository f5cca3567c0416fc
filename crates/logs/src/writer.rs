//! The log writer: the one task that takes the workers' log batches and
//! hands them, in arrival order, to a group-commit writer
//! ([`GroupCommit`]) over [`Tables::append`].
//!
//! Whatever arrives within [`LINGER`] of the first batch goes in one
//! transaction (of at most [`BATCHES`] batches and about [`TXN_BYTES`]), so
//! busy functions cost few transactions. At most about [`TXN_BYTES`] of
//! lines are handed over and not yet committed; beyond that, batches wait in
//! the channel (whose senders, the workers' log readers, then wait): that is
//! the backpressure, and it also bounds how far a log group goes past its
//! cap before the transaction that took it over trims it.
//!
//! A barrier (see [`crate::LogBarrier`]) is answered once every batch handed
//! over before it is committed (without the linger while one waits). The
//! batches already queued in the channel when a barrier comes are handed
//! over before it, so a barrier waits for those, never for later ones.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use ignis_store::commit::{Ack, GroupCommit, Limits};
use ignis_worker::LogBatch;
use tokio::sync::{mpsc, oneshot};

use crate::tables::{LOG_EVENT_OVERHEAD, Tables};

/// How long the log writer waits for more lines before a transaction.
const LINGER: Duration = Duration::from_millis(20);
/// Most batches in one transaction.
pub(crate) const BATCHES: usize = 4096;
/// Most bytes of lines in one transaction (and handed over and not yet
/// committed at once): a log group over its cap is trimmed in the
/// transaction that took it over, so this also bounds how far past its cap
/// the database file must grow.
const TXN_BYTES: usize = 1024 * 1024;

/// A request to the log writer: answer once every line handed to it so far is committed.
pub(crate) type Barrier = oneshot::Sender<()>;

fn batch_bytes(batch: &LogBatch) -> usize {
    batch.lines.iter().map(|l| l.message.len() + LOG_EVENT_OVERHEAD as usize).sum()
}

/// Starts the group-commit writer over `tables` (its thread, `ignis-logs`).
pub(crate) fn start(tables: Arc<Tables>) -> std::io::Result<GroupCommit<LogBatch>> {
    let limits = Limits { max_requests: BATCHES, max_bytes: TXN_BYTES, linger: LINGER };
    GroupCommit::start("logs", limits, batch_bytes, move |batches| {
        tables.append(&batches).map_err(|e| {
            let lines: usize = batches.iter().map(|b| b.lines.len()).sum();
            tracing::error!(lines, error = %e, "could not keep log lines");
            e.to_string()
        })
    })
}

/// The writer task: runs until every sender of `logs` is gone, then lets
/// the group-commit writer commit what it was handed.
pub(crate) async fn run(
    writer: GroupCommit<LogBatch>,
    mut logs: mpsc::Receiver<LogBatch>,
    mut barriers: mpsc::UnboundedReceiver<Barrier>,
) {
    // Batches handed over and not known to be committed, oldest first, with their bytes.
    let mut in_flight: VecDeque<(Ack, usize)> = VecDeque::new();
    let mut in_flight_bytes = 0;
    let mut barriers_open = true;
    loop {
        tokio::select! {
            received = logs.recv() => {
                let Some(batch) = received else { break };
                hand_over(&writer, batch, &mut in_flight, &mut in_flight_bytes).await;
            }
            barrier = barriers.recv(), if barriers_open => match barrier {
                Some(barrier) => {
                    for _ in 0..logs.len() {
                        let Ok(batch) = logs.try_recv() else { break };
                        hand_over(&writer, batch, &mut in_flight, &mut in_flight_bytes).await;
                    }
                    let committed = writer.barrier();
                    tokio::spawn(async move {
                        let _ = committed.wait().await;
                        let _ = barrier.send(());
                    });
                }
                None => barriers_open = false,
            },
        }
    }
    // Dropping the writer commits what it was handed and waits for its thread.
    let _ = tokio::task::spawn_blocking(move || drop(writer)).await;
}

/// Hands one batch to the writer, first waiting for the oldest batches' commits
/// while more than [`TXN_BYTES`] are in flight.
async fn hand_over(writer: &GroupCommit<LogBatch>, batch: LogBatch, in_flight: &mut VecDeque<(Ack, usize)>, bytes: &mut usize) {
    while *bytes >= TXN_BYTES
        && let Some((committed, size)) = in_flight.pop_front()
    {
        let _ = committed.wait().await;
        *bytes -= size;
    }
    let size = batch_bytes(&batch);
    in_flight.push_back((writer.push(vec![batch]), size));
    *bytes += size;
}
