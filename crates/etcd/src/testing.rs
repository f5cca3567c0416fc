//! etcd clusters for tests: one or three members of Debian's `etcd` (`/usr/bin/etcd`, or `IGNIS_ETCD`) on
//! loopback ports, each with a data directory of its own in a temporary directory. Dropping the cluster kills
//! every member it started (by PID) and removes the directories; a member also dies with the thread that started
//! it (its parent-death signal), so a test killed with SIGKILL leaves none behind.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a cluster may take to elect a leader and answer.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// One member: its process (while running) and its addresses.
struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    process: Option<Child>,
}

/// A running etcd cluster of this test's own.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    _dir: tempfile::TempDir,
}

/// `n` free loopback ports, each another (closed again: etcd binds them next). They are held open together while
/// they are chosen: one closed before the next is chosen may be chosen again.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port")).collect();
    held.iter().map(|l| l.local_addr().expect("a bound address").port()).collect()
}

fn etcd_binary() -> String {
    std::env::var("IGNIS_ETCD").unwrap_or_else(|_| "/usr/bin/etcd".to_string())
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster answers a write.
    pub fn start(size: usize) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ports = free_ports(2 * size);
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", ports[2 * i]),
                peer_url: format!("http://127.0.0.1:{}", ports[2 * i + 1]),
                data_dir: dir.path().join(format!("m{i}")),
                log: dir.path().join(format!("m{i}.log")),
                process: None,
            })
            .collect();
        let initial_cluster =
            members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect::<Vec<_>>().join(",");
        let mut cluster = EtcdCluster { members, initial_cluster, _dir: dir };
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster.wait_ready();
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let member = &self.members[i];
        let log = std::fs::File::create(&member.log).expect("the member's log file");
        let mut command = Command::new(etcd_binary());
        // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
        unsafe {
            command.pre_exec(|| {
                // A member dies with the test that started it, even one killed with SIGKILL.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
            });
        }
        let child = command
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args(["--listen-client-urls", &member.client_url, "--advertise-client-urls", &member.client_url])
            .args(["--listen-peer-urls", &member.peer_url, "--initial-advertise-peer-urls", &member.peer_url])
            .args(["--initial-cluster", &self.initial_cluster, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "ignis-test"])
            // Elections within a second or two of a member's loss.
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} (apt-get install etcd-server): {e}", etcd_binary()));
        self.members[i].process = Some(child);
    }

    /// Waits until a put through every running member's endpoint succeeds.
    fn wait_ready(&self) {
        let deadline = Instant::now() + READY_WITHIN;
        // A runtime of its own, on a thread of its own: callable from inside a test's runtime too.
        let ready = std::thread::scope(|scope| scope.spawn(|| self.answers_by(deadline)).join().expect("the readiness check"));
        if !ready {
            let logs: Vec<String> = self
                .members
                .iter()
                .map(|m| std::fs::read_to_string(&m.log).unwrap_or_default().lines().rev().take(20).collect::<Vec<_>>().join("\n"))
                .collect();
            panic!("the etcd cluster did not become ready within {READY_WITHIN:?}:\n{}", logs.join("\n---\n"));
        }
    }

    /// Whether a put through the members' endpoints succeeds before `deadline`.
    fn answers_by(&self, deadline: Instant) -> bool {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(async {
            loop {
                let attempt = async {
                    let mut client = etcd_client::Client::connect(
                        self.endpoints(),
                        Some(etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(2))),
                    )
                    .await?;
                    client.put("ignis-test-ready", "1", None).await
                };
                match attempt.await {
                    Ok(_) => return true,
                    Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                    Err(_) => return false,
                }
            }
        })
    }

    /// Every member's client URL (the running ones and the killed ones).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The endpoints as `ignis server --etcd` takes them.
    pub fn endpoints_flag(&self) -> String {
        self.endpoints().join(",")
    }

    /// `kill -9` of member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again (after [`EtcdCluster::kill`]) on its data directory and addresses.
    pub fn restart(&mut self, i: usize) {
        if self.members[i].process.is_none() {
            self.spawn(i);
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
