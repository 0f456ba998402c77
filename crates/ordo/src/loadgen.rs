//! `ordo loadgen`: drives a running instance over its REST API and prints a latency summary.
//!
//! Each of `--concurrency` workers loops: create an order (one unit of one of the load
//! generator's SKUs, a customer of its own), optionally pay it with the sandbox provider
//! (`--pay`) and optionally wait for it to reach a terminal status (`--follow`). The time from
//! payment to the terminal status is read from the order's timeline (server clock, millisecond
//! precision), so the polling interval does not distort it.
//!
//! The summary goes to stdout, the progress bar to stderr (only when stderr is a terminal).
//! The command fails (non-zero exit) when any request got a 5xx answer or a transport error
//! (connection refused, reset, timeout), or when a followed order did not finish in time.

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ordo_domain::order::OrderStatus;
use ordo_domain::timeline::TimelineKind;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The warehouse `--seed` creates (and orders draw from).
const WAREHOUSE: &str = "LOADGEN-WH";
/// Stock per SKU set by `--seed`: enough for any run.
const SEED_ON_HAND: i64 = 1_000_000_000;
/// The first wait between two polls of a followed order; it doubles up to `--poll-interval`.
const FIRST_POLL: Duration = Duration::from_millis(20);

/// Load generator: creates orders on a running ordo (and optionally pays them and follows them
/// through the fulfillment pipeline), with a progress bar and a latency summary.
///
/// Exits non-zero when any request got a 5xx or a transport error (refused, reset, timed out),
/// or a followed order did not reach a terminal status within --follow-timeout.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// Base URL of the instance's REST API.
    #[arg(long, default_value = "http://127.0.0.1:8080", value_name = "URL")]
    pub target: String,

    /// An API key of the instance (`ORDO_API_KEYS`), sent as `x-api-key`.
    #[arg(long, env = "ORDO_API_KEY", value_name = "KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// How many orders to create (ignored when --duration is given).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub orders: u64,

    /// Create orders for this long instead of a fixed count, e.g. `30s`, `2m`, `500ms`.
    /// Orders in flight when it ends are finished (and followed) before the summary.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "orders")]
    pub duration: Option<Duration>,

    /// Orders in flight at once (one worker each; HTTP connections are pooled).
    #[arg(long, default_value_t = 32, value_name = "C",
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub concurrency: u64,

    /// Create the load generator's catalogue first: warehouse LOADGEN-WH (TH) and products
    /// LOADGEN-0.. with ample stock, by idempotent PUTs. On by default.
    #[arg(long, overrides_with = "no_seed")]
    pub seed: bool,

    /// Do not seed: use the catalogue an earlier run created.
    #[arg(long, overrides_with = "seed")]
    pub no_seed: bool,

    /// How many SKUs to spread the orders over.
    #[arg(long, default_value_t = 20, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub skus: u32,

    /// Pay each created order with the sandbox provider (POST /v1/orders/{id}/payments).
    #[arg(long)]
    pub pay: bool,

    /// After paying, poll each order until it is shipped, cancelled, rejected or
    /// fulfillment_failed, and report the paid→terminal latency from its timeline.
    #[arg(long, requires = "pay")]
    pub follow: bool,

    /// Longest wait between two polls of a followed order (polls start at 20 ms and double).
    #[arg(long, default_value = "500ms", value_name = "DURATION", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// How long a followed order may take, from its payment, to reach a terminal status.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_duration)]
    pub follow_timeout: Duration,

    /// Play POS terminals instead of shoppers: each unit of work is a batch of --pos-sales
    /// offline sales (`POST /v1/pos/batches`) from one of --concurrency terminals; every 10th
    /// batch is sent twice (the replay must get the same answer) and every 25th is left out
    /// (the terminal's next batches must report it missing).
    #[arg(long, conflicts_with = "pay")]
    pub pos: bool,

    /// Sales per POS batch (1 to 500).
    #[arg(long, default_value_t = 100, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=500))]
    pub pos_sales: u64,

    /// Timeout of each HTTP request.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

