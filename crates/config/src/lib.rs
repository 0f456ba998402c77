//! Configuration of ordo, resolved once at start-up in three layers, later ones winning:
//! the profile's defaults (`dev`, `staging`, `prod`), an optional TOML file, then the
//! environment variables of the operating contract (`ORDO_*`).
//!
//! Invariant: a [`Config`] that exists is complete and consistent; nothing else in ordo reads
//! configuration from the environment (the standard `OTEL_*` variables excepted, which the
//! telemetry crate reads as the OpenTelemetry specification says).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Dev,
    Staging,
    Prod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// A part of ordo that can run in its own process (`ordo serve --roles ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The public REST API (the gRPC API runs in every process).
    Edge,
    /// Orders: create, read, list, cancel, timelines.
    Orders,
    /// Products, warehouses and stock.
    Inventory,
    /// Payment intents and provider callbacks.
    Payments,
    /// The outbox relay, the fulfillment pipeline's consumers, the payment-timeout job.
    Workers,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Edge,
        Role::Orders,
        Role::Inventory,
        Role::Payments,
        Role::Workers,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Edge => "edge",
            Role::Orders => "orders",
            Role::Inventory => "inventory",
            Role::Payments => "payments",
            Role::Workers => "workers",
        }
    }

    /// Parses a comma-separated list (`edge,orders`); empty entries are ignored, `all` means
    /// every role.
    pub fn parse_list(raw: &str) -> Result<Vec<Role>, ConfigError> {
        let mut roles = Vec::new();
        for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "all" {
                roles.extend(Role::ALL);
                continue;
            }
            let role = Role::ALL
                .into_iter()
                .find(|r| r.as_str() == name)
                .ok_or_else(|| ConfigError::Invalid {
                    name: "ORDO_ROLES",
                    reason: format!(
                        "{name:?} is not a role (edge, orders, inventory, payments, workers, all)"
                    ),
                })?;
            roles.push(role);
        }
        roles.sort();
        roles.dedup();
        if roles.is_empty() {
            return Err(ConfigError::Invalid {
                name: "ORDO_ROLES",
                reason: "names no role".to_owned(),
            });
        }
        Ok(roles)
    }
}

/// `Debug` prints no secret (tokens, keys, passwords): a logged configuration is safe.
#[derive(Clone)]
pub struct Config {
    pub profile: Profile,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// `sqlite://PATH` or `postgres://...`.
    pub database_url: String,
    pub database_max_connections: u32,
    pub redis_url: Option<String>,
    pub broker_url: Option<String>,
    /// Bearer token for the admin port's metrics and debug endpoints.
    pub admin_token: Option<String>,
    /// API keys accepted on the public API; empty means the API is open (dev only).
    pub api_keys: Vec<String>,
    /// Origins browsers may call the gRPC-Web API from (`ORDO_CORS_ALLOWED_ORIGINS`,
    /// comma-separated; `*`: any); empty: same origin only.
    pub cors_allowed_origins: Vec<String>,
    /// The roles this process runs (`ORDO_ROLES` or `--roles`; default: all of them).
    pub roles: Vec<Role>,
    /// How processes find each other's roles: unset or `static` (the `ORDO_PEERS_*` lists),
    /// or `etcd://host:port[,host:port]` (`ORDO_DISCOVERY`).
    pub discovery_url: Option<String>,
    /// The static list: role name → gRPC addresses (`ORDO_PEERS_ORDERS`,
    /// `ORDO_PEERS_INVENTORY`, `ORDO_PEERS_PAYMENTS`, comma-separated).
    pub peers: std::collections::HashMap<String, Vec<String>>,
    /// The gRPC address other processes reach this one at (`ORDO_GRPC_ADVERTISE_ADDR`;
    /// default: the address bound).
    pub grpc_advertise_addr: Option<String>,
    pub log_format: LogFormat,
    /// The largest request body the API reads.
    pub max_body_bytes: usize,
    /// How long one API request may take before it is answered `deadline_exceeded`.
    pub request_timeout: Duration,
    /// How long a graceful shutdown waits for in-flight requests before it gives up.
    pub shutdown_drain: Duration,
    /// Enables the `webhook` payment provider and authenticates its callbacks.
    pub payment_webhook_secret: Option<String>,
    /// The sandbox provider's signing secret; unset: random at each start.
    pub sandbox_secret: Option<String>,
    /// How long the sandbox provider waits before it approves a payment.
    pub sandbox_payment_delay: Duration,
    /// How long an order may stay unpaid before the payment-timeout job cancels it.
    pub payment_timeout: Duration,
    /// Base of the outbox relay's retry backoff (`ORDO_OUTBOX_RETRY_BASE_MS`, default 100):
    /// an event's 8 publish attempts span about 256 times this.
    pub outbox_retry_base: Duration,
    /// The fulfillment pipeline: risk rules, carrier, retries, scheduling.
    pub fulfillment: FulfillmentConfig,
    /// Requests in progress beyond which a new one is refused at once with `503`
    /// (`ORDO_MAX_IN_FLIGHT`; default 1,024 per available core).
    pub max_in_flight: usize,
    /// How long an order may sit in a stage of the saga before the watchdog re-drives it
    /// (`ORDO_SAGA_STUCK_AFTER_SECS`, default 300).
    pub saga_stuck_after: Duration,
    /// How old (hours) a POS terminal's sale may be when its batch arrives
    /// (`ORDO_POS_OFFLINE_WINDOW_HOURS`, default 72).
    pub pos_offline_window_hours: u64,
    /// Open API connections at most (`ORDO_MAX_CONNECTIONS`); `None`: sized from the
    /// open-files limit at start-up.
    pub max_connections: Option<usize>,
    /// Open API connections of one client address at most
    /// (`ORDO_MAX_CONNECTIONS_PER_CLIENT`); `None`: a quarter of the total.
    pub max_connections_per_client: Option<usize>,
    /// How long a request's headers may take to arrive, and a kept-alive connection may idle
    /// (`ORDO_HEADER_READ_TIMEOUT_MS`, default 10,000).
    pub header_read_timeout: Duration,
    /// Adaptive load shedding on CPU and latency (`ORDO_SHED_ADAPTIVE`, default on).
    pub shed_adaptive: bool,
    /// The CPU usage, per mille of this process's CPU quota, above which adaptive shedding may
    /// drop requests (`ORDO_SHED_CPU_THRESHOLD`, 1 to 1000, default 900).
    pub shed_cpu_threshold_permille: u32,
    /// The file the configuration came from; SIGHUP re-reads its [`LiveSettings`].
    pub file: Option<std::path::PathBuf>,
    pub live: LiveSettings,
    /// The environment's values of the live settings that have one: a reload takes the file's
    /// value, and this one where the file names none.
    live_env: LiveEnv,
}

