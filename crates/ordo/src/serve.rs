//! `ordo serve`: start-up in an explicit order, each step failing with a message that names
//! what is missing, then serving until a signal and draining within a bound.

use crate::admin::{self, AdminState};
use crate::shutdown;
use anyhow::Context;
use ordo_config::{Config, ExposeSecret, Role};
use ordo_edge::auth::ApiKeys;
use ordo_grpc_api::client::{RemoteCatalog, RemoteOrders, RemotePayments, RoleChannel};
use ordo_http_api::HttpLimits;
use ordo_http_api::server::ConnectionLimits;
use ordo_outbox::consumer::ConsumerRunner;
use ordo_outbox::{Relay, Wakeup};
use ordo_service::Faces;
use ordo_service::ports::{Api, CatalogApi, NotServedHere, OrdersApi, PaymentsApi};
use ordo_storage::Database;
use ordo_storage::cache::shared::SharedCache;
use ordo_telemetry::ReloadHandle;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub async fn serve(config: Config, instance_id: &str, reload: ReloadHandle) -> anyhow::Result<()> {
    // The usual soft limit of 1,024 descriptors is a flood's easiest target: take the hard one.
    let open_files = match raise_open_files_limit() {
        Ok((limit, Some(before))) => {
            tracing::info!(
                limit,
                before,
                "raised the open-files limit to its hard limit"
            );
            limit
        }
        Ok((limit, None)) => limit,
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open-files limit");
            1024
        }
    };
    let connection_limits = {
        let sized = ConnectionLimits::for_open_files(open_files);
        let limits = &config.limits;
        let max_connections = limits.max_connections.unwrap_or(sized.max_connections);
        ConnectionLimits {
            max_connections,
            max_connections_per_client: limits
                .max_connections_per_client
                .unwrap_or((max_connections / 4).max(16)),
            header_read_timeout: limits.header_read_timeout,
        }
    };
    // One connection to Redis (optional: unreachable, a warning) for the read cache and the
    // rate limits.
    let redis = crate::redis::connect_redis(config.storage.redis_url.as_ref()).await;
    let roles: BTreeSet<Role> = config.topology.roles.iter().copied().collect();
    let runs = |role: Role| roles.contains(&role);
    // Every role but the edge works on the database; an edge-only process never opens it.
    let db = if [Role::Orders, Role::Inventory, Role::Payments, Role::Workers]
        .into_iter()
        .any(runs)
    {
        let shared_cache = redis.clone().map(|connection| {
            Arc::new(SharedCache::with_connection(
                connection,
                &config.storage.redis_namespace,
            ))
        });
        let db = connect_database(&config, shared_cache).await?;
        db.migrate()
            .await
            .context("cannot apply database migrations")?;
        Some(db)
    } else {
        None
    };
    let discovery = ordo_discovery::Discovery::from_url(
        config.topology.discovery_url.as_deref(),
        &config.topology.discovery_namespace,
        config.topology.peers(),
    )
    .await
    .context("cannot use service discovery (ORDO_DISCOVERY)")?;
    let peers_stop = CancellationToken::new();

    // The event flow: the relay publishes what writes commit to the outbox; in-process by
    // default, to this process's consumers; with ORDO_BROKER_URL to RabbitMQ or NATS
    // JetStream, from which one subscription task per consumer feeds it.
    let wakeup = Wakeup::default();
    let local = db.clone().map(|db| {
        let settings = ordo_service::Settings {
            orders: config.orders.clone(),
            payments: config.payments.clone(),
            fulfillment: config.fulfillment.clone(),
        };
        Faces::new(db, wakeup.clone(), settings)
    });
    let choice = FaceChoice {
        local: local.clone(),
        discovery: &discovery,
        api_key: config
            .access
            .api_keys
            .first()
            .map(|key| key.expose_secret()),
        stop: &peers_stop,
        edge: runs(Role::Edge),
    };
    let catalog = choice
        .catalog(runs(Role::Inventory), runs(Role::Orders))
        .await?;
    // Apart from inventory, the orders role prices orders with inventory's catalogue.
    let local = match local {
        Some(faces) if !runs(Role::Inventory) && runs(Role::Orders) => {
            Some(faces.with_price_source(Arc::clone(&catalog)))
        }
        faces => faces,
    };
    let choice = FaceChoice { local, ..choice };
    let api = Api {
        catalog,
        orders: choice.orders(runs(Role::Orders)).await?,
        payments: choice.payments(runs(Role::Payments)).await?,
    };
    let local = choice.local;

    // The workers: relay, pipeline consumers, the payment-timeout job.
    let consumers_stop = CancellationToken::new();
    let relay_stop = CancellationToken::new();
    let jobs_stop = CancellationToken::new();
    let mut workers = None;
    if let (true, Some(local), Some(db)) = (runs(Role::Workers), &local, &db) {
        // One list of consumers, whichever transport carries the events: the fulfillment
        // pipeline's stages (risk → split → schedule → carrier push).
        let consumers: Vec<Arc<ConsumerRunner>> = local.fulfillment.pipeline_consumers();
        let events = start_transport(&config, consumers, consumers_stop.clone()).await?;
        let relay = tokio::spawn(
            Relay::new(db.clone(), events.transport, wakeup.clone())
                .with_retry_base(config.events.outbox_retry_base)
                .run(relay_stop.clone()),
        );
        // A plain spawn: each run of the payment-timeout job starts a trace of its own.
        let payment_timeouts = tokio::spawn({
            let local = local.clone();
            let stop = jobs_stop.clone();
            async move { local.run_payment_timeouts(stop).await }
        });
        workers = Some((events.subscriptions, relay, payment_timeouts));
    }
    if let (true, Some(local)) = (runs(Role::Payments), &local) {
        // Sandbox approvals that a previous process accepted but did not deliver (kill -9).
        if let Err(error) = local.payments.resume_sandbox_payments().await {
            tracing::warn!(%error, "cannot resume pending sandbox payments");
        }
    }

    let http_listener = match runs(Role::Edge) {
        true => Some(bind(config.server.http_addr, "ORDO_HTTP_ADDR").await?),
        false => None,
    };
    let grpc_listener = bind(config.server.grpc_addr, "ORDO_GRPC_ADDR").await?;
    let admin_listener = bind(config.server.admin_addr, "ORDO_ADMIN_ADDR").await?;
    let http_addr = http_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let grpc_addr = grpc_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let admission = ordo_admission::Admission::new(
        ordo_admission::AdmissionSettings {
            rate_limit: config.live.rate_limit.map(rate_limit),
            max_in_flight: config.limits.max_in_flight,
            adaptive_cpu_threshold_permille: config
                .limits
                .shed_adaptive
                .then_some(config.limits.shed_cpu_threshold_permille),
        },
        redis,
    );
    // One edge for both transports: the same keys, admission and timeout.
    let edge = ordo_edge::Edge {
        api_keys: ApiKeys::new(&config.access.api_keys),
        admission: admission.clone(),
        request_timeout: config.server.request_timeout,
    };

    let draining = Arc::new(AtomicBool::new(false));
    let admin = admin::router(AdminState {
        api: api.clone(),
        draining: Arc::clone(&draining),
        admin_token: config
            .access
            .admin_token
            .as_ref()
            .map(|token| Arc::from(token.expose_secret())),
    });
    let runtime_sampler =
        ordo_telemetry::metrics::spawn_runtime_sampler(&tokio::runtime::Handle::current());

    let token = CancellationToken::new();
    let http_server = http_listener.map(|listener| {
        let router = ordo_http_api::router(
            api.clone(),
            HttpLimits {
                max_body_bytes: config.server.max_body_bytes,
                edge: edge.clone(),
            },
        );
        tokio::spawn(ordo_http_api::server::serve(
            listener,
            router,
            connection_limits,
            token.clone().cancelled_owned(),
        ))
    });
    let grpc_server = tokio::spawn(ordo_grpc_api::serve(
        grpc_listener,
        api,
        ordo_grpc_api::GrpcServerConfig {
            edge,
            max_message_bytes: config.server.max_body_bytes,
            cors_allowed_origins: config.server.cors_allowed_origins.clone(),
        },
        token.clone().cancelled_owned(),
    ));
    let admin_server = tokio::spawn(
        axum::serve(admin_listener, admin)
            .with_graceful_shutdown(token.clone().cancelled_owned())
            .into_future(),
    );

    // Announce the roles other processes call, at the address they reach this one at.
    let advertised = config
        .topology
        .grpc_advertise_addr
        .clone()
        .unwrap_or_else(|| format!("http://{grpc_addr}"));
    let mut registrations = Vec::new();
    for role in [Role::Orders, Role::Inventory, Role::Payments] {
        if runs(role) {
            let registration = discovery
                .register(role.as_str(), instance_id, &advertised)
                .await
                .with_context(|| format!("cannot register the {} role", role.as_str()))?;
            registrations.push(registration);
        }
    }

    let role_names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    tracing::info!(
        http_addr = %http_addr.map(|a| a.to_string()).unwrap_or_default(),
        grpc_addr = %grpc_addr,
        admin_addr = %admin_addr,
        roles = %role_names.join(","),
        discovery = discovery.kind(),
        instance_id,
        database = db.as_ref().map_or("none", |db| db.backend().system_name()),
        profile = ?config.profile,
        version = env!("CARGO_PKG_VERSION"),
        "ordo is ready"
    );

    let reloader = tokio::spawn(shutdown::reload_on_sighup(
        config.clone(),
        reload,
        admission,
    ));
    shutdown::signal().await;
    reloader.abort();
    // Leave discovery first, so peers stop sending before this process stops accepting.
    for registration in registrations {
        registration.deregister().await;
    }
    jobs_stop.cancel();
    draining.store(true, Ordering::Relaxed);
    let servers = async {
        let mut servers = vec![("admin", admin_server)];
        if let Some(http_server) = http_server {
            servers.push(("http", http_server));
        }
        for (name, server) in servers {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(server = name, %error, "server failed"),
                Err(error) => tracing::error!(server = name, %error, "server task failed"),
            }
        }
        match grpc_server.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(server = "grpc", %error, "server failed"),
            Err(error) => tracing::error!(server = "grpc", %error, "server task failed"),
        }
    };
    let drain = config.server.shutdown_drain;
    if shutdown::drain(&token, servers, drain).await {
        tracing::info!("in-flight requests finished");
    } else {
        tracing::warn!(
            drain_secs = drain.as_secs(),
            "drain time ran out; stopping with requests still in flight"
        );
    }
    peers_stop.cancel();
    if let Some((subscriptions, relay, payment_timeouts)) = workers {
        // A run of the job in progress finishes its batch (each cancel is one short transaction).
        if tokio::time::timeout(drain, payment_timeouts).await.is_err() {
            tracing::warn!("the payment timeout job did not stop in time");
        }
        // Broker consumers finish the message in hand (what they commit, the relay flushes).
        consumers_stop.cancel();
        for subscription in subscriptions {
            if tokio::time::timeout(drain, subscription).await.is_err() {
                tracing::warn!(
                    "a broker consumer did not stop in time; its message is redelivered"
                );
            }
        }
        // Requests are done: publish what they committed, then stop the relay.
        relay_stop.cancel();
        if tokio::time::timeout(drain, relay).await.is_err() {
            tracing::warn!(
                "outbox relay did not finish in time; events left are published at the next start"
            );
        }
    }
    runtime_sampler.abort();
    if let Some(db) = db {
        db.close().await;
    }
    tracing::info!("ordo stopped");
    Ok(())
}

