//! What the fuzz targets share: the telemetry they run under (the production propagators and a
//! tracer provider, so that trace context is really extracted and adopted), and the HTTP edge's
//! own extractors applied to a request built from fuzz input.

use axum::extract::FromRequest;
use ordo_domain::{Error, ErrorKind};
use ordo_http_api::error::ApiError;
use std::sync::Once;

/// Installs, once per process, the propagators `ordo_telemetry::init` installs by default and
/// a subscriber whose OpenTelemetry layer gives spans real contexts (nothing is exported).
pub fn telemetry() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;
        ordo_telemetry::install_default_propagators();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("fuzz")));
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other subscriber is installed");
    });
}

/// A request with `content_type` (when it is a valid header value) and `body`.
pub fn request(content_type: Option<&str>, body: &[u8]) -> Option<axum::extract::Request> {
    let mut builder = http::Request::builder().method("POST").uri("/");
    if let Some(content_type) = content_type {
        let value = http::HeaderValue::from_str(content_type).ok()?;
        builder = builder.header(http::header::CONTENT_TYPE, value);
    }
    builder.body(axum::body::Body::from(body.to_vec())).ok()
}

/// Runs the extractor `E` of the HTTP edge (`ordo_http_api::extract`) on a request with
/// `content_type` and `body`; `None` when no such request can arrive (an invalid header).
/// Whatever the input, a rejection is the client's fault, never the server's.
pub fn extract<E>(content_type: Option<&str>, body: &[u8]) -> Option<Result<E, ApiError>>
where
    E: FromRequest<(), Rejection = ApiError>,
{
    let request = request(content_type, body)?;
    let extracted = futures::executor::block_on(E::from_request(request, &()));
    if let Err(ApiError(error)) = &extracted {
        assert_client_fault(error);
        // The error body renders.
        let _ = axum::response::IntoResponse::into_response(ApiError(error.clone()));
    }
    Some(extracted)
}

/// Input the service refuses is refused as the caller's fault (a 4xx), never as ours.
pub fn assert_client_fault(error: &Error) {
    assert!(
        !error.kind.is_server_fault(),
        "input refused as a server fault: {error:?}"
    );
    assert!(
        matches!(
            error.kind,
            ErrorKind::InvalidArgument
                | ErrorKind::Unauthenticated
                | ErrorKind::UnsupportedMediaType
                | ErrorKind::PayloadTooLarge
        ),
        "unexpected kind for refused input: {error:?}"
    );
}

/// Whether `text` is NFC, trimmed, free of control characters and 1..=`max` characters: what
/// `ordo_domain::text::parse_text` promises of what it accepts.
pub fn is_clean_text(text: &str, max: usize) -> bool {
    use unicode_normalization::UnicodeNormalization;
    let count = text.chars().count();
    (1..=max).contains(&count)
        && text.trim() == text
        && !text.chars().any(char::is_control)
        && text.nfc().eq(text.chars())
}
