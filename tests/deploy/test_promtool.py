"""Observability config: Prometheus config and rules, their unit tests, the Grafana dashboard.

promtool validates the config and rules and runs the rule unit tests; the
dashboard and the rules may only query metrics the services export (or
recording rules defined here), so a renamed metric breaks this test instead
of leaving an empty panel or an alert that can never fire.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.promtool import check_metrics_text, run_promtool

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
CONFIGS = [PROMETHEUS_DIR / "prometheus.yml", PROMETHEUS_DIR / "prometheus.k8s.yml"]
RULES = PROMETHEUS_DIR / "rules" / "chat.rules.yml"
RULE_TESTS = PROMETHEUS_DIR / "rules" / "chat.rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "chat-dashboard.json"
QUIET_TEST_GROUP = "healthy cluster fires nothing"

# Every series the services export, by service (counters with their `_total`).
SCALAR_METRICS = {
    # gateway
    "chat_gateway_connections",
    "chat_gateway_connects_total",
    "chat_gateway_auth_failures_total",
    "chat_gateway_frames_in_total",
    "chat_gateway_frames_out_total",
    "chat_gateway_errors_total",
    "chat_gateway_closes_total",
    "chat_gateway_slow_reader_closes_total",
    "chat_gateway_send_buffer_bytes",
    "chat_gateway_pushes_total",
    "chat_gateway_relay_failures_total",
    "chat_gateway_backlog_refusals_total",
    "chat_gateway_held_connection_events",
    "chat_gateway_pubsub_reconnects_total",
    # delivery
    "chat_delivery_commands_total",
    "chat_delivery_offline_enqueued_total",
    "chat_delivery_offline_overflow_total",
    "chat_delivery_duplicate_sends_total",
    "chat_delivery_seq_conflicts_total",
    "chat_delivery_reclaimed_entries_total",
    "chat_delivery_errors_total",
    "chat_delivery_partitions_owned",
    "chat_delivery_history_cache_total",
    # presence
    "chat_presence_transitions_total",
    "chat_presence_connection_events_total",
    "chat_presence_gateway_sweeps_total",
    "chat_presence_swept_connections_total",
    "chat_presence_last_seen_failures_total",
    # metrics service (cluster-wide)
    "chat_messages_total",
    "chat_conversations_created_total",
    "chat_domain_events_lost_total",
    "chat_online_users",
    "chat_active_users",
    "chat_gateways_alive",
    "chat_gateway_connections_registered",
    "chat_stream_length",
    "chat_stream_group_pending",
    "chat_stream_group_lag",
    "chat_metrics_refreshed_timestamp_seconds",
    "chat_offline_queue_depth",
    # Prometheus itself and every process
    "up",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
}
HISTOGRAMS = {
    "chat_gateway_request_round_trip_seconds",
    "chat_message_end_to_end_seconds",
    "chat_delivery_batch_size",
    "chat_delivery_persist_seconds",
    "chat_delivery_fanout_size",
    "chat_presence_sweep_seconds",
}
KNOWN_METRICS = SCALAR_METRICS | {
    f"{name}{suffix}" for name in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")
}
SEVERITIES = {"critical", "warning", "info"}

# --- PromQL metric-name extraction ------------------------------------------
# Not a parser: it removes everything that can hold a word that is not a metric
# name (strings, label matchers, ranges, grouping label lists, Grafana
# variables, offsets), then keeps the identifiers that are not function or
# aggregation calls and not keywords.
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_OFFSETS = re.compile(r"\boffset\s+-?[\w.]+", re.IGNORECASE)
_IDENTIFIERS = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """Metric (and recording rule) names a PromQL expression selects."""
    text = _STRINGS.sub('""', expr)
    text = _VARIABLES.sub("", text)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPING.sub("", text)
    text = _OFFSETS.sub("", text)
    return {m for m in _IDENTIFIERS.findall(text) if m.lower() not in _KEYWORDS}


# --- loading -----------------------------------------------------------------
def load_yaml(path: Path) -> Any:
    with path.open() as handle:
        return yaml.safe_load(handle)


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def recording_rule_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def dashboard() -> dict[str, Any]:
    with DASHBOARD.open() as handle:
        data: dict[str, Any] = json.load(handle)
    return data


def all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Panels including those nested in collapsed rows."""
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(all_panels(panel.get("panels", [])))
    return found


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of every panel."""
    return [
        (panel.get("title", "?"), target["expr"])
        for panel in all_panels(dashboard()["panels"])
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def promtool_ok(*args: str) -> str:
    result = run_promtool(*args)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


# --- promtool ----------------------------------------------------------------
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_prometheus_config_is_valid(config: Path) -> None:
    output = promtool_ok("check", "config", "--lint=all", "--lint-fatal", str(config))
    # rule_files resolve relative to the config, and the rule file is checked too.
    assert "chat.rules.yml" in output, output


def test_rules_are_valid() -> None:
    output = promtool_ok("check", "rules", "--lint=all", "--lint-fatal", str(RULES))
    assert f"SUCCESS: {len(rules())} rules found" in output, output


def test_rule_unit_tests_pass() -> None:
    promtool_ok("test", "rules", str(RULE_TESTS))


# --- rules -------------------------------------------------------------------
def test_every_alert_has_severity_summary_and_description() -> None:
    assert alerts(), "no alert rules"
    for alert in alerts():
        name = alert["alert"]
        assert alert.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity"
        annotations = alert.get("annotations", {})
        assert annotations.get("summary", "").strip(), f"{name}: summary"
        assert annotations.get("description", "").strip(), f"{name}: description"
        assert "for" in alert, f"{name}: no `for`, a single bad sample would page"


def test_rules_query_only_known_metrics() -> None:
    known = KNOWN_METRICS | recording_rule_names()
    unknown = {
        rule.get("record") or rule["alert"]: sorted(metric_names(rule["expr"]) - known)
        for rule in rules()
    }
    assert not {k: v for k, v in unknown.items() if v}, unknown


def test_every_alert_is_tested_quiet_on_a_healthy_cluster() -> None:
    groups = {group["name"]: group for group in load_yaml(RULE_TESTS)["tests"]}
    assert QUIET_TEST_GROUP in groups
    quiet = {
        case["alertname"]
        for case in groups[QUIET_TEST_GROUP]["alert_rule_test"]
        if case["exp_alerts"] == []
    }
    assert {alert["alert"] for alert in alerts()} <= quiet


def test_required_alerts_have_firing_tests() -> None:
    fired = {
        case["alertname"]
        for group in load_yaml(RULE_TESTS)["tests"]
        for case in group.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    required = {
        "ChatConsumerLagGrowing",
        "ChatGatewayDown",
        "ChatErrorRatioHigh",
        "ChatEndToEndLatencyHigh",
        "ChatRequestRoundTripHigh",
    }
    assert required <= fired, required - fired


# --- dashboard ---------------------------------------------------------------
def test_dashboard_queries_only_known_metrics() -> None:
    known = KNOWN_METRICS | recording_rule_names()
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    unknown = [(title, expr, sorted(metric_names(expr) - known)) for title, expr in exprs]
    assert not [u for u in unknown if u[2]], [u for u in unknown if u[2]]
    assert all(metric_names(expr) for _, expr in exprs), "a query selects no metric"


def test_dashboard_uses_the_templated_datasource() -> None:
    data = dashboard()
    assert data["schemaVersion"] >= 36
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = [p for p in all_panels(data["panels"]) if p["type"] != "row"]
    ids = [p["id"] for p in all_panels(data["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_dashboard_covers_every_service() -> None:
    used = set().union(*(metric_names(expr) for _, expr in dashboard_exprs()))
    for prefix in ("chat_gateway_", "chat_delivery_", "chat_presence_", "chat_stream_"):
        assert any(name.startswith(prefix) for name in used), prefix
    for name in (
        "chat_online_users",
        "chat_active_users",
        "chat_messages_total",
        "chat_gateways_alive",
        "chat_offline_queue_depth",
        "chat_message_end_to_end_seconds_bucket",
        "chat_gateway_request_round_trip_seconds_bucket",
    ):
        assert name in used, name


# --- the extractor and the exposition checker themselves ---------------------
@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'histogram_quantile(0.99, sum by (le, type) (rate(a_bucket{s="x{y}"}[5m])))',
            {"a_bucket"},
        ),
        (
            "sum(rate(a_total[$__rate_interval])) / sum(rate(b_total[${iv}]))",
            {"a_total", "b_total"},
        ),
        ("x < on () group_left () count(up{job=~'chat-.*'} == 1)", {"x", "up"}),
        ("time() - ts > 1e3 and deriv(lag[5m:1m] offset 1h) > 0", {"ts", "lag"}),
        ("level:metric:rate5m > bool 0.5 unless absent(m)", {"level:metric:rate5m", "m"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_check_metrics_text() -> None:
    good = '# HELP x_total Things.\n# TYPE x_total counter\nx_total{a="b"} 1\n'
    assert check_metrics_text(good) == []
    lint = "# TYPE x counter\nx 1\n"
    assert any("_total" in warning for warning in check_metrics_text(lint))
    with pytest.raises(AssertionError, match="lint problems"):
        check_metrics_text(lint, strict=True)
    with pytest.raises(AssertionError, match="parsing error"):
        check_metrics_text('x{a="b" 1\n')


def test_service_metrics_exposition_lints_clean() -> None:
    """The metrics the services define in-process expose as promlint-clean text."""
    import prometheus_client

    import services.delivery.metrics
    import services.gateway.metrics
    import services.metrics.rollup
    import services.presence.metrics  # noqa: F401 - registering is the point

    text = prometheus_client.generate_latest().decode()
    assert "chat_gateway_frames_in_total" in text
    check_metrics_text(text, strict=True)