/// Chooses each face of the API: this process's face when it runs the role, else the role's
/// instances over gRPC when this process needs them, else a face that says it is not served
/// here.
struct FaceChoice<'a> {
    /// This process's faces (none without a database).
    local: Option<Faces>,
    discovery: &'a ordo_discovery::Discovery,
    api_key: Option<&'a str>,
    stop: &'a CancellationToken,
    /// The edge serves every face to the public.
    edge: bool,
}

impl FaceChoice<'_> {
    fn local(&self) -> anyhow::Result<&Faces> {
        self.local
            .as_ref()
            .context("a local role without a database")
    }

    async fn remote(&self, role: &'static str) -> anyhow::Result<RoleChannel> {
        let members = self
            .discovery
            .members(role)
            .await
            .with_context(|| format!("cannot discover the {role} role"))?;
        Ok(RoleChannel::new(
            role,
            members,
            self.api_key,
            self.stop.clone(),
        ))
    }

    async fn catalog(&self, local: bool, needed: bool) -> anyhow::Result<Arc<dyn CatalogApi>> {
        Ok(if local {
            Arc::new(self.local()?.catalog.clone())
        } else if self.edge || needed {
            Arc::new(RemoteCatalog(self.remote("inventory").await?))
        } else {
            Arc::new(NotServedHere("inventory"))
        })
    }

    async fn orders(&self, local: bool) -> anyhow::Result<Arc<dyn OrdersApi>> {
        Ok(if local {
            Arc::new(self.local()?.orders.clone())
        } else if self.edge {
            Arc::new(RemoteOrders(self.remote("orders").await?))
        } else {
            Arc::new(NotServedHere("orders"))
        })
    }

    async fn payments(&self, local: bool) -> anyhow::Result<Arc<dyn PaymentsApi>> {
        Ok(if local {
            Arc::new(self.local()?.payments.clone())
        } else if self.edge {
            Arc::new(RemotePayments(self.remote("payments").await?))
        } else {
            Arc::new(NotServedHere("payments"))
        })
    }
}

