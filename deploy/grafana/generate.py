#!/usr/bin/env python3
"""Writes ordo's Grafana dashboards into dashboards/*.json.

Why generated: three dashboards share the datasource variable, the panel layout, units and the
exemplar settings of every latency panel; written by hand, the JSON drifts (a panel forgetting
`exemplar: true`, a hard-coded datasource uid) and its diffs are unreadable. Here a panel is one
line. Edit this file, run `python3 deploy/grafana/generate.py`, commit both; the suite runs
`generate.py --check` and fails when the committed JSON is stale, and its names-exist test
(crates/ordo/tests/ops_kit.rs) checks every metric the queries name against a live ordo.

Exemplars: latency panels query with `exemplar: true`; Grafana links an exemplar's `trace_id` to
the trace through the Prometheus datasource's `exemplarTraceIdDestinations`
(deploy/grafana/provisioning/datasources/datasources.yaml points it at Jaeger).
"""

import json
import pathlib
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


def target(expr, legend, exemplar=False, ref="A"):
    return {
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend,
        "exemplar": exemplar,
        "range": True,
        "refId": ref,
    }


def panel(title, targets, unit="short", description="", stack=False, kind="timeseries"):
    if isinstance(targets, dict):
        targets = [targets]
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, "custom": custom}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def latency(title, bucket, by, legend, description=""):
    """p50 and p99 of a histogram, with exemplars (the trace of a sampled request)."""
    return panel(
        title,
        [
            target(f"histogram_quantile(0.99, sum by (le, {by}) (rate({bucket}[{RATE}])))", f"p99 {legend}", exemplar=True),
            target(f"histogram_quantile(0.5, sum by (le, {by}) (rate({bucket}[{RATE}])))", f"p50 {legend}", exemplar=True),
        ],
        unit="s",
        description=description or "Exemplars (dots) link to the trace of a sampled request.",
    )


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def layout(items):
    """Rows full width; panels two per line, 12 columns by 8 high."""
    out, y, x, pid = [], 0, 0, 1
    for item in items:
        item = dict(item)
        item["id"] = pid
        pid += 1
        if item["type"] == "row":
            if x:
                y, x = y + 8, 0
            item["gridPos"] = {"h": 1, "w": 24, "x": 0, "y": y}
            y += 1
        else:
            item["gridPos"] = {"h": 8, "w": 12, "x": x, "y": y}
            x += 12
            if x == 24:
                y, x = y + 8, 0
        out.append(item)
    return out


def dashboard(uid, title, description, items):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["ordo"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                }
            ]
        },
        "annotations": {"list": [
            {
                "name": "ordo restarts",
                "datasource": DS,
                "enable": True,
                "iconColor": "orange",
                "expr": "changes(process_start_time_seconds[2m]) > 0",
                "titleFormat": "restart {{instance}}",
            }
        ]},
        "links": [
            {"title": title_, "type": "link", "url": f"/d/{uid_}"}
            for uid_, title_ in [("ordo-overview", "Overview"), ("ordo-pipeline", "Pipeline"), ("ordo-runtime", "Runtime")]
            if uid_ != uid
        ],
        "panels": layout(items),
    }


HTTP = "http_server_request_duration_seconds"
RPC = "rpc_server_duration_seconds"

