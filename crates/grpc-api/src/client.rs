//! Calling another role over gRPC, when roles run apart: one [`RoleChannel`] per role, and the
//! faces of `ordo_service::ports` implemented over it ([`RemoteCatalog`], [`RemoteOrders`],
//! [`RemotePayments`]), so the REST and gRPC front ends serve a split deployment unchanged.
//!
//! A `RoleChannel` balances (power of two choices, tower's balancer inside tonic) across the
//! instances discovery reports for the role, keeping in the set only those whose standard
//! health check answers SERVING (probed every [`PROBE_INTERVAL`]; one failed probe takes an
//! instance out, a good one puts it back). Every call:
//! - runs in a CLIENT span whose context goes out as `traceparent` (the propagation module),
//! - carries what is left of the caller's deadline as `grpc-timeout` (`ordo_service::deadline`;
//!   [`DEFAULT_TIMEOUT`] outside a call) and is bounded by it here too,
//! - carries the API key, when ordo has keys,
//! - is retried on UNAVAILABLE with backoff and jitter — only when it is idempotent (reads,
//!   PUTs, a create with an idempotency key), and never past the deadline,
//! - is measured in `rpc_client_duration_seconds` (all attempts together).
//!
//! A remote error comes back as the same `ordo_domain::Error` (kind from `ordo-error-code`,
//! message, field violations), so the edge answers exactly what the owning role answered.

use crate::error::{ERROR_CODE_KEY, kind_of};
use crate::pb;
use crate::pb::catalog_service_client::CatalogServiceClient;
use crate::pb::customers_service_client::CustomersServiceClient;
use crate::pb::orders_service_client::OrdersServiceClient;
use crate::pb::payments_service_client::PaymentsServiceClient;
use crate::pb::pos_service_client::PosServiceClient;
use async_trait::async_trait;
use ordo_discovery::{Instance, Members};
use ordo_domain::error::FieldViolation;
use ordo_domain::{Error, ErrorKind, Result};
use ordo_service::api::*;
use ordo_service::ports::{CatalogApi, OrdersApi, PaymentsApi};
use ordo_service::{Created, PaymentCreated};
use ordo_telemetry::metrics::{self, RpcLabels, TraceExemplar};
use ordo_telemetry::{conventions, propagation};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;
use tracing::{Instrument, field};

/// How often each instance's health is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// The bound of a call made outside any request (no deadline to inherit).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of an idempotent call that keeps meeting UNAVAILABLE.
const MAX_ATTEMPTS: u32 = 4;
/// Bound of one health probe and of connecting to an instance.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The instances of one role, balanced, health-checked.
#[derive(Clone)]
pub struct RoleChannel {
    role: &'static str,
    channel: Channel,
    healthy: Arc<AtomicUsize>,
    api_key: Option<AsciiMetadataValue>,
}

impl RoleChannel {
    /// Follows `members` until `stop` is cancelled. `api_key`: sent as `x-api-key`.
    pub fn new(
        role: &'static str,
        members: Members,
        api_key: Option<&str>,
        stop: CancellationToken,
    ) -> RoleChannel {
        let (channel, changes) = Channel::balance_channel::<String>(64);
        let healthy = Arc::new(AtomicUsize::new(0));
        tokio::spawn(follow_members(
            role,
            members,
            changes,
            Arc::clone(&healthy),
            stop,
        ));
        RoleChannel {
            role,
            channel,
            healthy,
            api_key: api_key.and_then(|k| k.parse().ok()),
        }
    }

    /// Instances of the role currently in the balancer.
    pub fn healthy_instances(&self) -> usize {
        self.healthy.load(Ordering::Relaxed)
    }

    fn ready(&self) -> Result<()> {
        if self.healthy_instances() > 0 {
            Ok(())
        } else {
            Err(Error::unavailable(format!(
                "no healthy instance of the {} role",
                self.role
            )))
        }
    }

