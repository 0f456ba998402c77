//! The operating contract as tests: every variable is read, the environment wins over the
//! file, the defaults, the rejections and their messages, and what `Debug` never prints.

use super::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

/// A configuration file of this test's own (tests run in parallel).
fn file(test: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ordo-config-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ordo.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn addr(raw: &str) -> SocketAddr {
    raw.parse().unwrap()
}

fn exposed(secrets: &[Secret]) -> Vec<&str> {
    secrets.iter().map(ExposeSecret::expose_secret).collect()
}

/// One value per variable, none of them its default.
const EVERY_VARIABLE: &[(&str, &str)] = &[
    ("ORDO_PROFILE", "staging"),
    ("ORDO_LOG_FORMAT", "pretty"),
    ("ORDO_HTTP_ADDR", "0.0.0.0:1"),
    ("ORDO_GRPC_ADDR", "0.0.0.0:2"),
    ("ORDO_ADMIN_ADDR", "0.0.0.0:3"),
    ("ORDO_MAX_BODY_BYTES", "4"),
    ("ORDO_REQUEST_TIMEOUT_MS", "5"),
    ("ORDO_SHUTDOWN_DRAIN_SECS", "6"),
    (
        "ORDO_CORS_ALLOWED_ORIGINS",
        "https://a.example, https://b.example",
    ),
    ("ORDO_ADMIN_TOKEN", "token"),
    ("ORDO_API_KEYS", "k1, k2"),
    ("ORDO_MAX_IN_FLIGHT", "7"),
    ("ORDO_MAX_CONNECTIONS", "8"),
    ("ORDO_MAX_CONNECTIONS_PER_CLIENT", "9"),
    ("ORDO_HEADER_READ_TIMEOUT_MS", "10"),
    ("ORDO_SHED_ADAPTIVE", "no"),
    ("ORDO_SHED_CPU_THRESHOLD", "11"),
    ("ORDO_DATABASE_URL", "postgres://ordo:pw@db/ordo"),
    ("ORDO_DATABASE_MAX_CONNECTIONS", "12"),
    ("ORDO_REDIS_URL", "redis://cache:6379"),
    ("ORDO_REDIS_NAMESPACE", "rns"),
    ("ORDO_BROKER_URL", "nats://mq:4222"),
    ("ORDO_BROKER_NAMESPACE", "bns"),
    ("ORDO_OUTBOX_RETRY_BASE_MS", "13"),
    ("ORDO_ROLES", "edge,workers"),
    ("ORDO_DISCOVERY", "etcd://etcd:2379"),
    ("ORDO_DISCOVERY_NAMESPACE", "dns"),
    ("ORDO_PEERS_ORDERS", "o:1"),
    ("ORDO_PEERS_INVENTORY", "i:1, i:2"),
    ("ORDO_PEERS_PAYMENTS", "p:1"),
    ("ORDO_GRPC_ADVERTISE_ADDR", "http://me:50051"),
    ("ORDO_POS_OFFLINE_WINDOW_HOURS", "14"),
    ("ORDO_SAGA_STUCK_AFTER_SECS", "15"),
    ("ORDO_PAYMENT_WEBHOOK_SECRET", "whsec"),
    ("ORDO_SANDBOX_SECRET", "sbx"),
    ("ORDO_SANDBOX_PAYMENT_DELAY_MS", "16"),
    ("ORDO_PAYMENT_TIMEOUT_SECS", "17"),
    ("ORDO_RISK_MAX_AMOUNT", "USD=100000, eur=90000"),
    ("ORDO_RISK_VELOCITY", "3/600"),
    ("ORDO_RISK_BLOCKED_COUNTRIES", "th, DE"),
    ("ORDO_RISK_BLOCKED_EMAILS", "a@example.com"),
    ("ORDO_CARRIER_WEBHOOK_URL", "http://carrier:1/push"),
    ("ORDO_CARRIER_WEBHOOK_SECRET", "csec"),
    ("ORDO_CARRIER_TIMEOUT_MS", "18"),
    ("ORDO_CARRIER_RETRY_BASE_MS", "19"),
    ("ORDO_CARRIER_MAX_ATTEMPTS", "20"),
    ("ORDO_CARRIER_BREAKER_THRESHOLD", "21"),
    ("ORDO_CARRIER_BREAKER_COOLDOWN_MS", "22"),
    ("ORDO_PICKUP_LEAD_SECS", "23"),
    ("ORDO_RATE_LIMIT_PER_SECOND", "24"),
    ("ORDO_RATE_LIMIT_BURST", "25"),
];

#[test]
fn every_variable_is_read_into_its_field() {
    let listed: Vec<&str> = EVERY_VARIABLE.iter().map(|(name, _)| *name).collect();
    for variable in env::VARIABLES {
        assert!(
            listed.contains(&variable.name),
            "{} untested",
            variable.name
        );
    }
    let c = Config::load(None, env(EVERY_VARIABLE)).unwrap();
    assert_eq!(c.profile, Profile::Staging);
    assert_eq!(c.log_format, LogFormat::Pretty);
    let s = &c.server;
    assert_eq!(
        (s.http_addr, s.grpc_addr, s.admin_addr),
        (addr("0.0.0.0:1"), addr("0.0.0.0:2"), addr("0.0.0.0:3"))
    );
    assert_eq!(s.max_body_bytes, 4);
    assert_eq!(s.request_timeout, Duration::from_millis(5));
    assert_eq!(s.shutdown_drain, Duration::from_secs(6));
    assert_eq!(
        s.cors_allowed_origins,
        ["https://a.example", "https://b.example"]
    );
    assert_eq!(
        c.access.admin_token.as_ref().map(|t| t.expose_secret()),
        Some("token")
    );
    assert_eq!(exposed(&c.access.api_keys), ["k1", "k2"]);
    let l = &c.limits;
    assert_eq!(l.max_in_flight, 7);
    assert_eq!(l.max_connections, Some(8));
    assert_eq!(l.max_connections_per_client, Some(9));
    assert_eq!(l.header_read_timeout, Duration::from_millis(10));
    assert!(!l.shed_adaptive);
    assert_eq!(l.shed_cpu_threshold_permille, 11);
    let st = &c.storage;
    assert_eq!(
        st.database_url.expose_secret(),
        "postgres://ordo:pw@db/ordo"
    );
    assert_eq!(st.database_max_connections, 12);
    assert_eq!(
        st.redis_url.as_ref().map(|u| u.expose_secret()),
        Some("redis://cache:6379")
    );
    assert_eq!(st.redis_namespace, "rns");
    let e = &c.events;
    assert_eq!(
        e.broker_url.as_ref().map(|u| u.expose_secret()),
        Some("nats://mq:4222")
    );
    assert_eq!(e.broker_namespace, "bns");
    assert_eq!(e.outbox_retry_base, Duration::from_millis(13));
    let t = &c.topology;
    assert_eq!(t.roles, [Role::Edge, Role::Workers]);
    assert_eq!(t.discovery_url.as_deref(), Some("etcd://etcd:2379"));
    assert_eq!(t.discovery_namespace, "dns");
    let peers = t.peers();
    assert_eq!(peers["orders"], ["o:1"]);
    assert_eq!(peers["inventory"], ["i:1", "i:2"]);
    assert_eq!(peers["payments"], ["p:1"]);
    assert_eq!(t.grpc_advertise_addr.as_deref(), Some("http://me:50051"));
    assert_eq!(c.orders.pos_offline_window_hours, 14);
    assert_eq!(c.orders.saga_stuck_after, Duration::from_secs(15));
    let p = &c.payments;
    assert_eq!(
        p.webhook_secret.as_ref().map(|s| s.expose_secret()),
        Some("whsec")
    );
    assert_eq!(
        p.sandbox_secret.as_ref().map(|s| s.expose_secret()),
        Some("sbx")
    );
    assert_eq!(p.sandbox_delay, Duration::from_millis(16));
    assert_eq!(p.payment_timeout, Duration::from_secs(17));
    let f = &c.fulfillment;
    assert_eq!(
        f.risk_max_amount,
        [("EUR".to_owned(), 90_000), ("USD".to_owned(), 100_000)].into()
    );
    assert_eq!(
        (f.risk_velocity.count, f.risk_velocity.window_secs),
        (3, 600)
    );
    assert_eq!(
        f.risk_blocked_countries,
        ["DE".to_owned(), "TH".to_owned()].into()
    );
    let emails: Vec<&String> = f.risk_blocked_emails.iter().map(|e| e.expose()).collect();
    assert_eq!(emails, ["a@example.com"]);
    assert_eq!(
        f.carrier_webhook_url.as_ref().map(|u| u.expose_secret()),
        Some("http://carrier:1/push")
    );
    assert_eq!(
        f.carrier_webhook_secret.as_ref().map(|s| s.expose_secret()),
        Some("csec")
    );
    assert_eq!(f.carrier_timeout, Duration::from_millis(18));
    assert_eq!(f.carrier_retry_base, Duration::from_millis(19));
    assert_eq!(f.carrier_max_attempts, 20);
    assert_eq!(f.breaker_threshold, 21);
    assert_eq!(f.breaker_cooldown, Duration::from_millis(22));
    assert_eq!(f.pickup_lead, Duration::from_secs(23));
    assert_eq!(
        c.live.rate_limit,
        Some(RateLimit {
            per_second: 24,
            burst: 25
        })
    );
}

#[test]
fn every_variable_has_a_file_key_and_only_the_live_ones_are_file_only() {
    let keys = file_keys();
    for variable in env::VARIABLES {
        assert!(keys.contains(&variable.key().as_str()), "{}", variable.name);
    }
    assert_eq!(
        layers::file_only_keys(&keys),
        ["log_filter", "trace_sampling_ratio"]
    );
    let mut unique = keys.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), keys.len(), "two sections read one key");
}