/// The `ORDO_*` variables behind [`LiveSettings`], kept as read at start-up.
#[derive(Debug, Clone, Default)]
struct LiveEnv {
    rate_limit_per_second: Option<String>,
    rate_limit_burst: Option<String>,
}

/// A token bucket per caller: `per_second` tokens added each second, at most `burst` kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |value: &Option<String>| value.as_ref().map(|_| "***");
        let url = redact_url;
        f.debug_struct("Config")
            .field("profile", &self.profile)
            .field("http_addr", &self.http_addr)
            .field("grpc_addr", &self.grpc_addr)
            .field("admin_addr", &self.admin_addr)
            .field("database_url", &url(&self.database_url))
            .field("database_max_connections", &self.database_max_connections)
            .field("redis_url", &self.redis_url.as_deref().map(url))
            .field("broker_url", &self.broker_url.as_deref().map(url))
            .field("admin_token", &secret(&self.admin_token))
            .field("api_keys", &format!("{} key(s)", self.api_keys.len()))
            .field("cors_allowed_origins", &self.cors_allowed_origins)
            .field("roles", &self.roles)
            .field("discovery_url", &self.discovery_url.as_deref().map(url))
            .field("peers", &self.peers)
            .field("grpc_advertise_addr", &self.grpc_advertise_addr)
            .field("log_format", &self.log_format)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("request_timeout", &self.request_timeout)
            .field("shutdown_drain", &self.shutdown_drain)
            .field(
                "payment_webhook_secret",
                &secret(&self.payment_webhook_secret),
            )
            .field("sandbox_secret", &secret(&self.sandbox_secret))
            .field("sandbox_payment_delay", &self.sandbox_payment_delay)
            .field("payment_timeout", &self.payment_timeout)
            .field("outbox_retry_base", &self.outbox_retry_base)
            .field("fulfillment", &self.fulfillment)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_connections", &self.max_connections)
            .field("pos_offline_window_hours", &self.pos_offline_window_hours)
            .field("saga_stuck_after", &self.saga_stuck_after)
            .field(
                "max_connections_per_client",
                &self.max_connections_per_client,
            )
            .field("header_read_timeout", &self.header_read_timeout)
            .field("shed_adaptive", &self.shed_adaptive)
            .field(
                "shed_cpu_threshold_permille",
                &self.shed_cpu_threshold_permille,
            )
            .field("file", &self.file)
            .field("live", &self.live)
            .finish()
    }
}

/// `url` without its password, for messages, logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

/// The settings a running process takes again from its file on SIGHUP. At start-up `RUST_LOG`
/// and `OTEL_TRACES_SAMPLER_ARG` win over them; a reload applies the file's values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveSettings {
    /// Log filter directives (`RUST_LOG` syntax).
    pub log_filter: Option<String>,
    /// Head-sampling ratio for new traces, 0..=1.
    pub trace_sampling_ratio: Option<f64>,
    /// Requests per caller (API key, or client address without keys); `None`: no limit
    /// (`ORDO_RATE_LIMIT_PER_SECOND`, `ORDO_RATE_LIMIT_BURST`; the burst defaults to the rate).
    pub rate_limit: Option<RateLimit>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the configuration file {path} is not valid: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("{name} is not valid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("the {profile} profile requires {name}")]
    Missing {
        profile: &'static str,
        name: &'static str,
    },
}