impl LoadgenArgs {
    fn seeding(&self) -> bool {
        !self.no_seed
    }
}

/// Parses a duration flag: an integer with a unit `ms`, `s`, `m` or `h` (a bare integer is
/// seconds). Zero is refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "`{text}` is not a duration: expected a number and a unit, e.g. 30s, 500ms, 2m"
        ));
    }
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: the number is too large"))?;
    let duration = match unit.trim() {
        "ms" => Duration::from_millis(value),
        "" | "s" => Duration::from_secs(value),
        "m" | "min" => Duration::from_secs(value.saturating_mul(60)),
        "h" => Duration::from_secs(value.saturating_mul(3600)),
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (use ms, s, m or h)"
            ));
        }
    };
    if duration.is_zero() {
        return Err("a duration must be greater than zero".to_owned());
    }
    Ok(duration)
}

/// The nearest-rank percentile (`p` in 0..=100) of ascending `sorted` values; `None` if empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The time from the `payment_succeeded` event to the last terminal event of a timeline
/// (`{"events": [{"at", "type", ...}]}`), and that terminal event's type.
pub fn paid_to_terminal(timeline: &Value) -> Option<(Duration, String)> {
    let events = timeline["events"].as_array()?;
    let at = |event: &Value| -> Option<time::OffsetDateTime> {
        time::OffsetDateTime::parse(
            event["at"].as_str()?,
            &time::format_description::well_known::Rfc3339,
        )
        .ok()
    };
    let kind = |event: &Value| TimelineKind::parse(event["type"].as_str()?).ok();
    let paid = events
        .iter()
        .find(|e| kind(e) == Some(TimelineKind::PaymentSucceeded))
        .and_then(at)?;
    let terminal = events
        .iter()
        .rev()
        .find(|e| kind(e).is_some_and(TimelineKind::ends_order))?;
    let elapsed = at(terminal)? - paid;
    let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
    Some((elapsed, terminal["type"].as_str().unwrap_or("").to_owned()))
}

/// The operations whose answers are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Seed,
    Create,
    Pay,
    Poll,
    Timeline,
    PosBatch,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Seed => "seed",
            Op::Create => "create",
            Op::Pay => "pay",
            Op::Poll => "poll",
            Op::Timeline => "timeline",
            Op::PosBatch => "pos batch",
        }
    }
}

/// What one worker saw; merged at the end.
#[derive(Debug, Default)]
struct Stats {
    /// (operation, HTTP status or `transport error`) → count.
    answers: BTreeMap<(Op, String), u64>,
    /// Final order status → count (`create failed`, `pay failed`, `timed out` for the rest).
    finals: BTreeMap<String, u64>,
    create: Vec<Duration>,
    pay: Vec<Duration>,
    paid_to_terminal: Vec<Duration>,
    pos_batch: Vec<Duration>,
    /// POS sales by outcome (`accepted`, `duplicate`, `rejected`).
    pos_sales: BTreeMap<String, u64>,
    /// Requests that got a 5xx or a transport error, and followed orders that timed out.
    failures: u64,
    /// The first few failure descriptions, for the summary.
    examples: Vec<String>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        for (key, count) in other.answers {
            *self.answers.entry(key).or_default() += count;
        }
        for (key, count) in other.finals {
            *self.finals.entry(key).or_default() += count;
        }
        self.create.extend(other.create);
        self.pay.extend(other.pay);
        self.paid_to_terminal.extend(other.paid_to_terminal);
        self.pos_batch.extend(other.pos_batch);
        for (key, count) in other.pos_sales {
            *self.pos_sales.entry(key).or_default() += count;
        }
        self.failures += other.failures;
        for example in other.examples {
            if self.examples.len() < 5 {
                self.examples.push(example);
            }
        }
    }

    fn final_status(&mut self, status: &str) {
        *self.finals.entry(status.to_owned()).or_default() += 1;
    }

    fn failure(&mut self, description: String) {
        self.failures += 1;
        if self.examples.len() < 5 {
            self.examples.push(description);
        }
    }
}

