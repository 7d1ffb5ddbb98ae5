//! A real NATS JetStream cluster for the cluster tests: Debian's
//! `nats-server` (2.9), three servers on loopback, each with its own store
//! directory, client, route and monitoring ports, routed to one another
//! as cluster `eldercare`. [`NatsCluster::start`] returns once every
//! server says JetStream is healthy and all agree on a meta leader.
//!
//! Servers are stopped only the hard way, by SIGKILL to the child's own
//! PID ([`NatsCluster::kill9`], and on drop): the tests are about losing
//! one. [`NatsCluster::restart`] brings one back on its ports and store.
//!
//! A missing `nats-server` fails the test with what to install: the
//! cluster tests are never skipped.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "The cluster tests run a real NATS JetStream cluster and need \
     `nats-server`: `apt-get install nats-server` (Debian; it installs /usr/sbin/nats-server, \
     and scripts/test does it for you), or point ELDERCARE_NATS_SERVER at the binary.";

/// Only turns a hang into a failure: on loopback three servers agree on a
/// meta leader within a second or two, and elect a new one within about
/// five after losing it.
pub const READY_DEADLINE: Duration = Duration::from_secs(60);

/// The cluster's name, as the servers' `--cluster_name`.
pub const CLUSTER_NAME: &str = "eldercare";

pub struct NatsCluster {
    bin: PathBuf,
    nodes: Vec<Node>,
}

struct Node {
    /// `n1`, `n2`, ...: the server name, as JetStream reports leaders.
    name: String,
    client: u16,
    route: u16,
    monitor: u16,
    /// Its store (`store/`) and its log (`server.log`).
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// `nats-server`: ELDERCARE_NATS_SERVER, then PATH, then /usr/sbin (where
/// Debian puts it, often not on a user's PATH).
fn binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ELDERCARE_NATS_SERVER") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "ELDERCARE_NATS_SERVER={} is not a file. {INSTALL_HINT}",
                p.display()
            ))
        };
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.is_file()))
        .ok_or_else(|| format!("nats-server not found. {INSTALL_HINT}"))
}

/// `n` distinct free ports: all bound at once, then released.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port on 127.0.0.1"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

