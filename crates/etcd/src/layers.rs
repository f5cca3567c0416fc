//! [`EtcdLayers`] and [`EtcdNetworks`]: the layers (`layers/<account>/<name>`, a layer's record with its versions,
//! its trees shipped through the object store) and the networks (`networks/<name>`) of a cluster, each in a
//! [`Table`]: made through one front end, usable through every other.

use std::collections::HashSet;
use std::sync::Arc;

use ignis_ids::AccountId;
use ignis_registry::{
    BoxFuture, LayerRecord, LayerVersionRecord, Layers, NetworkError, NetworkRecord, Networks, RegistryError,
};
use ignis_store::Store;

use crate::code::CodeShare;
use crate::table::{Decision, Record, Table, WriteError};
use crate::{Etcd, EtcdError};

impl Record for LayerRecord {
    fn trees(&self) -> Vec<String> {
        self.versions.iter().map(|v| v.code_sha256_hex.clone()).collect()
    }

    fn hold(&mut self, store: &Store) {
        ignis_registry::layers::hold_code(store, self);
    }
}

impl Record for NetworkRecord {
    fn trees(&self) -> Vec<String> {
        Vec::new()
    }

    fn hold(&mut self, _: &Store) {}
}

/// The layers of a cluster's front end: in etcd, followed into memory.
pub struct EtcdLayers {
    table: Table<LayerRecord>,
    region: String,
}

impl EtcdLayers {
    /// Loads every layer from `etcd` (fetching the trees this node lacks through `code`) and follows them.
    pub async fn open(etcd: Etcd, store: Arc<Store>, code: Arc<CodeShare>, region: &str) -> Result<EtcdLayers, EtcdError> {
        Ok(EtcdLayers { table: Table::open(etcd, "layers", store, code, None).await?, region: region.to_string() })
    }

    fn error(&self, account: &AccountId, name: &str, e: WriteError) -> RegistryError {
        match e {
            WriteError::Lost => RegistryError::Conflict { resource: ignis_ids::arn::layer(&self.region, account.as_str(), name) },
            WriteError::Etcd(e) => e.into(),
        }
    }
}

impl Layers for EtcdLayers {
    fn get(&self, account: &AccountId, name: &str) -> Option<Arc<LayerRecord>> {
        self.table.get(&format!("{account}/{name}"))
    }

    fn list(&self, account: &AccountId) -> Vec<Arc<LayerRecord>> {
        let all = self.table.starting_with(&format!("{account}/"));
        all.into_iter().map(|(_, record)| record).filter(|record| !record.versions.is_empty()).collect()
    }

    fn live_code(&self) -> HashSet<String> {
        self.table.starting_with("").iter().flat_map(|(_, record)| record.trees()).collect()
    }

    fn publish<'a>(
        &'a self,
        account: &'a AccountId,
        name: &'a str,
        mut version: LayerVersionRecord,
    ) -> BoxFuture<'a, Result<LayerVersionRecord, RegistryError>> {
        Box::pin(async move {
            let mut published = None;
            self.table
                .write(&format!("{account}/{name}"), |current| {
                    let mut record = current.cloned().unwrap_or_else(|| LayerRecord {
                        name: name.to_string(),
                        last_version: 0,
                        versions: Vec::new(),
                    });
                    record.last_version += 1;
                    version.version = record.last_version;
                    record.versions.push(version.clone());
                    published = Some(version);
                    Decision::Put(record)
                })
                .await
                .map_err(|e| self.error(account, name, e))?;
            published.ok_or_else(|| RegistryError::Storage("a layer's publication stored nothing".into()))
        })
    }

    fn delete_version<'a>(&'a self, account: &'a AccountId, name: &'a str, version: u32) -> BoxFuture<'a, Result<bool, RegistryError>> {
        Box::pin(async move {
            let written = self
                .table
                .write(&format!("{account}/{name}"), |current| match current.filter(|r| r.version(version).is_some()) {
                    None => Decision::Keep,
                    Some(current) => {
                        let mut record = current.clone();
                        record.versions.retain(|v| v.version != version);
                        Decision::Put(record)
                    }
                })
                .await
                .map_err(|e| self.error(account, name, e))?;
            Ok(written.is_some())
        })
    }
}

/// The networks of a cluster: in etcd, followed into memory.
pub struct EtcdNetworks {
    table: Table<NetworkRecord>,
}

impl EtcdNetworks {
    /// Loads every network from `etcd` and follows them.
    pub async fn open(etcd: Etcd, store: Arc<Store>, code: Arc<CodeShare>) -> Result<EtcdNetworks, EtcdError> {
        Ok(EtcdNetworks { table: Table::open(etcd, "networks", store, code, None).await? })
    }
}

fn network_error(name: &str, e: WriteError) -> NetworkError {
    match e {
        WriteError::Lost => NetworkError::Storage(format!(
            "The operation cannot be performed at this time. An update is in progress for network {name}"
        )),
        WriteError::Etcd(e) => NetworkError::Storage(e.to_string()),
    }
}

impl Networks for EtcdNetworks {
    fn get(&self, name: &str) -> Option<Arc<NetworkRecord>> {
        self.table.get(name)
    }

    fn list(&self) -> Vec<Arc<NetworkRecord>> {
        self.table.starting_with("").into_iter().map(|(_, record)| record).collect()
    }

    fn put(&self, mut record: NetworkRecord) -> BoxFuture<'_, Result<Arc<NetworkRecord>, NetworkError>> {
        Box::pin(async move {
            let name = record.name.clone();
            let mut refused = None;
            let written = self
                .table
                .write(&name, |current| {
                    if let Some(current) = current {
                        if current.account != record.account {
                            refused = Some(NetworkError::OtherAccount { name: current.name.clone(), account: current.account.clone() });
                            return Decision::Keep;
                        }
                        record.created_ms = current.created_ms;
                    }
                    Decision::Put(record)
                })
                .await
                .map_err(|e| network_error(&name, e))?;
            match (written.and_then(|(_, new)| new), refused) {
                (Some(stored), _) => Ok(stored),
                (None, Some(refused)) => Err(refused),
                (None, None) => Err(NetworkError::Storage("a network's write stored nothing".into())),
            }
        })
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Arc<NetworkRecord>>, NetworkError>> {
        Box::pin(async move {
            let written = self
                .table
                .write(name, |current| if current.is_some() { Decision::Delete } else { Decision::Keep })
                .await
                .map_err(|e| network_error(name, e))?;
            Ok(written.and_then(|(old, _)| old))
        })
    }
}