#[test]
fn the_file_sets_every_key_and_the_environment_wins_over_it() {
    // The file's syntax: numbers, booleans, an array of API keys, the rest strings.
    let path = file(
        "layers",
        "http_addr = \"127.0.0.1:1\"\nadmin_addr = \"127.0.0.1:2\"\nmax_in_flight = 3\n\
         shed_adaptive = false\napi_keys = [\"file-key\"]\nroles = \"orders\"\n\
         risk_velocity = \"5/50\"\npayment_timeout_secs = 60\nsandbox_secret = \"sbx\"\n",
    );
    let config = Config::load(
        Some(&path),
        env(&[
            ("ORDO_HTTP_ADDR", "127.0.0.1:0"),
            ("ORDO_MAX_IN_FLIGHT", "4"),
            ("ORDO_API_KEYS", "env-key"),
            ("ORDO_PAYMENT_TIMEOUT_SECS", "61"),
        ]),
    )
    .unwrap();
    assert_eq!(config.server.http_addr, addr("127.0.0.1:0"));
    assert_eq!(config.server.admin_addr, addr("127.0.0.1:2"));
    assert_eq!(config.limits.max_in_flight, 4);
    assert!(!config.limits.shed_adaptive);
    assert_eq!(exposed(&config.access.api_keys), ["env-key"]);
    assert_eq!(config.topology.roles, [Role::Orders]);
    assert_eq!(config.fulfillment.risk_velocity.count, 5);
    assert_eq!(config.payments.payment_timeout, Duration::from_secs(61));
    assert_eq!(
        config
            .payments
            .sandbox_secret
            .map(|s| s.expose_secret().to_owned()),
        Some("sbx".to_owned())
    );
    // An empty variable is unset (the file's value stays), except the API keys: set empty,
    // the API is open.
    let config = Config::load(
        Some(&path),
        env(&[("ORDO_HTTP_ADDR", ""), ("ORDO_API_KEYS", "")]),
    )
    .unwrap();
    assert_eq!(config.server.http_addr, addr("127.0.0.1:1"));
    assert!(config.access.api_keys.is_empty());
}

