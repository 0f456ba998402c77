//! Values of the OpenTelemetry semantic conventions that more than one adapter computes, so
//! the HTTP server, the gRPC client and the carrier client cannot spell them differently.

/// `network.protocol.version` of an HTTP exchange: `1.1`, `2`, ...
pub fn http_protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_11 => "1.1",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "_OTHER",
    }
}

/// `server.address` and `server.port` of a URL (the port the scheme implies when none is
/// written); `None` for a URL without a host.
pub fn server_of(url: &str) -> Option<(String, u16)> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    Some((host.to_owned(), port))
}

/// `error.type` of a gRPC call that failed: the status code's name, as the conventions ask.
pub fn grpc_error_type(code: i32) -> &'static str {
    match code {
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "_OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_names_its_server_and_the_port_its_scheme_implies() {
        assert_eq!(
            server_of("http://carrier.example:8443/shipments"),
            Some(("carrier.example".to_owned(), 8443))
        );
        assert_eq!(
            server_of("https://carrier.example/shipments"),
            Some(("carrier.example".to_owned(), 443))
        );
        assert_eq!(
            server_of("http://[::1]:9000/x"),
            Some(("::1".to_owned(), 9000))
        );
        assert_eq!(server_of("not a url"), None);
    }

    #[test]
    fn protocol_versions_are_written_as_the_conventions_do() {
        assert_eq!(http_protocol_version(http::Version::HTTP_11), "1.1");
        assert_eq!(http_protocol_version(http::Version::HTTP_2), "2");
    }

    #[test]
    fn grpc_error_types_are_the_status_names() {
        assert_eq!(grpc_error_type(14), "UNAVAILABLE");
        assert_eq!(grpc_error_type(99), "_OTHER");
    }
}