/// Shared by the workers.
struct Shared {
    args: LoadgenArgs,
    client: reqwest::Client,
    base: String,
    run_id: String,
    next: AtomicU64,
    /// Orders finished (whatever their outcome).
    done: AtomicU64,
    stop: AtomicBool,
    /// With `--duration`: when to stop taking new orders (set once seeding is done).
    deadline: std::sync::OnceLock<Instant>,
    errors: AtomicU64,
    progress: ProgressBar,
}

/// One answer: status and parsed body (`Null` when not JSON).
struct Answer {
    status: u16,
    body: Value,
}

impl Shared {
    /// Sends a request, counts its answer under `op`, and records 5xx and transport errors.
    async fn send(
        &self,
        stats: &mut Stats,
        op: Op,
        request: reqwest::RequestBuilder,
    ) -> Option<Answer> {
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                *stats.answers.entry((op, status.to_string())).or_default() += 1;
                let body = response.json::<Value>().await.unwrap_or(Value::Null);
                if status >= 500 {
                    let code = body["error"]["code"].as_str().unwrap_or("?").to_owned();
                    stats.failure(format!("{}: HTTP {status} ({code})", op.name()));
                    self.count_error();
                }
                Some(Answer { status, body })
            }
            Err(error) => {
                *stats
                    .answers
                    .entry((op, "transport error".to_owned()))
                    .or_default() += 1;
                stats.failure(format!("{}: {}", op.name(), describe_error(&error)));
                self.count_error();
                None
            }
        }
    }

    fn count_error(&self) {
        let errors = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
        self.progress.set_message(format!("errors: {errors}"));
    }

    /// The next order number, or `None` when the run is over.
    fn take(&self) -> Option<u64> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        if let Some(deadline) = self.deadline.get() {
            if Instant::now() >= *deadline {
                return None;
            }
            return Some(self.next.fetch_add(1, Ordering::Relaxed));
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (n < self.args.orders).then_some(n)
    }

    fn order_body(&self, n: u64) -> Value {
        json!({
            "customer_id": format!("loadgen-{}-{n}", self.run_id),
            "currency": "USD",
            "items": [{ "sku": format!("LOADGEN-{}", n % u64::from(self.args.skus)), "quantity": 1 }],
            "shipping_address": {
                "name": "Load Generator",
                "line1": "1 Benchmark Road",
                "city": "Bangkok",
                "postal_code": "10110",
                "country": "TH"
            },
            "contact": { "email": "loadgen@example.com", "phone": "+66000000000" }
        })
    }

    /// Batch number `n`: terminal `n % concurrency`, its batch `n / concurrency + 1`.
    async fn one_pos_batch(&self, stats: &mut Stats, n: u64) {
        let terminals = self.args.concurrency;
        let (terminal, seq) = (n % terminals, n / terminals + 1);
        // A batch lost on its way: the terminal's next answers must name it.
        if seq % 25 == 0 {
            stats.final_status("pos batch left out");
            return;
        }
        let sold_at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let sales: Vec<Value> = (0..self.args.pos_sales)
            .map(|i| {
                json!({
                    "client_sale_id": format!("{seq}-{i}"),
                    "sold_at": sold_at,
                    "currency": "USD",
                    "items": [{ "sku": format!("LOADGEN-{}", (n + i) % u64::from(self.args.skus)), "quantity": 1 }],
                    "payment": { "method": if i % 2 == 0 { "cash" } else { "card_offline" },
                                 "amount": { "amount_minor": 1999, "currency": "USD" } },
                })
            })
            .collect();
        let body = json!({
            "terminal_id": format!("loadgen-{}-{terminal}", self.run_id),
            "warehouse": WAREHOUSE,
            "batch_seq": seq,
            "sales": sales,
        });
        let started = Instant::now();
        let request = self
            .client
            .post(format!("{}/v1/pos/batches", self.base))
            .json(&body);
        let Some(answer) = self
            .send(stats, Op::PosBatch, request)
            .await
            .filter(|a| a.status == 200)
        else {
            stats.final_status("pos batch failed");
            return;
        };
        stats.pos_batch.push(started.elapsed());
        for result in answer.body["results"].as_array().into_iter().flatten() {
            let outcome = result["outcome"].as_str().unwrap_or("?").to_owned();
            *stats.pos_sales.entry(outcome).or_default() += 1;
        }
        let missing = answer.body["missing_batch_seqs"]
            .as_array()
            .map_or(0, Vec::len);
        if seq > 25 && missing == 0 {
            stats.failure(format!(
                "pos: batch {seq} of terminal {terminal} reports no gap"
            ));
            self.count_error();
        }
        if seq % 10 == 0 {
            let request = self
                .client
                .post(format!("{}/v1/pos/batches", self.base))
                .json(&body);
            if let Some(replay) = self.send(stats, Op::PosBatch, request).await
                && replay.body != answer.body
            {
                stats.failure(format!("pos: the replay of batch {seq} got another answer"));
                self.count_error();
            }
        }
        stats.final_status("pos batch recorded");
    }

    /// Creates, pays and follows order number `n`.
    async fn one_order(&self, stats: &mut Stats, n: u64) {
        if self.args.pos {
            return self.one_pos_batch(stats, n).await;
        }
        let started = Instant::now();
        let request = self
            .client
            .post(format!("{}/v1/orders", self.base))
            .json(&self.order_body(n));
        let created = self.send(stats, Op::Create, request).await;
        let Some(created) = created.filter(|a| a.status == 201) else {
            stats.final_status("create failed");
            return;
        };
        stats.create.push(started.elapsed());
        let Some(id) = created.body["id"].as_str().map(str::to_owned) else {
            stats.failure("create: 201 without an order id".to_owned());
            stats.final_status("create failed");
            return;
        };
        if !self.args.pay {
            let status = created.body["status"].as_str().unwrap_or("?");
            stats.final_status(status);
            return;
        }

        let started = Instant::now();
        let request = self
            .client
            .post(format!("{}/v1/orders/{id}/payments", self.base))
            .json(&json!({}));
        let paid = self.send(stats, Op::Pay, request).await;
        if paid.as_ref().is_none_or(|a| a.status != 201) {
            stats.final_status("pay failed");
            return;
        }
        stats.pay.push(started.elapsed());
        if !self.args.follow {
            stats.final_status("payment requested");
            return;
        }

        let give_up = Instant::now() + self.args.follow_timeout;
        let mut wait = FIRST_POLL;
        let status = loop {
            tokio::time::sleep(wait.min(give_up.saturating_duration_since(Instant::now()))).await;
            wait = (wait * 2).min(self.args.poll_interval);
            let request = self.client.get(format!("{}/v1/orders/{id}", self.base));
            if let Some(answer) = self.send(stats, Op::Poll, request).await
                && answer.status == 200
            {
                let status = answer.body["status"].as_str().unwrap_or("").to_owned();
                // Statuses an order never leaves: the domain's own list, not a copy.
                if OrderStatus::parse(&status).is_ok_and(OrderStatus::is_terminal) {
                    break status;
                }
            }
            if Instant::now() >= give_up {
                stats.failure(format!(
                    "follow: order {id} not terminal after {:?}",
                    self.args.follow_timeout
                ));
                self.count_error();
                stats.final_status("timed out");
                return;
            }
        };
        stats.final_status(&status);

        let request = self
            .client
            .get(format!("{}/v1/orders/{id}/timeline", self.base));
        if let Some(answer) = self.send(stats, Op::Timeline, request).await
            && answer.status == 200
            && let Some((elapsed, _)) = paid_to_terminal(&answer.body)
        {
            stats.paid_to_terminal.push(elapsed);
        }
    }
}