/// The TOML file's shape: every key optional, names as in [`Config`] (durations in
/// milliseconds or seconds as their suffix says).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    profile: Option<Profile>,
    http_addr: Option<String>,
    grpc_addr: Option<String>,
    admin_addr: Option<String>,
    database_url: Option<String>,
    database_max_connections: Option<u32>,
    redis_url: Option<String>,
    broker_url: Option<String>,
    admin_token: Option<String>,
    api_keys: Option<Vec<String>>,
    cors_allowed_origins: Option<String>,
    roles: Option<String>,
    discovery: Option<String>,
    peers_orders: Option<String>,
    peers_inventory: Option<String>,
    peers_payments: Option<String>,
    grpc_advertise_addr: Option<String>,
    log_format: Option<LogFormat>,
    max_body_bytes: Option<usize>,
    request_timeout_ms: Option<u64>,
    shutdown_drain_secs: Option<u64>,
    payment_webhook_secret: Option<String>,
    sandbox_secret: Option<String>,
    sandbox_payment_delay_ms: Option<u64>,
    payment_timeout_secs: Option<u64>,
    outbox_retry_base_ms: Option<u64>,
    risk_max_amount: Option<String>,
    risk_velocity: Option<String>,
    risk_blocked_countries: Option<String>,
    risk_blocked_emails: Option<String>,
    carrier_webhook_url: Option<String>,
    carrier_webhook_secret: Option<String>,
    carrier_timeout_ms: Option<u64>,
    carrier_retry_base_ms: Option<u64>,
    carrier_max_attempts: Option<u64>,
    carrier_breaker_threshold: Option<u64>,
    carrier_breaker_cooldown_ms: Option<u64>,
    pickup_lead_secs: Option<u64>,
    max_in_flight: Option<u64>,
    max_connections: Option<u64>,
    max_connections_per_client: Option<u64>,
    pos_offline_window_hours: Option<u64>,
    saga_stuck_after_secs: Option<u64>,
    header_read_timeout_ms: Option<u64>,
    shed_adaptive: Option<bool>,
    shed_cpu_threshold: Option<u64>,
    log_filter: Option<String>,
    trace_sampling_ratio: Option<f64>,
    rate_limit_per_second: Option<u64>,
    rate_limit_burst: Option<u64>,
}

impl FileConfig {
    /// The live settings of this file and `env`: at start-up the environment wins
    /// (`env_first`), on a reload the file does, as for the log filter.
    fn live(&self, env: &LiveEnv, env_first: bool) -> Result<LiveSettings, ConfigError> {
        let choose = |from_env: &Option<String>, from_file: Option<u64>| {
            let from_file = from_file.map(|v| v.to_string());
            if env_first {
                from_env.clone().or(from_file)
            } else {
                from_file.or_else(|| from_env.clone())
            }
        };
        let rate_limit = parse_rate_limit(
            choose(&env.rate_limit_per_second, self.rate_limit_per_second),
            choose(&env.rate_limit_burst, self.rate_limit_burst),
        )?;
        if let Some(ratio) = self.trace_sampling_ratio
            && !(0.0..=1.0).contains(&ratio)
        {
            return Err(ConfigError::Invalid {
                name: "trace_sampling_ratio",
                reason: format!("{ratio} is not in [0, 1]"),
            });
        }
        Ok(LiveSettings {
            log_filter: self.log_filter.clone(),
            trace_sampling_ratio: self.trace_sampling_ratio,
            rate_limit,
        })
    }
}

impl Config {
    /// Resolves the configuration from `file` (if any) and `env` (a lookup, so tests need not
    /// touch the process environment).
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file_config = match file {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let live_env = LiveEnv {
            rate_limit_per_second: env("ORDO_RATE_LIMIT_PER_SECOND").filter(|v| !v.is_empty()),
            rate_limit_burst: env("ORDO_RATE_LIMIT_BURST").filter(|v| !v.is_empty()),
        };
        let live = file_config.live(&live_env, true)?;
        // Each key: environment first, then file, then default.
        let pick = |name: &'static str, from_file: Option<String>| -> Option<String> {
            env(name).filter(|v| !v.is_empty()).or(from_file)
        };

        let profile = match env("ORDO_PROFILE").filter(|v| !v.is_empty()) {
            Some(raw) => parse_profile(&raw)?,
            None => file_config.profile.unwrap_or(Profile::Dev),
        };