#[test]
fn defaults_follow_the_operating_contract_in_every_profile() {
    let dev = Config::load(None, env(&[])).unwrap();
    let secrets = [("ORDO_ADMIN_TOKEN", "t"), ("ORDO_API_KEYS", "k")];
    for (profile, expected) in [("staging", Profile::Staging), ("prod", Profile::Prod)] {
        let pairs = [&secrets[..], &[("ORDO_PROFILE", profile)]].concat();
        let config = Config::load(None, env(&pairs)).unwrap();
        assert_eq!(config.profile, expected);
        // The same defaults as dev; only the secrets differ.
        let shown = |c: &Config| format!("{:?}", (&c.server, &c.limits, &c.storage, &c.events));
        assert_eq!(shown(&config), shown(&dev));
        assert_eq!(
            format!(
                "{:?}",
                (&config.fulfillment, &config.payments, &config.orders)
            ),
            format!("{:?}", (&dev.fulfillment, &dev.payments, &dev.orders))
        );
    }
    assert_eq!(dev.profile, Profile::Dev);
    assert_eq!(dev.log_format, LogFormat::Json);
    let s = &dev.server;
    assert_eq!(s.http_addr, addr("127.0.0.1:8080"));
    assert_eq!(s.grpc_addr, addr("127.0.0.1:50051"));
    assert_eq!(s.admin_addr, addr("127.0.0.1:9090"));
    assert_eq!(s.max_body_bytes, 65_536);
    assert_eq!(s.request_timeout, Duration::from_secs(10));
    assert_eq!(s.shutdown_drain, Duration::from_secs(10));
    assert!(s.cors_allowed_origins.is_empty());
    assert!(dev.access.admin_token.is_none() && dev.access.api_keys.is_empty());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(dev.limits.max_in_flight, 1024 * cores);
    assert_eq!(dev.limits.max_connections, None);
    assert_eq!(dev.limits.max_connections_per_client, None);
    assert_eq!(dev.limits.header_read_timeout, Duration::from_secs(10));
    assert!(dev.limits.shed_adaptive);
    assert_eq!(dev.limits.shed_cpu_threshold_permille, 900);
    assert_eq!(
        dev.storage.database_url.expose_secret(),
        "sqlite://data/ordo.db"
    );
    assert_eq!(dev.storage.database_max_connections, 16);
    assert!(dev.storage.redis_url.is_none() && dev.events.broker_url.is_none());
    assert_eq!(dev.storage.redis_namespace, "ordo");
    assert_eq!(dev.events.broker_namespace, "ordo");
    assert_eq!(dev.events.outbox_retry_base, Duration::from_millis(100));
    assert_eq!(dev.topology.roles, Role::ALL);
    assert!(dev.topology.peers().is_empty() && dev.topology.discovery_url.is_none());
    assert_eq!(dev.topology.discovery_namespace, "ordo");
    assert_eq!(dev.orders.pos_offline_window_hours, 72);
    assert_eq!(dev.orders.saga_stuck_after, Duration::from_secs(300));
    assert!(dev.payments.webhook_secret.is_none() && dev.payments.sandbox_secret.is_none());
    assert_eq!(dev.payments.sandbox_delay, Duration::ZERO);
    assert_eq!(dev.payments.payment_timeout, Duration::from_secs(900));
    let f = &dev.fulfillment;
    assert!(f.risk_max_amount.is_empty() && f.risk_blocked_countries.is_empty());
    assert_eq!(
        (f.risk_velocity.count, f.risk_velocity.window_secs),
        (1000, 60)
    );
    assert!(f.carrier_webhook_url.is_none() && f.carrier_webhook_secret.is_none());
    assert_eq!(f.carrier_timeout, Duration::from_secs(5));
    assert_eq!(f.carrier_retry_base, Duration::from_millis(200));
    assert_eq!((f.carrier_max_attempts, f.breaker_threshold), (5, 5));
    assert_eq!(f.breaker_cooldown, Duration::from_secs(30));
    assert_eq!(f.pickup_lead, Duration::from_secs(7_200));
    assert_eq!(dev.live, LiveSettings::default());
}

