//! Networks: what an operator lets functions reach beyond the public internet. A network is Ignis's equivalent
//! of a VPC subnet and its security group in one: a name, the one account whose functions may attach to it, and
//! the IPv4 ranges it allows. Functions attach to networks by naming them in `VpcConfig.SubnetIds` (the front
//! end checks that each is one of the caller's account); their records keep the names, and the invoke path looks
//! the ranges up when a record becomes what the invoker runs (`ignis_invoke::from_record`), so a change of a
//! network's ranges reaches the sandboxes started after it, not those already running.
//!
//! [`EmbeddedNetworks`] keeps them in memory, written through to the table `networks` (`(account, name)` → the
//! record's JSON; this module is its only reader and writer). Reads never touch storage; a write is durable before
//! it shows.
//!
//! # Invariants
//! - Names are unique on the host, whatever the account (`[A-Za-z0-9_-]{1,64}`).
//! - A network keeps its account: [`Networks::put`] of a name another account holds is refused.
//! - A stored network allows 1 to [`MAX_RANGES`] IPv4 ranges, each with its host bits cleared, sorted, each once.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use ignis_ids::AccountId;
use ignis_store::Store;
pub use ipnet::Ipv4Net;
use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::BoxFuture;
use crate::embedded::{NamedTable, load_all, put, storage};

/// (account, network name) → the record as JSON.
const NETWORKS: NamedTable = TableDefinition::new("networks");

/// The most ranges one network allows.
pub const MAX_RANGES: usize = 64;
/// The longest network name.
pub const MAX_NAME: usize = 64;

/// A network: the ranges functions attached to it may reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub name: String,
    /// The account whose functions may attach to it.
    pub account: String,
    /// The ranges it allows (see the module's invariants).
    pub allow: Vec<Ipv4Net>,
    /// When it was made, in milliseconds since the epoch (kept when its ranges change).
    pub created_ms: i64,
}

/// Why a network was refused, or storage failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("network name {0:?} is not 1 to 64 of A-Z, a-z, 0-9, '_' and '-'")]
    Name(String),
    #[error("a network must allow at least one range")]
    NoRange,
    #[error("a network allows at most {MAX_RANGES} ranges, not {0}")]
    TooManyRanges(usize),
    #[error("{0:?} is an IPv6 range: networks are IPv4 only")]
    Ipv6(String),
    #[error("{0:?} is not an IPv4 range in CIDR notation (such as 10.20.0.0/16)")]
    Range(String),
    /// The name is another account's network.
    #[error("network {name} belongs to account {account}: delete it before giving the name to another account")]
    OtherAccount { name: String, account: String },
    /// Storage failed; nothing changed.
    #[error("{0}")]
    Storage(String),
}

/// Refuses a name that is not `[A-Za-z0-9_-]{1,64}`.
pub fn check_name(name: &str) -> Result<(), NetworkError> {
    let valid = (1..=MAX_NAME).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid { Ok(()) } else { Err(NetworkError::Name(name.to_string())) }
}

/// The ranges `texts` name (`A.B.C.D/N`; a bare address is its `/32`), host bits cleared, sorted, each once; IPv6
/// and malformed ranges are refused, as are none and more than [`MAX_RANGES`].
pub fn parse_allow(texts: &[String]) -> Result<Vec<Ipv4Net>, NetworkError> {
    if texts.is_empty() {
        return Err(NetworkError::NoRange);
    }
    let mut allow = Vec::with_capacity(texts.len().min(MAX_RANGES));
    for text in texts {
        let range = match (text.parse::<Ipv4Net>(), text.parse::<std::net::Ipv4Addr>()) {
            (Ok(range), _) => range.trunc(),
            (_, Ok(address)) => Ipv4Net::from(address),
            _ if text.contains(':') => return Err(NetworkError::Ipv6(text.clone())),
            _ => return Err(NetworkError::Range(text.clone())),
        };
        allow.push(range);
    }
    allow.sort();
    allow.dedup();
    if allow.len() > MAX_RANGES {
        return Err(NetworkError::TooManyRanges(allow.len()));
    }
    Ok(allow)
}

/// Every network of the host. Implementations keep the module's invariants.
pub trait Networks: Send + Sync {
    /// The network `name`, whatever its account.
    fn get(&self, name: &str) -> Option<Arc<NetworkRecord>>;

