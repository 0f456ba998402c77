//! A carrier webhook for tests: a real HTTP server (axum) on a free port that checks the
//! contract of every push (`Idempotency-Key`, `Ordo-Signature` verified with hmac from the
//! contract, `traceparent`) and answers with the status the test decides.

use hmac::{Hmac, Mac};
use serde_json::Value;
use std::sync::{Arc, Mutex};

pub const CARRIER_SECRET: &str = "carrier_secret_for_tests_0123456789";

/// One request the test carrier received.
#[derive(Debug, Clone)]
pub struct Push {
    pub shipment_id: String,
    pub idempotency_key: Option<String>,
    pub signature_valid: bool,
    pub traceparent: Option<String>,
    pub body: Value,
    pub answered: u16,
}

/// A carrier webhook on a free port; `answer(shipment_id, nth push of it)` decides the status.
pub struct Carrier {
    pub url: String,
    pub pushes: Arc<Mutex<Vec<Push>>>,
}

impl Carrier {
    pub async fn start(answer: impl Fn(&str, usize) -> u16 + Send + Sync + 'static) -> Carrier {
        let pushes: Arc<Mutex<Vec<Push>>> = Arc::default();
        let answer = Arc::new(answer);
        let recorded = Arc::clone(&pushes);
        let app = axum::Router::new().route(
            "/shipments",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let recorded = Arc::clone(&recorded);
                    let answer = Arc::clone(&answer);
                    async move {
                        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let shipment_id = parsed["shipment_id"].as_str().unwrap_or("").to_owned();
                        let header = |name: &str| {
                            headers
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned)
                        };
                        let signature_valid = header("ordo-signature")
                            .is_some_and(|h| verify(CARRIER_SECRET, &h, &body));
                        let mut pushes = recorded.lock().unwrap();
                        let nth = pushes
                            .iter()
                            .filter(|p| p.shipment_id == shipment_id)
                            .count();
                        let status = answer(&shipment_id, nth);
                        pushes.push(Push {
                            shipment_id,
                            idempotency_key: header("idempotency-key"),
                            signature_valid,
                            traceparent: header("traceparent"),
                            body: parsed,
                            answered: status,
                        });
                        axum::http::StatusCode::from_u16(status).unwrap()
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Carrier {
            url: format!("http://{addr}/shipments"),
            pushes,
        }
    }

    pub fn pushes(&self) -> Vec<Push> {
        self.pushes.lock().unwrap().clone()
    }

    pub fn env(&self, extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("ORDO_CARRIER_WEBHOOK_URL", self.url.clone()),
            ("ORDO_CARRIER_WEBHOOK_SECRET", CARRIER_SECRET.to_owned()),
            ("ORDO_CARRIER_RETRY_BASE_MS", "5".to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        env
    }
}

/// Checks an `Ordo-Signature` value as the contract defines it (and the 300 s window).
pub fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1.push(value.to_owned()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - t).abs() > 300 {
        return false;
    }
    v1.iter().any(|candidate| {
        let Ok(tag) = hex::decode(candidate) else {
            return false;
        };
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        mac.verify_slice(&tag).is_ok()
    })
}
