//! Sandbox networking end to end: test hosts in network namespaces the tests make (an HTTP server, a DNS server),
//! a hostile function that probes what it must not reach, and what is left after the server ends.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use ignis_sigv4::Credentials;

use crate::harness::*;

const RUNTIMES: &str = "provided.al2023,python3.11";
/// The name the test DNS server answers.
const NAME: &str = "testhost.ignis.test";

/// A host outside the machine, as far as sandboxes can tell: a network namespace of its own behind a veth pair,
/// `address` inside (a /30 with the host side), running an HTTP server on port 8080 (answering `hello from
/// ADDRESS`) and a DNS server on port 53 that knows [`NAME`].
struct TestHost {
    netns: String,
    server: Option<Child>,
    address: String,
}

impl TestHost {
    /// `subnet`: the /30's base, e.g. `198.51.100.0`; `dns_answer`: the address the DNS server gives for [`NAME`].
    fn start(tag: &str, subnet: [u8; 4], dns_answer: &str) -> TestHost {
        let netns = format!("ignis-it-{}-{tag}", std::process::id());
        let outside = format!("itv{}{tag}", std::process::id() % 100_000);
        let [a, b, c, d] = subnet;
        let (host_side, address) = (format!("{a}.{b}.{c}.{}", d + 1), format!("{a}.{b}.{c}.{}", d + 2));
        let ip = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().expect("ip");
            assert!(status.success(), "ip {args:?}");
        };
        let _ = Command::new("ip").args(["netns", "del", &netns]).stderr(Stdio::null()).status();
        ip(&["netns", "add", &netns]);
        // From here on, dropping it (a failed assertion included) removes the namespace.
        let mut host = TestHost { netns: netns.clone(), server: None, address };
        ip(&["link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &netns]);
        ip(&["addr", "add", &format!("{host_side}/30"), "dev", &outside]);
        ip(&["link", "set", &outside, "up"]);
        let inside = |args: &[&str]| ip(&[&["netns", "exec", &netns, "ip"], args].concat());
        inside(&["addr", "add", &format!("{}/30", host.address), "dev", "eth0"]);
        inside(&["link", "set", "eth0", "up"]);
        inside(&["link", "set", "lo", "up"]);
        inside(&["route", "add", "default", "via", &host_side]);
        let records = format!("{NAME}={dns_answer}");
        let mut server = Command::new("ip")
            .args(["netns", "exec", &netns, "python3", "-c", TEST_HOST, &host.address, &records])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = server.stdout.take().unwrap();
        host.server = Some(server);
        let mut ready = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut ready).unwrap();
        assert_eq!(ready.trim(), "ready");
        host
    }

    fn url(&self) -> String {
        format!("http://{}:8080/", self.address)
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        // Its end of the veth pair goes with it, and the other end with that.
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}

/// The test host's servers: HTTP on ADDRESS:8080, DNS (A records only) on ADDRESS:53.
const TEST_HOST: &str = r#"
import http.server, socket, sys, threading
address = sys.argv[1]
records = dict(arg.split("=") for arg in sys.argv[2:])
class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello from " + address).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
def dns():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((address, 53))
    while True:
        q, client = s.recvfrom(512)
        i, labels = 12, []
        while q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode())
            i += q[i] + 1
        end = i + 5
        ip = records.get(".".join(labels).lower())
        answer = b""
        if ip and q[end - 4:end - 2] == b"\x00\x01":
            answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + socket.inet_aton(ip)
        flags = b"\x81\x80" if ip else b"\x81\x83"
        counts = b"\x00\x01" + (b"\x00\x01" if answer else b"\x00\x00") + b"\x00\x00\x00\x00"
        s.sendto(q[:2] + flags + counts + q[12:end] + answer, client)
server = http.server.ThreadingHTTPServer((address, 8080), Hello)
threading.Thread(target=dns, daemon=True).start()
print("ready", flush=True)
server.serve_forever()
"#;

/// A function that runs the probes its event lists, all at once, and answers each one's result: `ok[:detail]` or
/// `err:...`. It also listens on port 7000 from its start, for other sandboxes to try.
const PROBER: &str = r#"
import json, socket, threading, urllib.error, urllib.request
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", 7000))
listener.listen(16)
def serve():
    while True:
        conn, _ = listener.accept()
        conn.close()