    /// One logical call: attempts (retried on UNAVAILABLE when `idempotent`), each in a CLIENT
    /// span, under the caller's deadline.
    async fn call<M, R, F, Fut>(
        &self,
        method: RpcMethod,
        message: M,
        metadata: &[(&'static str, &str)],
        send: F,
    ) -> Result<tonic::Response<R>>
    where
        M: Clone,
        F: Fn(Channel, tonic::Request<M>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now()
            + ordo_service::deadline::remaining().unwrap_or(DEFAULT_TIMEOUT);
        let mut attempt = 0;
        let (result, code, exemplar) = loop {
            attempt += 1;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let span = tracing::info_span!(
                "rpc.client",
                otel.name = method.full,
                otel.kind = "client",
                otel.status_code = field::Empty,
                rpc.system = "grpc",
                rpc.service = method.service,
                rpc.method = method.method,
                rpc.grpc.status_code = field::Empty,
                error.type = field::Empty,
                ordo.role = self.role,
                attempt,
            );
            let exemplar = propagation::traceparent_of(&span)
                .and_then(|tp| TraceExemplar::from_sampled_traceparent(tp.as_bytes()));
            let outcome = if left.is_zero() {
                Err(tonic::Status::deadline_exceeded(
                    "the caller's deadline passed before the call",
                ))
            } else {
                let request = self.request(&span, message.clone(), metadata, left);
                match tokio::time::timeout_at(deadline, send(self.channel.clone(), request))
                    .instrument(span.clone())
                    .await
                {
                    Ok(outcome) => outcome,
                    Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                        "no answer from the {} role within the deadline",
                        self.role
                    ))),
                }
            };
            // tonic's channel enforces the `grpc-timeout` it sends, answering CANCELLED
            // ("Timeout expired") when it runs out: that is this call's deadline. A CANCELLED
            // before the deadline is the connection dying under the call (the peer was
            // killed): the peer is unavailable, and an idempotent call goes to another one.
            let outcome = outcome.map_err(|status| {
                let expired = tokio::time::Instant::now() >= deadline;
                match status.code() {
                    tonic::Code::Cancelled if expired => tonic::Status::deadline_exceeded(format!(
                        "no answer from the {} role within the deadline",
                        self.role
                    )),
                    tonic::Code::Cancelled => tonic::Status::unavailable(format!(
                        "the connection to an instance of the {} role closed during the call: {}",
                        self.role,
                        status.message()
                    )),
                    _ => status,
                }
            });
            let code = outcome
                .as_ref()
                .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
            span.record("rpc.grpc.status_code", code as i32);
            if code != tonic::Code::Ok {
                span.record("otel.status_code", "error");
                span.record("error.type", conventions::grpc_error_type(code as i32));
            }
            let backoff = retry_backoff(attempt);
            let retry = method.idempotent
                && code == tonic::Code::Unavailable
                && attempt < MAX_ATTEMPTS
                && deadline.saturating_duration_since(tokio::time::Instant::now()) > backoff;
            if !retry {
                break (outcome, code, exemplar);
            }
            span.in_scope(|| {
                tracing::warn!(
                    role = self.role,
                    method = method.full,
                    attempt,
                    "peer unavailable; retrying on another instance"
                )
            });
            tokio::time::sleep(backoff).await;
        };
        metrics::observe_rpc_client(
            RpcLabels {
                service: method.service,
                method: method.method,
                status_code: code as i32,
            },
            started.elapsed().as_secs_f64(),
            exemplar,
        );
        result.map_err(|status| error_of(&status))
    }

    /// The request of one attempt: the message, `traceparent` of the CLIENT span, the
    /// remaining deadline, the API key and the call's own metadata.
    fn request<M>(
        &self,
        span: &tracing::Span,
        message: M,
        metadata: &[(&'static str, &str)],
        left: Duration,
    ) -> tonic::Request<M> {
        let mut headers = http::HeaderMap::new();
        propagation::inject_http(span, &mut headers);
        let mut request = tonic::Request::from_parts(
            MetadataMap::from_headers(headers),
            Default::default(),
            message,
        );
        request.set_timeout(left);
        if let Some(key) = &self.api_key {
            request.metadata_mut().insert("x-api-key", key.clone());
        }
        for (name, value) in metadata {
            if let Ok(value) = value.parse() {
                request.metadata_mut().insert(*name, value);
            }
        }
        request
    }
}

/// Which method a call is, for its span, metric and retry policy.
#[derive(Clone, Copy)]
struct RpcMethod {
    full: &'static str,
    service: &'static str,
    method: &'static str,
    idempotent: bool,
}

const fn rpc(
    full: &'static str,
    service: &'static str,
    method: &'static str,
    idempotent: bool,
) -> RpcMethod {
    RpcMethod {
        full,
        service,
        method,
        idempotent,
    }
}

/// 50 ms · 2^(attempt - 1) with jitter (half to all of it).
fn retry_backoff(attempt: u32) -> Duration {
    let ceiling = 50u64 << attempt.saturating_sub(1).min(5);
    // A freshly seeded hasher's output is random enough for jitter.
    let jitter = {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            % 1000
    };
    Duration::from_millis(ceiling / 2 + ceiling * jitter / 2000)
}

/// A peer's status as the error it stands for.
pub fn error_of(status: &tonic::Status) -> Error {
    let kind = status
        .metadata()
        .get(ERROR_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|code| ErrorKind::ALL.into_iter().find(|k| k.code() == code))
        .unwrap_or_else(|| kind_of(status.code()));
    let details = status
        .get_error_details()
        .bad_request()
        .map(|b| {
            b.field_violations
                .iter()
                .map(|v| FieldViolation {
                    field: v.field.clone(),
                    description: v.description.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    Error {
        kind,
        message: status.message().to_owned(),
        details,
    }
}

/// Keeps the balancer's set equal to the members of the role that pass their health check.
async fn follow_members(
    role: &'static str,
    mut members: Members,
    changes: Sender<Change<String, Endpoint>>,
    healthy: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    let mut probes: HashMap<Instance, CancellationToken> = HashMap::new();
    loop {
        let current: BTreeSet<Instance> = members.borrow_and_update().clone();
        probes.retain(|instance, probe| {
            let keep = current.contains(instance);
            if !keep {
                probe.cancel();
            }
            keep
        });
        for instance in current {
            if probes.contains_key(&instance) {
                continue;
            }
            let probe = stop.child_token();
            tokio::spawn(probe_instance(
                role,
                instance.clone(),
                changes.clone(),
                Arc::clone(&healthy),
                probe.clone(),
            ));
            probes.insert(instance, probe);
        }
        tokio::select! {
            () = stop.cancelled() => break,
            changed = members.changed() => if changed.is_err() {
                // Discovery stopped: keep probing the last set until shutdown.
                stop.cancelled().await;
                break;
            },
        }
    }
}

/// Probes one instance until cancelled, inserting it into the balancer while it is healthy.
async fn probe_instance(
    role: &'static str,
    instance: Instance,
    changes: Sender<Change<String, Endpoint>>,
    healthy: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    let endpoint = match Endpoint::from_shared(instance.address.clone()) {
        Ok(endpoint) => endpoint
            .connect_timeout(PROBE_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10)),
        Err(error) => {
            tracing::warn!(role, address = %instance.address, %error, "discovery: not a gRPC address");
            return;
        }
    };
    let mut health = tonic_health::pb::health_client::HealthClient::new(endpoint.connect_lazy());
    let mut in_set = false;
    loop {
        let check = health.check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        });
        let serving = matches!(
            tokio::time::timeout(PROBE_TIMEOUT, check).await,
            Ok(Ok(answer)) if answer.get_ref().status
                == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
        if serving != in_set {
            let change = if serving {
                Change::Insert(instance.id.clone(), endpoint.clone())
            } else {
                Change::Remove(instance.id.clone())
            };
            if changes.send(change).await.is_err() {
                return;
            }
            in_set = serving;
            if serving {
                healthy.fetch_add(1, Ordering::Relaxed);
                tracing::info!(role, instance = %instance.id, address = %instance.address, "peer joined the balancer");
            } else {
                healthy.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(role, instance = %instance.id, address = %instance.address, "peer failed its health check; left the balancer");
            }
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
    if in_set {
        healthy.fetch_sub(1, Ordering::Relaxed);
        let _ = changes.send(Change::Remove(instance.id.clone())).await;
        tracing::info!(role, instance = %instance.id, "peer left discovery");
    }
}

// ---------------------------------------------------------------------------------------------
// The faces over a role channel
// ---------------------------------------------------------------------------------------------

const CATALOG: &str = "ordo.v1.CatalogService";
const ORDERS: &str = "ordo.v1.OrdersService";
const PAYMENTS: &str = "ordo.v1.PaymentsService";

/// The catalogue and stock of the `inventory` role.
pub struct RemoteCatalog(pub RoleChannel);

#[async_trait]
impl CatalogApi for RemoteCatalog {
    async fn put_product(&self, sku: &str, input: ProductInput) -> Result<ProductView> {
        let message = pb::PutProductRequest {
            sku: sku.to_owned(),
            name: input.name,
            price: Some(input.price.into()),
        };
        let method = rpc(
            "ordo.v1.CatalogService/PutProduct",
            CATALOG,
            "PutProduct",
            true,
        );
        let reply = self
            .0
            .call(method, message, &[], |channel, request| async move {
                CatalogServiceClient::new(channel)
                    .put_product(request)
                    .await
            });
        Ok(reply.await?.into_inner().into())
    }

    async fn product(&self, sku: &str) -> Result<ProductView> {
        let message = pb::GetProductRequest {
            sku: sku.to_owned(),
        };
        let method = rpc(
            "ordo.v1.CatalogService/GetProduct",
            CATALOG,
            "GetProduct",
            true,
        );
        let reply = self
            .0
            .call(method, message, &[], |channel, request| async move {
                CatalogServiceClient::new(channel)
                    .get_product(request)
                    .await
            });
        Ok(reply.await?.into_inner().into())
    }

    async fn put_warehouse(&self, id: &str, input: WarehouseInput) -> Result<WarehouseView> {
        let message = pb::PutWarehouseRequest {
            id: id.to_owned(),
            country: input.country,
        };
        let method = rpc(
            "ordo.v1.CatalogService/PutWarehouse",
            CATALOG,
            "PutWarehouse",
            true,
        );
        let reply = self
            .0
            .call(method, message, &[], |channel, request| async move {
                CatalogServiceClient::new(channel)
                    .put_warehouse(request)
                    .await
            });
        Ok(reply.await?.into_inner().into())
    }

    async fn put_stock(
        &self,
        sku: &str,
        warehouse: &str,
        input: StockInput,
    ) -> Result<StockEntryView> {
        let message = pb::PutStockRequest {
            sku: sku.to_owned(),
            warehouse: warehouse.to_owned(),
            on_hand: input.on_hand,
        };
        let method = rpc("ordo.v1.CatalogService/PutStock", CATALOG, "PutStock", true);
        let reply = self
            .0
            .call(method, message, &[], |channel, request| async move {
                CatalogServiceClient::new(channel).put_stock(request).await
            });
        Ok(reply.await?.into_inner().into())
    }

    async fn stock(&self, sku: &str) -> Result<StockView> {
        let message = pb::GetStockRequest {
            sku: sku.to_owned(),
        };
        let method = rpc("ordo.v1.CatalogService/GetStock", CATALOG, "GetStock", true);
        let reply = self
            .0
            .call(method, message, &[], |channel, request| async move {
                CatalogServiceClient::new(channel).get_stock(request).await
            });
        Ok(reply.await?.into_inner().into())
    }

    async fn ready(&self) -> Result<()> {
        self.0.ready()
    }
}

/// The orders of the `orders` role.
pub struct RemoteOrders(pub RoleChannel);

#[async_trait]
impl OrdersApi for RemoteOrders {
    async fn create_order(
        &self,
        idempotency_key: Option<&str>,
        input: CreateOrderInput,
    ) -> Result<Created> {
        // Without a key a retried create could make a second order: not retried.
        let method = rpc(
            "ordo.v1.OrdersService/CreateOrder",
            ORDERS,
            "CreateOrder",
            idempotency_key.is_some(),
        );
        let metadata: Vec<(&'static str, &str)> = idempotency_key
            .map(|key| ("idempotency-key", key))
            .into_iter()
            .collect();
        let message = pb::CreateOrderRequest::from(input);
        let reply = self
            .0
            .call(method, message, &metadata, |channel, request| async move {
                OrdersServiceClient::new(channel)
                    .create_order(request)
                    .await
            });
        let response = reply.await?;
        let replayed = response.metadata().get("idempotent-replayed").is_some();
        Ok(Created {
            order: response.into_inner().into(),
            replayed,
        })
    }

    async fn order(&self, id: &str) -> Result<OrderView> {
        let message = pb::GetOrderRequest { id: id.to_owned() };
        let method = rpc("ordo.v1.OrdersService/GetOrder", ORDERS, "GetOrder", true);
        let reply = self
            .0
            .call(method, message, &[], |channel, request| async move {
                OrdersServiceClient::new(channel).get_order(request).await
            });
        Ok(reply.await?.into_inner().into())
    }

    async fn orders(&self, query: ListOrdersQuery) -> Result<OrderPage> {
        let message = pb::ListOrdersRequest::from(query);
        let method = rpc(
            "ordo.v1.OrdersService/ListOrders",
            ORDERS,
            "ListOrders",
            true,
        );
        let reply = self
            .0
            .call(method, message, &[], |channel, request| async move {
                OrdersServiceClient::new(channel).list_orders(request).await
            });
        Ok(reply.await?.into_inner().into())
    }

    async fn cancel_order(&self, id: &str) -> Result<OrderView> {
        let message = pb::CancelOrderRequest { id: id.to_owned() };
        // Cancelling twice leaves the order cancelled: safe to retry.
        let method = rpc(
            "ordo.v1.OrdersService/CancelOrder",
            ORDERS,
            "CancelOrder",
            true,
        );
        let reply = self
            .0
            .call(method, message, &[], |channel, request| async move {
                OrdersServiceClient::new(channel)
                    .cancel_order(request)
                    .await
            });
        Ok(reply.await?.into_inner().into())
    }

    async fn timeline(&self, id: &str) -> Result<TimelineView> {
        let message = pb::GetOrderTimelineRequest { id: id.to_owned() };
        let method = rpc(
            "ordo.v1.OrdersService/GetOrderTimeline",
            ORDERS,
            "GetOrderTimeline",
            true,
        );
        let reply = self
            .0
            .call(method, message, &[], |channel, request| async move {
                OrdersServiceClient::new(channel)
                    .get_order_timeline(request)
                    .await
            });
        Ok(reply.await?.into_inner().into())
    }

    async fn submit_pos_batch(&self, input: PosBatchInput) -> Result<PosBatchView> {
        // A replay of a batch returns its first answer and changes nothing: safe to retry.
        let method = rpc(
            "ordo.v1.PosService/SubmitBatch",
            ORDERS,
            "SubmitBatch",
            true,
        );
        let message = pb::PosBatchRequest::from(input);
        let reply = self
            .0
            .call(method, message, &[], |channel, request| async move {
                PosServiceClient::new(channel).submit_batch(request).await
            });
        Ok(reply.await?.into_inner().into())
    }

    async fn erase_customer(&self, customer_id: &str) -> Result<ErasureView> {
        // A repeated erasure changes nothing more: safe to retry.
        let method = rpc(
            "ordo.v1.CustomersService/EraseCustomer",
            ORDERS,
            "EraseCustomer",
            true,
        );
        let message = pb::EraseCustomerRequest {
            customer_id: customer_id.to_owned(),
        };
        let reply = self
            .0
            .call(method, message, &[], |channel, request| async move {
                CustomersServiceClient::new(channel)
                    .erase_customer(request)
                    .await
            });
        Ok(reply.await?.into_inner().into())
    }

    async fn ready(&self) -> Result<()> {
        self.0.ready()
    }
}

/// The payments of the `payments` role.
pub struct RemotePayments(pub RoleChannel);

#[async_trait]
impl PaymentsApi for RemotePayments {
    async fn create_payment(
        &self,
        order_id: &str,
        input: CreatePaymentInput,
    ) -> Result<PaymentCreated> {
        let message = pb::CreatePaymentRequest {
            order_id: order_id.to_owned(),
            provider: input.provider,
        };
        // An order's pending intent is returned again, never a second: safe to retry.
        let method = rpc(
            "ordo.v1.PaymentsService/CreatePayment",
            PAYMENTS,
            "CreatePayment",
            true,
        );
        let reply = self
            .0
            .call(method, message, &[], |channel, request| async move {
                PaymentsServiceClient::new(channel)
                    .create_payment(request)
                    .await
            });
        let response = reply.await?;
        let replayed = response.metadata().get("idempotent-replayed").is_some();
        Ok(PaymentCreated {
            payment: response.into_inner().into(),
            replayed,
        })
    }

    async fn order_payments(&self, order_id: &str) -> Result<PaymentList> {
        let message = pb::ListPaymentsRequest {
            order_id: order_id.to_owned(),
        };
        let method = rpc(
            "ordo.v1.PaymentsService/ListPayments",
            PAYMENTS,
            "ListPayments",
            true,
        );
        let reply = self
            .0
            .call(method, message, &[], |channel, request| async move {
                PaymentsServiceClient::new(channel)
                    .list_payments(request)
                    .await
            });
        Ok(reply.await?.into_inner().into())
    }

    async fn payment_callback(&self, callback: ProviderCallback<'_>) -> Result<PaymentCallbackAck> {
        let message = pb::PaymentCallbackRequest {
            provider: callback.provider.to_owned(),
            body: callback.body.to_vec(),
            signature: callback.signature.unwrap_or_default().to_owned(),
        };
        // Callbacks are idempotent by their event id.
        let method = rpc(
            "ordo.v1.PaymentsService/PaymentCallback",
            PAYMENTS,
            "PaymentCallback",
            true,
        );
        let reply = self
            .0
            .call(method, message, &[], |channel, request| async move {
                PaymentsServiceClient::new(channel)
                    .payment_callback(request)
                    .await
            });
        Ok(reply.await?.into_inner().into())
    }

    async fn ready(&self) -> Result<()> {
        self.0.ready()
    }
}
