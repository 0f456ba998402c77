//! Where spans go: the OTLP export chosen by the standard variables ([`otlp_processor`]), and the
//! resource that names this process in every exported span.
//!
//! The export is ordo's own span processor ([`processor`]) over ordo's own encoding of the OTLP
//! protobuf ([`encode`]), sent through tonic or reqwest ([`transport`]): the SDK's batch
//! processor and OTLP exporter cost a cached read a third of its CPU (see `encode`).

mod encode;
mod processor;
mod transport;

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use std::time::Duration;

pub(crate) use processor::OtlpSpanProcessor;
pub(crate) use processor::{SPANS_DROPPED_EXPORT_FAILED, SPANS_DROPPED_QUEUE_FULL, SPANS_EXPORTED};

use crate::{ServiceIdentity, TelemetryError};
use processor::BatchConfig;
use transport::TransportConfig;

/// Spans waiting for export, unless `OTEL_BSP_MAX_QUEUE_SIZE` says otherwise. The SDK's 2,048
/// dropped spans in a burst of 500 orders (about 40 spans each, produced faster than one export
/// round takes): a dropped span is a broken trace. A queued span is well under 1 KiB.
const SPAN_QUEUE: usize = 32 * 1024;

/// The OTLP span processor, or `None` when no endpoint is configured: then nothing is exported
/// and no exporter thread runs.
pub(crate) fn otlp_processor(
    env: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Option<OtlpSpanProcessor>, TelemetryError> {
    let configured = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    // The signal's own variable wins over the general one.
    let traces_or_general = |name: &str| {
        configured(&format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
            .or_else(|| configured(&format!("OTEL_EXPORTER_OTLP_{name}")))
    };
    let traces_endpoint = configured("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let endpoint = configured("OTEL_EXPORTER_OTLP_ENDPOINT");
    if traces_endpoint.is_none() && endpoint.is_none() {
        return Ok(None);
    }
    let milliseconds = |name: &str, default: u64, warnings: &mut Vec<String>| {
        let value = configured(name);
        match value.as_deref().map(|v| v.trim().parse::<u64>()) {
            None => Duration::from_millis(default),
            Some(Ok(ms)) => Duration::from_millis(ms),
            Some(Err(_)) => {
                warnings.push(format!("{name}={value:?} is not a number of milliseconds"));
                Duration::from_millis(default)
            }
        }
    };
    let timeout = {
        let name = if configured("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").is_some() {
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
        } else {
            "OTEL_EXPORTER_OTLP_TIMEOUT"
        };
        milliseconds(name, 10_000, warnings)
    };
    let headers = traces_or_general("HEADERS")
        .map(|list| headers(&list, warnings))
        .unwrap_or_default();
    if let Some(compression) = traces_or_general("COMPRESSION")
        && compression != "none"
    {
        warnings.push(format!(
            "OTEL_EXPORTER_OTLP_COMPRESSION={compression:?} is not supported: spans are sent \
             uncompressed"
        ));
    }
    // The specification's default protocol is http/protobuf.
    let protocol = traces_or_general("PROTOCOL").unwrap_or_else(|| "http/protobuf".to_owned());
    let transport = match protocol.as_str() {
        "grpc" => TransportConfig::Grpc {
            endpoint: traces_endpoint.or(endpoint).unwrap_or_default(),
            headers,
            timeout,
        },
        "http/protobuf" => TransportConfig::Http {
            // The general endpoint is a base; the signal's own is the full URL.
            url: traces_endpoint.unwrap_or_else(|| {
                format!(
                    "{}/v1/traces",
                    endpoint.unwrap_or_default().trim_end_matches('/')
                )
            }),
            headers,
            timeout,
        },
        other => {
            return Err(TelemetryError(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported (grpc or http/protobuf)"
            )));
        }
    };
    let count = |name: &str, default: usize, warnings: &mut Vec<String>| match configured(name) {
        None => default,
        Some(value) => match value.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                warnings.push(format!("{name}={value:?} is not a positive count"));
                default
            }
        },
    };
    let config = BatchConfig {
        schedule_delay: milliseconds("OTEL_BSP_SCHEDULE_DELAY", 5_000, warnings),
        max_export_batch_size: count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, warnings),
        max_queue_size: count("OTEL_BSP_MAX_QUEUE_SIZE", SPAN_QUEUE, warnings),
        export_timeout: timeout,
    };
    Ok(Some(OtlpSpanProcessor::new(transport, config)))
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: `name=value` pairs separated by commas, values
/// percent-encoded (W3C baggage syntax).
fn headers(list: &str, warnings: &mut Vec<String>) -> Vec<(String, String)> {
    list.split(',')
        .filter(|entry| !entry.trim().is_empty())
        .filter_map(|entry| match entry.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => Some((
                name.trim().to_owned(),
                percent_encoding::percent_decode_str(value.trim())
                    .decode_utf8_lossy()
                    .into_owned(),
            )),
            _ => {
                warnings.push(format!(
                    "OTEL_EXPORTER_OTLP_HEADERS: {entry:?} is not name=value"
                ));
                None
            }
        })
        .collect()
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
    fn headers_are_pairs_with_percent_encoded_values() {
        let mut warnings = Vec::new();
        assert_eq!(
            headers("api-key=a%20b%2Cc, x-tenant = t1 ,broken,", &mut warnings),
            vec![
                ("api-key".to_owned(), "a b,c".to_owned()),
                ("x-tenant".to_owned(), "t1".to_owned()),
            ]
        );
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn no_endpoint_no_export_and_an_unknown_protocol_is_refused() {
        let mut warnings = Vec::new();
        let none = |_: &str| None;
        assert!(otlp_processor(&none, &mut warnings).unwrap().is_none());
        let thrift = |name: &str| match name {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://127.0.0.1:4317".to_owned()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("thrift".to_owned()),
            _ => None,
        };
        assert!(otlp_processor(&thrift, &mut warnings).is_err());
    }
}