threading.Thread(target=serve, daemon=True).start()
def probe(p):
    try:
        kind = p["kind"]
        if kind == "resolve":
            return "ok:" + socket.gethostbyname(p["name"])
        if kind == "address":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect((p["toward"], 9))
            return "ok:" + s.getsockname()[0]
        if kind == "http":
            try:
                with urllib.request.urlopen(p["url"], timeout=3) as r:
                    return "ok:" + r.read().decode()
            except urllib.error.HTTPError as e:
                return "ok:" + str(e.code)
        if kind == "tcp":
            s = socket.socket()
            s.settimeout(3)
            if p.get("bind"):
                s.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND: any source address, owned or not
                s.bind((p["bind"], 0))
            s.connect((p["host"], p["port"]))
            s.close()
            return "ok"
        if kind == "env":
            import os
            return "ok:" + os.environ.get(p["name"], "")
        if kind == "file":
            return "ok:" + open(p["path"]).read()
        return "err:unknown probe"
    except Exception as e:
        return "err:" + repr(e)
def handler(event, context):
    results = [None] * len(event)
    def run(i, p):
        results[i] = probe(p)
    threads = [threading.Thread(target=run, args=(i, p)) for i, p in enumerate(event)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
"#;

fn create_prober(server: &Server, name: &str) {
    let zip = zip_of(&[("app.py", PROBER.as_bytes(), 0o644)]);
    let created = server.create(name, &zip, json!({ "Runtime": "python3.11", "Handler": "app.handler", "Timeout": 60 }));
    assert_eq!(created.status, 201, "{}", created.text());
}

/// Runs `probes` in function `name`; the results, in order.
fn probe(server: &Server, name: &str, probes: &[Value]) -> Vec<String> {
    let reply = server.invoke(name, &Value::Array(probes.to_vec()).to_string());
    assert_eq!(reply.status, 200, "{}", reply.text());
    let results: Vec<String> = serde_json::from_value(reply.json()).unwrap_or_else(|_| panic!("{}", reply.text()));
    assert_eq!(results.len(), probes.len());
    results
}

fn tcp(host: &str, port: u16) -> Value {
    json!({ "kind": "tcp", "host": host, "port": port })
}

/// The host's IPv4 addresses.
fn host_addresses() -> Vec<String> {
    let out = Command::new("ip").args(["-4", "-o", "addr", "show"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(3)?.split('/').next().map(str::to_string))
        .collect()
}

fn plan(range: &str) -> ignis_net::plan::Plan {
    ignis_net::plan::Plan::new(range.parse().unwrap()).unwrap()
}

/// Whether the host still has the range's firewall table, and how many of its links.
fn leftovers(range: &str) -> (bool, usize) {
    let plan = plan(range);
    let table = Command::new("nft").args(["list", "table", "inet", &plan.table()]).output().unwrap();
    let links = Command::new("ip").args(["-o", "link", "show"]).output().unwrap();
    let prefix = plan.link_prefix();
    let count = String::from_utf8_lossy(&links.stdout).lines().filter(|line| line.contains(&prefix)).count();
    (table.status.success(), count)
}

#[test]
fn functions_reach_allowed_hosts_by_name_and_address_and_nothing_on_the_deny_list_as_root() {
    let public = TestHost::start("p", [198, 51, 100, 0], "198.51.100.2");
    let denied = TestHost::start("d", [192, 168, 231, 0], "192.168.231.2");
    let allowed = TestHost::start("a", [192, 168, 232, 0], "192.168.232.2");
    let range = "10.217.0.0/16";
    let server = Server::start_with(&[
        "--runtimes", RUNTIMES, "--egress", "all", "--sandbox-network", range,
        "--sandbox-dns", &public.address, "--egress-allow", "192.168.232.0/24",
    ]);
    let gateway = plan(range).gateway().to_string();
    create_prober(&server, "prober");
    create_prober(&server, "other");

    // Another sandbox, listening on port 7000.
    let other = probe(&server, "other", &[json!({ "kind": "address", "toward": public.address })]);
    let other_address = other[0].strip_prefix("ok:").unwrap_or_else(|| panic!("{other:?}")).to_string();
    assert!(plan(range).range().contains(&other_address.parse::<std::net::Ipv4Addr>().unwrap()), "{other_address}");

    // Something listening on every host address, as SSH or a cache node would.
    let listening = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listening.local_addr().unwrap().port();
    let api_port: u16 = server.address.rsplit_once(':').unwrap().1.parse().unwrap();

    let allowed_probes = vec![
        json!({ "kind": "resolve", "name": NAME }),
        json!({ "kind": "http", "url": format!("http://{NAME}:8080/") }),
        json!({ "kind": "http", "url": public.url() }),
        json!({ "kind": "http", "url": allowed.url() }),
        // The one endpoint of the host a function may call: Ignis's API (unsigned: refused, but reached).
        json!({ "kind": "http", "url": format!("http://{gateway}:{api_port}/2015-03-31/functions/") }),
        json!({ "kind": "file", "path": "/etc/resolv.conf" }),
    ];
    let mut denied_probes = vec![
        json!({ "kind": "http", "url": denied.url() }),
        tcp("169.254.169.254", 80),
        tcp(&other_address, 7000),
        tcp(&gateway, port),
        tcp(&gateway, 22),
        // Spoofing: another sandbox's address, and one outside the range, as the source.
        json!({ "kind": "tcp", "host": public.address, "port": 8080, "bind": other_address }),
        json!({ "kind": "tcp", "host": public.address, "port": 8080, "bind": "203.0.113.9" }),
    ];
    let mut addresses = host_addresses();
    addresses.sort();
    addresses.dedup();
    for address in addresses {
        denied_probes.push(tcp(&address, port));
        if address != gateway {
            denied_probes.push(tcp(&address, api_port));
        }
    }
    let probes: Vec<Value> = allowed_probes.iter().chain(&denied_probes).cloned().collect();
    let results = probe(&server, "prober", &probes);
    let (reached, refused) = results.split_at(allowed_probes.len());
    assert_eq!(reached[0], "ok:198.51.100.2", "{results:?}");
    assert_eq!(reached[1], "ok:hello from 198.51.100.2");
    assert_eq!(reached[2], "ok:hello from 198.51.100.2");
    assert_eq!(reached[3], "ok:hello from 192.168.232.2");
    assert!(reached[4].starts_with("ok:4"), "the API endpoint: {}", reached[4]);
    assert_eq!(reached[5], format!("ok:nameserver {gateway}\n"));
    for (probe, result) in denied_probes.iter().zip(refused) {
        assert!(result.starts_with("err:"), "{probe} reached: {result}");
    }
    // The sandbox's own address as its source works (the probes above failed for what they were, not for want of
    // a network).
    let me = probe(&server, "prober", &[json!({ "kind": "address", "toward": public.address })]);
    let me = me[0].strip_prefix("ok:").unwrap().to_string();
    let control = probe(&server, "prober", &[json!({ "kind": "tcp", "host": public.address, "port": 8080, "bind": me })]);
    assert_eq!(control, ["ok"]);
    drop(listening);
}

#[test]
fn without_egress_a_function_reaches_nothing_as_root() {
    let public = TestHost::start("n", [198, 51, 100, 4], "198.51.100.6");
    let server = Server::start_with(&["--runtimes", RUNTIMES, "--egress", "none"]);
    create_prober(&server, "prober");
    let results = probe(
        &server,
        "prober",
        &[
            json!({ "kind": "http", "url": public.url() }),
            json!({ "kind": "resolve", "name": NAME }),
            json!({ "kind": "file", "path": "/etc/resolv.conf" }),
        ],
    );
    assert!(results[0].starts_with("err:") && results[1].starts_with("err:"), "{results:?}");
    assert_eq!(results[2], "ok:");
}

#[test]
fn rules_and_links_are_gone_after_shutdown_and_after_kill_9_and_a_restart_as_root() {
    let range = "10.218.0.0/16";
    let data = tempfile::tempdir().unwrap();
    let args = ["--runtimes", "provided.al2023", "--egress", "all", "--sandbox-network", range];
    let mut server = Server::start_in(data.path(), &args);
    let created = server.create("f", &sh_runtime("true"), json!({}));
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(server.invoke("f", "{}").status, 200);
    let (table, links) = leftovers(range);
    assert!(table && links > 0, "table {table}, links {links}");
    // The range is this server's while it runs: another server on the machine is refused it.
    let other = tempfile::tempdir().unwrap();
    let mut second = Command::new(env!("CARGO_BIN_EXE_ignis"))
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(other.path())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ended = eventually(Duration::from_secs(60), || second.try_wait().unwrap().is_some());
    if !ended {
        let _ = second.kill();
    }
    let out = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(ended && !out.status.success() && stderr.contains("in use by another Ignis"), "{stderr}");
    assert_eq!(server.invoke("f", "{}").status, 200);

    // Killed: its namespaces (and so their links) die with it; the table stays until the next start replaces it.
    server.kill();
    assert!(eventually(Duration::from_secs(30), || leftovers(range).1 == 0), "links left: {:?}", leftovers(range));
    let mut server = Server::start_in(data.path(), &args);
    assert_eq!(server.invoke("f", "{}").status, 200);
    server.stop();
    assert_eq!(leftovers(range), (false, 0));
}

/// A function that calls Ignis with boto3, as an unmodified Lambda function would: the credentials and the endpoint
/// come from its environment.
const SDK_CALLER: &str = r#"
import boto3, os
def handler(event, context):
    results = {"endpoint": os.environ.get("AWS_ENDPOINT_URL", "")}
    sqs = boto3.client("sqs")
    for key, url in (("own", event["own_queue"]), ("other", event["other_queue"])):
        try:
            results[key] = "sent " + sqs.send_message(QueueUrl=url, MessageBody="from a sandbox")["MessageId"]
        except Exception as e:
            results[key] = "error " + getattr(e, "response", {}).get("Error", {}).get("Code", repr(e))
    answer = boto3.client("lambda").invoke(FunctionName=event["function"], Payload=b"{}")
    results["invoked"] = answer["Payload"].read().decode()
    return results
"#;

#[test]
fn functions_call_ignis_with_the_sdk_and_networks_open_their_ranges_as_root() {
    let private = TestHost::start("v", [192, 168, 233, 0], "192.168.233.2");
    let range = "10.216.0.0/16";
    let server = Server::start_with(&["--runtimes", RUNTIMES, "--egress", "all", "--sandbox-network", range]);
    let admin = Server::credentials();

    // The SDK inside a function: its own account's queue and functions, not another account's queue.
    let (_, tenant) = server.create_account("tenant");
    let (_, other) = server.create_account("other");
    let queue = |credentials: &Credentials, name: &str| {
        let target = [("x-amz-target", "AmazonSQS.CreateQueue"), ("content-type", "application/x-amz-json-1.0")];
        let body = json!({ "QueueName": name }).to_string();
        let made = server.signed_with(credentials, "sqs", "POST", "/", "", &target, body.as_bytes());
        assert_eq!(made.status, 200, "{}", made.text());
        made.json()["QueueUrl"].as_str().unwrap().to_string()
    };
    let (own_queue, other_queue) = (queue(&tenant, "inbox"), queue(&other, "private"));
    let zip = zip_of(&[("app.py", SDK_CALLER.as_bytes(), 0o644)]);
    let settings = json!({ "Runtime": "python3.11", "Handler": "app.handler", "Timeout": 60, "MemorySize": 256 });
    let created = server.create_as_with(&tenant, "caller", &zip, settings);
    assert_eq!(created.status, 201, "{}", created.text());
    let created = server.create_as_with(&tenant, "callee", &sh_runtime(r#"echo '"callee here"' > /tmp/response"#), json!({}));
    assert_eq!(created.status, 201, "{}", created.text());
    let event = json!({ "own_queue": own_queue, "other_queue": other_queue, "function": "callee" }).to_string();
    let reply = server.invoke_as(&tenant, "caller", &event);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let results = reply.json();
    assert_eq!(results["endpoint"], format!("http://{}:{}", plan(range).gateway(), server.address.rsplit_once(':').unwrap().1));
    assert!(results["own"].as_str().unwrap().starts_with("sent "), "{results}");
    assert_eq!(results["other"], "error AWS.SimpleQueueService.NonExistentQueue", "{results}");
    assert_eq!(results["invoked"].as_str().map(str::trim), Some("\"callee here\""));
    let received = {
        let target = [("x-amz-target", "AmazonSQS.ReceiveMessage"), ("content-type", "application/x-amz-json-1.0")];
        let body = json!({ "QueueUrl": own_queue, "WaitTimeSeconds": 1 }).to_string();
        server.signed_with(&tenant, "sqs", "POST", "/", "", &target, body.as_bytes())
    };
    assert_eq!(received.json()["Messages"][0]["Body"], "from a sandbox", "{}", received.text());

    // A network opens its ranges to the functions attached to it, and to no other.
    let made = server.ignis_as(&admin, "PUT", "/ignis/networks/db", json!({ "Allow": ["192.168.233.0/24"] }).to_string().as_bytes());
    assert!(made.status < 300, "{}", made.text());
    create_prober(&server, "attached");
    create_prober(&server, "detached");
    let vpc = json!({ "VpcConfig": { "SubnetIds": ["db"], "SecurityGroupIds": ["db"] } });
    let updated = server.lambda("PUT", "/2015-03-31/functions/attached/configuration", vpc.to_string().as_bytes());
    assert_eq!(updated.status, 200, "{}", updated.text());
    let reach = [json!({ "kind": "http", "url": private.url() }), json!({ "kind": "address", "toward": private.address })];
    let attached = probe(&server, "attached", &reach);
    assert_eq!(attached[0], "ok:hello from 192.168.233.2", "{attached:?}");
    let detached = probe(&server, "detached", &reach);
    assert!(detached[0].starts_with("err:"), "{detached:?}");
    // Each from its own block of the range.
    let block = |result: &str| plan(range).block(1).contains(&result.strip_prefix("ok:").unwrap().parse::<std::net::Ipv4Addr>().unwrap());
    assert!(block(&attached[1]) && !block(&detached[1]), "{attached:?} {detached:?}");
}

#[test]
fn a_worker_host_relays_the_api_to_its_server_as_root() {
    let server = Server::start_with(&["--runtimes", RUNTIMES, "--no-local-worker"]);
    let range = "10.219.0.0/16";
    let _worker = WorkerHost::start(&server, &["--egress", "all", "--sandbox-network", range]);
    server.wait_for_workers(1);
    let zip = zip_of(&[("app.py", SDK_CALLER.as_bytes(), 0o644)]);
    let settings = json!({ "Runtime": "python3.11", "Handler": "app.handler", "Timeout": 60, "MemorySize": 256 });
    assert_eq!(server.create("caller", &zip, settings).status, 201);
    let created = server.create("callee", &sh_runtime(r#"echo '"callee here"' > /tmp/response"#), json!({}));
    assert_eq!(created.status, 201, "{}", created.text());
    let queue = {
        let target = [("x-amz-target", "AmazonSQS.CreateQueue"), ("content-type", "application/x-amz-json-1.0")];
        let made = server.signed_with(&Server::credentials(), "sqs", "POST", "/", "", &target, br#"{"QueueName":"q"}"#);
        made.json()["QueueUrl"].as_str().unwrap().to_string()
    };
    let event = json!({ "own_queue": queue, "other_queue": queue, "function": "callee" }).to_string();
    let reply = server.invoke("caller", &event);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let results = reply.json();
    let port = server.address.rsplit_once(':').unwrap().1;
    assert_eq!(results["endpoint"], format!("http://{}:{port}", plan(range).gateway()));
    assert!(results["own"].as_str().unwrap().starts_with("sent "), "{results}");
    assert_eq!(results["invoked"].as_str().map(str::trim), Some("\"callee here\""));
}

/// [`SDK_CALLER`] for Node.js, with the AWS SDK for JavaScript v3 of the runtime's base.
const NODE_SDK_CALLER: &str = r#"
const { SQSClient, GetQueueUrlCommand, SendMessageCommand } = require("@aws-sdk/client-sqs");
const { LambdaClient, InvokeCommand } = require("@aws-sdk/client-lambda");
exports.handler = async (event) => {
  // The queue's URL as this function reaches it (the SDK sends to the URL's host).
  const sqs = new SQSClient({});
  const { QueueUrl } = await sqs.send(new GetQueueUrlCommand({ QueueName: event.queue }));
  const sent = await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: "from node" }));
  const answer = await new LambdaClient({}).send(new InvokeCommand({ FunctionName: event.function, Payload: Buffer.from("{}") }));
  return { sent: sent.MessageId, invoked: Buffer.from(answer.Payload).toString(), endpoint: process.env.AWS_ENDPOINT_URL };
};
"#;

#[test]
fn a_node_function_calls_ignis_with_the_sdk_v3_as_root() {
    let range = "10.220.0.0/16";
    let server = Server::start_with(&["--runtimes", "provided.al2023,nodejs20.x", "--egress", "all", "--sandbox-network", range]);
    let zip = zip_of(&[("index.js", NODE_SDK_CALLER.as_bytes(), 0o644)]);
    let settings = json!({ "Runtime": "nodejs20.x", "Handler": "index.handler", "Timeout": 60, "MemorySize": 256 });
    let created = server.create("caller", &zip, settings);
    assert_eq!(created.status, 201, "{}", created.text());
    let created = server.create("callee", &sh_runtime(r#"echo '"callee here"' > /tmp/response"#), json!({}));
    assert_eq!(created.status, 201, "{}", created.text());
    let target = [("x-amz-target", "AmazonSQS.CreateQueue"), ("content-type", "application/x-amz-json-1.0")];
    let made = server.signed_with(&Server::credentials(), "sqs", "POST", "/", "", &target, br#"{"QueueName":"q"}"#);
    assert_eq!(made.status, 200, "{}", made.text());
    let reply = server.invoke("caller", &json!({ "queue": "q", "function": "callee" }).to_string());
    assert_eq!(reply.status, 200, "{}", reply.text());
    let results = reply.json();
    assert!(results["sent"].as_str().is_some_and(|id| !id.is_empty()), "{results}");
    assert_eq!(results["invoked"].as_str().map(str::trim), Some("\"callee here\""), "{results}");
    assert_eq!(results["endpoint"], format!("http://{}:{}", plan(range).gateway(), server.address.rsplit_once(':').unwrap().1));
}