        let addr = |name: &'static str, from_file: Option<String>, default: &str| {
            let raw = pick(name, from_file).unwrap_or_else(|| default.to_owned());
            raw.parse::<SocketAddr>().map_err(|e| ConfigError::Invalid {
                name,
                reason: format!("{raw:?} is not a socket address: {e}"),
            })
        };
        let number = |name: &'static str, from_file: Option<u64>, default: u64| match env(name)
            .filter(|v| !v.is_empty())
        {
            Some(raw) => raw.parse::<u64>().map_err(|e| ConfigError::Invalid {
                name,
                reason: format!("{raw:?} is not a whole number: {e}"),
            }),
            None => Ok(from_file.unwrap_or(default)),
        };

        let log_format = match pick("ORDO_LOG_FORMAT", None) {
            Some(raw) => match raw.as_str() {
                "json" => LogFormat::Json,
                "pretty" => LogFormat::Pretty,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "ORDO_LOG_FORMAT",
                        reason: format!("{raw:?} is neither \"json\" nor \"pretty\""),
                    });
                }
            },
            None => file_config.log_format.unwrap_or(LogFormat::Json),
        };

        let api_keys = match env("ORDO_API_KEYS") {
            Some(raw) => raw
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect(),
            None => file_config.api_keys.unwrap_or_default(),
        };

        let roles = match pick("ORDO_ROLES", file_config.roles) {
            Some(raw) => Role::parse_list(&raw)?,
            None => Role::ALL.to_vec(),
        };
        let peers = [
            (
                "orders",
                pick("ORDO_PEERS_ORDERS", file_config.peers_orders),
            ),
            (
                "inventory",
                pick("ORDO_PEERS_INVENTORY", file_config.peers_inventory),
            ),
            (
                "payments",
                pick("ORDO_PEERS_PAYMENTS", file_config.peers_payments),
            ),
        ]
        .into_iter()
        .map(|(role, raw)| (role.to_owned(), list(raw)))
        .filter(|(_, addresses)| !addresses.is_empty())
        .collect();

        let config = Config {
            file: file.map(Path::to_path_buf),
            roles,
            discovery_url: pick("ORDO_DISCOVERY", file_config.discovery),
            peers,
            grpc_advertise_addr: pick("ORDO_GRPC_ADVERTISE_ADDR", file_config.grpc_advertise_addr),
            live,
            live_env,
            max_in_flight: match number("ORDO_MAX_IN_FLIGHT", file_config.max_in_flight, 0)? {
                // Enough for any healthy load (a request in progress costs little memory), yet
                // a bound a flood reaches long before the process runs out of memory.
                0 => {
                    1024 * std::thread::available_parallelism()
                        .map(usize::from)
                        .unwrap_or(1)
                }
                n => usize::try_from(n).unwrap_or(usize::MAX),
            },
            saga_stuck_after: Duration::from_secs(
                match number(
                    "ORDO_SAGA_STUCK_AFTER_SECS",
                    file_config.saga_stuck_after_secs,
                    300,
                )? {
                    0 => {
                        return Err(ConfigError::Invalid {
                            name: "ORDO_SAGA_STUCK_AFTER_SECS",
                            reason: "must be at least 1".to_owned(),
                        });
                    }
                    secs => secs,
                },
            ),
            pos_offline_window_hours: match number(
                "ORDO_POS_OFFLINE_WINDOW_HOURS",
                file_config.pos_offline_window_hours,
                72,
            )? {
                0 => {
                    return Err(ConfigError::Invalid {
                        name: "ORDO_POS_OFFLINE_WINDOW_HOURS",
                        reason: "must be at least 1".to_owned(),
                    });
                }
                hours => hours,
            },
            max_connections: match number("ORDO_MAX_CONNECTIONS", file_config.max_connections, 0)? {
                0 => None,
                n => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            },
            max_connections_per_client: match number(
                "ORDO_MAX_CONNECTIONS_PER_CLIENT",
                file_config.max_connections_per_client,
                0,
            )? {
                0 => None,
                n => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            },
            header_read_timeout: Duration::from_millis(
                match number(
                    "ORDO_HEADER_READ_TIMEOUT_MS",
                    file_config.header_read_timeout_ms,
                    10_000,
                )? {
                    0 => 10_000,
                    n => n,
                },
            ),
            shed_adaptive: match pick("ORDO_SHED_ADAPTIVE", None) {
                Some(raw) => parse_bool("ORDO_SHED_ADAPTIVE", &raw)?,
                None => file_config.shed_adaptive.unwrap_or(true),
            },
            shed_cpu_threshold_permille: match number(
                "ORDO_SHED_CPU_THRESHOLD",
                file_config.shed_cpu_threshold,
                900,
            )? {
                n @ 1..=1000 => n as u32,
                n => {
                    return Err(ConfigError::Invalid {
                        name: "ORDO_SHED_CPU_THRESHOLD",
                        reason: format!("{n} is not per mille in 1..=1000"),
                    });
                }
            },
            profile,
            http_addr: addr("ORDO_HTTP_ADDR", file_config.http_addr, "127.0.0.1:8080")?,
            grpc_addr: addr("ORDO_GRPC_ADDR", file_config.grpc_addr, "127.0.0.1:50051")?,
            admin_addr: addr("ORDO_ADMIN_ADDR", file_config.admin_addr, "127.0.0.1:9090")?,
            database_url: pick("ORDO_DATABASE_URL", file_config.database_url)
                .unwrap_or_else(|| "sqlite://data/ordo.db".to_owned()),
            database_max_connections: number(
                "ORDO_DATABASE_MAX_CONNECTIONS",
                file_config.database_max_connections.map(u64::from),
                16,
            )?
            .clamp(1, 1024) as u32,
            redis_url: pick("ORDO_REDIS_URL", file_config.redis_url),
            broker_url: pick("ORDO_BROKER_URL", file_config.broker_url),
            admin_token: pick("ORDO_ADMIN_TOKEN", file_config.admin_token),
            api_keys,
            cors_allowed_origins: list(pick(
                "ORDO_CORS_ALLOWED_ORIGINS",
                file_config.cors_allowed_origins,
            )),
            log_format,
            max_body_bytes: number(
                "ORDO_MAX_BODY_BYTES",
                file_config.max_body_bytes.map(|b| b as u64),
                64 * 1024,
            )? as usize,
            request_timeout: Duration::from_millis(number(
                "ORDO_REQUEST_TIMEOUT_MS",
                file_config.request_timeout_ms,
                10_000,
            )?),
            shutdown_drain: Duration::from_secs(number(
                "ORDO_SHUTDOWN_DRAIN_SECS",
                file_config.shutdown_drain_secs,
                10,
            )?),
            payment_webhook_secret: pick(
                "ORDO_PAYMENT_WEBHOOK_SECRET",
                file_config.payment_webhook_secret,
            ),
            sandbox_secret: pick("ORDO_SANDBOX_SECRET", file_config.sandbox_secret),
            outbox_retry_base: Duration::from_millis(
                number(
                    "ORDO_OUTBOX_RETRY_BASE_MS",
                    file_config.outbox_retry_base_ms,
                    100,
                )?
                .clamp(1, 10_000),
            ),
            sandbox_payment_delay: Duration::from_millis(number(
                "ORDO_SANDBOX_PAYMENT_DELAY_MS",
                file_config.sandbox_payment_delay_ms,
                0,
            )?),
            payment_timeout: Duration::from_secs(
                match number(
                    "ORDO_PAYMENT_TIMEOUT_SECS",
                    file_config.payment_timeout_secs,
                    900,
                )? {
                    0 => {
                        return Err(ConfigError::Invalid {
                            name: "ORDO_PAYMENT_TIMEOUT_SECS",
                            reason: "must be at least 1 second".to_owned(),
                        });
                    }
                    secs => secs,
                },
            ),
            fulfillment: FulfillmentConfig::default(),
        };
        let mut config = config;
        config.fulfillment = FulfillmentConfig {
            risk_max_amount: parse_amounts(pick(
                "ORDO_RISK_MAX_AMOUNT",
                file_config.risk_max_amount,
            ))?,
            risk_velocity: parse_velocity(pick("ORDO_RISK_VELOCITY", file_config.risk_velocity))?,
            risk_blocked_countries: list(pick(
                "ORDO_RISK_BLOCKED_COUNTRIES",
                file_config.risk_blocked_countries,
            ))
            .into_iter()
            .map(|c| c.to_ascii_uppercase())
            .collect(),
            risk_blocked_emails: list(pick(
                "ORDO_RISK_BLOCKED_EMAILS",
                file_config.risk_blocked_emails,
            )),
            carrier_webhook_url: pick("ORDO_CARRIER_WEBHOOK_URL", file_config.carrier_webhook_url),
            carrier_webhook_secret: pick(
                "ORDO_CARRIER_WEBHOOK_SECRET",
                file_config.carrier_webhook_secret,
            ),
            carrier_timeout: Duration::from_millis(
                number(
                    "ORDO_CARRIER_TIMEOUT_MS",
                    file_config.carrier_timeout_ms,
                    5_000,
                )?
                .max(1),
            ),
            carrier_retry_base: Duration::from_millis(number(
                "ORDO_CARRIER_RETRY_BASE_MS",
                file_config.carrier_retry_base_ms,
                200,
            )?),
            carrier_max_attempts: number(
                "ORDO_CARRIER_MAX_ATTEMPTS",
                file_config.carrier_max_attempts,
                5,
            )?
            .clamp(1, 100) as u32,
            carrier_breaker_threshold: number(
                "ORDO_CARRIER_BREAKER_THRESHOLD",
                file_config.carrier_breaker_threshold,
                5,
            )?
            .clamp(1, 1_000) as u32,
            carrier_breaker_cooldown: Duration::from_millis(number(
                "ORDO_CARRIER_BREAKER_COOLDOWN_MS",
                file_config.carrier_breaker_cooldown_ms,
                30_000,
            )?),
            pickup_lead: Duration::from_secs(number(
                "ORDO_PICKUP_LEAD_SECS",
                file_config.pickup_lead_secs,
                7_200,
            )?),
        };
        config.check_profile()?;
        Ok(config)
    }

    /// Re-reads the live settings from the configuration file (SIGHUP). Without a file there
    /// is nothing to reload.
    pub fn reload_live(&self) -> Result<Option<LiveSettings>, ConfigError> {
        self.file
            .as_deref()
            .map(|path| read_file(path)?.live(&self.live_env, false))
            .transpose()
    }

    /// Staging and production refuse to start with the open defaults meant for a laptop.
    fn check_profile(&self) -> Result<(), ConfigError> {
        let profile = match self.profile {
            Profile::Dev => return Ok(()),
            Profile::Staging => "staging",
            Profile::Prod => "prod",
        };
        if self.admin_token.is_none() {
            return Err(ConfigError::Missing {
                profile,
                name: "ORDO_ADMIN_TOKEN",
            });
        }
        if self.profile == Profile::Prod && self.api_keys.is_empty() {
            return Err(ConfigError::Missing {
                profile,
                name: "ORDO_API_KEYS",
            });
        }
        Ok(())
    }
}

