//! Compaction of etcd's history: etcd keeps every earlier value of every key until it is compacted, so a cluster
//! that writes (asynchronous events with their payloads, above all) would fill etcd's space quota and make it
//! refuse every write. One front end at a time (the holder of `leaders/compaction`, under its etcd lease)
//! compacts, every [`COMPACT_EVERY`], to the revision it saw at its previous look: a watch that fell more than
//! that far behind is told it was compacted, and its mirror loads again.

use std::sync::Arc;
use std::time::Duration;

use crate::presence::Presence;
use crate::{Etcd, EtcdError, key};

/// How often the compacting front end compacts, and how much history it keeps.
pub const COMPACT_EVERY: Duration = Duration::from_secs(60);

/// Compacts etcd's history up to `revision` (kept: that revision and later ones).
pub async fn compact(etcd: &Etcd, revision: i64) -> Result<(), EtcdError> {
    match etcd.client().compact(revision, None).await {
        Ok(_) => Ok(()),
        // Compacted that far already (by this front end's last holder, or by etcd's own auto-compaction).
        Err(e) if e.to_string().contains("compacted") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The store's revision now.
async fn revision(etcd: &Etcd) -> Result<i64, EtcdError> {
    let options = etcd_client::GetOptions::new().with_count_only();
    Ok(etcd.get(&key("leaders/"), Some(options.with_prefix())).await?.header().map_or(0, |h| h.revision()))
}

/// Compacts every [`COMPACT_EVERY`] while this front end holds `leaders/compaction`; ends when `presence` is
/// dropped.
pub fn start_compaction(etcd: Etcd, presence: &Arc<Presence>) {
    let presence = Arc::downgrade(presence);
    tokio::spawn(async move {
        let mut seen = None;
        loop {
            tokio::time::sleep(COMPACT_EVERY).await;
            let Some(presence) = presence.upgrade() else { return };
            let leading = presence.claim(&etcd, &key("leaders/compaction")).await;
            let pass = async {
                if !leading? {
                    seen = None;
                    return Ok(());
                }
                if let Some(old) = seen {
                    compact(&etcd, old).await?;
                }
                seen = Some(revision(&etcd).await?);
                Ok::<(), EtcdError>(())
            };
            if let Err(e) = pass.await {
                tracing::warn!(error = %e, "cannot compact etcd's history");
            }
        }
    });
}
