#!/usr/bin/env python3
"""Writes rules/slo.yml: ordo's SLI recording rules and its multi-window, multi-burn-rate SLO
alerts (the Google SRE workbook's chapter 5, "Alerting on SLOs", table 5-8).

Why generated: the same five recording rules exist for seven windows, and the four alerts name
them by window; a hand-edited copy drifts (a 6h rule reading a 1h rate is the classic slip).
Edit this file, run `python3 deploy/prometheus/generate.py`, commit both. The suite runs
`generate.py --check` and fails when rules/slo.yml is not what this script writes.

The parameters an operator tunes are the constants below (the SLO targets and the latency
threshold); they also live in the rules as the series `ordo:slo_availability:objective` and
`ordo:slo_latency:objective`, so a dashboard reads the same numbers the alerts use.
"""

import pathlib
import sys

# --- Parameters ------------------------------------------------------------------------------

# Share of requests per operation (HTTP method + route, or gRPC service/method) that must not
# fail with a server error (HTTP 5xx; gRPC UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE,
# DATA_LOSS) over 30 days.
AVAILABILITY_OBJECTIVE = 0.999
# Share of requests per operation that must finish within LATENCY_THRESHOLD_SECONDS.
LATENCY_OBJECTIVE = 0.99
# Must be a bucket boundary of http_server_request_duration_seconds and
# rpc_server_duration_seconds (crates/telemetry/src/metrics.rs, HTTP_BUCKETS), written as ordo
# writes the `le` label.
LATENCY_THRESHOLD_SECONDS = "0.25"
# gRPC status codes that are the server's fault.
GRPC_SERVER_ERRORS = "2|4|13|14|15"

# (severity, burn rate, long window, short window): page when 2% (14.4x over 1h) or 5% (6x over
# 6h) of a 30-day error budget is gone, ticket at 10% (3x over 1d, 1x over 3d). The short window
# (1/12 of the long one) makes the alert stop soon after the burn stops.
BURN_RATES = [
    ("page", "14.4", "1h", "5m"),
    ("page", "6", "6h", "30m"),
    ("ticket", "3", "1d", "2h"),
    ("ticket", "1", "3d", "6h"),
]
# How long a burn must last before it notifies: the page waits out a scrape or two, the ticket
# an hour (nobody acts on a ticket faster).
FOR = {"page": "2m", "ticket": "1h"}
WINDOWS = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]

# Relative to the repository root: prefix it with where your copy of the repository is browsed
# (Alertmanager templates can do that), e.g. https://git.example.com/ordo/blob/main/.
RUNBOOK = "docs/runbooks.md"

# --- Generation ------------------------------------------------------------------------------


def per_operation(http_selector: str, grpc_selector: str, window: str, by: str = "") -> str:
    """One expression over HTTP and gRPC, labelled `interface` (http, grpc) and `operation`
    ("GET /v1/orders/{id}" or "ordo.v1.OrdersService/CreateOrder")."""
    group = f"interface, operation{by}"
    http = (
        f'label_replace(label_join(rate({http_selector}[{window}]), "operation", " ", '
        f'"method", "route"), "interface", "http", "", "")'
    )
    grpc = (
        f'label_replace(label_join(rate({grpc_selector}[{window}]), "operation", "/", '
        f'"rpc_service", "rpc_method"), "interface", "grpc", "", "")'
    )
    return f"sum by ({group}) ({http})\nor\nsum by ({group}) ({grpc})"


def block(expr: str, indent: int) -> str:
    pad = " " * indent
    return "|\n" + "\n".join(pad + line for line in expr.splitlines())


def recording_rules() -> list[str]:
    rules = [
        ("ordo:slo_availability:objective", f"vector({AVAILABILITY_OBJECTIVE})"),
        ("ordo:slo_latency:objective", f"vector({LATENCY_OBJECTIVE})"),
    ]
    for w in WINDOWS:
        rules.append(
            (
                f"operation:ordo_requests:rate{w}",
                per_operation(
                    "http_server_request_duration_seconds_count",
                    "rpc_server_duration_seconds_count",
                    w,
                ),
            )
        )
        rules.append(
            (
                f"operation:ordo_request_errors:rate{w}",
                per_operation(
                    'http_server_request_duration_seconds_count{status_code=~"5.."}',
                    f'rpc_server_duration_seconds_count{{rpc_grpc_status_code=~"{GRPC_SERVER_ERRORS}"}}',
                    w,
                ),
            )
        )
        rules.append(
            (
                f"operation:ordo_requests_fast:rate{w}",
                per_operation(
                    f'http_server_request_duration_seconds_bucket{{le="{LATENCY_THRESHOLD_SECONDS}"}}',
                    f'rpc_server_duration_seconds_bucket{{le="{LATENCY_THRESHOLD_SECONDS}"}}',
                    w,
                ),
            )
        )
        # An operation without a single error has no error series: count it as 0, not absent.
        rules.append(
            (
                f"operation:ordo_request_errors:ratio_rate{w}",
                f"(operation:ordo_request_errors:rate{w} or operation:ordo_requests:rate{w} * 0)\n"
                f"/\noperation:ordo_requests:rate{w}",
            )
        )
        rules.append(
            (
                f"operation:ordo_requests_slow:ratio_rate{w}",
                f"1 - (operation:ordo_requests_fast:rate{w} / operation:ordo_requests:rate{w})",
            )
        )
    out = []
    for record, expr in rules:
        out.append(f"      - record: {record}\n        expr: {block(expr, 10)}\n")
    return out


