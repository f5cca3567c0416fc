//! `ignis network create`, `ls` and `delete`: the networks functions may attach to through `VpcConfig` (their
//! `SubnetIds`), each the IPv4 ranges an account's functions may reach beyond the public internet; administrator's
//! key only (`/ignis/networks`).

use std::process::ExitCode;

use serde_json::{Value, json};

use super::http::{Client, Request};
use super::{Endpoint, encode_segment, format_table, write_stdout};

#[derive(clap::Args)]
pub struct NetworkArgs {
    #[command(subcommand)]
    pub command: NetworkCommand,
}

#[derive(clap::Subcommand)]
pub enum NetworkCommand {
    /// Create a network, or set the ranges of an existing one of the same account; prints it.
    Create {
        #[command(flatten)]
        endpoint: Endpoint,
        /// The network's name (1 to 64 letters, digits, '-' or '_', unique on the server): what functions name in
        /// `VpcConfig.SubnetIds` and `SecurityGroupIds`.
        name: String,
        /// An IPv4 range the network's functions may reach, in CIDR notation (10.20.0.0/16); repeat for several
        /// (1 to 64).
        #[arg(long = "allow", value_name = "CIDR", required = true)]
        allow: Vec<String>,
        /// The account whose functions may attach to it (default: the administrator's).
        #[arg(long, value_name = "ID")]
        account: Option<String>,
    },
    /// List the networks, one a line: NAME, ACCOUNT, the ranges, when it was created.
    Ls {
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Delete a network (refused while a function or a published version is attached to it).
    Delete {
        #[command(flatten)]
        endpoint: Endpoint,
        name: String,
    },
}

pub fn network(args: NetworkArgs) -> Result<ExitCode, String> {
    match args.command {
        NetworkCommand::Create { endpoint, name, allow, account } => {
            let mut body = json!({ "Allow": allow });
            if let Some(account) = account {
                body["Account"] = json!(account);
            }
            let created = send(&Client::new(&endpoint)?, "PUT", &name, body.to_string().into_bytes())?.json()?;
            write_stdout(format_table(HEADER, &[row(&created)]).as_bytes())?;
        }
        NetworkCommand::Ls { endpoint } => {
            let listing = send(&Client::new(&endpoint)?, "GET", "", Vec::new())?.json()?;
            let rows: Vec<[String; 4]> = listing["Networks"].as_array().into_iter().flatten().map(row).collect();
            write_stdout(format_table(HEADER, &rows).as_bytes())?;
        }
        NetworkCommand::Delete { endpoint, name } => {
            send(&Client::new(&endpoint)?, "DELETE", &name, Vec::new())?;
            write_stdout(format!("deleted {name}\n").as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

const HEADER: [&str; 4] = ["NAME", "ACCOUNT", "ALLOW", "CREATED"];

/// `method` on `/ignis/networks/{name}` (`/ignis/networks` for no name), checked.
fn send(client: &Client, method: &str, name: &str, body: Vec<u8>) -> Result<super::http::Response, String> {
    let path = match name {
        "" => "/ignis/networks".to_string(),
        name => format!("/ignis/networks/{}", encode_segment(name)),
    };
    let headers = if body.is_empty() { vec![] } else { vec![("content-type", "application/json")] };
    client.send(Request { method, path: &path, query: "", headers, body, service: "ignis" })?.check()
}

/// A network as a table row: its ranges joined by commas.
fn row(network: &Value) -> [String; 4] {
    let text = |key: &str| network[key].as_str().unwrap_or("-").to_string();
    let allow: Vec<&str> = network["Allow"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    [text("Name"), text("Account"), allow.join(","), text("CreatedAt")]
}
