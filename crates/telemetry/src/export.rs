//! Where spans go: the OTLP exporter chosen by the standard variables (ordo's own for plain
//! OTLP/gRPC, `opentelemetry-otlp` for the rest), and the resource that names this process in
//! every exported span.

use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::SpanData;
use std::time::Duration;

use crate::otlp_grpc::GrpcSpanExporter;
use crate::{ServiceIdentity, TelemetryError};

/// The span exporter the standard variables choose.
#[derive(Debug)]
pub(crate) enum Exporter {
    /// OTLP/gRPC in plain HTTP/2, without compression: ordo's own encoder
    /// ([`crate::otlp_grpc`]).
    Grpc(GrpcSpanExporter),
    /// Everything else (`http/protobuf`, TLS, compression): `opentelemetry-otlp`.
    Otlp(SpanExporter),
}

impl opentelemetry_sdk::trace::SpanExporter for Exporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        match self {
            Exporter::Grpc(exporter) => exporter.export(batch).await,
            Exporter::Otlp(exporter) => exporter.export(batch).await,
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        match self {
            Exporter::Grpc(exporter) => exporter.shutdown_with_timeout(timeout),
            Exporter::Otlp(exporter) => exporter.shutdown_with_timeout(timeout),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        match self {
            Exporter::Grpc(exporter) => exporter.force_flush(),
            Exporter::Otlp(exporter) => exporter.force_flush(),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        match self {
            Exporter::Grpc(exporter) => exporter.set_resource(resource),
            Exporter::Otlp(exporter) => exporter.set_resource(resource),
        }
    }
}

/// The OTLP span exporter, or `None` when no endpoint is configured: then nothing is exported
/// and no exporter thread runs.
pub(crate) fn otlp_exporter(
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<Exporter>, TelemetryError> {
    let configured = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    if configured("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        && configured("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
    {
        return Ok(None);
    }
    // The specification's default protocol is http/protobuf.
    let protocol = configured("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| configured("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http/protobuf".to_owned());
    if protocol == "grpc"
        && let Some(plain) = plain_grpc(&configured)
    {
        return GrpcSpanExporter::new(&plain.endpoint, &plain.headers, plain.timeout)
            .map(|exporter| Some(Exporter::Grpc(exporter)))
            .map_err(TelemetryError);
    }
    // The builders read the endpoint, headers and timeout variables themselves.
    let exporter = match protocol.as_str() {
        "grpc" => SpanExporter::builder().with_tonic().build(),
        "http/protobuf" => SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build(),
        other => {
            return Err(TelemetryError(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported (grpc or http/protobuf)"
            )));
        }
    };
    exporter
        .map(|exporter| Some(Exporter::Otlp(exporter)))
        .map_err(|e| TelemetryError(format!("cannot build the OTLP exporter: {e}")))
}

/// Where and how a plain OTLP/gRPC export goes.
struct PlainGrpc {
    endpoint: String,
    headers: Vec<(String, String)>,
    timeout: Duration,
}

/// The settings of an OTLP/gRPC export that ordo's own exporter can make: an `http://`
/// endpoint (no TLS), no compression, no client certificate. `None` leaves the export to
/// `opentelemetry-otlp`, which reads the same variables.
fn plain_grpc(configured: &impl Fn(&str) -> Option<String>) -> Option<PlainGrpc> {
    let signal_or_all = |name: &str| {
        configured(&format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
            .or_else(|| configured(&format!("OTEL_EXPORTER_OTLP_{name}")))
    };
    let endpoint = signal_or_all("ENDPOINT").unwrap_or_else(|| "http://localhost:4317".to_owned());
    let compressed = signal_or_all("COMPRESSION").is_some_and(|c| c != "none");
    let certificates = ["CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY"]
        .iter()
        .any(|name| signal_or_all(name).is_some());
    if !endpoint.starts_with("http://") || compressed || certificates {
        return None;
    }
    // The general headers, then the traces' own (which win for a name in both).
    let mut headers = parse_headers(configured("OTEL_EXPORTER_OTLP_HEADERS").as_deref());
    for (name, value) in parse_headers(configured("OTEL_EXPORTER_OTLP_TRACES_HEADERS").as_deref()) {
        headers.retain(|(existing, _)| *existing != name);
        headers.push((name, value));
    }
    let timeout = signal_or_all("TIMEOUT")
        .and_then(|ms| ms.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis);
    Some(PlainGrpc {
        endpoint,
        headers,
        timeout,
    })
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: `name=value` pairs separated by commas, values
/// percent-encoded (W3C Baggage syntax); names are lower-cased for HTTP/2.
fn parse_headers(text: Option<&str>) -> Vec<(String, String)> {
    text.unwrap_or_default()
        .split(',')
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let name = name.trim().to_ascii_lowercase();
            (!name.is_empty()).then(|| (name, percent_decoded(value.trim())))
        })
        .collect()
}

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `service.*`, `deployment.environment`, the build's git commit, and `k8s.*` from the usual
/// downward-API variables; `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME` are read by the SDK
/// and win over ours.
pub(crate) fn resource(
    identity: &ServiceIdentity,
    env: &impl Fn(&str) -> Option<String>,
) -> Resource {
    let mut attributes = vec![
        KeyValue::new("service.version", identity.version.clone()),
        KeyValue::new("service.instance.id", identity.instance_id.clone()),
        KeyValue::new("deployment.environment", identity.environment.clone()),
        KeyValue::new("deployment.environment.name", identity.environment.clone()),
        KeyValue::new("vcs.ref.head.revision", identity.git_commit.clone()),
    ];
    for (attribute, variables) in [
        ("k8s.pod.name", ["K8S_POD_NAME", "POD_NAME"]),
        (
            "k8s.namespace.name",
            ["K8S_NAMESPACE_NAME", "POD_NAMESPACE"],
        ),
        ("k8s.node.name", ["K8S_NODE_NAME", "NODE_NAME"]),
    ] {
        if let Some(value) = variables
            .iter()
            .find_map(|v| env(v).filter(|s| !s.is_empty()))
        {
            attributes.push(KeyValue::new(attribute, value));
        }
    }
    let ours = Resource::builder_empty()
        .with_service_name(identity.name.clone())
        .with_attributes(attributes)
        .build();
    // The SDK's default detectors (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, telemetry.sdk.*)
    // are merged last so that an operator's explicit setting wins.
    let detected = Resource::builder().build();
    let service_name_from_env = env("OTEL_SERVICE_NAME").is_some_and(|v| !v.is_empty())
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|v| v.contains("service.name="));
    let mut builder = Resource::builder_empty();
    for (key, value) in ours.iter() {
        builder = builder.with_attribute(KeyValue::new(key.clone(), value.clone()));
    }
    for (key, value) in detected.iter() {
        if key.as_str() == "service.name" && !service_name_from_env {
            continue;
        }
        builder = builder.with_attribute(KeyValue::new(key.clone(), value.clone()));
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_pairs_with_percent_encoded_values_the_traces_own_winning() {
        let env = |name: &str| match name {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4317".to_owned()),
            "OTEL_EXPORTER_OTLP_HEADERS" => {
                Some("Authorization=Basic%20abc%3D, x-team = ops,broken".to_owned())
            }
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS" => Some("x-team=orders".to_owned()),
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT" => Some("2500".to_owned()),
            _ => None,
        };
        let plain = plain_grpc(&env).expect("plain gRPC");
        assert_eq!(plain.endpoint, "http://collector:4317");
        assert_eq!(
            plain.headers,
            [
                ("authorization".to_owned(), "Basic abc=".to_owned()),
                ("x-team".to_owned(), "orders".to_owned())
            ]
        );
        assert_eq!(plain.timeout, Duration::from_millis(2500));
    }

    #[test]
    fn tls_compression_or_certificates_are_left_to_opentelemetry_otlp() {
        for (name, value) in [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/etc/ca.pem"),
        ] {
            let env = |asked: &str| (asked == name).then(|| value.to_owned());
            assert!(plain_grpc(&env).is_none(), "{name}={value}");
        }
        assert!(
            plain_grpc(&|_: &str| None).is_some(),
            "the default endpoint"
        );
    }
}
