//! The gRPC API against the real binary: generic clients (health, reflection v1 and v1alpha)
//! that know nothing of ordo's protos; REST/gRPC parity for create, get, list and errors;
//! gRPC-Web over plain HTTP/1.1 with CORS; API keys; `grpc-timeout`; the SERVER span and the
//! `rpc_server_duration_seconds` metric.

use ordo_testkit::otlp;

use ordo_grpc_api::pb;
use ordo_grpc_api::pb::catalog_service_client::CatalogServiceClient;
use ordo_grpc_api::pb::orders_service_client::OrdersServiceClient;
use ordo_grpc_api::pb::payments_service_client::PaymentsServiceClient;
use ordo_testkit::*;
use otlp::{OtlpReceiver, assert_one_tree, describe};
use prost::Message;
use serde_json::{Value, json};
use tonic::transport::Channel;
use tonic_types::StatusExt;

backend_tests!(rest_and_grpc_agree_on_create_get_list_and_errors,);

async fn channel(server: &TestServer) -> Channel {
    Channel::from_shared(server.grpc_url())
        .unwrap()
        .connect()
        .await
        .expect("connect to the gRPC port")
}

fn money(m: &Option<pb::Money>) -> Value {
    let m = m.clone().unwrap_or_default();
    json!({ "amount_minor": m.amount_minor, "currency": m.currency })
}

/// A gRPC order as the REST JSON would show it: the test's own statement of "same field names".
fn order_json(order: &pb::Order) -> Value {
    let address = order.shipping_address.clone().unwrap_or_default();
    let contact = order.contact.clone().unwrap_or_default();
    let mut contact_json = json!({ "email": contact.email });
    if let Some(phone) = contact.phone {
        contact_json["phone"] = json!(phone);
    }
    json!({
        "id": order.id,
        "customer_id": order.customer_id,
        "status": order.status,
        "currency": order.currency,
        "items": order.items.iter().map(|i| json!({
            "sku": i.sku,
            "quantity": i.quantity,
            "unit_price": money(&i.unit_price),
            "line_total": money(&i.line_total),
        })).collect::<Vec<_>>(),
        "total": money(&order.total),
        "shipping_address": {
            "name": address.name, "line1": address.line1, "city": address.city,
            "postal_code": address.postal_code, "country": address.country,
        },
        "contact": contact_json,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
        "trace_id": order.trace_id,
        "shipments": order.shipments.iter().map(|s| {
            let mut shipment = json!({ "id": s.id, "warehouse": s.warehouse, "status": s.status });
            if let Some(carrier) = &s.carrier { shipment["carrier"] = json!(carrier); }
            if let Some(slot) = &s.pickup_slot { shipment["pickup_slot"] = json!(slot); }
            shipment
        }).collect::<Vec<_>>(),
    })
}

/// The gRPC request equal to a REST order body.
fn create_request(body: &Value) -> pb::CreateOrderRequest {
    let address = &body["shipping_address"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    pb::CreateOrderRequest {
        customer_id: text(&body["customer_id"]),
        currency: text(&body["currency"]),
        items: body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| pb::OrderItemInput {
                sku: text(&i["sku"]),
                quantity: i["quantity"].as_i64().unwrap(),
            })
            .collect(),
        shipping_address: Some(pb::Address {
            name: text(&address["name"]),
            line1: text(&address["line1"]),
            city: text(&address["city"]),
            postal_code: text(&address["postal_code"]),
            country: text(&address["country"]),
        }),
        contact: Some(pb::Contact {
            email: text(&body["contact"]["email"]),
            phone: body["contact"]["phone"].as_str().map(str::to_owned),
        }),
    }
}

/// The order `body` refused over REST and over gRPC with the same error.
async fn assert_create_refused_alike(
    server: &TestServer,
    orders: &mut OrdersServiceClient<Channel>,
    body: &Value,
    code: tonic::Code,
    error_code: &str,
) {
    let rest = server.post_order(body).await;
    let status = orders.create_order(create_request(body)).await.unwrap_err();
    assert_same_error(&rest, &status, code, error_code);
}