def burn_alert(name: str, sli: str, objective: str, severity: str, what: str, anchor: str) -> str:
    terms = []
    for sev, rate, long, short in BURN_RATES:
        if sev != severity:
            continue
        budget = f"on() group_left() ({rate} * (1 - {objective}))"
        terms.append(
            f"(\n  {sli}{long} > {budget}\n  and\n  {sli}{short} > {budget}\n)"
        )
    expr = "\nor\n".join(terms)
    for_ = FOR[severity]
    windows = ", ".join(
        f"{r}x over {l} and {s}" for sev, r, l, s in BURN_RATES if sev == severity
    )
    return (
        f"      - alert: {name}\n"
        f"        expr: {block(expr, 10)}\n"
        f"        for: {for_}\n"
        f"        labels:\n"
        f"          severity: {severity}\n"
        f"        annotations:\n"
        f"          summary: '{{{{ $labels.interface }}}} {{{{ $labels.operation }}}} is burning its {what} error budget ({severity})'\n"
        f"          description: >-\n"
        f"            {{{{ $labels.interface }}}} operation {{{{ $labels.operation }}}}: {{{{ $value | humanizePercentage }}}}\n"
        f"            of its requests are {'failing' if what == 'availability' else 'slower than ' + LATENCY_THRESHOLD_SECONDS + ' s'}\n"
        f"            over the long window, above the burn rates {windows} of a 30-day budget.\n"
        f"          runbook: {RUNBOOK}#{anchor}\n"
    )


def render() -> str:
    header = (
        "# GENERATED by deploy/prometheus/generate.py: edit that script and run it again.\n"
        "#\n"
        f"# SLO parameters: availability {AVAILABILITY_OBJECTIVE} (server errors), latency "
        f"{LATENCY_OBJECTIVE} of requests\n"
        f"# within {LATENCY_THRESHOLD_SECONDS} s, per operation (HTTP method + route, gRPC "
        "service/method), over 30 days.\n"
        "# Series: operation:ordo_requests:rate<w>, operation:ordo_request_errors:ratio_rate<w>,\n"
        "# operation:ordo_requests_slow:ratio_rate<w> for w in " + ", ".join(WINDOWS) + ".\n"
    )
    groups = [
        "groups:\n",
        "  - name: ordo-sli\n",
        "    rules:\n",
        *recording_rules(),
        "  - name: ordo-slo\n",
        "    rules:\n",
        burn_alert(
            "OrdoAvailabilityBudgetBurnFast",
            "operation:ordo_request_errors:ratio_rate",
            "ordo:slo_availability:objective",
            "page",
            "availability",
            "ordoavailabilitybudgetburn",
        ),
        burn_alert(
            "OrdoAvailabilityBudgetBurnSlow",
            "operation:ordo_request_errors:ratio_rate",
            "ordo:slo_availability:objective",
            "ticket",
            "availability",
            "ordoavailabilitybudgetburn",
        ),
        burn_alert(
            "OrdoLatencyBudgetBurnFast",
            "operation:ordo_requests_slow:ratio_rate",
            "ordo:slo_latency:objective",
            "page",
            "latency",
            "ordolatencybudgetburn",
        ),
        burn_alert(
            "OrdoLatencyBudgetBurnSlow",
            "operation:ordo_requests_slow:ratio_rate",
            "ordo:slo_latency:objective",
            "ticket",
            "latency",
            "ordolatencybudgetburn",
        ),
    ]
    return header + "".join(groups)


def main() -> int:
    target = pathlib.Path(__file__).resolve().parent / "rules" / "slo.yml"
    text = render()
    if sys.argv[1:] == ["--check"]:
        if not target.exists() or target.read_text() != text:
            print(f"{target} is stale: run python3 {__file__}", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
