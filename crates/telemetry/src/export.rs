//! Where spans go: the OTLP exporter chosen by the standard variables, and the resource that
//! names this process in every exported span.

use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;

use crate::{ServiceIdentity, TelemetryError};

/// The OTLP span exporter, or `None` when no endpoint is configured: then nothing is exported
/// and no exporter thread runs.
pub(crate) fn otlp_exporter(
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<SpanExporter>, TelemetryError> {
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
        .map(Some)
        .map_err(|e| TelemetryError(format!("cannot build the OTLP exporter: {e}")))
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