#[test]
fn staging_requires_an_admin_token_and_prod_api_keys_too() {
    for profile in ["staging", "prod"] {
        let err = Config::load(None, env(&[("ORDO_PROFILE", profile)])).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Missing {
                name: "ORDO_ADMIN_TOKEN",
                ..
            }
        ));
    }
    Config::load(
        None,
        env(&[("ORDO_PROFILE", "staging"), ("ORDO_ADMIN_TOKEN", "t")]),
    )
    .unwrap();
    let err = Config::load(
        None,
        env(&[("ORDO_PROFILE", "prod"), ("ORDO_ADMIN_TOKEN", "t")]),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "the prod profile requires ORDO_API_KEYS");
}

/// A value the contract refuses, and a word of the reason.
const BAD_VALUES: &[(&str, &str, &str)] = &[
    ("ORDO_PROFILE", "qa", "not one of dev, staging, prod"),
    ("ORDO_LOG_FORMAT", "xml", "neither \"json\" nor \"pretty\""),
    ("ORDO_HTTP_ADDR", "nope", "not a socket address"),
    ("ORDO_ADMIN_ADDR", "127.0.0.1", "not a socket address"),
    ("ORDO_MAX_IN_FLIGHT", "many", "not a whole number"),
    ("ORDO_REQUEST_TIMEOUT_MS", "-1", "not a whole number"),
    ("ORDO_SHED_ADAPTIVE", "maybe", "neither true nor false"),
    ("ORDO_SHED_CPU_THRESHOLD", "0", "not per mille"),
    ("ORDO_SHED_CPU_THRESHOLD", "1001", "not per mille"),
    ("ORDO_ROLES", "edge,cashier", "not a role"),
    ("ORDO_ROLES", " , ", "names no role"),
    ("ORDO_SAGA_STUCK_AFTER_SECS", "0", "at least 1"),
    ("ORDO_POS_OFFLINE_WINDOW_HOURS", "0", "at least 1"),
    ("ORDO_PAYMENT_TIMEOUT_SECS", "0", "at least 1 second"),
    ("ORDO_RISK_MAX_AMOUNT", "USD", "CURRENCY=minor units"),
    ("ORDO_RISK_MAX_AMOUNT", "USD=-1", "CURRENCY=minor units"),
    ("ORDO_RISK_VELOCITY", "3", "count/seconds"),
    ("ORDO_RISK_VELOCITY", "3/0", "count/seconds"),
    ("ORDO_RATE_LIMIT_PER_SECOND", "0", "from 1 to"),
    ("ORDO_RATE_LIMIT_PER_SECOND", "-3", "not a whole number"),
    ("ORDO_RATE_LIMIT_PER_SECOND", "1.5", "not a whole number"),
    (
        "ORDO_RATE_LIMIT_BURST",
        "7",
        "without ORDO_RATE_LIMIT_PER_SECOND",
    ),
];