fn describe_error(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    };
    let mut text = format!("{kind}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Creates the load generator's warehouse, products and stock (PUTs: idempotent).
async fn seed(shared: &Shared, stats: &mut Stats) -> anyhow::Result<()> {
    let base = &shared.base;
    let mut requests = vec![
        shared
            .client
            .put(format!("{base}/v1/warehouses/{WAREHOUSE}"))
            .json(&json!({ "country": "TH" })),
    ];
    for i in 0..shared.args.skus {
        requests.push(
            shared
                .client
                .put(format!("{base}/v1/products/LOADGEN-{i}"))
                .json(&json!({
                    "name": format!("Load generator product {i}"),
                    "price": { "amount_minor": 1999, "currency": "USD" }
                })),
        );
        requests.push(
            shared
                .client
                .put(format!("{base}/v1/stock/LOADGEN-{i}/{WAREHOUSE}"))
                .json(&json!({ "on_hand": SEED_ON_HAND })),
        );
    }
    for request in requests {
        let answer = shared.send(stats, Op::Seed, request).await;
        match answer {
            Some(a) if (200..300).contains(&a.status) => {}
            Some(a) => bail!(
                "seeding the catalogue failed: HTTP {} {}",
                a.status,
                a.body["error"]
            ),
            None => bail!(
                "seeding the catalogue failed: {}",
                stats.examples.last().map_or("", String::as_str)
            ),
        }
    }
    Ok(())
}

/// Runs the load generator; the summary goes to stdout.
pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    let base = args.target.trim_end_matches('/').to_owned();
    if !base.starts_with("http://") && !base.starts_with("https://") {
        bail!("--target must be an http:// URL, got `{}`", args.target);
    }
    let concurrency = usize::try_from(args.concurrency).unwrap_or(usize::MAX);
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = &args.api_key {
        let mut value = reqwest::header::HeaderValue::from_str(key)
            .context("--api-key must be visible ASCII")?;
        value.set_sensitive(true);
        headers.insert("x-api-key", value);
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(args.request_timeout)
        .connect_timeout(args.request_timeout.min(Duration::from_secs(5)))
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()
        .context("cannot build the HTTP client")?;

    let progress = match args.duration {
        Some(duration) => {
            let bar = ProgressBar::new(duration.as_secs().max(1));
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {elapsed_precise} {wide_bar} {prefix}  {msg}",
                )
                // The template is a literal; a mistake in it shows as the plain default bar.
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        }
        None => {
            let bar = ProgressBar::new(args.orders);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {elapsed_precise} {wide_bar} {pos}/{len} orders  {per_sec}  {msg}",
                )
                // The template is a literal; a mistake in it shows as the plain default bar.
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        }
    };
    progress.enable_steady_tick(Duration::from_millis(200));

    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros()
    );
    let shared = Arc::new(Shared {
        client,
        base: base.clone(),
        run_id,
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        deadline: std::sync::OnceLock::new(),
        errors: AtomicU64::new(0),
        progress: progress.clone(),
        args: args.clone(),
    });

    let mut total = Stats::default();
    if args.seeding() {
        progress.set_message("seeding the catalogue");
        if let Err(error) = seed(&shared, &mut total).await {
            progress.finish_and_clear();
            return Err(error);
        }
    }

    // The clock of the run starts after seeding.
    let started = Instant::now();
    if let Some(duration) = args.duration {
        let _ = shared.deadline.set(started + duration);
    }
    progress.set_prefix("0");
    progress.set_message(format!("errors: {}", shared.errors.load(Ordering::Relaxed)));
    progress.reset_elapsed();
    {
        // Ctrl-C: stop taking new orders, finish those in flight, print the summary.
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                shared.stop.store(true, Ordering::Relaxed);
                shared
                    .progress
                    .println("interrupted: finishing the orders in flight");
            }
        });
    }
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let shared = Arc::clone(&shared);
        workers.push(tokio::spawn(async move {
            let mut stats = Stats::default();
            while let Some(n) = shared.take() {
                shared.one_order(&mut stats, n).await;
                let done = shared.done.fetch_add(1, Ordering::Relaxed) + 1;
                match shared.deadline.get().copied() {
                    None => shared.progress.inc(1),
                    Some(deadline) => {
                        // The bar measures time; the prefix counts orders.
                        let left = deadline.saturating_duration_since(Instant::now()).as_secs();
                        let length = shared.progress.length().unwrap_or(0);
                        shared.progress.set_position(length.saturating_sub(left));
                        let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
                        shared
                            .progress
                            .set_prefix(format!("{done} orders, {rate:.1}/s"));
                    }
                }
            }
            stats
        }));
    }
    for worker in workers {
        total.merge(worker.await.context("a load generator worker panicked")?);
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();

    print!("{}", summary(&args, &base, &mut total, elapsed));
    if total.failures > 0 {
        bail!(
            "{} failure(s): 5xx answers, transport errors or followed orders that timed out",
            total.failures
        );
    }
    Ok(())
}