/// The database of `ORDO_DATABASE_URL`, its reads cached in process and in `shared`.
pub async fn connect_database(
    config: &Config,
    shared: Option<Arc<SharedCache>>,
) -> anyhow::Result<Database> {
    let storage = &config.storage;
    Database::connect_with_cache(
        storage.database_url.expose_secret(),
        storage.database_max_connections,
        shared,
    )
    .await
    .with_context(|| {
        format!(
            "cannot use the database at {} (ORDO_DATABASE_URL)",
            storage.database_url
        )
    })
}

/// The transport chosen by `ORDO_BROKER_URL`; a broker that cannot be reached is a start-up
/// error. `ORDO_BROKER_NAMESPACE` prefixes the exchange, queues, stream and subjects.
async fn start_transport(
    config: &Config,
    consumers: Vec<Arc<ConsumerRunner>>,
    stop: CancellationToken,
) -> anyhow::Result<ordo_outbox::transport::Started> {
    let events = &config.events;
    let namespace = &events.broker_namespace;
    let broker_url = events.broker_url.as_ref().map(|url| url.expose_secret());
    let started = ordo_outbox::transport::start(broker_url, namespace, consumers, stop)
        .await
        .with_context(|| match &events.broker_url {
            Some(url) => format!("cannot use the message broker at {url} (ORDO_BROKER_URL)"),
            None => "cannot start the in-process event transport".to_owned(),
        })?;
    tracing::info!(
        broker = started.transport.system(),
        namespace = %namespace,
        "event transport ready"
    );
    Ok(started)
}