#[test]
fn a_bad_value_is_refused_with_its_variable_named() {
    for &(name, bad, reason) in BAD_VALUES {
        let err = Config::load(None, env(&[(name, bad)])).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("{name} is not valid: ")) && message.contains(reason),
            "{name}={bad}: {message}"
        );
    }
}

#[test]
fn a_bad_value_in_the_file_names_the_variable_too() {
    for (text, name, reason) in [
        (
            "http_addr = \"nope\"",
            "ORDO_HTTP_ADDR",
            "not a socket address",
        ),
        ("http_addr = 8080", "ORDO_HTTP_ADDR", "invalid type"),
        (
            "payment_timeout_secs = 0",
            "ORDO_PAYMENT_TIMEOUT_SECS",
            "at least 1",
        ),
        ("max_in_flight = -1", "ORDO_MAX_IN_FLIGHT", "invalid value"),
        ("rate_limit_burst = 3", "ORDO_RATE_LIMIT_BURST", "without"),
        (
            "trace_sampling_ratio = 2.0",
            "trace_sampling_ratio",
            "not in [0, 1]",
        ),
    ] {
        let path = file("bad-file", text);
        let message = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{name} is not valid: ")) && message.contains(reason),
            "{text}: {message}"
        );
    }
}

#[test]
fn unknown_file_keys_and_bad_toml_are_refused() {
    for text in [
        "htp_addr = \"127.0.0.1:1\"\n",
        "http_addr = \n",
        "[server]\nx = 1\n",
    ] {
        let path = file("unknown", text);
        let result = Config::load(Some(&path), env(&[]));
        assert!(
            matches!(result, Err(ConfigError::Parse { .. })),
            "{text}: {result:?}"
        );
    }
}