/// The fulfillment pipeline's settings. `Debug` prints neither the carrier secret nor the
/// blocked emails (personal data).
#[derive(Clone, PartialEq, Eq)]
pub struct FulfillmentConfig {
    /// Largest order total per currency, in minor units (`ORDO_RISK_MAX_AMOUNT`,
    /// `USD=100000,EUR=90000`); a currency not listed has no limit.
    pub risk_max_amount: Vec<(String, i64)>,
    /// At most `count` payments per customer within `seconds` (`ORDO_RISK_VELOCITY`,
    /// `count/seconds`; default `1000/60`).
    pub risk_velocity: (i64, i64),
    /// Refused shipping countries (`ORDO_RISK_BLOCKED_COUNTRIES`, comma-separated).
    pub risk_blocked_countries: Vec<String>,
    /// Refused contact emails (`ORDO_RISK_BLOCKED_EMAILS`, comma-separated).
    pub risk_blocked_emails: Vec<String>,
    /// The carrier's webhook; unset: the in-process sandbox carrier.
    pub carrier_webhook_url: Option<String>,
    pub carrier_webhook_secret: Option<String>,
    pub carrier_timeout: Duration,
    pub carrier_retry_base: Duration,
    pub carrier_max_attempts: u32,
    pub carrier_breaker_threshold: u32,
    pub carrier_breaker_cooldown: Duration,
    /// The least time between scheduling and a pickup slot.
    pub pickup_lead: Duration,
}

