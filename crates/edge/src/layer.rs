//! The edge as one tower layer, parameterised by its [`Transport`] the way tower-http's
//! `TraceLayer` is by its classifiers. Every call, REST or gRPC, goes through the same steps in
//! the same order: open (span, exemptions, the caller's deadline) → in the span: authenticate →
//! admit → run within the budget → finish the admission ticket → close (`traceparent`, and the
//! call's end now or, for a streamed gRPC answer, at its trailers).
//!
//! Why one layer with a transport in it, rather than a stack of small layers or axum's
//! `from_fn_with_state` for HTTP: the REST path is the hot one (a cached read costs a few µs).
//! A Service's future cannot name an `async` block, so each layer of a stack would box its own
//! future, and a refusal in an inner layer would still need the transport to render it;
//! `from_fn_with_state` boxed its future, boxed the rest of the stack into `Next` and that
//! one's future again, and cloned its state twice. This layer boxes one future and clones one
//! `Arc` per call (and the inner service, as every tower layer that serves from a clone).

use crate::admit::{Edge, Exempt, Refusal};
use crate::deadline;
use bytes::Bytes;
use http::header::RETRY_AFTER;
use http::{Extensions, Request, Response};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tracing::{Instrument, Span};

/// What the edge needs of a transport: reading a request head, answering an error, and when a
/// call's answer is known. See the module documentation for the order they are called in.
pub trait Transport: Send + Sync + 'static {
    /// One exchange, in the messages the edge writes: `request`, `call`.
    const NOUN: &'static str;
    /// What the transport keeps of a call until its end: its [`crate::Call`] and labels.
    type Call: Send + 'static;
    /// The body of the answers.
    type Body: Send + 'static;

    /// Opens a call at its request head.
    fn open<B>(&self, request: &Request<B>) -> Opened<Self::Call>;
    /// The call's server span: the call runs in it.
    fn span(call: &Self::Call) -> &Span;
    /// The client's address: the caller a rate limit counts when no API key is presented.
    fn peer(extensions: &Extensions) -> Option<IpAddr>;
    /// `error` as this transport answers it.
    fn render(error: ordo_domain::Error) -> Response<Self::Body>;
    /// The inner service's answer as this transport gives it.
    fn answered<B>(response: Response<B>) -> Response<Self::Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<tower::BoxError>;
    /// Whether an answer counts as served: a server fault tells admission nothing about how
    /// many calls the process can finish.
    fn served(response: &Response<Self::Body>) -> bool;
    /// Ends the call with its answer: `traceparent` on it, and the call's end recorded now or
    /// when the answer's status is known.
    fn close(call: Self::Call, response: Response<Self::Body>) -> Response<Self::Body>;
}

/// A call opened at its request head.
pub struct Opened<C> {
    pub call: C,
    pub exempt: Exempt,
    /// How long the caller said it waits (gRPC's `grpc-timeout`); `None`: not said.
    pub asked: Option<Duration>,
}

/// See the module documentation.
pub struct EdgeLayer<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    edge: Edge,
    transport: T,
}

