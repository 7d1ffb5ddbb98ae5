//! A throwaway PostgreSQL server for the storage tests, started from the
//! server binaries on the machine: `initdb` into a temp dir, `pg_ctl
//! start` on a free port, listening on 127.0.0.1 and a socket in that dir.
//! One server per test binary, shared by its tests, each of which gets a
//! fresh database.
//!
//! `initdb` refuses to run as root; as root (CI) the server runs as the
//! `postgres` user, through `runuser`, in a temp dir owned by it. Missing
//! binaries fail the tests with what to install: the PostgreSQL tests are
//! never skipped.
//!
//! The server is stopped and its directory removed when the test process
//! exits, by a watcher process: a shared server lives in a static, and
//! statics are never dropped. A server made with [`PgServer::start`] and
//! dropped stops at once.
#![allow(dead_code)]

use sqlx::{Connection, Executor, PgConnection};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub struct PgServer {
    /// The temp dir: data directory, log and socket.
    root: PathBuf,
    /// Where initdb and pg_ctl are.
    bin: PathBuf,
    pub port: u16,
    /// Running as root: every server command runs as `postgres`.
    as_postgres: bool,
}

const INSTALL_HINT: &str = "The storage tests run against a throwaway PostgreSQL server and need \
     its server binaries (initdb, pg_ctl, postgres). Install them: `apt-get install postgresql` \
     (Debian/Ubuntu; binaries in /usr/lib/postgresql/<version>/bin), `dnf install \
     postgresql-server`, or `brew install postgresql`; or point ELDERCARE_PG_BIN at the \
     directory that holds them.";

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The directory holding initdb and pg_ctl: ELDERCARE_PG_BIN, then PATH,
/// then the newest /usr/lib/postgresql/<version>/bin.
fn bin_dir() -> Result<PathBuf, String> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(d) = std::env::var_os("ELDERCARE_PG_BIN") {
        let d = PathBuf::from(d);
        return if has_both(&d) {
            Ok(d)
        } else {
            Err(format!(
                "ELDERCARE_PG_BIN={} holds no initdb and pg_ctl. {INSTALL_HINT}",
                d.display()
            ))
        };
    }
    if let Some(d) = on_path("initdb").and_then(|p| p.parent().map(Path::to_path_buf))
        && has_both(&d)
    {
        return Ok(d);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.split('.').next()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_both(d))
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, d)| d)
        .ok_or_else(|| format!("PostgreSQL server binaries not found. {INSTALL_HINT}"))
}