    /// Every network, by name.
    fn list(&self) -> Vec<Arc<NetworkRecord>>;

    /// Stores `record` (replacing the ranges of a network of the same name and account, whose creation time it
    /// keeps), durably before it shows; answers what is stored. A name another account holds is
    /// [`NetworkError::OtherAccount`].
    fn put(&self, record: NetworkRecord) -> BoxFuture<'_, Result<Arc<NetworkRecord>, NetworkError>>;

    /// Deletes the network `name`; answers what it was (`None`: there was none).
    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Arc<NetworkRecord>>, NetworkError>>;
}

impl dyn Networks + '_ {
    /// The network `name` if it is `account`'s (another account's is as good as missing to it).
    pub fn of_account(&self, account: &AccountId, name: &str) -> Option<Arc<NetworkRecord>> {
        self.get(name).filter(|network| network.account == account.as_str())
    }
}

/// The networks of one server: in memory, written through to its store.
pub struct EmbeddedNetworks {
    store: Arc<Store>,
    networks: RwLock<BTreeMap<String, Arc<NetworkRecord>>>,
    writes: tokio::sync::Mutex<()>,
}

impl EmbeddedNetworks {
    /// Loads every stored network (the table is made if missing).
    pub fn load(store: Arc<Store>) -> Result<EmbeddedNetworks, NetworkError> {
        let stored = load_all::<NetworkRecord>(&store, NETWORKS, "network", |_, _| {})
            .map_err(|e| NetworkError::Storage(e.to_string()))?;
        let networks = stored.into_values().map(|record| (record.name.clone(), record)).collect();
        Ok(EmbeddedNetworks { store, networks: RwLock::new(networks), writes: tokio::sync::Mutex::new(()) })
    }

    /// Stores (`Some`) or deletes (`None`) `account`'s `name`, durably, off the async runtime.
    async fn store(&self, account: &str, name: &str, record: Option<Vec<u8>>) -> Result<(), NetworkError> {
        let (store, a, n) = (self.store.clone(), account.to_string(), name.to_string());
        let context = if record.is_some() { "storing a network" } else { "deleting a network" };
        tokio::task::spawn_blocking(move || put(&store, NETWORKS, &a, &n, record.as_deref()))
            .await
            .map_err(|e| NetworkError::Storage(e.to_string()))?
            .map_err(|e| NetworkError::Storage(storage(context)(e).to_string()))
    }
}