/// An HTTP/1.0 GET on loopback: the status code and the body.
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl NatsCluster {
    /// Three servers, `n1` to `n3`, ready for JetStream.
    pub fn start() -> Result<NatsCluster, String> {
        NatsCluster::start_n(3)
    }

    /// `n` servers routed to one another, ready for JetStream.
    pub fn start_n(n: usize) -> Result<NatsCluster, String> {
        let bin = binary()?;
        let ports = free_ports(3 * n);
        let nodes = (0..n)
            .map(|i| Node {
                name: format!("n{}", i + 1),
                client: ports[3 * i],
                route: ports[3 * i + 1],
                monitor: ports[3 * i + 2],
                dir: tempfile::tempdir().expect("a temp dir"),
                child: None,
            })
            .collect();
        let mut cluster = NatsCluster { bin, nodes };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        cluster.await_ready(&(0..n).collect::<Vec<_>>())?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let routes = self
            .nodes
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, o)| format!("nats://127.0.0.1:{}", o.route))
            .collect::<Vec<_>>()
            .join(",");
        let node = &self.nodes[i];
        let store = node.dir.path().join("store");
        let log_path = node.dir.path().join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &node.client.to_string()])
            .args(["-n", &node.name, "-js", "-sd"])
            .arg(&store)
            .args(["-m", &node.monitor.to_string()])
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", node.route),
                "--cluster_name",
                CLUSTER_NAME,
                "--routes",
                &routes,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}. {INSTALL_HINT}", self.bin.display()))?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    /// Waits until each of `which` answers `/healthz` with ok (JetStream
    /// enabled and current with its meta leader) and all of them name the
    /// same meta leader in `/jsz`, a server that is up.
    fn await_ready(&mut self, which: &[usize]) -> Result<(), String> {
        let t = Instant::now();
        let mut last = String::new();
        while t.elapsed() < READY_DEADLINE {
            for &i in which {
                let node = &mut self.nodes[i];
                if let Some(child) = node.child.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    return Err(format!(
                        "nats-server {} exited while starting ({status}); its log:\n{}",
                        node.name,
                        tail(&node.dir.path().join("server.log"))
                    ));
                }
            }
            match self.agreed_leader(which) {
                Ok(_) => return Ok(()),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let logs: String = which
            .iter()
            .map(|&i| {
                let n = &self.nodes[i];
                format!(
                    "\n--- {} ---\n{}",
                    n.name,
                    tail(&n.dir.path().join("server.log"))
                )
            })
            .collect();
        Err(format!(
            "the NATS cluster was not ready for JetStream within {READY_DEADLINE:?}: {last}{logs}"
        ))
    }

    /// The meta leader all of `which` agree on, when they are healthy.
    fn agreed_leader(&self, which: &[usize]) -> Result<usize, String> {
        let mut leader = None;
        for &i in which {
            let n = &self.nodes[i];
            let (code, body) =
                http_get(n.monitor, "/healthz").map_err(|e| format!("{}: {e}", n.name))?;
            if code != 200 {
                return Err(format!("{} /healthz: {code} {body}", n.name));
            }
            let name = self.jsz_leader(i)?;
            let at = self
                .nodes
                .iter()
                .position(|o| o.name == name && o.child.is_some())
                .ok_or_else(|| format!("{} names {name:?} the meta leader, not up", n.name))?;
            match leader {
                None => leader = Some(at),
                Some(l) if l == at => {}
                Some(l) => {
                    return Err(format!(
                        "no agreement on the meta leader: {} and {}",
                        self.nodes[l].name, name
                    ));
                }
            }
        }
        leader.ok_or_else(|| "no server to ask".to_string())
    }

    fn jsz_leader(&self, i: usize) -> Result<String, String> {
        let jsz = self.jsz(i)?;
        jsz["meta_cluster"]["leader"]
            .as_str()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .ok_or_else(|| format!("{}: no meta leader in /jsz", self.nodes[i].name))
    }

    /// Server `i`'s `/jsz` (JetStream's state as it sees it).
    pub fn jsz(&self, i: usize) -> Result<serde_json::Value, String> {
        let n = &self.nodes[i];
        let (code, body) = http_get(n.monitor, "/jsz").map_err(|e| format!("{}: {e}", n.name))?;
        if code != 200 {
            return Err(format!("{} /jsz: {code} {body}", n.name));
        }
        serde_json::from_str(&body).map_err(|e| format!("{} /jsz: {e}: {body}", n.name))
    }

    /// The servers' client URLs, comma-separated, as the members and
    /// `eldercare cluster status` take them (`--nats`).
    pub fn urls(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Server `i`'s client URL.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client)
    }

    /// Server `i`'s name (`n1`, ...), as JetStream names leaders.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The index of the server named `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Server `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// Servers still running.
    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .collect()
    }

    /// The JetStream meta leader the running servers agree on, waiting
    /// (bounded) for one: after a kill, the survivors elect a new one.
    pub fn await_meta_leader(&mut self) -> Result<usize, String> {
        let live = self.live();
        self.await_ready(&live)?;
        self.agreed_leader(&live)
    }

    /// SIGKILL to server `i` (its own PID), its exit reaped.
    pub fn kill9(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let mut child = node
            .child
            .take()
            .unwrap_or_else(|| panic!("nats-server {} is not running", node.name));
        child.kill().expect("SIGKILL to nats-server");
        child.wait().expect("nats-server reaped");
    }

    /// Starts server `i` again, on its ports and store, and waits until it
    /// is back in the cluster, current with the meta leader.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        assert!(
            self.nodes[i].child.is_none(),
            "nats-server {} is still running",
            self.nodes[i].name
        );
        self.spawn(i)?;
        let live = self.live();
        self.await_ready(&live)
    }

    /// Server `i`'s log so far (for a failure message).
    pub fn log(&self, i: usize) -> String {
        tail(&self.nodes[i].dir.path().join("server.log"))
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
