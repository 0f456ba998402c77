//! W3C trace context in (`ordo_telemetry::propagation`): `traceparent`, `tracestate` and
//! `baggage` from HTTP headers and from stored/message carriers, with the production
//! propagators. Invariants: nothing panics; a span always ends with a valid context; it joins
//! the caller's trace only for a well-formed `traceparent` (garbage never becomes our parent),
//! and always for one; what we then inject is well-formed and can go out as an HTTP header and
//! a NATS message header; an exemplar only ever comes from a sampled, well-formed traceparent.
//!
//! Input: a header block, one `name: value` a line (`traceparent: 00-...`); the lines
//! `x-stored-trace-id:` and `x-stored-span-id:` are ids as a row stores them.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use ordo_telemetry::metrics::TraceExemplar;
use ordo_telemetry::propagation;
use std::collections::HashMap;

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// W3C Trace Context level 1 (section 3.2): the oracle the extraction is checked against.
fn well_formed_traceparent(value: &str) -> bool {
    let value = value.trim_matches([' ', '\t']);
    if value.len() < 55 || !value.is_char_boundary(55) {
        return false;
    }
    let (head, rest) = value.split_at(55);
    let fields: Vec<&str> = head.split('-').collect();
    let [version, trace_id, span_id, flags] = fields[..] else {
        return false;
    };
    let lengths =
        version.len() == 2 && trace_id.len() == 32 && span_id.len() == 16 && flags.len() == 2;
    let hex = [version, trace_id, span_id, flags]
        .iter()
        .all(|f| is_lower_hex(f));
    let nonzero = trace_id.bytes().any(|b| b != b'0') && span_id.bytes().any(|b| b != b'0');
    let tail_ok = match version {
        "ff" => false,
        "00" => rest.is_empty(),
        _ => rest.is_empty() || rest.starts_with('-'),
    };
    lengths && hex && nonzero && tail_ok
}

/// The trace id a lax parser (`u128::from_str_radix` on the second field) would read from
/// `value`: if a span got it, the span adopted that traceparent.
fn laxly_read_trace_id(value: &str) -> Option<String> {
    let field = value.trim().split('-').nth(1)?;
    u128::from_str_radix(field, 16)
        .ok()
        .map(|id| format!("{id:032x}"))
}

fn header_value(bytes: &[u8]) -> Option<HeaderValue> {
    HeaderValue::from_bytes(bytes).ok()
}

/// What a carrier we inject (outbox rows, broker messages, outgoing requests) must hold.
fn assert_injectable(carrier: &HashMap<String, String>, ids: &propagation::TraceIds) {
    for (name, value) in carrier {
        assert!(HeaderName::from_bytes(name.as_bytes()).is_ok(), "{name:?}");
        assert!(HeaderValue::from_str(value).is_ok(), "{name}: {value:?}");
        assert!(
            async_nats::HeaderName::try_from(name.as_str()).is_ok(),
            "not a NATS header name: {name:?}"
        );
        assert!(
            value.parse::<async_nats::HeaderValue>().is_ok(),
            "not a NATS header value: {name}: {value:?}"
        );
    }
    let traceparent = &carrier["traceparent"];
    assert!(well_formed_traceparent(traceparent), "{traceparent:?}");
    assert_eq!(&traceparent[3..35], ids.trace_id);
    assert_eq!(&traceparent[36..52], ids.span_id);
}