#[test]
fn debug_output_shows_no_secret_and_no_blocked_email() {
    let config = Config::load(
        None,
        env(&[
            ("ORDO_ADMIN_TOKEN", "admin-s3cret"),
            ("ORDO_API_KEYS", "key-s3cret"),
            ("ORDO_PAYMENT_WEBHOOK_SECRET", "hook-s3cret"),
            ("ORDO_SANDBOX_SECRET", "sandbox-s3cret"),
            ("ORDO_CARRIER_WEBHOOK_SECRET", "carrier-s3cret"),
            (
                "ORDO_CARRIER_WEBHOOK_URL",
                "http://u:url-s3cret@carrier/push",
            ),
            ("ORDO_RISK_BLOCKED_EMAILS", "s3cret@example.com"),
            ("ORDO_DATABASE_URL", "postgres://ordo:db-s3cret@db/ordo"),
            ("ORDO_REDIS_URL", "redis://:redis-s3cret@cache:6379"),
            ("ORDO_BROKER_URL", "amqp://guest:mq-s3cret@mq:5672/%2f"),
        ]),
    )
    .unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("postgres://ordo:***@db/ordo"), "{shown}");
    assert!(shown.contains("admin_token: Some(***)"), "{shown}");
    assert!(shown.contains("[personal]"), "{shown}");
    let pretty = format!("{config:#?}");
    assert!(!pretty.contains("s3cret"), "{pretty}");
}

#[test]
fn live_settings_are_read_again_from_the_file() {
    let path = file("live", "log_filter = \"warn\"\n");
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
    // Keys other than the live ones may be in the file; a reload leaves them alone.
    std::fs::write(&path, "http_addr = \"nope\"\nlog_filter = \"info\"\n").unwrap();
    assert_eq!(
        config.reload_live().unwrap().unwrap().log_filter.as_deref(),
        Some("info")
    );
    std::fs::write(&path, "trace_sampling_ratio = 2.0\n").unwrap();
    assert!(config.reload_live().is_err());
    std::fs::write(&path, "log_fliter = \"x\"\n").unwrap();
    assert!(config.reload_live().is_err());
    let without_file = Config::load(None, env(&[])).unwrap();
    assert_eq!(without_file.reload_live().unwrap(), None);
}

#[test]
fn rate_limits_come_from_env_or_file_and_a_reload_takes_the_file() {
    let config = Config::load(None, env(&[("ORDO_RATE_LIMIT_PER_SECOND", "5")])).unwrap();
    assert_eq!(
        config.live.rate_limit,
        Some(RateLimit {
            per_second: 5,
            burst: 5
        })
    );
    let path = file(
        "rate",
        "rate_limit_per_second = 10\nrate_limit_burst = 20\n",
    );
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
fn zero_means_the_default_or_the_bound_where_the_contract_says_so() {
    let config = Config::load(
        None,
        env(&[
            ("ORDO_MAX_IN_FLIGHT", "0"),
            ("ORDO_MAX_CONNECTIONS", "0"),
            ("ORDO_HEADER_READ_TIMEOUT_MS", "0"),
            ("ORDO_DATABASE_MAX_CONNECTIONS", "0"),
            ("ORDO_OUTBOX_RETRY_BASE_MS", "99999"),
            ("ORDO_CARRIER_TIMEOUT_MS", "0"),
            ("ORDO_CARRIER_MAX_ATTEMPTS", "1000"),
            ("ORDO_CARRIER_BREAKER_THRESHOLD", "0"),
        ]),
    )
    .unwrap();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(config.limits.max_in_flight, 1024 * cores);
    assert_eq!(config.limits.max_connections, None);
    assert_eq!(config.limits.header_read_timeout, Duration::from_secs(10));
    assert_eq!(config.storage.database_max_connections, 1);
    assert_eq!(config.events.outbox_retry_base, Duration::from_secs(10));
    assert_eq!(config.fulfillment.carrier_timeout, Duration::from_millis(1));
    assert_eq!(config.fulfillment.carrier_max_attempts, 100);
    assert_eq!(config.fulfillment.breaker_threshold, 1);
}

#[test]
fn roles_parse_and_default_to_everything_in_one_process() {
    assert_eq!(Role::parse_list("all").unwrap(), Role::ALL);
    assert_eq!(
        Role::parse_list(" orders, edge ,orders").unwrap(),
        [Role::Edge, Role::Orders]
    );
    for bad in ["", " , ", "edge,cashier"] {
        assert!(Role::parse_list(bad).is_err(), "{bad:?}");
    }
}
