//! Sandbox networking: each sandbox's network namespace gets a routed veth link to the host ([`link`]), with an
//! address from the operator's range ([`plan`]); the host forwards and masquerades its traffic under a firewall
//! table of Ignis's own ([`firewall`]) that keeps the host, the other sandboxes and private ranges out of reach, and
//! answers its DNS through a forwarder on the gateway ([`dns`]), where Ignis's API is relayed too ([`relay`]). [`HostNetwork`] runs all of it for one host.

pub mod dns;
pub mod firewall;
mod host;
pub mod link;
pub mod plan;
pub mod relay;
pub mod share;

pub use host::{Config, Endpoint, HostNetwork, NetError};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The networks (Lambda's `VpcConfig.SubnetIds`) a function is attached to, as its sandboxes need them: the
/// networks' names (sorted, each once) and the union of the ranges they allow (sorted, each once), which the
/// function's sandboxes may reach beyond what every sandbox may.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    pub networks: Vec<String>,
    pub allow: Vec<Ipv4Net>,
}

impl Attachment {
    /// The attachment to `networks`, each with the ranges it allows; `None` for no network.
    pub fn new<'a>(networks: impl IntoIterator<Item = (&'a str, &'a [Ipv4Net])>) -> Option<Attachment> {
        let mut names = Vec::new();
        let mut allow = Vec::new();
        for (name, ranges) in networks {
            names.push(name.to_string());
            allow.extend(ranges.iter().map(Ipv4Net::trunc));
        }
        if names.is_empty() {
            return None;
        }
        names.sort();
        names.dedup();
        allow.sort();
        allow.dedup();
        Some(Attachment { networks: names, allow })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attachment_is_the_same_whatever_the_order() {
        let a: Vec<Ipv4Net> = vec!["10.1.0.0/16".parse().unwrap(), "10.2.3.4/24".parse().unwrap()];
        let b: Vec<Ipv4Net> = vec!["10.1.0.0/16".parse().unwrap()];
        let one = Attachment::new([("db", &a[..]), ("cache", &b[..])]).unwrap();
        let two = Attachment::new([("cache", &b[..]), ("db", &a[..]), ("db", &a[..])]).unwrap();
        assert_eq!(one, two);
        assert_eq!(one.networks, ["cache", "db"]);
        assert_eq!(one.allow, ["10.1.0.0/16".parse::<Ipv4Net>().unwrap(), "10.2.3.0/24".parse().unwrap()]);
        assert_eq!(Attachment::new([]), None);
    }
}
