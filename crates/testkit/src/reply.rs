//! Replies and the assertions on them (status, error body, trace context, formats).

use serde_json::Value;

/// A response read to the end: status, headers, the body as text and as JSON (`Null` if the
/// body is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("read the response body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            body,
        }
    }

    #[track_caller]
    pub fn expect_status(self, status: u16) -> Reply {
        assert_eq!(
            self.status, status,
            "expected HTTP {status}, got {} with body: {}",
            self.status, self.text
        );
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The response's `traceparent` as (trace id, span id); fails the test if it is missing or
    /// not of the W3C form `00-<32 hex>-<16 hex>-<2 hex>`.
    #[track_caller]
    pub fn traceparent(&self) -> (String, String) {
        let header = self.header("traceparent").unwrap_or_else(|| {
            panic!(
                "no traceparent header on HTTP {}: {}",
                self.status, self.text
            )
        });
        parse_traceparent(header)
            .unwrap_or_else(|| panic!("malformed traceparent response header {header:?}"))
    }

    pub fn trace_id(&self) -> String {
        self.traceparent().0
    }
}

pub async fn send(request: reqwest::RequestBuilder) -> Reply {
    Reply::read(request.send().await.expect("send the request")).await
}

/// Splits a W3C traceparent into (trace id, span id) if well-formed.
pub fn parse_traceparent(header: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = header.split('-').collect();
    match parts.as_slice() {
        [version, trace, span, flags]
            if is_lower_hex(version, 2)
                && is_lower_hex(trace, 32)
                && is_lower_hex(span, 16)
                && is_lower_hex(flags, 2) =>
        {
            Some(((*trace).to_owned(), (*span).to_owned()))
        }
        _ => None,
    }
}

pub fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A trace or span id that is lower-case hex of the right length and not all zeros.
#[track_caller]
pub fn assert_hex_id(value: &Value, len: usize, what: &str) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    assert!(
        is_lower_hex(text, len),
        "{what} {text:?} is not {len} lower-case hex digits"
    );
    assert!(text.bytes().any(|b| b != b'0'), "{what} is all zeros");
}

/// Checks the shape of an RFC 3339 date-time (`2025-01-31T12:34:56.789Z` or with an offset).
#[track_caller]
pub fn assert_rfc3339(value: &Value, what: &str) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let mut ok = bytes.len() >= 20
        && digits(0..4)
        && bytes[4] == b'-'
        && digits(5..7)
        && bytes[7] == b'-'
        && digits(8..10)
        && matches!(bytes[10], b'T' | b't')
        && digits(11..13)
        && bytes[13] == b':'
        && digits(14..16)
        && bytes[16] == b':'
        && digits(17..19);
    if ok {
        let mut rest = &text[19..];
        if let Some(fraction) = rest.strip_prefix('.') {
            let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
            ok &= len > 0;
            rest = &fraction[len..];
        }
        ok &= matches!(rest, "Z" | "z")
            || (rest.len() == 6
                && matches!(rest.as_bytes()[0], b'+' | b'-')
                && rest.as_bytes()[3] == b':'
                && rest[1..3].bytes().all(|b| b.is_ascii_digit())
                && rest[4..6].bytes().all(|b| b.is_ascii_digit()));
    }
    assert!(ok, "{what} {text:?} is not an RFC 3339 date-time");
}

/// Asserts an error answer: the status, the `code`, and the full error body shape
/// `{"error":{"code","message","details":[{"field","description"}],"trace_id"}}` whose trace id
/// is the response's `traceparent` trace id. Returns the `error` object.
#[track_caller]
pub fn assert_error<'a>(reply: &'a Reply, status: u16, code: &str) -> &'a Value {
    assert_eq!(
        (reply.status, reply.body["error"]["code"].as_str()),
        (status, Some(code)),
        "expected HTTP {status} `{code}`, got HTTP {} with body: {}",
        reply.status,
        reply.text
    );
    assert_error_shape(reply)
}

/// The shape checks of [`assert_error`] for any error status.
#[track_caller]
pub fn assert_error_shape(reply: &Reply) -> &Value {
    let body = reply.body.as_object().unwrap_or_else(|| {
        panic!(
            "HTTP {} error body is not a JSON object: {:?}",
            reply.status, reply.text
        )
    });
    assert_eq!(
        body.len(),
        1,
        "error body has keys besides `error`: {}",
        reply.text
    );
    let error = &reply.body["error"];
    let shape = |ok: bool, what: &str| {
        assert!(
            ok,
            "error body: {what}; HTTP {}: {}",
            reply.status, reply.text
        );
    };
    shape(error.is_object(), "`error` is not an object");
    shape(
        error["code"].as_str().is_some_and(|c| !c.is_empty()),
        "no `code` string",
    );
    shape(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no `message` string",
    );
    let details = error["details"].as_array();
    shape(details.is_some(), "`details` is not an array");
    for detail in details.into_iter().flatten() {
        shape(
            detail["field"].is_string() && detail["description"].is_string(),
            "a detail lacks `field`/`description` strings",
        );
    }
    assert_hex_id(&error["trace_id"], 32, "error.trace_id");
    assert_eq!(
        error["trace_id"].as_str(),
        Some(reply.trace_id().as_str()),
        "error.trace_id differs from the traceparent response header"
    );
    error
}

/// Fails unless a line of the Prometheus text `metrics` starts with `prefix` (a series, with or
/// without its value).
pub fn assert_metric_line(metrics: &str, prefix: &str) {
    assert!(
        metrics.lines().any(|l| l.starts_with(prefix)),
        "no line starts with {prefix}\n{metrics}"
    );
}
