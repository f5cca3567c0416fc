//! End-to-end tests: each starts a real `ignis server` on a free loopback port
//! and calls it over HTTP as a client would, signing with SigV4. They need root
//! (sandboxes use namespaces and cgroups) and the workspace's binaries built.

mod accounts;
mod api;
mod async_invoke;
mod bad_input;
mod cache_tier;
mod cli;
mod cluster;
mod concurrency;
mod console;
mod credentials;
mod deploy_tools;
mod esm;
mod function_urls;
mod harness;
mod hostile;
mod hostile_freeze;
mod hostile_growth;
mod hostile_http;
mod hostile_limits;
mod hostile_starve;
mod image_functions;
mod image_hostile;
mod image_invoke;
mod invoke;
mod lifecycle;
mod logs;
mod metrics;
mod network;
mod networks;
mod oci;
mod policy;
mod provisioned;
mod runtimes;
mod sqs;
mod versions;
mod workers;