fuzz_target!(|data: &[u8]| {
    ordo_fuzz::telemetry();

    let mut headers = HeaderMap::new();
    let (mut stored_trace_id, mut stored_span_id) = ("", "");
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii_start());
        match name {
            b"x-stored-trace-id" => stored_trace_id = std::str::from_utf8(value).unwrap_or(""),
            b"x-stored-span-id" => stored_span_id = std::str::from_utf8(value).unwrap_or(""),
            _ => {
                if let (Ok(name), Some(value)) = (HeaderName::from_bytes(name), header_value(value))
                {
                    headers.append(name, value);
                }
            }
        }
    }
    // What the propagator sees: the first value of each name (`HeaderMap::get`).
    let incoming_traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    // The HTTP edge: the SERVER span adopts the caller's context.
    let root = tracing::info_span!(parent: None, "root");
    let root_ids = propagation::ids_of(&root).expect("a root span has a context");
    let span = tracing::info_span!(parent: None, "serve");
    propagation::adopt_http_parent(&span, &headers);
    let ids = propagation::ids_of(&span).expect("a span always has a valid context");
    assert_eq!(ids.trace_id.len(), 32);
    assert_eq!(ids.span_id.len(), 16);
    assert_ne!(
        root_ids.trace_id, ids.trace_id,
        "fresh roots get fresh traces"
    );
    let expected_parent = incoming_traceparent
        .as_deref()
        .filter(|tp| well_formed_traceparent(tp))
        .map(|tp| tp.trim_matches([' ', '\t'])[3..35].to_owned());
    match &expected_parent {
        Some(trace_id) => assert_eq!(&ids.trace_id, trace_id, "{incoming_traceparent:?}"),
        None => {
            let joined = incoming_traceparent
                .as_deref()
                .and_then(laxly_read_trace_id)
                .is_some_and(|lax| lax == ids.trace_id);
            assert!(
                !joined,
                "a malformed traceparent became our parent: {incoming_traceparent:?}"
            );
        }
    }

    // What goes out: the response header, outgoing requests, outbox rows and messages.
    let traceparent = propagation::traceparent_of(&span).expect("valid span, traceparent");
    let traceparent = traceparent.to_str().expect("ASCII");
    assert!(well_formed_traceparent(traceparent), "{traceparent:?}");
    if let Some(exemplar) = TraceExemplar::from_sampled_traceparent(traceparent.as_bytes()) {
        assert_eq!(exemplar.trace_id(), ids.trace_id);
    }
    let mut outgoing = HeaderMap::new();
    propagation::inject_http(&span, &mut outgoing);
    assert_eq!(outgoing["traceparent"], traceparent);
    let carrier = propagation::inject_map(&span);
    assert_injectable(&carrier, &ids);

    // A consumer continues from what we stored or sent: same trace, same tracestate.
    let consumer = tracing::info_span!(parent: None, "consume");
    propagation::adopt_parent_from_map(&consumer, &carrier);
    propagation::link_to_map(&consumer, &carrier);
    let consumed = propagation::ids_of(&consumer).unwrap();
    assert_eq!(consumed.trace_id, ids.trace_id);
    let again = propagation::inject_map(&consumer);
    assert_eq!(again.get("tracestate"), carrier.get("tracestate"));

    // The incoming pairs as a carrier (message headers, a stored context).
    let map: HashMap<String, String> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let from_map = tracing::info_span!(parent: None, "from_map");
    propagation::adopt_parent_from_map(&from_map, &map);
    propagation::link_to_map(&from_map, &map);
    let from_map_ids = propagation::ids_of(&from_map).unwrap();
    let carried = map
        .get("traceparent")
        .filter(|tp| well_formed_traceparent(tp));
    if let Some(tp) = carried {
        assert_eq!(from_map_ids.trace_id, tp.trim_matches([' ', '\t'])[3..35]);
    } else if let Some(tp) = map.get("traceparent") {
        assert_ne!(
            laxly_read_trace_id(tp).as_deref(),
            Some(from_map_ids.trace_id.as_str()),
            "a malformed traceparent became our parent: {tp:?}"
        );
    }

    // Exemplars from any traceparent: only a sampled, well-formed one gives one.
    if let Some(tp) = &incoming_traceparent
        && let Some(exemplar) = TraceExemplar::from_sampled_traceparent(tp.as_bytes())
    {
        assert_eq!(exemplar.trace_id(), &tp[3..35]);
        assert!(exemplar.trace_id().len() == 32 && is_lower_hex(exemplar.trace_id()));
    }

    // Ids a row stored.
    let later = tracing::info_span!(parent: None, "later");
    let adopted = propagation::adopt_parent_from_ids(&later, stored_trace_id, stored_span_id);
    propagation::link_to_ids(&later, stored_trace_id, stored_span_id);
    let later_ids = propagation::ids_of(&later).unwrap();
    if adopted {
        // Only ids in the form we store them (32 and 16 lower-case hex digits) are read.
        assert_eq!(later_ids.trace_id, stored_trace_id);
        assert!(stored_span_id.len() == 16 && is_lower_hex(stored_span_id));
    }
});
