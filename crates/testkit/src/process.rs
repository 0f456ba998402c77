//! The `ordo serve` process: spawned with its environment, its output captured line by line,
//! signalled, killed, awaited.

use crate::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lines a child wrote on one stream, collected by a thread that keeps draining the pipe.
#[derive(Clone, Default)]
pub struct CapturedLines(Arc<Mutex<Vec<String>>>);

impl CapturedLines {
    fn drain_from(stream: impl Read + Send + 'static) -> CapturedLines {
        let lines = CapturedLines::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buffer = Vec::new();
            loop {
                buffer.clear();
                match reader.read_until(b'\n', &mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buffer).trim_end().to_owned();
                        sink.0.lock().unwrap().push(line);
                    }
                }
            }
        });
        lines
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A running (or exited) `ordo serve` process with its output captured.
pub struct ServerProcess {
    child: Child,
    stdout: CapturedLines,
    stderr: CapturedLines,
}

impl ServerProcess {
    /// Spawns `ordo serve` on `database_url`, every listener on a free port, JSON logs on stdout.
    pub fn spawn(database_url: &str, workdir: &Path) -> ServerProcess {
        ServerProcess::spawn_with_env(database_url, workdir, &[])
    }

    /// As [`ServerProcess::spawn`], with extra environment variables set last (they win).
    pub fn spawn_with_env(
        database_url: &str,
        workdir: &Path,
        extra_env: &[(String, String)],
    ) -> ServerProcess {
        let mut command = Command::new(ordo_binary());
        command
            .arg("serve")
            .current_dir(workdir)
            .env("ORDO_HTTP_ADDR", "127.0.0.1:0")
            .env("ORDO_ADMIN_ADDR", "127.0.0.1:0")
            .env("ORDO_GRPC_ADDR", "127.0.0.1:0")
            .env("ORDO_DATABASE_URL", database_url)
            .env("RUST_LOG", "info")
            .env("ORDO_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The embedded defaults, whatever the developer's shell has set.
        for variable in [
            "ORDO_REDIS_URL",
            "ORDO_BROKER_URL",
            "ORDO_API_KEYS",
            "ORDO_ADMIN_TOKEN",
            "ORDO_CONFIG",
            "ORDO_PROFILE",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ] {
            command.env_remove(variable);
        }
        command.envs(extra_env.iter().map(|(k, v)| (k, v)));
        let mut child = command.spawn().expect("spawn the ordo binary");
        let stdout = CapturedLines::drain_from(child.stdout.take().expect("piped stdout"));
        let stderr = CapturedLines::drain_from(child.stderr.take().expect("piped stderr"));
        ServerProcess {
            child,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits in i32")
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.snapshot()
    }

    /// Everything the process wrote so far, stdout then stderr, for assertion messages.
    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout.snapshot().join("\n"),
            self.stderr.snapshot().join("\n")
        )
    }

    /// Sends `signal` unless the process has already been reaped (its pid could be reused).
    pub fn signal(&mut self, signal: libc::c_int) {
        if self
            .child
            .try_wait()
            .expect("try_wait on the server")
            .is_some()
        {
            return;
        }
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child's,
        // which has not been reaped, so it cannot have been reused.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on the server") {
                // Let the drain threads pick up the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the start-up line `"message":"ordo is ready"` and returns its HTTP and admin
    /// addresses; panics with the captured output if it does not come within `READY_TIMEOUT`
    /// or the process exits first.
    pub async fn wait_ready(&mut self) -> ReadyLine {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(ready) = self
                .stdout
                .snapshot()
                .iter()
                .find_map(|l| ReadyLine::parse(l))
            {
                return ready;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait on the server") {
                tokio::time::sleep(Duration::from_millis(50)).await;
                panic!(
                    "ordo exited ({status}) before it was ready\n{}",
                    self.output()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "ordo did not log \"ordo is ready\" within {READY_TIMEOUT:?}\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "=== ordo output (pid {}) ===\n{}",
                self.child.id(),
                self.output()
            );
        }
    }
}

/// The start-up line's addresses.
#[derive(Debug, Clone)]
pub struct ReadyLine {
    pub http_addr: String,
    pub grpc_addr: String,
    pub admin_addr: String,
}

impl ReadyLine {
    /// Parses a log line if it is the ready line. Keys are looked up at the top level as the
    /// contract says, and also under `fields` (tracing's default JSON layout) so that a layout
    /// slip fails one dedicated test (`ready_line_is_flat_json` in api.rs) instead of all.
    pub fn parse(line: &str) -> Option<ReadyLine> {
        let value: Value = serde_json::from_str(line).ok()?;
        let lookup = |key: &str| {
            value
                .get(key)
                .or_else(|| value.get("fields").and_then(|f| f.get(key)))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        if lookup("message")? != "ordo is ready" {
            return None;
        }
        Some(ReadyLine {
            http_addr: lookup("http_addr")?,
            grpc_addr: lookup("grpc_addr")?,
            admin_addr: lookup("admin_addr")?,
        })
    }
}
