//! A real etcd for tests (cargo feature `testing`): [`EtcdServer`] starts an `etcd` process
//! (Debian package `etcd-server`) on free ports with a temporary data directory, and kills it
//! when dropped. Shared by this crate's tests and by the tests of the crates that use discovery,
//! so that there is one way to get an etcd in a test.
//!
//! Without an `etcd` binary, [`EtcdServer::start`] returns `None` after a loud "SKIPPED" notice,
//! except in CI (`CI` set), where a missing service is a failure and it panics.
//!
//! Readiness is etcd's own `/health` (true once it has a leader), read over plain HTTP/1.1, so
//! this module needs neither the `etcd` feature nor an HTTP client.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a starting etcd may take to elect itself leader.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// An etcd server owned by one test; killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

impl EtcdServer {
    /// A fresh single-member etcd that answers, or `None` (after a loud notice) when there is
    /// no `etcd` binary outside CI.
    pub async fn start() -> Option<EtcdServer> {
        let found = Command::new("etcd")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !found {
            if std::env::var_os("CI").is_some() {
                panic!("etcd is missing in CI (Debian package `etcd-server`)");
            }
            eprintln!(
                "\n**********************************************************\n\
                 SKIPPED: etcd not found (apt-get install etcd-server)\n\
                 **********************************************************\n"
            );
            return None;
        }
        // Both ports are picked while both listeners are open, so they differ.
        let client = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let peer = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let mut server = EtcdServer {
            child: None,
            dir: tempfile::tempdir().expect("a temporary directory"),
            client_port: client.local_addr().expect("a bound port").port(),
            peer_port: peer.local_addr().expect("a bound port").port(),
        };
        drop((client, peer));
        server.restart().await;
        Some(server)
    }

    /// `etcd://127.0.0.1:<client port>`, as [`crate::Discovery::from_url`] takes it.
    pub fn url(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.client_port)
    }

    /// Kills etcd as a crash would (SIGKILL), keeping its data directory and ports.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts etcd on the same ports and data directory, killing a running one first, and
    /// waits until it is healthy.
    pub async fn restart(&mut self) {
        self.kill();
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("etcd log file");
        let child = Command::new("etcd")
            .args(["--name", "default"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log file"))
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            match self.health().await {
                Ok(()) => return,
                Err(why) if Instant::now() > deadline => panic!(
                    "etcd at {client} not healthy within {READY_WITHIN:?}: {why}\n\
                     --- etcd log ---\n{}",
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// etcd's `GET /health`: `{"health":"true"}` once it has a leader and no alarm.
    async fn health(&self) -> Result<(), String> {
        let check = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.client_port))
                .await
                .map_err(|e| e.to_string())?;
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .await
                .map_err(|e| e.to_string())?;
            let mut reply = String::new();
            stream
                .read_to_string(&mut reply)
                .await
                .map_err(|e| e.to_string())?;
            if reply.contains(r#""health":"true""#) {
                Ok(())
            } else {
                Err(format!("unhealthy: {reply:?}"))
            }
        };
        tokio::time::timeout(Duration::from_secs(2), check)
            .await
            .unwrap_or_else(|_| Err("no answer within 2 s".to_owned()))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