/// The human-readable summary.
fn summary(args: &LoadgenArgs, base: &str, stats: &mut Stats, elapsed: Duration) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let orders: u64 = stats.finals.values().sum();
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let _ = writeln!(
        out,
        "ordo loadgen: {orders} orders against {base} in {seconds:.2} s, concurrency {}{}{}",
        args.concurrency,
        if args.pay { ", paid" } else { "" },
        if args.follow { ", followed" } else { "" },
    );
    let created = stats.create.len() as f64;
    if args.pos {
        let sales: u64 = stats.pos_sales.values().sum();
        let _ = writeln!(
            out,
            "throughput: {:.1} POS batches/s, {:.1} sales/s ({} sales per batch)",
            stats.pos_batch.len() as f64 / seconds,
            sales as f64 / seconds,
            args.pos_sales
        );
        let _ = writeln!(out, "POS sales by outcome: {:?}", stats.pos_sales);
    } else {
        let _ = writeln!(out, "throughput: {:.1} orders/s created", created / seconds);
    }
    if args.follow {
        let shipped = stats
            .finals
            .get(OrderStatus::Shipped.as_str())
            .copied()
            .unwrap_or(0) as f64;
        let _ = writeln!(
            out,
            "            {:.1} orders/s shipped (paid and followed to shipped, whole run)",
            shipped / seconds
        );
    }
    let _ = writeln!(out, "\nHTTP answers:");
    for ((op, status), count) in &stats.answers {
        let _ = writeln!(out, "  {:<10} {status}: {count}", op.name());
    }
    let _ = writeln!(out, "\nfinal order status:");
    for (status, count) in &stats.finals {
        let _ = writeln!(out, "  {status}: {count}");
    }
    let _ = writeln!(
        out,
        "\nlatency                      count       p50       p90       p99       max"
    );
    let mut rows: Vec<(&str, &mut Vec<Duration>)> = vec![("create (client)", &mut stats.create)];
    if args.pos {
        rows = vec![("pos batch (client)", &mut stats.pos_batch)];
    }
    if args.pay {
        rows.push(("pay (client)", &mut stats.pay));
    }
    if args.follow {
        rows.push(("paid→terminal (server)", &mut stats.paid_to_terminal));
    }
    for (label, samples) in rows {
        samples.sort_unstable();
        let cell = |p: f64| percentile(samples, p).map_or("-".to_owned(), format_duration);
        let _ = writeln!(
            out,
            "  {label:<24} {:>7} {:>9} {:>9} {:>9} {:>9}",
            samples.len(),
            cell(50.0),
            cell(90.0),
            cell(99.0),
            cell(100.0),
        );
    }
    if stats.failures > 0 {
        let _ = writeln!(out, "\nfailures: {}", stats.failures);
        for example in &stats.examples {
            let _ = writeln!(out, "  {example}");
        }
    }
    out
}