/// The configuration's rate limit as admission takes it.
pub(crate) fn rate_limit(limit: ordo_config::RateLimit) -> ordo_admission::RateLimit {
    ordo_admission::RateLimit {
        per_second: limit.per_second,
        burst: limit.burst,
    }
}

/// Connections the kernel may hold waiting for `accept` on each listener: a burst of thousands
/// of connects must not be refused or left unanswered (the default of 128 was; the kernel caps
/// it at `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(addr: std::net::SocketAddr, variable: &str) -> anyhow::Result<TcpListener> {
    let listen = || -> std::io::Result<TcpListener> {
        let socket = match addr {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // As std's listeners do: a restart may bind while the old sockets are in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().with_context(|| format!("cannot listen on {addr} ({variable})"))
}

/// Raises this process's soft limit of open files to its hard limit: every connection is a
/// file, and the usual soft limit of 1,024 lets about a thousand idle sockets make the API and
/// readiness unreachable. Returns the limit now in force, and the one before when it changed.
#[cfg(unix)]
pub(crate) fn raise_open_files_limit() -> std::io::Result<(libc::rlim_t, Option<libc::rlim_t>)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if before >= limit.rlim_max {
        return Ok((before, None));
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit only reads the struct it is given, which lives for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, Some(before)))
}
