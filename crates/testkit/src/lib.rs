//! The black-box harness of ordo's integration tests (`crates/ordo/tests`): it runs the real
//! `ordo serve` binary against a fresh database (a SQLite file or a PostgreSQL database of its
//! own), waits for its "ready" log line and talks to it over HTTP.
//!
//! Every behaviour is tested on both storage backends through [`backend_tests!`]. Beside the
//! server: [`otlp`] (an OTLP receiver that keeps the exported spans), [`carrier`] (a carrier
//! webhook that checks the contract), [`proxy`] (a TCP proxy a test can cut), and, below, a
//! Redis server of the test's own and SQL helpers on the server's database.

pub mod carrier;
mod database;
mod fixtures;
pub mod otlp;
mod poll;
mod process;
pub mod proxy;
mod redis;
mod reply;
mod server;

pub use database::*;
pub use fixtures::*;
pub use poll::*;
pub use process::*;
pub use redis::*;
pub use reply::*;
pub use server::*;

use std::path::Path;
use std::time::Duration;

/// How long `ordo serve` may take to log that it is ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The PostgreSQL server the tests create their databases on, unless `ORDO_TEST_POSTGRES_URL`
/// names another.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// `env` (e.g. [`otlp::OtlpReceiver::env`]) as the pairs [`TestServer::start_with_env`] takes.
pub fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The `ordo` binary of this build: nextest names it (`NEXTEST_BIN_EXE_ordo`); under `cargo
/// test` it sits beside the `deps` folder that holds the running test binary.
pub fn ordo_binary() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("NEXTEST_BIN_EXE_ordo") {
        return path.into();
    }
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let profile_dir = test_binary
        .parent()
        .and_then(Path::parent)
        .expect("a test binary under target/<profile>/deps");
    profile_dir.join(format!("ordo{}", std::env::consts::EXE_SUFFIX))
}

/// Generates, for each `async fn NAME(backend: Backend)` in the calling file, a module `NAME`
/// with one test per storage backend: `NAME::sqlite` and `NAME::postgres`.
///
/// The PostgreSQL variant is skipped (loudly) when no server is reachable outside CI, and fails
/// in CI, where a missing service is a broken set-up.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread")]
                async fn sqlite() {
                    super::$name($crate::Backend::sqlite()).await
                }

                #[tokio::test(flavor = "multi_thread")]
                async fn postgres() {
                    if let Some(backend) = $crate::Backend::postgres().await {
                        super::$name(backend).await
                    }
                }
            }
        )+
    };
}