fn format_duration(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 10_000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples = ms(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&samples, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&samples, 90.0), Some(Duration::from_millis(90)));
        assert_eq!(percentile(&samples, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(
            percentile(&samples, 100.0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(percentile(&samples, 0.0), Some(Duration::from_millis(1)));
    }

    #[test]
    fn percentiles_of_small_and_empty_samples() {
        assert_eq!(percentile(&[], 50.0), None);
        let one = ms(&[7]);
        assert_eq!(percentile(&one, 50.0), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&one, 99.0), Some(Duration::from_millis(7)));
        let three = ms(&[1, 2, 30]);
        assert_eq!(percentile(&three, 50.0), Some(Duration::from_millis(2)));
        assert_eq!(percentile(&three, 90.0), Some(Duration::from_millis(30)));
        let ten = ms(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(percentile(&ten, 99.0), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&ten, 90.0), Some(Duration::from_millis(9)));
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 5 s "), Ok(Duration::from_secs(5)));
    }

    #[test]
    fn bad_durations_are_refused() {
        for text in [
            "",
            "s",
            "0s",
            "0",
            "-1s",
            "1.5s",
            "10x",
            "ms5",
            "99999999999999999999999s",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn paid_to_terminal_reads_the_server_timeline() {
        let timeline = json!({ "events": [
            { "at": "2026-11-21T10:00:00.000Z", "type": "order_created" },
            { "at": "2026-11-21T10:00:00.100Z", "type": "payment_requested" },
            { "at": "2026-11-21T10:00:00.250Z", "type": "payment_succeeded" },
            { "at": "2026-11-21T10:00:00.300Z", "type": "risk_approved" },
            { "at": "2026-11-21T10:00:01.045Z", "type": "shipped" },
        ]});
        assert_eq!(
            paid_to_terminal(&timeline),
            Some((Duration::from_millis(795), "shipped".to_owned()))
        );
        let rejected = json!({ "events": [
            { "at": "2026-11-21T10:00:00.250Z", "type": "payment_succeeded" },
            { "at": "2026-11-21T10:00:00.260Z", "type": "payment_refunded" },
            { "at": "2026-11-21T10:00:00.270Z", "type": "order_rejected" },
        ]});
        assert_eq!(
            paid_to_terminal(&rejected),
            Some((Duration::from_millis(20), "order_rejected".to_owned()))
        );
        let unpaid = json!({ "events": [
            { "at": "2026-11-21T10:00:00.000Z", "type": "order_created" },
            { "at": "2026-11-21T10:00:05.000Z", "type": "order_cancelled" },
        ]});
        assert_eq!(paid_to_terminal(&unpaid), None);
        assert_eq!(paid_to_terminal(&json!({})), None);
    }

    #[test]
    fn the_command_line_parses() {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: LoadgenArgs,
        }
        let parsed = Wrapper::try_parse_from(["x"]).unwrap().args;
        assert_eq!(parsed.orders, 1000);
        assert_eq!(parsed.concurrency, 32);
        assert!(parsed.seeding() && !parsed.pay && !parsed.follow);
        let parsed =
            Wrapper::try_parse_from(["x", "--no-seed", "--pay", "--follow", "--duration", "2m"])
                .unwrap()
                .args;
        assert!(!parsed.seeding() && parsed.pay && parsed.follow);
        assert_eq!(parsed.duration, Some(Duration::from_secs(120)));
        assert!(
            Wrapper::try_parse_from(["x", "--follow"]).is_err(),
            "--follow needs --pay"
        );
        assert!(Wrapper::try_parse_from(["x", "--orders", "5", "--duration", "1s"]).is_err());
        assert!(Wrapper::try_parse_from(["x", "--concurrency", "0"]).is_err());
        let parsed = Wrapper::try_parse_from(["x", "--no-seed", "--seed"])
            .unwrap()
            .args;
        assert!(parsed.seeding());
    }
}