overview = dashboard(
    "ordo-overview",
    "ordo overview",
    "RED per HTTP route and gRPC method, and the SLO error-budget burn (rules/slo.yml).",
    [
        row("HTTP (REST API)"),
        panel("Requests per route", target(f"sum by (method, route) (rate({HTTP}_count[{RATE}]))", "{{method}} {{route}}"), "reqps"),
        panel("Server errors (5xx) per route, share of requests",
              target(f'sum by (method, route) (rate({HTTP}_count{{status_code=~"5.."}}[{RATE}])) / sum by (method, route) (rate({HTTP}_count[{RATE}]))', "{{method}} {{route}}"),
              "percentunit"),
        latency("Latency per route", f"{HTTP}_bucket", "method, route", "{{method}} {{route}}"),
        panel("Responses by status", target(f"sum by (status_code) (rate({HTTP}_count[{RATE}]))", "{{status_code}}"), "reqps", stack=True),
        row("gRPC"),
        panel("Calls per method", target(f"sum by (rpc_service, rpc_method) (rate({RPC}_count[{RATE}]))", "{{rpc_service}}/{{rpc_method}}"), "reqps"),
        panel("Calls by status code", target(f"sum by (rpc_grpc_status_code) (rate({RPC}_count[{RATE}]))", "code {{rpc_grpc_status_code}}"), "reqps", stack=True),
        latency("Latency per method", f"{RPC}_bucket", "rpc_service, rpc_method", "{{rpc_service}}/{{rpc_method}}"),
        panel("Errors by kind (REST and gRPC)", target(f"sum by (error_kind) (rate(errors_total[{RATE}]))", "{{error_kind}}"), "reqps", stack=True),
        row("SLO burn (1 = spending the 30-day budget exactly)"),
        panel("Availability burn rate, 1h",
              target("operation:ordo_request_errors:ratio_rate1h / on() group_left() (1 - ordo:slo_availability:objective)", "{{interface}} {{operation}}"),
              description="14.4 over 1h (with 5m) pages; 3 over 1d (with 2h) opens a ticket."),
        panel("Latency burn rate, 1h",
              target("operation:ordo_requests_slow:ratio_rate1h / on() group_left() (1 - ordo:slo_latency:objective)", "{{interface}} {{operation}}"),
              description="Share of requests over 250 ms against the 1% the objective allows."),
        panel("Availability burn rate, 1d",
              target("operation:ordo_request_errors:ratio_rate1d / on() group_left() (1 - ordo:slo_availability:objective)", "{{interface}} {{operation}}")),
        panel("p99 against the same hour yesterday / last week",
              [target("operation:ordo_request_duration_seconds:p99_rate5m", "now {{operation}}", exemplar=False),
               target("operation:ordo_request_duration_seconds:p99_baseline", "baseline {{operation}}")],
              "s"),
        row("Admission"),
        panel("Shed requests", target(f"sum by (reason) (rate(shed_requests_total[{RATE}]))", "{{reason}}"), "reqps", stack=True),
        panel("Rate-limited requests and refused connections",
              [target(f"sum(rate(rate_limited_requests_total[{RATE}]))", "rate limited (429)"),
               target(f"sum by (reason) (rate(http_connections_refused_total[{RATE}]))", "refused: {{reason}}")],
              "reqps"),
    ],
)

pipeline = dashboard(
    "ordo-pipeline",
    "ordo pipeline",
    "The order pipeline: business counters, the outbox, consumers, carriers and dead letters.",
    [
        row("Orders"),
        panel("Orders created and cancelled",
              [target(f"sum(rate(orders_created_total[{RATE}]))", "created"),
               target(f"sum(rate(orders_cancelled_total[{RATE}]))", "cancelled")],
              "ops"),
        panel("Order creations refused, by reason", target(f"sum by (reason) (rate(orders_rejected_total[{RATE}]))", "{{reason}}"), "ops", stack=True),
        row("Outbox"),
        panel("Backlog (committed, not yet published)", target("sum by (instance) (outbox_backlog)", "{{instance}}"), "short"),
        panel("Lag (age of the oldest unpublished event)", target("max by (instance) (outbox_lag_seconds)", "{{instance}}"), "s"),
        panel("Published and failed publishes",
              [target(f"sum(rate(outbox_events_published_total[{RATE}]))", "published"),
               target(f"sum(rate(outbox_publish_failures_total[{RATE}]))", "failed (retried)")],
              "ops"),
        panel("Duplicates absorbed by consumers", target(f"sum by (consumer) (rate(consumer_duplicate_events_total[{RATE}]))", "{{consumer}}"), "ops"),
        row("Stages and carriers"),
        latency("Stage durations (p50 / p99)", "consumer_process_duration_seconds_bucket", "consumer", "{{consumer}}",
                description="One stage processing one event: its CONSUMER span, from delivery to commit (a carrier push included). Exemplars (dots) link to the order's trace."),
        panel("Events processed per stage, by outcome",
              target(f"sum by (consumer, outcome) (rate(consumer_process_duration_seconds_count[{RATE}]))", "{{consumer}} {{outcome}}"),
              "ops", stack=True,
              description="ok: applied; duplicate: a redelivery recognised; error: retried or dead-lettered; given_up: the last delivery failed and the stage settled the order."),
        latency("Database operations of the pipeline (p50 / p99)", "db_client_operation_duration_seconds_bucket", "operation", "{{operation}}",
                description="The stages' statements (UPDATE orders, INSERT outbox...)."),
        panel("Carrier circuit breakers (0 closed, 1 half-open, 2 open)", target("max by (target) (circuit_breaker_state)", "{{target}}"), "short"),
        row("Dead letters"),
        panel("Dead-lettered outbox events waiting", target("sum by (instance) (outbox_dead_letters)", "{{instance}}"), "short"),
        panel("Dead letters per hour",
              [target("sum(increase(outbox_events_dead_lettered_total[1h]))", "outbox events"),
               target("sum by (consumer) (increase(consumer_events_dead_lettered_total[1h]))", "consumer {{consumer}}"),
               target("sum(increase(shipments_dead_lettered_total[1h]))", "shipments")],
              "short"),
    ],
)