impl Default for FulfillmentConfig {
    fn default() -> Self {
        FulfillmentConfig {
            risk_max_amount: Vec::new(),
            risk_velocity: (1000, 60),
            risk_blocked_countries: Vec::new(),
            risk_blocked_emails: Vec::new(),
            carrier_webhook_url: None,
            carrier_webhook_secret: None,
            carrier_timeout: Duration::from_secs(5),
            carrier_retry_base: Duration::from_millis(200),
            carrier_max_attempts: 5,
            carrier_breaker_threshold: 5,
            carrier_breaker_cooldown: Duration::from_secs(30),
            pickup_lead: Duration::from_secs(7_200),
        }
    }
}

impl std::fmt::Debug for FulfillmentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FulfillmentConfig")
            .field("risk_max_amount", &self.risk_max_amount)
            .field("risk_velocity", &self.risk_velocity)
            .field("risk_blocked_countries", &self.risk_blocked_countries)
            .field(
                "risk_blocked_emails",
                &format!("{} address(es)", self.risk_blocked_emails.len()),
            )
            .field(
                "carrier_webhook_url",
                &self.carrier_webhook_url.as_deref().map(redact_url),
            )
            .field(
                "carrier_webhook_secret",
                &self.carrier_webhook_secret.as_ref().map(|_| "***"),
            )
            .field("carrier_timeout", &self.carrier_timeout)
            .field("carrier_retry_base", &self.carrier_retry_base)
            .field("carrier_max_attempts", &self.carrier_max_attempts)
            .field("carrier_breaker_threshold", &self.carrier_breaker_threshold)
            .field("carrier_breaker_cooldown", &self.carrier_breaker_cooldown)
            .field("pickup_lead", &self.pickup_lead)
            .finish()
    }
}

fn list(raw: Option<String>) -> Vec<String> {
    raw.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `USD=100000,EUR=90000`.
fn parse_amounts(raw: Option<String>) -> Result<Vec<(String, i64)>, ConfigError> {
    list(raw)
        .into_iter()
        .map(|pair| {
            let parsed = pair.split_once('=').and_then(|(currency, amount)| {
                let currency = currency.trim().to_ascii_uppercase();
                let amount = amount.trim().parse::<i64>().ok().filter(|a| *a >= 0)?;
                (currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()))
                    .then_some((currency, amount))
            });
            parsed.ok_or_else(|| ConfigError::Invalid {
                name: "ORDO_RISK_MAX_AMOUNT",
                reason: format!("{pair:?} is not CURRENCY=minor units"),
            })
        })
        .collect()
}

/// `count/seconds`.
fn parse_velocity(raw: Option<String>) -> Result<(i64, i64), ConfigError> {
    let Some(raw) = raw else {
        return Ok((1000, 60));
    };
    raw.split_once('/')
        .and_then(|(count, secs)| {
            let count = count.trim().parse::<i64>().ok().filter(|c| *c >= 0)?;
            let secs = secs.trim().parse::<i64>().ok().filter(|s| *s > 0)?;
            Some((count, secs))
        })
        .ok_or_else(|| ConfigError::Invalid {
            name: "ORDO_RISK_VELOCITY",
            reason: format!("{raw:?} is not count/seconds"),
        })
}

/// `ORDO_RATE_LIMIT_PER_SECOND` and `ORDO_RATE_LIMIT_BURST`: both unset is no limit; a burst
/// without a rate is a mistake, not a silent "no limit".
fn parse_rate_limit(
    per_second: Option<String>,
    burst: Option<String>,
) -> Result<Option<RateLimit>, ConfigError> {
    let positive = |name: &'static str, raw: &str| {
        raw.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ConfigError::Invalid {
                name,
                reason: format!("{raw:?} is not a whole number from 1 to {}", u32::MAX),
            })
    };
    let burst = burst
        .map(|raw| positive("ORDO_RATE_LIMIT_BURST", &raw))
        .transpose()?;
    let Some(per_second) = per_second else {
        return match burst {
            None => Ok(None),
            Some(_) => Err(ConfigError::Invalid {
                name: "ORDO_RATE_LIMIT_BURST",
                reason: "is set without ORDO_RATE_LIMIT_PER_SECOND".to_owned(),
            }),
        };
    };
    let per_second = positive("ORDO_RATE_LIMIT_PER_SECOND", &per_second)?;
    Ok(Some(RateLimit {
        per_second,
        burst: burst.unwrap_or(per_second),
    }))
}

fn parse_bool(name: &'static str, raw: &str) -> Result<bool, ConfigError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" => Ok(false),
        _ => Err(ConfigError::Invalid {
            name,
            reason: format!("{raw:?} is neither true nor false"),
        }),
    }
}