fn is_root() -> bool {
    match std::fs::metadata("/proc/self") {
        Ok(m) => m.uid() == 0,
        Err(_) => Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Single-quotes for sh; our paths never hold a quote.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl PgServer {
    /// Starts a server; stopped when dropped.
    pub fn start() -> Result<PgServer, String> {
        let bin = bin_dir()?;
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("id")
                .args(["-u", "postgres"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok || on_path("runuser").is_none() {
                return Err(format!(
                    "Running as root: initdb refuses root, so the test server runs as the \
                     `postgres` user through `runuser`, and this machine lacks {}. {INSTALL_HINT}",
                    if ok {
                        "runuser (util-linux)"
                    } else {
                        "that user"
                    }
                ));
            }
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "ec-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        let mut server = PgServer {
            root,
            bin,
            port: 0,
            as_postgres,
        };
        if as_postgres {
            server.run(Command::new("chown").args(["postgres:postgres", server.root_str()]))?;
        }
        let data = server.data_dir();
        server.run(server.pg_cmd("initdb").args([
            "-D",
            &data,
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]))?;
        // The port is free when picked, but another process may take it
        // before postgres binds it: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port();
            // A test server: durability is traded for speed.
            let opts = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                server.port,
                server.root_str()
            );
            let log = server.root.join("server.log");
            let started = server.run(server.pg_cmd("pg_ctl").args([
                "-D",
                &data,
                "-l",
                log.to_str().expect("utf-8 temp path"),
                "-w",
                "-t",
                "60",
                "-o",
                &opts,
                "start",
            ]));
            match started {
                Ok(()) => {
                    server.watch_for_exit();
                    return Ok(server);
                }
                Err(e) => {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    last = format!("{e}\nserver log:\n{log}");
                }
            }
        }
        Err(format!("the test PostgreSQL server did not start: {last}"))
    }

    fn root_str(&self) -> &str {
        self.root.to_str().expect("utf-8 temp path")
    }

    fn data_dir(&self) -> String {
        format!("{}/data", self.root_str())
    }

    /// A server binary, run as `postgres` when we are root.
    fn pg_cmd(&self, name: &str) -> Command {
        let exe = self.bin.join(name);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        c.env("LC_ALL", "C");
        c
    }

    fn run(&self, cmd: &mut Command) -> Result<(), String> {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{cmd:?}: {e}. {INSTALL_HINT}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd:?} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// The shell command that stops this server.
    fn stop_command(&self) -> String {
        let pg_ctl = sh_quote(self.bin.join("pg_ctl").to_str().expect("utf-8 path"));
        let data = sh_quote(&self.data_dir());
        let run_as = if self.as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        };
        format!("{run_as}{pg_ctl} -D {data} -m immediate -w stop")
    }

    /// A watcher in its own session (so Ctrl-C on the tests does not stop
    /// it first) that stops the server and removes its directory once
    /// this process is gone.
    fn watch_for_exit(&self) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {root}",
            pid = std::process::id(),
            stop = self.stop_command(),
            root = sh_quote(self.root_str()),
        );
        let mut cmd = match on_path("setsid") {
            Some(setsid) => {
                let mut c = Command::new(setsid);
                c.arg("sh");
                c
            }
            None => Command::new("sh"),
        };
        let _ = cmd
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// Stops the server (a database outage); [`PgServer::resume`] starts it
    /// again on the same port and data.
    pub fn pause(&self) -> Result<(), String> {
        self.run(
            self.pg_cmd("pg_ctl")
                .args(["-D", &self.data_dir(), "-m", "fast", "-w", "stop"]),
        )
    }

    pub fn resume(&self) -> Result<(), String> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.port,
            self.root_str()
        );
        let log = self.root.join("server.log");
        self.run(self.pg_cmd("pg_ctl").args([
            "-D",
            &self.data_dir(),
            "-l",
            log.to_str().expect("utf-8 temp path"),
            "-w",
            "-t",
            "60",
            "-o",
            &opts,
            "start",
        ]))
    }

    /// A URL for one database of this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A URL for one database over the server's Unix socket.
    pub fn socket_url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@localhost/{db}?host={}&port={}",
            self.root_str(),
            self.port
        )
    }

    /// A new, empty database, dropped when the returned guard is.
    pub async fn fresh_db(&self) -> TestDb {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("test_{}", N.fetch_add(1, Ordering::Relaxed));
        let admin = self.url("postgres");
        let mut c = PgConnection::connect(&admin)
            .await
            .expect("connecting to the test server");
        c.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("creating a test database");
        let _ = c.close().await;
        TestDb {
            url: self.url(&name),
            name,
            admin,
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .args(["-c", &self.stop_command()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The server shared by this test binary's tests, started on first use.
pub fn server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| PgServer::start().unwrap_or_else(|e| panic!("{e}")))
}

/// A fresh database on the shared server.
pub async fn fresh_db() -> TestDb {
    server().fresh_db().await
}

/// One test's database; dropped (with any connection still open to it)
/// when this is.
pub struct TestDb {
    pub url: String,
    pub name: String,
    admin: String,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on:
        // a thread with a runtime of its own does the work.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                let connect = PgConnection::connect(&admin);
                if let Ok(Ok(mut c)) = tokio::time::timeout(Duration::from_secs(5), connect).await {
                    let _ = c
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .await;
                }
            })
        })
        .join();
    }
}
