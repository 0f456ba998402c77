//! An in-test OTLP receiver: a real OTLP/gRPC or OTLP/HTTP (protobuf) endpoint that keeps every
//! span it is sent, so tests can assert the shape of the trace trees ordo exports.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A span as exported, with ids in W3C hex and attributes as strings.
#[derive(Debug, Clone)]
pub struct CapturedSpan {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP `SpanKind`: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    /// OTLP `StatusCode`: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub attributes: HashMap<String, String>,
    /// The OTLP type each attribute was exported with: `string`, `int`, `double`, `bool`,
    /// `array`, `kvlist` or `bytes` (backends' queries depend on it, not only the text).
    pub attribute_types: HashMap<String, &'static str>,
    pub resource: HashMap<String, String>,
    /// The (trace id, span id) of each span this one links to.
    pub links: Vec<(String, String)>,
}

pub const KIND_SERVER: i32 = 2;
pub const KIND_CLIENT: i32 = 3;

#[derive(Clone, Default)]
struct Store(Arc<Mutex<Vec<CapturedSpan>>>);

fn value_text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn value_type(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> &'static str {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(_)) => "string",
        Some(AnyValue::IntValue(_)) => "int",
        Some(AnyValue::BoolValue(_)) => "bool",
        Some(AnyValue::DoubleValue(_)) => "double",
        Some(AnyValue::ArrayValue(_)) => "array",
        Some(AnyValue::KvlistValue(_)) => "kvlist",
        Some(AnyValue::BytesValue(_)) => "bytes",
        Some(AnyValue::StringValueStrindex(_)) => "string_index",
        None => "empty",
    }
}

fn attribute_types(list: &[KeyValue]) -> HashMap<String, &'static str> {
    list.iter()
        .map(|kv| (kv.key.clone(), value_type(kv.value.as_ref())))
        .collect()
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), value_text(kv.value.as_ref())))
        .collect()
}

impl Store {
    fn keep(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.0.lock().unwrap();
        for resource_spans in request.resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    spans.push(CapturedSpan {
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        name: span.name,
                        kind: span.kind,
                        status_code: span.status.map(|s| s.code).unwrap_or(0),
                        attributes: attributes(&span.attributes),
                        attribute_types: attribute_types(&span.attributes),
                        resource: resource.clone(),
                        links: span
                            .links
                            .iter()
                            .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
                            .collect(),
                    });
                }
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.keep(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

pub struct OtlpReceiver {
    /// What to put in `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    /// What to put in `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub protocol: &'static str,
    store: Store,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl OtlpReceiver {
    /// OTLP over gRPC.
    pub async fn grpc() -> OtlpReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Store::default();
        let service = TraceServiceServer::new(store.clone());
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
        });
        OtlpReceiver {
            endpoint: format!("http://{addr}"),
            protocol: "grpc",
            store,
            server,
        }
    }

    /// OTLP over HTTP with protobuf bodies (`POST /v1/traces`).
    pub async fn http() -> OtlpReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Store::default();
        let kept = store.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    match ExportTraceServiceRequest::decode(body) {
                        Ok(request) => {
                            kept.keep(request);
                            (
                                axum::http::StatusCode::OK,
                                [("content-type", "application/x-protobuf")],
                                ExportTraceServiceResponse {
                                    partial_success: None,
                                }
                                .encode_to_vec(),
                            )
                        }
                        Err(_) => (
                            axum::http::StatusCode::BAD_REQUEST,
                            [("content-type", "text/plain")],
                            Vec::new(),
                        ),
                    }
                }
            }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        OtlpReceiver {
            endpoint: format!("http://{addr}"),
            protocol: "http/protobuf",
            store,
            server,
        }
    }

    /// The environment that points `ordo serve` at this receiver, exporting without delay.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.endpoint.clone()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", self.protocol.to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
            ("OTEL_SERVICE_NAME", "ordo-under-test".to_owned()),
        ]
    }

    pub fn spans(&self) -> Vec<CapturedSpan> {
        self.store.0.lock().unwrap().clone()
    }

    /// The spans of trace `trace_id` once `done` holds for them (or panics after 10 s), then a
    /// short wait for stragglers of the same batch.
    pub async fn trace(
        &self,
        trace_id: &str,
        done: impl Fn(&[CapturedSpan]) -> bool,
    ) -> Vec<CapturedSpan> {
        let within = Duration::from_secs(10);
        crate::eventually(
            within,
            async || {
                let spans = self.spans_of(trace_id);
                if done(&spans) { Ok(()) } else { Err(spans) }
            },
            |spans| format!("trace {trace_id} incomplete after {within:?}: {spans:#?}"),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.spans_of(trace_id)
    }

    fn spans_of(&self, trace_id: &str) -> Vec<CapturedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }
}

/// Checks that `spans` form one tree under a single root whose parent is `root_parent` (empty:
/// a true root): every other span's parent is a span of the set. Returns the root.
pub fn assert_one_tree<'a>(spans: &'a [CapturedSpan], root_parent: &str) -> &'a CapturedSpan {
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let roots: Vec<_> = spans
        .iter()
        .filter(|s| !ids.contains(s.parent_span_id.as_str()))
        .collect();
    assert_eq!(
        roots.len(),
        1,
        "expected one root, found {}: {:#?}",
        roots.len(),
        describe(spans)
    );
    assert_eq!(
        roots[0].parent_span_id,
        root_parent,
        "{:#?}",
        describe(spans)
    );
    roots[0]
}

/// `name (kind) <- parent name` lines, for assertion messages.
pub fn describe(spans: &[CapturedSpan]) -> Vec<String> {
    let names: BTreeMap<&str, &str> = spans
        .iter()
        .map(|s| (s.span_id.as_str(), s.name.as_str()))
        .collect();
    spans
        .iter()
        .map(|s| {
            let parent = names.get(s.parent_span_id.as_str()).copied().unwrap_or(
                if s.parent_span_id.is_empty() {
                    "<root>"
                } else {
                    "<outside>"
                },
            );
            format!("{} (kind {}) <- {parent}", s.name, s.kind)
        })
        .collect()
}
