//! The command line. Configuration itself comes from the TOML file and `ORDO_*` variables
//! (see `ordo_config`); flags here only choose what to do and which file to read.

use anyhow::Context;
use clap::{Parser, Subcommand};
use ordo_config::{Config, LogFormat};
use ordo_telemetry::{LogStyle, ServiceIdentity, TelemetryOptions};
use std::path::PathBuf;

/// ordo: an order-fulfillment backend. Products and stock, orders whose reservations never
/// oversell, one trace per order.
///
/// Configuration comes from the environment (ORDO_HTTP_ADDR, ORDO_ADMIN_ADDR,
/// ORDO_DATABASE_URL, ...; see the README) and optionally a TOML file. With nothing set, ordo
/// runs on a SQLite file under ./data/ and listens on 127.0.0.1:8080 (API) and :9090 (admin).
#[derive(Debug, Parser)]
#[command(name = "ordo", version, about, long_about)]
pub struct Cli {
    /// A TOML configuration file; environment variables override its values.
    #[arg(long, global = true, env = "ORDO_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: apply pending migrations, then serve the REST and gRPC APIs and the
    /// admin port until SIGTERM or Ctrl-C.
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the OpenAPI document of the REST API and exit.
    Openapi,
    /// Drive a running instance: create orders (optionally pay them and follow them to a
    /// terminal status) with a progress bar, then print a latency summary.
    ///
    /// Example: `ordo loadgen --orders 1000 --concurrency 32 --pay --follow`.
    /// Exits non-zero when any request got a 5xx or a transport error.
    Loadgen(crate::loadgen::LoadgenArgs),
    /// Operate on the transactional outbox of the database (ORDO_DATABASE_URL).
    #[command(subcommand)]
    Outbox(OutboxCommand),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum OutboxCommand {
    /// Put dead-lettered events back for the relay to publish (with a fresh count of
    /// attempts), once what killed them is fixed. A running instance picks them up by itself.
    Redrive {
        /// Only the events of this topic (e.g. `order.paid`); every dead event otherwise.
        #[arg(long)]
        topic: Option<String>,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The roles this process runs, comma-separated: edge (the REST API), orders, inventory,
    /// payments, workers (outbox relay, pipeline, jobs), or all. Overrides ORDO_ROLES.
    /// Roles not run here are called over gRPC (ORDO_DISCOVERY, ORDO_PEERS_*).
    #[arg(long, value_name = "ROLES")]
    pub roles: Option<String>,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Openapi = cli.command {
        let document = ordo_http_api::openapi().to_pretty_json()?;
        println!("{document}");
        return Ok(());
    }
    // The load generator is a client: it needs neither the service's configuration nor its
    // telemetry (whose log lines would mix with the summary on stdout).
    let command = match cli.command {
        Command::Loadgen(args) => return crate::loadgen::run(args).await,
        command => command,
    };
    let mut config = Config::load(cli.config.as_deref(), |name| std::env::var(name).ok())
        .context("invalid configuration")?;
    if let Command::Serve(ServeArgs { roles: Some(roles) }) = &command {
        config.topology.roles = ordo_config::Role::parse_list(roles).context("invalid --roles")?;
    }
    let style = match config.log_format {
        LogFormat::Json => LogStyle::Json,
        LogFormat::Pretty => LogStyle::Pretty,
    };
    let identity = ServiceIdentity::new(
        env!("CARGO_PKG_VERSION"),
        config.profile.as_str(),
        env!("ORDO_GIT_COMMIT"),
    );
    // The same id names the instance in traces and in discovery.
    let instance_id = identity.instance_id.clone();
    let telemetry = ordo_telemetry::init(
        TelemetryOptions {
            style,
            identity,
            log_filter: config.live.log_filter.clone(),
            sampling_ratio: config.live.trace_sampling_ratio,
        },
        |name| std::env::var(name).ok(),
    )?;
    let result = match command {
        Command::Serve(_) => {
            crate::serve::serve(config, &instance_id, telemetry.reload_handle()).await
        }
        Command::Migrate => migrate(config).await,
        Command::Outbox(OutboxCommand::Redrive { topic }) => {
            redrive(config, topic.as_deref()).await
        }
        Command::Openapi | Command::Loadgen(_) => Ok(()),
    };
    telemetry.shutdown();
    result
}

async fn redrive(config: Config, topic: Option<&str>) -> anyhow::Result<()> {
    let db = crate::serve::connect_database(&config, None).await?;
    let redriven = db
        .redrive_dead_events(topic)
        .await
        .context("cannot redrive the dead events")?;
    tracing::info!(
        events = redriven,
        topic = topic.unwrap_or("*"),
        "dead events redriven"
    );
    println!("{redriven} dead event(s) put back for the relay");
    db.close().await;
    Ok(())
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let db = crate::serve::connect_database(&config, None).await?;
    db.migrate().await.context("migrations failed")?;
    tracing::info!(
        database = %config.storage.database_url,
        "migrations applied"
    );
    db.close().await;
    Ok(())
}