runtime = dashboard(
    "ordo-runtime",
    "ordo runtime",
    "The process and its async runtime, the database and the cache.",
    [
        row("Async runtime"),
        panel("Alive tasks", target("tokio_alive_tasks", "{{instance}}"),
              description="A steady climb is a task leak (alert OrdoAsyncTasksRunaway)."),
        panel("Busy ratio of the workers", target("tokio_busy_ratio", "{{instance}}"), "percentunit"),
        panel("Global queue depth", target("tokio_global_queue_depth", "{{instance}}")),
        panel("Worker threads", target("tokio_workers", "{{instance}}")),
        row("Process"),
        panel("CPU (cores)", target(f"rate(process_cpu_seconds_total[{RATE}])", "{{instance}}"), "short"),
        panel("Resident memory", target("process_resident_memory_bytes", "{{instance}}"), "bytes"),
        panel("Open file descriptors", target("process_open_fds", "{{instance}}")),
        panel("Uptime", target("time() - process_start_time_seconds", "{{instance}}"), "s"),
        panel("Panics, dropped log lines and spans",
              [target(f"sum by (instance) (increase(panics_total[{RATE}]))", "panics {{instance}}"),
               target(f"sum by (instance) (increase(log_lines_dropped_total[{RATE}]))", "log lines dropped {{instance}}"),
               target(f"sum by (instance, reason) (increase(otel_spans_dropped_total[{RATE}]))", "spans dropped {{instance}} {{reason}}")]),
        row("Database"),
        latency("Statement duration", "db_client_operation_duration_seconds_bucket", "db_system, operation", "{{operation}}"),
        panel("Statements per second", target(f"sum by (operation) (rate(db_client_operation_duration_seconds_count[{RATE}]))", "{{operation}}"), "ops"),
        row("Cache"),
        panel("Cache lookups by result", target(f"sum by (cache, result) (rate(cache_requests_total[{RATE}]))", "{{cache}} {{result}}"), "ops", stack=True),
        panel("Cache hit ratio",
              target(f'sum by (cache) (rate(cache_requests_total{{result="hit"}}[{RATE}])) / sum by (cache) (rate(cache_requests_total[{RATE}]))', "{{cache}}"),
              "percentunit"),
        panel("Cache errors", target(f'sum by (cache) (rate(cache_requests_total{{result="error"}}[{RATE}]))', "{{cache}}"), "ops"),
        row("Calls to other roles (split deployments)"),
        latency("gRPC client calls", "rpc_client_duration_seconds_bucket", "rpc_service, rpc_method", "{{rpc_service}}/{{rpc_method}}"),
    ],
)


def main():
    out = pathlib.Path(__file__).resolve().parent / "dashboards"
    check = sys.argv[1:] == ["--check"]
    stale = []
    for name, board in [("overview", overview), ("pipeline", pipeline), ("runtime", runtime)]:
        path = out / f"ordo-{name}.json"
        text = json.dumps(board, indent=2, sort_keys=True) + "\n"
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
    if stale:
        print(f"stale: {stale}; run python3 {__file__}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
