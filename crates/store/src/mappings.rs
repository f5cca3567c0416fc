//! Event source mappings: opaque records by account and mapping UUID, written
//! durably (fsync'd) and read back whole at start.

use redb::{TableDefinition, WriteTransaction};

use crate::{DbContext, NamedRecords, Store, StoreError};

/// (account, mapping UUID) -> opaque record.
const MAPPINGS: NamedRecords = TableDefinition::new("event_source_mappings");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(MAPPINGS).ctx("creating tables")?;
    Ok(())
}

impl Store {
    /// Stores (inserts or replaces) an event source mapping. Durable when it returns.
    pub fn put_mapping(&self, account: &str, uuid: &str, record: &[u8]) -> Result<(), StoreError> {
        const CTX: &str = "storing an event source mapping";
        let txn = self.db.begin_write().ctx(CTX)?;
        txn.open_table(MAPPINGS).ctx(CTX)?.insert((account, uuid), record).ctx(CTX)?;
        self.commit(txn, true, CTX)
    }

    /// Deletes an event source mapping; answers whether it existed. Durable when it returns.
    pub fn delete_mapping(&self, account: &str, uuid: &str) -> Result<bool, StoreError> {
        const CTX: &str = "deleting an event source mapping";
        let txn = self.db.begin_write().ctx(CTX)?;
        let existed = txn.open_table(MAPPINGS).ctx(CTX)?.remove((account, uuid)).ctx(CTX)?.is_some();
        self.commit(txn, true, CTX)?;
        Ok(existed)
    }

    /// Every event source mapping as `(account, uuid, record)`, by account then UUID.
    pub fn mappings(&self) -> Result<Vec<(String, String, Vec<u8>)>, StoreError> {
        self.records(MAPPINGS, "listing event source mappings")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_round_trip_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.put_mapping("111111111111", "b", b"two").unwrap();
            store.put_mapping("111111111111", "a", b"one").unwrap();
            store.put_mapping("111111111111", "a", b"one'").unwrap();
            store.put_mapping("222222222222", "c", b"three").unwrap();
            assert!(store.delete_mapping("222222222222", "c").unwrap());
            assert!(!store.delete_mapping("222222222222", "c").unwrap());
        }
        let store = Store::open(dir.path()).unwrap();
        let all = store.mappings().unwrap();
        let expected = vec![
            ("111111111111".to_string(), "a".to_string(), b"one'".to_vec()),
            ("111111111111".to_string(), "b".to_string(), b"two".to_vec()),
        ];
        assert_eq!(all, expected);
    }
}
