//! Sending an encoded `ExportTraceServiceRequest`: OTLP/gRPC (a unary call whose message is
//! already protobuf, through tonic) or OTLP/HTTP (`POST` of the same bytes, through reqwest).

use bytes::{Buf, BufMut};
use http::uri::PathAndQuery;
use std::time::Duration;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Where and how to send, as read from the `OTEL_EXPORTER_OTLP_*` variables.
#[derive(Debug, Clone)]
pub(crate) enum TransportConfig {
    /// `endpoint` is the collector's address (`http://host:4317`).
    Grpc {
        endpoint: String,
        headers: Vec<(String, String)>,
        timeout: Duration,
    },
    /// `url` is the full URL of the traces endpoint (`http://host:4318/v1/traces`).
    Http {
        url: String,
        headers: Vec<(String, String)>,
        timeout: Duration,
    },
}

pub(crate) enum Transport {
    Grpc {
        client: tonic::client::Grpc<tonic::transport::Channel>,
        metadata: MetadataMap,
    },
    Http {
        client: reqwest::Client,
        url: String,
        headers: http::HeaderMap,
    },
    /// The configuration cannot be used (logged once when built): every send fails.
    Broken(String),
}

impl Transport {
    /// Builds the client; call inside the runtime that will drive it.
    pub(crate) fn new(config: TransportConfig) -> Transport {
        match config {
            TransportConfig::Grpc {
                endpoint,
                headers,
                timeout,
            } => match tonic::transport::Endpoint::from_shared(endpoint.clone()) {
                Ok(channel) => {
                    let metadata = MetadataMap::from_headers(header_map(headers));
                    Transport::Grpc {
                        client: tonic::client::Grpc::new(
                            channel.connect_timeout(timeout).connect_lazy(),
                        ),
                        metadata,
                    }
                }
                Err(error) => broken(format!("invalid OTLP endpoint {endpoint:?}: {error}")),
            },
            TransportConfig::Http {
                url,
                headers,
                timeout,
            } => {
                let mut map = header_map(headers);
                map.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/x-protobuf"),
                );
                match reqwest::Client::builder()
                    .connect_timeout(timeout)
                    .timeout(timeout)
                    .build()
                {
                    Ok(client) => Transport::Http {
                        client,
                        url,
                        headers: map,
                    },
                    Err(error) => broken(format!("cannot build the OTLP/HTTP client: {error}")),
                }
            }
        }
    }

    /// Sends one request body; `Err` says why it was not accepted.
    pub(crate) async fn send(&self, body: Vec<u8>) -> Result<(), String> {
        match self {
            Transport::Grpc { client, metadata } => {
                let mut client = client.clone();
                client
                    .ready()
                    .await
                    .map_err(|e| format!("collector unreachable: {e}"))?;
                let mut request = tonic::Request::new(body);
                *request.metadata_mut() = metadata.clone();
                client
                    .unary(request, PathAndQuery::from_static(EXPORT_PATH), RawCodec)
                    .await
                    .map(|_| ())
                    .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
            }
            Transport::Http {
                client,
                url,
                headers,
            } => {
                let response = client
                    .post(url)
                    .headers(headers.clone())
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("HTTP {}", response.status()))
                }
            }
            Transport::Broken(why) => Err(why.clone()),
        }
    }
}

/// The configured headers (`OTEL_EXPORTER_OTLP_HEADERS`) as HTTP headers, names lower-cased;
/// gRPC sends them as its metadata. One that is not a valid header is left out, with a warning.
fn header_map(headers: Vec<(String, String)>) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        match (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::try_from(value),
        ) {
            (Ok(name), Ok(value)) => {
                map.insert(name, value);
            }
            _ => tracing::warn!(
                target: "ordo::telemetry",
                header = name,
                "OTLP header ignored: not a valid header"
            ),
        }
    }
    map
}

fn broken(why: String) -> Transport {
    tracing::error!(target: "ordo::telemetry", error = why, "spans cannot be exported");
    Transport::Broken(why)
}

/// The request is already protobuf: sent as it is. The answer (`ExportTraceServiceResponse`)
/// is not read: a partial success reports spans the collector rejected for their content,
/// which resending would not change.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}