impl<T> Clone for EdgeLayer<T> {
    fn clone(&self) -> Self {
        EdgeLayer {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T: Transport> EdgeLayer<T> {
    pub fn new(edge: Edge, transport: T) -> Self {
        EdgeLayer {
            shared: Arc::new(Shared { edge, transport }),
        }
    }
}

impl<S, T> tower::Layer<S> for EdgeLayer<T> {
    type Service = EdgeService<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        EdgeService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service of [`EdgeLayer`].
pub struct EdgeService<S, T> {
    inner: S,
    shared: Arc<Shared<T>>,
}

impl<S: Clone, T> Clone for EdgeService<S, T> {
    fn clone(&self) -> Self {
        EdgeService {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, T, ReqBody, ResBody> tower::Service<Request<ReqBody>> for EdgeService<S, T>
where
    T: Transport,
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<tower::BoxError>,
{
    type Response = Response<T::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready serves this call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        let Opened {
            call,
            exempt,
            asked,
        } = shared.transport.open(&request);
        let span = T::span(&call).clone();
        Box::pin(async move {
            let response = shared
                .serve(inner, request, exempt, asked)
                .instrument(span)
                .await?;
            Ok(T::close(call, response))
        })
    }
}

impl<T: Transport> Shared<T> {
    /// Authenticates, admits and runs one call within its budget: its answer, or the inner
    /// service's error.
    async fn serve<S, ReqBody, ResBody>(
        &self,
        mut inner: S,
        request: Request<ReqBody>,
        exempt: Exempt,
        asked: Option<Duration>,
    ) -> Result<Response<T::Body>, S::Error>
    where
        S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
        ResBody: http_body::Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<tower::BoxError>,
    {
        let extensions = request.extensions();
        let ticket = match self
            .edge
            .admit(request.headers(), || T::peer(extensions), exempt)
            .await
        {
            Ok(ticket) => ticket,
            Err(refusal) => return Ok(refused::<T>(refusal)),
        };
        let budget = deadline::budget(self.edge.request_timeout, asked);
        let response = match deadline::run(budget, || inner.call(request)).await {
            Ok(answered) => T::answered(answered?),
            Err(late) => T::render(late.error(T::NOUN)),
        };
        if let Some(ticket) = ticket {
            ticket.finish(T::served(&response));
        }
        Ok(response)
    }
}

/// A call turned away at the door: its error, and when to come back.
fn refused<T: Transport>(refusal: Refusal) -> Response<T::Body> {
    let mut response = T::render(refusal.error());
    if let Some(seconds) = refusal.retry_after_secs() {
        response.headers_mut().insert(RETRY_AFTER, seconds.into());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admit::Exemptions;
    use crate::auth::ApiKeys;
    use crate::call::{Call, Labels, Outcome};
    use http::StatusCode;
    use ordo_admission::{Admission, AdmissionSettings, RateLimit};
    use ordo_domain::ErrorKind;
    use ordo_telemetry::metrics::HttpLabels;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::{Layer, Service, ServiceExt};

    /// A transport of bare statuses: an error is its kind's HTTP status, the kind in the
    /// extensions; `x-wait-ms` is the caller's deadline.
    struct Plain;

    const EXEMPTIONS: Exemptions = Exemptions {
        keyless: &["/health"],
        unlimited: &["/health"],
    };

    impl Transport for Plain {
        const NOUN: &'static str = "request";
        type Call = Call;
        type Body = ();

        fn open<B>(&self, request: &Request<B>) -> Opened<Call> {
            let path = request.uri().path();
            let asked = request
                .headers()
                .get("x-wait-ms")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .map(Duration::from_millis);
            Opened {
                call: Call::http(
                    request.method(),
                    None,
                    path,
                    request.version(),
                    request.headers(),
                ),
                exempt: EXEMPTIONS.of(Some(path)),
                asked,
            }
        }

        fn span(call: &Call) -> &Span {
            call.span()
        }

        fn peer(_: &Extensions) -> Option<IpAddr> {
            None
        }

        fn render(error: ordo_domain::Error) -> Response<()> {
            let mut response = Response::new(());
            *response.status_mut() = StatusCode::from_u16(error.kind.http_status()).unwrap();
            response.extensions_mut().insert(error.kind);
            response
        }

        fn answered<B>(response: Response<B>) -> Response<()> {
            response.map(drop)
        }

        fn served(response: &Response<()>) -> bool {
            !response.status().is_server_error()
        }

        fn close(mut call: Call, mut response: Response<()>) -> Response<()> {
            call.stamp(response.headers_mut());
            call.finish(Outcome {
                labels: Labels::Http(HttpLabels::new(
                    &http::Method::GET,
                    None,
                    response.status().as_u16(),
                )),
                failure: None,
                kind: response.extensions().get::<ErrorKind>().copied(),
            });
            response
        }
    }

    /// Longer than any test takes.
    const LONG: Duration = Duration::from_secs(5);

    /// What the handler saw: how many calls reached it, and the calls in progress during the
    /// last one.
    #[derive(Default)]
    struct Seen {
        calls: AtomicUsize,
        in_flight: AtomicUsize,
    }

    /// An edge over a handler that answers 200 after `work`.
    fn served(
        keys: &[&str],
        admission: Admission,
        request_timeout: Duration,
        work: Duration,
    ) -> (
        impl Service<Request<()>, Response = Response<()>, Error = Infallible> + Clone,
        Arc<Seen>,
    ) {
        let keys: Vec<ordo_config::Secret> =
            keys.iter().map(|k| ordo_config::Secret::new(*k)).collect();
        let edge = Edge {
            api_keys: ApiKeys::new(&keys),
            admission: admission.clone(),
            request_timeout,
        };
        let seen = Arc::new(Seen::default());
        let handler = {
            let seen = Arc::clone(&seen);
            tower::service_fn(move |_: Request<()>| {
                seen.calls.fetch_add(1, Ordering::Relaxed);
                seen.in_flight
                    .store(admission.in_flight(), Ordering::Relaxed);
                async move {
                    tokio::time::sleep(work).await;
                    Ok::<_, Infallible>(Response::new(String::new()))
                }
            })
        };
        (EdgeLayer::new(edge, Plain).layer(handler), seen)
    }

    fn admission(rate_limit: Option<RateLimit>, max_in_flight: usize) -> Admission {
        Admission::new(
            AdmissionSettings {
                rate_limit,
                max_in_flight,
                adaptive_cpu_threshold_permille: None,
            },
            None,
        )
    }

    fn get(path: &str, headers: &[(&'static str, &'static str)]) -> Request<()> {
        let mut request = Request::get(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap()
    }

    async fn send(
        service: &mut (impl Service<Request<()>, Response = Response<()>, Error = Infallible> + Clone),
        request: Request<()>,
    ) -> Response<()> {
        service.ready().await.unwrap().call(request).await.unwrap()
    }

    #[tokio::test]
    async fn a_refused_call_never_reaches_the_handler_and_only_admission_says_when_to_retry() {
        let limit = RateLimit {
            per_second: 1,
            burst: 1,
        };
        let admission = admission(Some(limit), usize::MAX);
        let (mut service, seen) = served(&["k-one"], admission, LONG, Duration::ZERO);
        let anonymous = send(&mut service, get("/orders", &[])).await;
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
        assert!(!anonymous.headers().contains_key(RETRY_AFTER));
        let keyed = [("x-api-key", "k-one")];
        assert_eq!(
            send(&mut service, get("/orders", &keyed)).await.status(),
            StatusCode::OK
        );
        let limited = send(&mut service, get("/orders", &keyed)).await;
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.headers()[RETRY_AFTER], "1");
        assert_eq!(seen.calls.load(Ordering::Relaxed), 1);
        // Exempt from keys and limits alike.
        for _ in 0..3 {
            let probe = send(&mut service, get("/health", &[])).await;
            assert_eq!(probe.status(), StatusCode::OK);
        }
    }

    #[tokio::test]
    async fn an_admitted_call_holds_its_ticket_until_answered_and_an_exempt_one_holds_none() {
        let admission = admission(None, usize::MAX);
        let (mut service, seen) = served(&[], admission.clone(), LONG, Duration::ZERO);
        assert_eq!(send(&mut service, get("/orders", &[])).await.status(), 200);
        assert_eq!(seen.in_flight.load(Ordering::Relaxed), 1);
        assert_eq!(admission.in_flight(), 0);
        assert_eq!(send(&mut service, get("/health", &[])).await.status(), 200);
        assert_eq!(seen.in_flight.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_call_past_its_budget_is_deadline_exceeded_and_leaves_admission() {
        let admission = admission(None, usize::MAX);
        let short = Duration::from_millis(30);
        let (mut service, seen) = served(&[], admission.clone(), short, LONG);
        let late = send(&mut service, get("/orders", &[])).await;
        assert_eq!(late.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            late.extensions().get::<ErrorKind>(),
            Some(&ErrorKind::DeadlineExceeded)
        );
        assert_eq!(seen.calls.load(Ordering::Relaxed), 1);
        assert_eq!(admission.in_flight(), 0);
        // A caller that waits less than the margin gets the answer without any work done.
        let spent = send(&mut service, get("/orders", &[("x-wait-ms", "3")])).await;
        assert_eq!(spent.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(seen.calls.load(Ordering::Relaxed), 1);
        assert_eq!(admission.in_flight(), 0);
    }
}
