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