impl Networks for EmbeddedNetworks {
    fn get(&self, name: &str) -> Option<Arc<NetworkRecord>> {
        self.networks.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    fn list(&self) -> Vec<Arc<NetworkRecord>> {
        self.networks.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    fn put(&self, mut record: NetworkRecord) -> BoxFuture<'_, Result<Arc<NetworkRecord>, NetworkError>> {
        Box::pin(async move {
            let _serial = self.writes.lock().await;
            if let Some(current) = self.get(&record.name) {
                if current.account != record.account {
                    let (name, account) = (current.name.clone(), current.account.clone());
                    return Err(NetworkError::OtherAccount { name, account });
                }
                record.created_ms = current.created_ms;
            }
            let bytes = serde_json::to_vec(&record).map_err(|e| NetworkError::Storage(e.to_string()))?;
            self.store(&record.account, &record.name, Some(bytes)).await?;
            let record = Arc::new(record);
            self.networks.write().unwrap_or_else(|e| e.into_inner()).insert(record.name.clone(), record.clone());
            Ok(record)
        })
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Arc<NetworkRecord>>, NetworkError>> {
        Box::pin(async move {
            let _serial = self.writes.lock().await;
            let Some(current) = self.get(name) else { return Ok(None) };
            self.store(&current.account, name, None).await?;
            self.networks.write().unwrap_or_else(|e| e.into_inner()).remove(name);
            Ok(Some(current))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| t.to_string()).collect()
    }

    fn net(text: &str) -> Ipv4Net {
        text.parse().unwrap()
    }

    #[test]
    fn names() {
        for good in ["a", "db-net", "Net_2", &"x".repeat(64)] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in ["", "a.b", "a b", "ü", "a/b", &"x".repeat(65)] {
            assert_eq!(check_name(bad), Err(NetworkError::Name(bad.to_string())), "{bad}");
        }
    }

    #[test]
    fn ranges_are_ipv4_truncated_sorted_and_bounded() {
        let check = |texts: &[&str], expected: Result<Vec<&str>, NetworkError>| {
            let expected = expected.map(|nets| nets.into_iter().map(net).collect::<Vec<_>>());
            assert_eq!(parse_allow(&ranges(texts)), expected, "{texts:?}");
        };
        check(&["10.20.3.4/16"], Ok(vec!["10.20.0.0/16"]));
        check(&["192.168.1.9"], Ok(vec!["192.168.1.9/32"]));
        check(&["10.2.0.0/16", "10.1.0.0/16", "10.2.9.9/16"], Ok(vec!["10.1.0.0/16", "10.2.0.0/16"]));
        check(&["0.0.0.0/0"], Ok(vec!["0.0.0.0/0"]));
        check(&[], Err(NetworkError::NoRange));
        check(&["fd00::/8"], Err(NetworkError::Ipv6("fd00::/8".into())));
        check(&["::1"], Err(NetworkError::Ipv6("::1".into())));
        for bad in ["10.0.0.0/33", "10.0.0/8", "", "ten", "10.0.0.0/", "256.0.0.0/8"] {
            check(&[bad], Err(NetworkError::Range(bad.into())));
        }
        let many: Vec<String> = (0..=MAX_RANGES).map(|i| format!("10.{i}.0.0/16")).collect();
        assert_eq!(parse_allow(&many), Err(NetworkError::TooManyRanges(MAX_RANGES + 1)));
        assert_eq!(parse_allow(&many[..MAX_RANGES]).map(|a| a.len()), Ok(MAX_RANGES));
        // Repeats count once.
        let repeated: Vec<String> = (0..=MAX_RANGES).map(|_| "10.0.0.0/8".to_string()).collect();
        assert_eq!(parse_allow(&repeated), Ok(vec![net("10.0.0.0/8")]));
    }

    fn record(name: &str, account: &str, allow: &[&str], created_ms: i64) -> NetworkRecord {
        let allow = allow.iter().map(|a| net(a)).collect();
        NetworkRecord { name: name.into(), account: account.into(), allow, created_ms }
    }

    #[tokio::test]
    async fn create_replace_list_delete_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let networks = EmbeddedNetworks::load(store.clone()).unwrap();
        let (a, b) = ("111111111111", "222222222222");
        networks.put(record("db", a, &["10.1.0.0/16"], 5)).await.unwrap();
        networks.put(record("cache", b, &["10.2.0.0/16"], 6)).await.unwrap();
        // Replacing keeps the creation time; another account may not take the name.
        let replaced = networks.put(record("db", a, &["10.3.0.0/16"], 9)).await.unwrap();
        assert_eq!(*replaced, record("db", a, &["10.3.0.0/16"], 5));
        assert_eq!(
            networks.put(record("db", b, &["10.4.0.0/16"], 9)).await,
            Err(NetworkError::OtherAccount { name: "db".into(), account: a.into() })
        );
        let names = |n: &dyn Networks| n.list().iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&networks), ["cache", "db"]);
        let dyn_networks: &dyn Networks = &networks;
        assert!(dyn_networks.of_account(&AccountId::new(a), "db").is_some());
        assert!(dyn_networks.of_account(&AccountId::new(b), "db").is_none());
        assert!(dyn_networks.of_account(&AccountId::new(a), "nope").is_none());
        drop(networks);
        let networks = EmbeddedNetworks::load(store.clone()).unwrap();
        assert_eq!(names(&networks), ["cache", "db"]);
        assert_eq!(networks.get("db").unwrap().allow, [net("10.3.0.0/16")]);
        assert_eq!(networks.delete("db").await.unwrap().map(|r| r.name.clone()), Some("db".into()));
        assert_eq!(networks.delete("db").await.unwrap(), None);
        drop(networks);
        let networks = EmbeddedNetworks::load(store).unwrap();
        assert_eq!(names(&networks), ["cache"]);
        // The name is free again, for any account.
        networks.put(record("db", b, &["10.5.0.0/16"], 10)).await.unwrap();
        assert_eq!(networks.get("db").unwrap().account, b);
    }
}
