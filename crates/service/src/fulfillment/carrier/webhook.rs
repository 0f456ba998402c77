//! A carrier's webhook: `POST` of the shipment with `Idempotency-Key` (the shipment id, which
//! the carrier deduplicates), `traceparent` and `Ordo-Signature`, in a CLIENT span, bounded by
//! its timeout; the answer's status classified for the push stage's retries.

use super::{Carrier, PushFuture, PushRequest, Pushed};
use ordo_domain::risk::{self, PushOutcome};
use ordo_domain::signature;
use ordo_storage::now_ms;
use ordo_telemetry::{conventions, propagation};
use std::time::Duration;
use tracing::{Instrument, field};

/// A carrier's webhook: one HTTP client with its timeout, the URL and the signing secret.
pub(super) struct WebhookCarrier {
    client: reqwest::Client,
    url: String,
    secret: String,
    /// `server.address` and `server.port` of its spans.
    server: (String, u16),
}

impl WebhookCarrier {
    pub(super) fn new(
        url: &str,
        secret: String,
        timeout: Duration,
    ) -> Result<WebhookCarrier, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        Ok(WebhookCarrier {
            client,
            url: url.to_owned(),
            secret,
            server: conventions::server_of(url).unwrap_or_default(),
        })
    }

    async fn post(&self, request: PushRequest<'_>, span: tracing::Span) -> Pushed {
        let mut headers = reqwest::header::HeaderMap::new();
        propagation::inject_http(&span, &mut headers);
        let signature = signature::sign(
            self.secret.as_bytes(),
            now_ms().div_euclid(1000),
            request.body,
        );
        let sent = self
            .client
            .post(&self.url)
            .headers(headers)
            .header("content-type", "application/json")
            .header("idempotency-key", request.shipment_id)
            .header("ordo-signature", signature)
            .body(request.body.to_vec())
            .send()
            .instrument(span.clone())
            .await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                span.record("http.response.status_code", i64::from(status));
                let outcome = risk::classify_status(status);
                if outcome != PushOutcome::Accepted {
                    span.record("otel.status_code", "error");
                    span.record("error.type", status.to_string());
                }
                match outcome {
                    PushOutcome::Accepted => Pushed::Accepted {
                        status: Some(status),
                    },
                    PushOutcome::Retry => Pushed::Transient {
                        reason: format!("status {status}"),
                        carrier_failed: status >= 500,
                    },
                    PushOutcome::Final => Pushed::Refused { status },
                }
            }
            Err(error) => {
                let (error_type, reason) = if error.is_timeout() {
                    ("timeout", "timeout".to_owned())
                } else {
                    ("transport", format!("transport error: {error}"))
                };
                span.record("otel.status_code", "error");
                span.record("error.type", error_type);
                Pushed::Transient {
                    reason,
                    carrier_failed: true,
                }
            }
        }
    }
}

impl Carrier for WebhookCarrier {
    fn push<'a>(&'a self, request: PushRequest<'a>) -> PushFuture<'a> {
        let span = tracing::info_span!(
            "carrier_push",
            otel.name = "POST",
            otel.kind = "client",
            otel.status_code = field::Empty,
            http.request.method = "POST",
            server.address = %self.server.0,
            server.port = i64::from(self.server.1),
            url.full = %self.url,
            http.response.status_code = field::Empty,
            error.type = field::Empty,
            shipment.id = request.shipment_id,
            carrier = request.carrier,
            attempt = i64::from(request.attempt),
        );
        Box::pin(self.post(request, span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A fake carrier: answers each request with the next status of `statuses` (or closes the
    /// connection at once for 0), keeping the raw requests.
    async fn fake_carrier(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/shipments", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&seen);
        tokio::spawn(async move {
            for status in statuses {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let mut buffer = vec![0u8; 64 * 1024];
                let mut read = 0;
                // Headers and the (small) body arrive together on loopback; read until the
                // body's length is in.
                loop {
                    let n = socket.read(&mut buffer[read..]).await.unwrap_or(0);
                    read += n;
                    let text = String::from_utf8_lossy(&buffer[..read]).to_string();
                    if n == 0 || text.contains("\r\n\r\n{") && text.ends_with('}') {
                        break;
                    }
                }
                kept.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buffer[..read]).to_lowercase());
                if status == 0 {
                    continue;
                }
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        (url, seen)
    }

    fn request<'a>(body: &'a [u8]) -> PushRequest<'a> {
        PushRequest {
            carrier: "thai-express",
            shipment_id: "shp_1",
            attempt: 1,
            body,
        }
    }

    #[tokio::test]
    async fn a_push_is_signed_and_keyed_and_its_status_classified() {
        let (url, seen) = fake_carrier(vec![200, 503, 429, 400, 0]).await;
        let carrier =
            WebhookCarrier::new(&url, "carrier_secret".to_owned(), Duration::from_secs(2)).unwrap();
        let body = br#"{"shipment_id":"shp_1"}"#;
        assert_eq!(
            carrier.push(request(body)).await,
            Pushed::Accepted { status: Some(200) }
        );
        assert!(matches!(
            carrier.push(request(body)).await,
            Pushed::Transient {
                carrier_failed: true,
                ..
            }
        ));
        assert!(
            matches!(
                carrier.push(request(body)).await,
                Pushed::Transient {
                    carrier_failed: false,
                    ..
                }
            ),
            "a 429 asks to slow down: the carrier is up"
        );
        assert_eq!(
            carrier.push(request(body)).await,
            Pushed::Refused { status: 400 }
        );
        assert!(matches!(
            carrier.push(request(body)).await,
            Pushed::Transient {
                carrier_failed: true,
                ..
            }
        ));
        let first = seen.lock().unwrap()[0].clone();
        assert!(first.contains("idempotency-key: shp_1"), "{first}");
        let signature = first
            .lines()
            .find_map(|l| l.strip_prefix("ordo-signature: "))
            .expect("an Ordo-Signature header");
        signature::verify(
            b"carrier_secret",
            signature.trim(),
            body,
            now_ms().div_euclid(1000),
        )
        .expect("the signature verifies with the carrier's secret");
    }

    #[tokio::test]
    async fn a_carrier_that_does_not_answer_is_a_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/shipments", listener.local_addr().unwrap());
        let _held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let carrier = WebhookCarrier::new(&url, String::new(), Duration::from_millis(200)).unwrap();
        assert_eq!(
            carrier.push(request(b"{}")).await,
            Pushed::Transient {
                reason: "timeout".to_owned(),
                carrier_failed: true
            }
        );
    }
}
