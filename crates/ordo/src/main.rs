//! The `ordo` binary: one process, subcommands.
//!
//! Layout:
//! - `cli`: the command line (clap).
//! - `serve`: start-up in an explicit order (config → telemetry → database → migrations →
//!   listeners → ready), and the admin endpoints.
//! - `shutdown`: signals and the bounded drain.
//! - `redis`: the Redis connection (optional; shared rate limits, the cache).
//! - `loadgen`: the load generator, a client of a running instance.

mod admin;
mod cli;
mod loadgen;
mod redis;
mod serve;
mod shutdown;

use clap::Parser;
use std::process::ExitCode;

/// jemalloc instead of glibc's malloc: a service allocating and freeing many small, short-lived
/// buffers per request (JSON, headers, span attributes) spent a fifth of its CPU on creates in
/// glibc's `malloc`, `free` and their chunk consolidation (BENCHMARKS.md, sessions 12 and 13).
/// jemalloc rather than mimalloc: its arenas can be purged on demand, so a CPU profile's
/// symbolization gives its memory back (`admin::profile`).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ordo: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "ordo stopped with an error");
            eprintln!("ordo: {error:#}");
            ExitCode::FAILURE
        }
    }
}
