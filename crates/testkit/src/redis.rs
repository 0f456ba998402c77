//! A Redis server of a test's own, which it can freeze, thaw, kill and restart.

use crate::*;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of one test's own, on a free port, that the test can freeze (`SIGSTOP`:
/// connections stay open, nothing answers), thaw, kill and restart on the same port, without
/// disturbing the machine's Redis that other tests use. Killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut server = RedisServer {
            child: None,
            port,
            dir: tempfile::tempdir().expect("a temporary directory"),
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on its port (after [`RedisServer::kill`]), empty, and waits until it
    /// answers.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether it answers `PING` now.
    fn answers(&self) -> bool {
        use std::io::Write;
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(child) = &self.child {
            let pid = i32::try_from(child.id()).expect("pid fits in i32");
            // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Stops it answering while its connections stay open (an unreachable Redis).
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Kills it (its data is gone).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.thaw();
        self.kill();
    }
}

/// `cache_requests_total{cache,result}` from the server's metrics (0 when absent).
pub async fn cache_requests(server: &TestServer, cache: &str, result: &str) -> u64 {
    let metrics = server.admin_get("/metrics").await.expect_status(200).text;
    let series = format!("cache_requests_total{{cache=\"{cache}\",result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |value| value.trim().parse().expect("a counter value"))
}

/// The program `name` if it runs (`NAME --version`), or `None` after a loud notice outside CI.
/// In CI (`CI` set) a missing tool fails the test, as a missing service does: scripts/test.sh
/// installs `debian_package`.
pub fn required_tool(name: &str, debian_package: &str) -> Option<String> {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if found {
        return Some(name.to_owned());
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{name} is missing in CI (Debian package `{debian_package}`; scripts/test.sh installs it)"
        );
    }
    eprintln!(
        "\n**********************************************************\n\
         SKIPPED: {name} not found (apt-get install {debian_package}, or run scripts/test.sh)\n\
         **********************************************************\n"
    );
    None
}