/// The REST error body's code and details next to the gRPC status's.
fn assert_same_error(rest: &Reply, status: &tonic::Status, code: tonic::Code, error_code: &str) {
    let body = assert_error(rest, rest.status, error_code);
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(
        status.metadata().get("ordo-error-code").unwrap(),
        error_code,
        "{status:?}"
    );
    assert_eq!(status.message(), body["message"], "{status:?}");
    let details = status.get_error_details();
    assert_eq!(
        details.error_info().unwrap().reason,
        error_code.to_ascii_uppercase()
    );
    let rest_fields = field_of_each(&body["details"], "field");
    let grpc_fields: Vec<&str> = details
        .bad_request()
        .map(|b| {
            b.field_violations
                .iter()
                .map(|v| v.field.as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(rest_fields, grpc_fields);
}

async fn rest_and_grpc_agree_on_create_get_list_and_errors(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;
    let mut orders = OrdersServiceClient::new(channel(&server).await);

    // Create: the same input gives the same order through either API.
    let body = order_body("parity-customer", &[(TEA, 2), (MUG, 1)]);
    let via_rest = server.create_order(&body).await;
    let via_grpc = orders
        .create_order(create_request(&body))
        .await
        .expect("CreateOrder")
        .into_inner();
    let grpc_json = order_json(&via_grpc);
    for field in [
        "customer_id",
        "status",
        "currency",
        "items",
        "total",
        "shipping_address",
        "contact",
        "shipments",
    ] {
        assert_eq!(grpc_json[field], via_rest[field], "{field}");
    }
    assert_eq!(server.reserved(TEA).await, 4);

    // Get: gRPC shows exactly what REST shows, for an order made by either.
    for id in [&via_rest["id"], &grpc_json["id"]] {
        let id = id.as_str().unwrap();
        let got = orders
            .get_order(pb::GetOrderRequest { id: id.to_owned() })
            .await
            .expect("GetOrder")
            .into_inner();
        assert_eq!(order_json(&got), server.get_order(id).await);
    }

    // List: the same pages.
    let rest_page = server
        .get("/v1/orders?customer_id=parity-customer&limit=1")
        .await
        .expect_status(200)
        .body;
    let grpc_page = orders
        .list_orders(pb::ListOrdersRequest {
            customer_id: Some("parity-customer".into()),
            limit: Some(1),
            ..Default::default()
        })
        .await
        .expect("ListOrders")
        .into_inner();
    assert_eq!(grpc_page.orders.len(), 1);
    assert_eq!(order_json(&grpc_page.orders[0]), rest_page["orders"][0]);
    assert_eq!(
        grpc_page.next_cursor.as_deref(),
        rest_page["next_cursor"].as_str()
    );

    // Errors: the same kind, code, message and field details.
    let too_many = order_body("parity-customer", &[(TEA, 1000)]);
    assert_create_refused_alike(
        &server,
        &mut orders,
        &too_many,
        tonic::Code::FailedPrecondition,
        "insufficient_stock",
    )
    .await;

    let missing = "ord_00000000000000000000000000000000";
    let rest = server.get(&format!("/v1/orders/{missing}")).await;
    let status = orders
        .get_order(pb::GetOrderRequest { id: missing.into() })
        .await
        .unwrap_err();
    assert_same_error(&rest, &status, tonic::Code::NotFound, "not_found");

    let mut invalid = order_body("parity-customer", &[]);
    invalid["currency"] = json!("usd!");
    assert_create_refused_alike(
        &server,
        &mut orders,
        &invalid,
        tonic::Code::InvalidArgument,
        "invalid_argument",
    )
    .await;

    // Idempotency: the metadata key behaves as the REST header.
    let keyed = order_body("parity-keyed", &[(MUG, 1)]);
    let mut first = tonic::Request::new(create_request(&keyed));
    first
        .metadata_mut()
        .insert("idempotency-key", "grpc-key-1".parse().unwrap());
    let first = orders.create_order(first).await.unwrap();
    let mut again = tonic::Request::new(create_request(&keyed));
    again
        .metadata_mut()
        .insert("idempotency-key", "grpc-key-1".parse().unwrap());
    let again = orders.create_order(again).await.unwrap();
    assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(first.into_inner().id, again.into_inner().id);
    let replay_via_rest = server.post_order_with_key("grpc-key-1", &keyed).await;
    assert_eq!(replay_via_rest.header("idempotent-replayed"), Some("true"));

    // Cancel and timeline through gRPC.
    let id = grpc_json["id"].as_str().unwrap().to_owned();
    let cancelled = orders
        .cancel_order(pb::CancelOrderRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status, "cancelled");
    let timeline = orders
        .get_order_timeline(pb::GetOrderTimelineRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    let rest_timeline = server
        .get(&format!("/v1/orders/{id}/timeline"))
        .await
        .expect_status(200)
        .body;
    let kinds: Vec<&str> = timeline.events.iter().map(|e| e.r#type.as_str()).collect();
    let rest_kinds = field_of_each(&rest_timeline["events"], "type");
    assert_eq!(kinds, rest_kinds);
    assert_eq!(kinds.first(), Some(&"order_created"));
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_stock_and_payments_work_over_grpc() {
    let server = TestServer::start(Backend::sqlite()).await;
    let channel = channel(&server).await;
    let mut catalog = CatalogServiceClient::new(channel.clone());
    catalog
        .put_warehouse(pb::PutWarehouseRequest {
            id: "WH-G".into(),
            country: "TH".into(),
        })
        .await
        .unwrap();
    let product = catalog
        .put_product(pb::PutProductRequest {
            sku: "GRPC-1".into(),
            name: "ชาเขียว".into(),
            price: Some(pb::Money {
                amount_minor: 250,
                currency: "USD".into(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(product.name, "ชาเขียว");
    let entry = catalog
        .put_stock(pb::PutStockRequest {
            sku: "GRPC-1".into(),
            warehouse: "WH-G".into(),
            on_hand: 7,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((entry.on_hand, entry.available), (7, 7));
    let stock = catalog
        .get_stock(pb::GetStockRequest {
            sku: "GRPC-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stock.available, 7);
    assert_eq!(server.stock("GRPC-1").await["available"], 7);
    // A missing price is refused like an empty JSON money.
    let status = catalog
        .put_product(pb::PutProductRequest {
            sku: "GRPC-2".into(),
            name: "x".into(),
            price: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    let order = server
        .create_order(&order_body("grpc-payer", &[("GRPC-1", 2)]))
        .await;
    let id = order["id"].as_str().unwrap().to_owned();
    let mut payments = PaymentsServiceClient::new(channel);
    let payment = payments
        .create_payment(pb::CreatePaymentRequest {
            order_id: id.clone(),
            provider: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(payment.provider, "sandbox");
    assert_eq!(payment.amount.unwrap().amount_minor, 500);
    let listed = payments
        .list_payments(pb::ListPaymentsRequest {
            order_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.payments.len(), 1);
    // A callback over gRPC is verified like one over HTTP: unsigned is refused.
    let status = payments
        .payment_callback(pb::PaymentCallbackRequest {
            provider: "sandbox".into(),
            body: b"{}".to_vec(),
            signature: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_reflection_answer_generic_clients() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let server = TestServer::start(Backend::sqlite()).await;
    let channel = channel(&server).await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "ordo.v1.OrdersService", "ordo.v1.CatalogService"] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let answer = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .expect("health check")
                .into_inner();
            if answer.status == ServingStatus::Serving as i32 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{service:?}: {answer:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // Reflection v1: list the services, then fetch the orders service's file and read its
    // methods from the descriptor — all without ordo's protos.
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new(channel.clone());
        let ask = |request: MessageRequest| {
            tokio_stream::iter([ServerReflectionRequest {
                host: String::new(),
                message_request: Some(request),
            }])
        };
        let mut answers = client
            .server_reflection_info(ask(MessageRequest::ListServices(String::new())))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("not a service list")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for expected in [
            "ordo.v1.OrdersService",
            "ordo.v1.CatalogService",
            "ordo.v1.PaymentsService",
            "grpc.health.v1.Health",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
        }
        let mut answers = client
            .server_reflection_info(ask(MessageRequest::FileContainingSymbol(
                "ordo.v1.OrdersService".into(),
            )))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::FileDescriptorResponse(files)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("not a file descriptor")
        };
        let file =
            prost_types::FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice())
                .unwrap();
        assert_eq!(file.package(), "ordo.v1");
        let orders = file
            .service
            .iter()
            .find(|s| s.name() == "OrdersService")
            .unwrap();
        let methods: Vec<&str> = orders.method.iter().map(|m| m.name()).collect();
        assert_eq!(
            methods,
            [
                "CreateOrder",
                "GetOrder",
                "ListOrders",
                "CancelOrder",
                "GetOrderTimeline"
            ]
        );
        // Field names are the JSON names.
        let order = file
            .message_type
            .iter()
            .find(|m| m.name() == "Order")
            .unwrap();
        assert!(order.field.iter().any(|f| f.name() == "shipping_address"));
    }
    // Reflection v1alpha, for older tools.
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new(channel);
        let mut answers = client
            .server_reflection_info(tokio_stream::iter([ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            }]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("not a service list")
        };
        assert!(
            list.service
                .iter()
                .any(|s| s.name == "ordo.v1.PaymentsService")
        );
    }
}

/// Frames a message as gRPC(-Web) does: flag 0, big-endian length, bytes.
fn grpc_frame(message: &impl Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    framed.extend_from_slice(&bytes);
    framed
}

/// Splits a gRPC-Web response body into its message and its trailers.
fn grpc_web_parts(body: &[u8]) -> (Vec<u8>, String) {
    let (mut message, mut trailers) = (Vec::new(), String::new());
    let mut rest = body;
    while rest.len() >= 5 {
        let flag = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let payload = &rest[5..5 + len];
        if flag & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(payload));
        } else {
            message.extend_from_slice(payload);
        }
        rest = &rest[5 + len..];
    }
    (message, trailers)
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_web_works_over_plain_http_1_1_with_cors() {
    let server = TestServer::start_with_env(
        Backend::sqlite(),
        &[("ORDO_CORS_ALLOWED_ORIGINS", "https://shop.example")],
    )
    .await;
    seed_catalog(&server).await;
    let order = server
        .create_order(&order_body("web-customer", &[(TEA, 1)]))
        .await;
    let id = order["id"].as_str().unwrap();
    let client = reqwest::Client::builder().http1_only().build().unwrap();
    let url = format!("{}/ordo.v1.OrdersService/GetOrder", server.grpc_url());

    // The browser's preflight.
    let preflight = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,traceparent",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{preflight:?}");
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let elsewhere = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(
        !elsewhere
            .headers()
            .contains_key("access-control-allow-origin"),
        "{elsewhere:?}"
    );

    // The call itself, HTTP/1.1.
    let response = client
        .post(&url)
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("origin", "https://shop.example")
        .body(grpc_frame(&pb::GetOrderRequest { id: id.to_owned() }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("traceparent"));
    let body = response.bytes().await.unwrap();
    let (message, trailers) = grpc_web_parts(&body);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let got = pb::Order::decode(message.as_slice()).unwrap();
    assert_eq!(got.id, id);
    assert_eq!(got.status, "pending_payment");

    // An error reaches the browser with its code in the trailers.
    let response = client
        .post(&url)
        .header("content-type", "application/grpc-web+proto")
        .body(grpc_frame(&pb::GetOrderRequest {
            id: "ord_00000000000000000000000000000000".into(),
        }))
        .send()
        .await
        .unwrap();
    let headers = format!("{:?}", response.headers());
    let body = response.bytes().await.unwrap();
    let (_, trailers) = grpc_web_parts(&body);
    let all = format!("{headers} {trailers}");
    assert!(all.contains("grpc-status") && all.contains('5'), "{all}");
    assert!(all.contains("not_found"), "{all}");
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_guard_rest_and_grpc_but_not_health_or_callbacks() {
    let server =
        TestServer::start_with_env(Backend::sqlite(), &[("ORDO_API_KEYS", "key-a, key-b")]).await;
    // REST: no key → 401 with the error body; a key in either header passes.
    let refused = server.get("/v1/products/TEA-001").await;
    assert_error(&refused, 401, "unauthenticated");
    let product_with = |name: &'static str, value: &'static str| {
        send(
            server
                .request(reqwest::Method::GET, "/v1/products/TEA-001")
                .header(name, value),
        )
    };
    assert_error(&product_with("x-api-key", "key-b").await, 404, "not_found");
    assert_error(
        &product_with("authorization", "Bearer key-a").await,
        404,
        "not_found",
    );
    let wrong = product_with("x-api-key", "key-c").await;
    assert_error(&wrong, 401, "unauthenticated");
    // Callbacks authenticate by signature: no key needed to be heard (and refused for the
    // missing signature, not the key).
    let callback = server.post_unsigned_callback().await;
    assert_error(&callback, 401, "unauthenticated");
    assert!(
        callback.body["error"]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("signature"),
        "{:#}",
        callback.body
    );

    // gRPC: the same keys.
    let channel = channel(&server).await;
    let mut catalog = CatalogServiceClient::new(channel.clone());
    let status = catalog
        .get_product(pb::GetProductRequest {
            sku: "TEA-001".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let mut request = tonic::Request::new(pb::GetProductRequest {
        sku: "TEA-001".into(),
    });
    request
        .metadata_mut()
        .insert("x-api-key", "key-a".parse().unwrap());
    let status = catalog.get_product(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    // Health needs no key.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health is open");
}

/// A raw HTTP/2 gRPC call: tonic's client would enforce `grpc-timeout` itself and cancel
/// before the server's answer arrives; here only the server keeps the deadline.
async fn raw_grpc_call(
    server: &TestServer,
    path: &str,
    message: &impl Message,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut request = client
        .post(format!("{}{path}", server.grpc_url()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(grpc_frame(message));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_past_its_grpc_timeout_answers_deadline_exceeded() {
    let server = TestServer::start(Backend::sqlite()).await;
    seed_catalog(&server).await;
    let create = create_request(&order_body("late", &[(TEA, 1)]));
    let path = "/ordo.v1.OrdersService/CreateOrder";
    // Shorter than the margin kept to answer: no time is left for the work.
    let late = raw_grpc_call(&server, path, &create, &[("grpc-timeout", "3m")]).await;
    assert_eq!(late.version(), reqwest::Version::HTTP_2);
    assert_eq!(late.headers()["grpc-status"], "4", "{late:?}");
    assert_eq!(late.headers()["ordo-error-code"], "deadline_exceeded");
    assert_eq!(server.reserved(TEA).await, 0, "nothing was reserved");
    // A generous deadline works, through the ordinary client too.
    let mut orders = OrdersServiceClient::new(channel(&server).await);
    let mut request = tonic::Request::new(create);
    request.set_timeout(std::time::Duration::from_secs(10));
    orders
        .create_order(request)
        .await
        .expect("within its deadline");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_call_is_one_trace_under_the_callers_parent_and_is_measured() {
    let receiver = OtlpReceiver::grpc().await;
    let server = TestServer::start_with_env(
        Backend::sqlite(),
        &receiver
            .env()
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    )
    .await;
    seed_catalog(&server).await;
    let trace_id = format!("{}{}", random_hex(), random_hex());
    let parent = "00f067aa0ba902b7";
    let mut orders = OrdersServiceClient::new(channel(&server).await);
    let mut request = tonic::Request::new(create_request(&order_body("traced", &[(TEA, 1)])));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent}-01").parse().unwrap(),
    );
    let response = orders.create_order(request).await.unwrap();
    let traceparent = response
        .metadata()
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(traceparent.contains(&trace_id), "{traceparent}");
    assert_eq!(response.into_inner().trace_id, trace_id);

    let spans = receiver
        .trace(&trace_id, |spans| {
            spans
                .iter()
                .any(|s| s.name == "ordo.v1.OrdersService/CreateOrder")
        })
        .await;
    let root = assert_one_tree(&spans, parent);
    assert_eq!(
        root.name,
        "ordo.v1.OrdersService/CreateOrder",
        "{:#?}",
        describe(&spans)
    );
    assert_eq!(root.kind, 2, "SERVER");
    assert_eq!(root.attributes["rpc.system"], "grpc");
    assert_eq!(root.attributes["rpc.service"], "ordo.v1.OrdersService");
    assert_eq!(root.attributes["rpc.method"], "CreateOrder");
    assert_eq!(root.attributes["rpc.grpc.status_code"], "0");
    assert!(spans.iter().any(|s| s.name == "create_order"));
    assert!(spans.iter().any(|s| s.kind == 3), "database CLIENT spans");

    let metrics = server.admin_get("/metrics").await.expect_status(200).text;
    assert_metric_line(
        &metrics,
        "rpc_server_duration_seconds_count{rpc_service=\"ordo.v1.OrdersService\",\
         rpc_method=\"CreateOrder\",rpc_grpc_status_code=\"0\"} 1",
    );
    let access = server
        .logs()
        .into_iter()
        .find(|l| l.contains("\"rpc_method\":\"CreateOrder\""))
        .expect("an access line for the call");
    assert!(access.contains(&trace_id), "{access}");
}

/// `ordo.v1.PosService/SubmitBatch` answers what `POST /v1/pos/batches` answers: a batch sent
/// over gRPC and replayed over REST gets the same answer, and the sale's order reads back
/// over gRPC as a completed order without an address.
#[tokio::test(flavor = "multi_thread")]
async fn a_pos_batch_over_grpc_is_the_rest_batch() {
    use ordo_grpc_api::pb::pos_service_client::PosServiceClient;
    let server = TestServer::start(Backend::sqlite()).await;
    seed_catalog(&server).await;
    let sold_at = (time::OffsetDateTime::now_utc() - time::Duration::minutes(5))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let request = pb::PosBatchRequest {
        terminal_id: "till-grpc".to_owned(),
        warehouse: BKK.to_owned(),
        batch_seq: 2,
        sales: vec![pb::PosSale {
            client_sale_id: "g-1".to_owned(),
            sold_at: sold_at.clone(),
            customer_id: None,
            currency: "USD".to_owned(),
            items: vec![pb::OrderItemInput {
                sku: TEA.to_owned(),
                quantity: 2,
            }],
            payment: Some(pb::PosPayment {
                method: "card_offline".to_owned(),
                amount: Some(pb::Money {
                    amount_minor: 2 * TEA_PRICE - 1,
                    currency: "USD".to_owned(),
                }),
            }),
        }],
    };
    let mut client = PosServiceClient::new(channel(&server).await);
    let answer = client
        .submit_batch(request)
        .await
        .expect("SubmitBatch")
        .into_inner();
    assert_eq!(answer.missing_batch_seqs, [1]);
    let sale = &answer.results[0];
    assert_eq!(sale.outcome, "accepted");
    assert_eq!(
        sale.price_difference,
        Some(pb::Money {
            amount_minor: -1,
            currency: "USD".to_owned()
        })
    );
    let order_id = sale.order_id.clone().expect("an order");

    let replay = json!({
        "terminal_id": "till-grpc", "warehouse": BKK, "batch_seq": 2,
        "sales": [{"client_sale_id": "g-1", "sold_at": sold_at, "currency": "USD",
            "items": [{"sku": TEA, "quantity": 2}],
            "payment": {"method": "card_offline",
                "amount": {"amount_minor": 2 * TEA_PRICE - 1, "currency": "USD"}}}],
    });
    let rest = server
        .post_json("/v1/pos/batches", &replay)
        .await
        .expect_status(200)
        .body;
    assert_eq!(rest["results"][0]["order_id"], order_id.as_str());
    assert_eq!(rest["missing_batch_seqs"], json!([1]));

    let order = OrdersServiceClient::new(channel(&server).await)
        .get_order(pb::GetOrderRequest { id: order_id })
        .await
        .expect("GetOrder")
        .into_inner();
    assert_eq!(order.status, "completed");
    assert_eq!(order.shipping_address, None);
    assert_eq!(order.contact, None);
}