fn parse_profile(raw: &str) -> Result<Profile, ConfigError> {
    match raw {
        "dev" => Ok(Profile::Dev),
        "staging" => Ok(Profile::Staging),
        "prod" => Ok(Profile::Prod),
        _ => Err(ConfigError::Invalid {
            name: "ORDO_PROFILE",
            reason: format!("{raw:?} is not one of dev, staging, prod"),
        }),
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: shown,
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn fulfillment_settings_come_from_env_and_hide_emails_and_secrets() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.fulfillment, FulfillmentConfig::default());
        let config = Config::load(
            None,
            env(&[
                ("ORDO_RISK_MAX_AMOUNT", "USD=100000, eur=90000"),
                ("ORDO_RISK_VELOCITY", "3/600"),
                ("ORDO_RISK_BLOCKED_COUNTRIES", "th, DE"),
                ("ORDO_RISK_BLOCKED_EMAILS", "visible@example.com"),
                ("ORDO_CARRIER_WEBHOOK_SECRET", "carrier-visible"),
                ("ORDO_CARRIER_RETRY_BASE_MS", "5"),
            ]),
        )
        .unwrap();
        let f = &config.fulfillment;
        assert_eq!(
            f.risk_max_amount,
            [("USD".to_owned(), 100_000), ("EUR".to_owned(), 90_000)]
        );
        assert_eq!(f.risk_velocity, (3, 600));
        assert_eq!(f.risk_blocked_countries, ["TH", "DE"]);
        assert_eq!(f.carrier_retry_base, Duration::from_millis(5));
        let printed = format!("{config:?}");
        assert!(!printed.contains("visible"), "{printed}");
        for (name, bad) in [
            ("ORDO_RISK_MAX_AMOUNT", "USD"),
            ("ORDO_RISK_MAX_AMOUNT", "USD=-1"),
            ("ORDO_RISK_VELOCITY", "3"),
            ("ORDO_RISK_VELOCITY", "3/0"),
        ] {
            assert!(
                Config::load(None, env(&[(name, bad)])).is_err(),
                "{name}={bad}"
            );
        }
    }

    #[test]
    fn roles_and_peers_parse_and_default_to_everything_in_one_process() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.roles, Role::ALL);
        assert!(config.peers.is_empty());
        let config = Config::load(
            None,
            env(&[
                ("ORDO_ROLES", " orders, edge ,orders"),
                ("ORDO_PEERS_INVENTORY", "127.0.0.1:1, http://127.0.0.1:2"),
                ("ORDO_DISCOVERY", "etcd://127.0.0.1:2379"),
            ]),
        )
        .unwrap();
        assert_eq!(config.roles, [Role::Edge, Role::Orders]);
        assert_eq!(
            config.peers["inventory"],
            ["127.0.0.1:1", "http://127.0.0.1:2"]
        );
        assert_eq!(
            config.discovery_url.as_deref(),
            Some("etcd://127.0.0.1:2379")
        );
        assert_eq!(Role::parse_list("all").unwrap(), Role::ALL);
        for bad in ["", " , ", "edge,cashier"] {
            assert!(Role::parse_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults_follow_the_operating_contract() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.profile, Profile::Dev);
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(config.admin_addr.to_string(), "127.0.0.1:9090");
        assert!(config.database_url.starts_with("sqlite://data/"));
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(config.api_keys.is_empty());
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let dir = std::env::temp_dir().join(format!("ordo-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ordo.toml");
        std::fs::write(
            &path,
            "http_addr = \"127.0.0.1:1\"\nadmin_addr = \"127.0.0.1:2\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&path), env(&[("ORDO_HTTP_ADDR", "127.0.0.1:0")])).unwrap();
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:0");
        assert_eq!(config.admin_addr.to_string(), "127.0.0.1:2");
    }

    #[test]
    fn live_settings_are_read_again_from_the_file() {
        let dir = std::env::temp_dir().join(format!("ordo-config-live-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ordo.toml");
        std::fs::write(&path, "log_filter = \"warn\"\n").unwrap();
        let config = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(config.live.log_filter.as_deref(), Some("warn"));
        std::fs::write(
            &path,
            "log_filter = \"debug\"\ntrace_sampling_ratio = 0.25\n",
        )
        .unwrap();
        let live = config.reload_live().unwrap().unwrap();
        assert_eq!(live.log_filter.as_deref(), Some("debug"));
        assert_eq!(live.trace_sampling_ratio, Some(0.25));
        std::fs::write(&path, "trace_sampling_ratio = 2.0\n").unwrap();
        assert!(config.reload_live().is_err());
    }

    #[test]
    fn rate_limits_come_from_env_or_file_and_a_reload_takes_the_file() {
        assert_eq!(Config::load(None, env(&[])).unwrap().live.rate_limit, None);
        let config = Config::load(None, env(&[("ORDO_RATE_LIMIT_PER_SECOND", "5")])).unwrap();
        assert_eq!(
            config.live.rate_limit,
            Some(RateLimit {
                per_second: 5,
                burst: 5
            })
        );
        for (name, bad) in [
            ("ORDO_RATE_LIMIT_PER_SECOND", "0"),
            ("ORDO_RATE_LIMIT_PER_SECOND", "-3"),
            ("ORDO_RATE_LIMIT_PER_SECOND", "1.5"),
            ("ORDO_RATE_LIMIT_BURST", "7"),
        ] {
            let err = Config::load(None, env(&[(name, bad)])).unwrap_err();
            assert!(err.to_string().contains(name), "{name}={bad}: {err}");
        }

        let dir = std::env::temp_dir().join(format!("ordo-config-rate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ordo.toml");
        std::fs::write(&path, "rate_limit_per_second = 10\nrate_limit_burst = 20\n").unwrap();
        let config = Config::load(Some(&path), env(&[("ORDO_RATE_LIMIT_BURST", "30")])).unwrap();
        // Start-up: the environment wins.
        assert_eq!(
            config.live.rate_limit,
            Some(RateLimit {
                per_second: 10,
                burst: 30
            })
        );
        // Reload: the file wins; what it leaves out keeps the environment's value.
        std::fs::write(&path, "rate_limit_per_second = 2\n").unwrap();
        let live = config.reload_live().unwrap().unwrap();
        assert_eq!(
            live.rate_limit,
            Some(RateLimit {
                per_second: 2,
                burst: 30
            })
        );
        std::fs::write(&path, "rate_limit_per_second = 2\nrate_limit_burst = 4\n").unwrap();
        let live = config.reload_live().unwrap().unwrap();
        assert_eq!(
            live.rate_limit,
            Some(RateLimit {
                per_second: 2,
                burst: 4
            })
        );
        std::fs::write(&path, "rate_limit_per_second = 0\n").unwrap();
        assert!(config.reload_live().is_err());
    }

    #[test]
    fn shedding_has_machine_sized_defaults_and_checked_values() {
        let config = Config::load(None, env(&[])).unwrap();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(config.max_in_flight, 1024 * cores);
        assert!(config.shed_adaptive);
        assert_eq!(config.shed_cpu_threshold_permille, 900);
        let config = Config::load(
            None,
            env(&[
                ("ORDO_MAX_IN_FLIGHT", "1"),
                ("ORDO_SHED_ADAPTIVE", "false"),
                ("ORDO_SHED_CPU_THRESHOLD", "750"),
            ]),
        )
        .unwrap();
        assert_eq!(config.max_in_flight, 1);
        assert!(!config.shed_adaptive);
        assert_eq!(config.shed_cpu_threshold_permille, 750);
        for (name, bad) in [
            ("ORDO_SHED_CPU_THRESHOLD", "0"),
            ("ORDO_SHED_CPU_THRESHOLD", "1001"),
            ("ORDO_SHED_ADAPTIVE", "maybe"),
            ("ORDO_MAX_IN_FLIGHT", "many"),
        ] {
            let err = Config::load(None, env(&[(name, bad)])).unwrap_err();
            assert!(err.to_string().contains(name), "{name}={bad}: {err}");
        }
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("ordo-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ordo.toml");
        std::fs::write(&path, "htp_addr = \"127.0.0.1:1\"\n").unwrap();
        assert!(matches!(
            Config::load(Some(&path), env(&[])),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn prod_requires_an_admin_token_and_api_keys() {
        let missing_token = Config::load(None, env(&[("ORDO_PROFILE", "prod")]));
        assert!(matches!(
            missing_token,
            Err(ConfigError::Missing {
                name: "ORDO_ADMIN_TOKEN",
                ..
            })
        ));
        let config = Config::load(
            None,
            env(&[
                ("ORDO_PROFILE", "prod"),
                ("ORDO_ADMIN_TOKEN", "t"),
                ("ORDO_API_KEYS", "k1, k2"),
            ]),
        )
        .unwrap();
        assert_eq!(config.api_keys, vec!["k1", "k2"]);
    }

    #[test]
    fn payment_settings_have_documented_defaults_and_come_from_env_or_file() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.payment_webhook_secret, None);
        assert_eq!(config.sandbox_secret, None);
        assert_eq!(config.sandbox_payment_delay, Duration::ZERO);
        assert_eq!(config.payment_timeout, Duration::from_secs(900));

        let dir = std::env::temp_dir().join(format!("ordo-config-pay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ordo.toml");
        std::fs::write(
            &path,
            "payment_webhook_secret = \"from-file\"\nsandbox_payment_delay_ms = 250\n\
             payment_timeout_secs = 60\nsandbox_secret = \"sbx\"\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&path),
            env(&[("ORDO_PAYMENT_WEBHOOK_SECRET", "from-env")]),
        )
        .unwrap();
        assert_eq!(config.payment_webhook_secret.as_deref(), Some("from-env"));
        assert_eq!(config.sandbox_secret.as_deref(), Some("sbx"));
        assert_eq!(config.sandbox_payment_delay, Duration::from_millis(250));
        assert_eq!(config.payment_timeout, Duration::from_secs(60));

        let err = Config::load(None, env(&[("ORDO_PAYMENT_TIMEOUT_SECS", "0")])).unwrap_err();
        assert!(err.to_string().contains("ORDO_PAYMENT_TIMEOUT_SECS"));
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("postgres://ordo:s3cret@db:5432/ordo"),
            "postgres://ordo:***@db:5432/ordo"
        );
        assert_eq!(redact_url("sqlite://data/ordo.db"), "sqlite://data/ordo.db");
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let config = Config::load(
            None,
            env(&[
                ("ORDO_ADMIN_TOKEN", "admin-s3cret"),
                ("ORDO_API_KEYS", "key-s3cret"),
                ("ORDO_PAYMENT_WEBHOOK_SECRET", "hook-s3cret"),
                ("ORDO_DATABASE_URL", "postgres://ordo:db-s3cret@db/ordo"),
            ]),
        )
        .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("postgres://ordo:***@db/ordo"), "{shown}");
    }

    #[test]
    fn bad_values_name_their_variable() {
        let err = Config::load(None, env(&[("ORDO_HTTP_ADDR", "nope")])).unwrap_err();
        assert!(err.to_string().contains("ORDO_HTTP_ADDR"));
        let err = Config::load(None, env(&[("ORDO_PROFILE", "qa")])).unwrap_err();
        assert!(err.to_string().contains("ORDO_PROFILE"));
    }
}
