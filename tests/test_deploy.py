"""The deployment artefacts (deploy/, Dockerfile, .dockerignore) checked against the code they describe.

A dashboard panel or an alert over a metric the hub does not export shows nothing and never fires; a
Kubernetes manifest that names a stage the CLI does not know crash-loops. These tests read every artefact and
hold it against the real thing: the metric registry (`cdp_hub.metrics.Metrics`), the CLI parser, `Settings`,
the plugin config models, the scenario schema. The last tests start the ingest Deployment's exact command on
the real services and probe it the way Kubernetes and Docker would.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import socket
import sys
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, SecretStr

from cdp_hub.cli import core as commands
from cdp_hub.cli import parse
from cdp_hub.config import Settings
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.build import STAGE_NAMES
from cdp_hub.plugins import get_registry
from cdp_hub.triggers.scenario import load_scenarios
from tests.conftest import topic_prefix

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
DASHBOARD = DEPLOY / "grafana" / "cdp-hub-dashboard.json"
MARKETING_DASHBOARD = DEPLOY / "grafana" / "cdp-hub-marketing.json"
"""The marketers' dashboard: messages per week by channel, conversion and revenue per scenario, uplift."""
DASHBOARDS = (DASHBOARD, MARKETING_DASHBOARD)
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

# Labels a scrape adds to every series (deploy/prometheus/prometheus.yml relabels the last three).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "component"})
# Every PromQL word the artefacts may use that is not a metric name. An unknown word is taken for a metric
# and must exist, so a misspelt metric cannot hide as a "function".
PROMQL_WORDS = frozenset({
    "sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "group",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    "rate", "irate", "increase", "delta", "deriv", "histogram_quantile", "hour", "vector", "absent",
    "clamp_min", "clamp_max", "time", "sort_desc",
})
SEVERITIES = frozenset({"critical", "warning", "info"})


# -- the metric catalogue ------------------------------------------------------------------------------


def metric_catalogue() -> dict[str, frozenset[str]]:
    """Every series name the hub exports (``_total``, ``_bucket``, ``_count``...) with its label names.

    Each labelled metric gets one child so the registry yields its samples, with the exact suffixes and the
    ``le`` label that Prometheus will see on ``/metrics``."""
    metrics = Metrics()
    for wrapper in vars(metrics).values():
        if isinstance(wrapper, MetricWrapperBase) and wrapper._labelnames:
            wrapper.labels(*("x",) * len(wrapper._labelnames))
    catalogue: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            catalogue.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) for name, labels in catalogue.items()}


def metric_families() -> dict[str, frozenset[str]]:
    """Family name (``cdp_events_ingested``) -> the series names it exports."""
    metrics = Metrics()
    for wrapper in vars(metrics).values():
        if isinstance(wrapper, MetricWrapperBase) and wrapper._labelnames:
            wrapper.labels(*("x",) * len(wrapper._labelnames))
    return {f.name: frozenset(s.name for s in f.samples) for f in metrics.registry.collect()}


CATALOGUE = metric_catalogue()
UP = {"up": TARGET_LABELS}


# -- a small PromQL reader -----------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^{}]*)\}")
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*(?:,|$)')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_NUMBER = re.compile(r"(?<![A-Za-z0-9_:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![A-Za-z0-9_:])")
_WORD = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


class PromQL:
    """What an expression uses: metric names, labels in matchers and in grouping clauses."""

    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.metrics: set[str] = set()
        self.matchers: list[tuple[str | None, str]] = []  # (metric or None, label)
        self.grouping: set[str] = set()
        depth = 0
        for ch in _STRING.sub('""', expr):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            assert depth >= 0, f"unbalanced parentheses in {expr!r}"
        assert depth == 0, f"unbalanced parentheses in {expr!r}"

        rest = expr
        for m in _SELECTOR.finditer(expr):
            body = m.group(2)
            consumed = "".join(x.group(0) for x in _MATCHER.finditer(body))
            assert consumed.strip() == body.strip(), f"cannot read the label matchers {{{body}}} in {expr!r}"
            for x in _MATCHER.finditer(body):
                self.matchers.append((m.group(1), x.group(1)))
        rest = _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", rest)
        rest = _STRING.sub(" ", rest)
        rest = _RANGE.sub(" ", rest)
        for m in _GROUPING.finditer(rest):
            self.grouping.update(label.strip() for label in m.group(2).split(",") if label.strip())
        rest = _GROUPING.sub(lambda m: f" {m.group(1)} ", rest)
        rest = _NUMBER.sub(" ", rest)
        words = set(_WORD.findall(rest)) - PROMQL_WORDS
        self.metrics = words

    def check(self, known: dict[str, frozenset[str]]) -> None:
        """Fail when a metric or a label does not exist."""
        unknown = sorted(self.metrics - known.keys())
        assert not unknown, (
            f"{unknown} in {self.expr!r} are not exported by cdp_hub.metrics.Metrics "
            f"(known: {sorted(known)}); fix the expression or add the metric"
        )
        for metric, label in self.matchers:
            allowed = (known[metric] if metric else self.labels(known)) | TARGET_LABELS
            assert label in allowed, f"label {label!r} of {metric} in {self.expr!r}: the metric has {sorted(allowed)}"
        available = self.labels(known) | TARGET_LABELS
        missing = sorted(self.grouping - available)
        assert not missing, f"grouping labels {missing} in {self.expr!r} are on none of {sorted(self.metrics)}"

    def labels(self, known: dict[str, frozenset[str]]) -> frozenset[str]:
        return frozenset().union(*(known.get(m, frozenset()) for m in self.metrics))

    def output_labels(self, known: dict[str, frozenset[str]]) -> frozenset[str]:
        """Labels the result may carry (approximately: the grouping labels when it aggregates)."""
        if self.grouping:
            return frozenset(self.grouping)
        return self.labels(known) | TARGET_LABELS


def test_the_promql_reader_catches_what_it_should() -> None:
    """The reader is the judge of the artefacts below: it must fail on the mistakes it exists for."""
    PromQL('sum by (stage) (rate(cdp_stage_records_total{job=~"$job"}[$__rate_interval]))').check(CATALOGUE)
    with pytest.raises(AssertionError, match="cdp_stage_records"):
        PromQL("rate(cdp_stage_records[5m])").check(CATALOGUE)  # the counter is exported with _total
    with pytest.raises(AssertionError, match="failuretype"):
        PromQL("sum by (failuretype) (rate(cdp_dlq_records_total[5m]))").check(CATALOGUE)
    with pytest.raises(AssertionError, match="label 'channel'"):
        PromQL('rate(cdp_stage_errors_total{channel="email"}[5m])').check(CATALOGUE)
    with pytest.raises(AssertionError, match="unbalanced"):
        PromQL("sum(rate(cdp_stage_errors_total[5m])").check(CATALOGUE)
    buckets = PromQL("histogram_quantile(0.99, sum by (stage, le) (rate(cdp_stage_batch_seconds_bucket[5m])))")
    buckets.check(CATALOGUE)
    assert buckets.metrics == {"cdp_stage_batch_seconds_bucket"}


# -- Grafana ---------------------------------------------------------------------------------------------


def _dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


each_dashboard = pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows carry their panels
    return out


def _targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, target


@each_dashboard
def test_dashboard_is_an_importable_grafana_dashboard(path: Path) -> None:
    dashboard = _dashboard(path)
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and dashboard["title"]
    inputs = {i["name"]: i for i in dashboard["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"job", "instance"} <= variables.keys()
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"  # file provisioning resolves ${DS_PROMETHEUS} too
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


@each_dashboard
def test_dashboard_panels_do_not_overlap(path: Path) -> None:
    boxes = [(p["title"], p["gridPos"]) for p in _panels(_dashboard(path))]
    for title, g in boxes:
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, f"{title!r} leaves the 24-column grid"
    for i, (ta, a) in enumerate(boxes):
        for tb, b in boxes[i + 1:]:
            overlap = (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
                       and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])
            assert not overlap, f"panels {ta!r} and {tb!r} overlap"


@each_dashboard
def test_dashboard_queries_use_exported_metrics_and_labels(path: Path) -> None:
    for panel, target in _targets(_dashboard(path)):
        q = PromQL(target["expr"])
        q.check(CATALOGUE)
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
            assert label in q.output_labels(CATALOGUE), (
                f"legend of {panel['title']!r} shows {{{{{label}}}}}, which the query does not keep")


@each_dashboard
def test_dashboard_queries_honour_the_job_and_instance_variables(path: Path) -> None:
    for panel, target in _targets(_dashboard(path)):
        for selector in _SELECTOR.finditer(target["expr"]):
            body = selector.group(2)
            assert 'job=~"$job"' in body and 'instance=~"$instance"' in body, (
                f"{panel['title']!r}: {selector.group(0)} ignores the job/instance variables")
        bare = set(PromQL(target["expr"]).metrics) - {m.group(1) for m in _SELECTOR.finditer(target["expr"])}
        assert not bare, f"{panel['title']!r}: {sorted(bare)} without the job/instance filter"
    for var in _dashboard(path)["templating"]["list"]:
        if var["type"] == "query":
            metric = re.search(r"label_values\((\w+)", var["query"]["query"])
            assert metric and metric.group(1) in CATALOGUE, var["name"]


def test_dashboard_shows_every_metric_the_hub_exports() -> None:
    # The marketers' metrics (sends by scenario and variant, attribution) are shown on their dashboard.
    used: set[str] = set()
    for path in DASHBOARDS:
        for _, target in _targets(_dashboard(path)):
            used |= PromQL(target["expr"]).metrics
    missing = sorted(family for family, series in metric_families().items() if not series & used)
    assert not missing, f"no panel in {DASHBOARD.name} or {MARKETING_DASHBOARD.name} shows {missing}: add one"


def test_the_marketing_dashboard_shows_the_business_view() -> None:
    """Messages per week by channel, conversion and revenue per scenario, and uplift over control; its
    scenario variable filters every panel."""
    targets = list(_targets(_dashboard(MARKETING_DASHBOARD)))
    metrics = set().union(*(PromQL(t["expr"]).metrics for _, t in targets))
    assert {"cdp_scenario_sends_total", "cdp_attribution_conversions", "cdp_attribution_recipients",
            "cdp_attribution_revenue", "cdp_attribution_uplift", "cdp_experiment_controls_total"} <= metrics
    by_title = {p["title"]: t["expr"] for p, t in targets}
    assert "by (channel)" in by_title["Messages per week by channel"]
    assert "[7d]" in by_title["Messages per week by channel"]
    for title, expr in by_title.items():
        if "cdp_attribution_last_run" not in expr:
            assert 'scenario=~"$scenario"' in expr, title


def test_dashboard_has_stage_latency_percentiles() -> None:
    exprs = [t["expr"] for _, t in _targets(_dashboard())]
    for q in ("0.5", "0.95", "0.99"):
        assert any(f"histogram_quantile({q}," in e and "cdp_stage_batch_seconds_bucket" in e for e in exprs), q
    assert any("histogram_quantile(0.99," in e and "cdp_stage_event_latency_seconds_bucket" in e for e in exprs)


# -- Prometheus ------------------------------------------------------------------------------------------


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_alert_rules_are_well_formed() -> None:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert set(doc) == {"groups"}
    for group in doc["groups"]:
        assert group["name"] and group["rules"]
    names = [r["alert"] for r in _rules()]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in _rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule["alert"]
        assert re.fullmatch(r"(\d+[smhd])+", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"].strip() and rule["annotations"]["description"].strip(), rule["alert"]


def test_alert_rules_use_exported_metrics_and_labels() -> None:
    known = {**CATALOGUE, **UP}
    for rule in _rules():
        q = PromQL(rule["expr"])
        q.check(known)
        text = " ".join(rule["annotations"].values())
        for label in re.findall(r"\$labels\.(\w+)", text):
            assert label in q.output_labels(known), f"{rule['alert']}: $labels.{label} is not on the result"


def test_alert_rules_cover_what_an_operator_pages_on() -> None:
    used = {rule["alert"]: PromQL(rule["expr"]).metrics for rule in _rules()}
    everything = set().union(*used.values())
    for metric in ("cdp_dlq_records_total", "cdp_consumer_lag", "cdp_stage_batch_seconds_bucket",
                   "cdp_stage_errors_total", "cdp_messages_total", "up"):
        assert metric in everything, f"no alert watches {metric}"
    # Silence of the sources: watched where every event arrives, the resolver's input (see alerts.yml).
    silence = [r for r in _rules() if "hour()" in r["expr"]]
    assert silence and 'cdp_stage_records_total{stage="resolver"}' in silence[0]["expr"]
    lag_rules = [r for r in _rules() if "cdp_consumer_lag" in r["expr"]]
    assert any("deriv(" in r["expr"] or "delta(" in r["expr"] for r in lag_rules), "no alert on growing lag"


def test_prometheus_example_scrapes_what_the_alerts_expect() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS.parent / rule_file).is_file(), rule_file
    target_down = next(r for r in _rules() if r["expr"].startswith("up{"))
    job_regex = re.search(r'job=~"([^"]+)"', target_down["expr"])
    assert job_regex
    for job in config["scrape_configs"]:
        assert re.fullmatch(job_regex.group(1), job["job_name"]), (
            f"scrape job {job['job_name']!r} escapes the target-down alert ({job_regex.group(1)})")
    # The pod selector of the Kubernetes job keeps exactly the pods of deploy/kubernetes.
    k8s_job = next(j for j in config["scrape_configs"] if "kubernetes_sd_configs" in j)
    keep = {tuple(r["source_labels"]): r["regex"] for r in k8s_job["relabel_configs"] if r.get("action") == "keep"}
    name = keep[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)]
    for deployment in _docs_of_kind("Deployment"):
        template = deployment["spec"]["template"]["metadata"]
        assert re.fullmatch(name, template["labels"]["app.kubernetes.io/name"])
        assert re.fullmatch(keep[("__meta_kubernetes_pod_annotation_prometheus_io_scrape",)],
                            template["annotations"]["prometheus.io/scrape"])


# -- Kubernetes ------------------------------------------------------------------------------------------


def _k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                out.append((path, doc))
    return out


def _docs_of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in _k8s_docs() if doc.get("kind") == kind]


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in _docs_of_kind(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r} in {K8S.name}/, found {len(found)}"
    return found[0]


def _configmap_toml() -> dict[str, Any]:
    return tomllib.loads(_one("ConfigMap", "cdp-hub-config")["data"]["cdp-hub.toml"])


def _secret_env() -> dict[str, str]:
    return {k: str(v) for k, v in _one("Secret", "cdp-hub-secrets")["stringData"].items()}


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_every_manifest_is_a_namespace_agnostic_kubernetes_object() -> None:
    docs = _k8s_docs()
    assert docs
    for path, doc in docs:
        if path.name == "kustomization.yaml":
            assert doc["kind"] == "Kustomization"
            continue
        assert doc.get("apiVersion") and doc.get("kind"), path.name
        assert doc["metadata"]["name"], path.name
        assert "namespace" not in doc["metadata"], f"{path.name}: {doc['metadata']['name']} pins a namespace"


def test_kustomization_lists_the_long_running_manifests() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization["resources"])
    for name in listed:
        assert (K8S / name).is_file(), name
    others = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    # The Secret is an example of placeholders and the migrate Job runs per release: both stay out.
    assert listed == others - {"secret.example.yaml", "migrate-job.yaml"}


def test_configmap_is_a_valid_production_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):  # the test run's own services must not stand in for the Secret
        if key.startswith("CDP_HUB_"):
            monkeypatch.delenv(key)
    settings = Settings(**_configmap_toml())
    assert settings.bus == "kafka"
    assert settings.dialect == "greenplum"
    assert settings.kafka_replication_factor >= 3
    assert settings.http_host == "0.0.0.0"
    assert settings.postgres_dsn == "embedded", "the DSN carries a password: it belongs in the Secret"


def test_secret_and_configmap_together_configure_every_channel_and_connector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in list(os.environ):
        if key.startswith("CDP_HUB_"):
            monkeypatch.delenv(key)
    secret = _secret_env()
    for key, value in secret.items():
        assert key.startswith("CDP_HUB_"), key
        monkeypatch.setenv(key, value)
    settings = Settings(**_configmap_toml())
    # pydantic-settings ignores an unknown CDP_HUB_ variable: follow each key to the value it must set.
    for key, value in secret.items():
        node: Any = settings
        for part in key.removeprefix("CDP_HUB_").lower().split("__"):
            node = node[part] if isinstance(node, dict) else getattr(node, part, None)
            assert node is not None, f"Secret key {key} sets nothing in Settings ({part!r} unknown)"
        if isinstance(node, list):  # a list of keys: the Secret holds it as JSON
            node = json.dumps([k.get_secret_value() if isinstance(k, SecretStr) else k for k in node])
        assert (node.get_secret_value() if isinstance(node, SecretStr) else node) == value, key
    assert settings.postgres_dsn.startswith("postgresql://")
    registry = get_registry()
    for name, channel in settings.channels.items():
        model = registry.channel(channel.type).config_model
        assert isinstance(model.model_validate(channel.config), BaseModel), name
    for name, connector in settings.connectors.items():
        model = registry.connector(connector.type).config_model
        assert isinstance(model.model_validate(connector.config), BaseModel), name


def test_scenarios_configmap_validates(tmp_path: Path) -> None:
    data = _one("ConfigMap", "cdp-hub-scenarios")["data"]
    for name, text in data.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    scenarios = {s.id for s in load_scenarios([tmp_path], builtin=False)}
    assert scenarios == {yaml.safe_load(text)["id"] for text in data.values()}


def _parse_cli(args: list[str]) -> Any:
    """The command line as the CLI parses it: the handler to run, with its arguments as attributes."""
    call = parse(args)
    assert not isinstance(call, int), args
    return SimpleNamespace(handler=call.handler, **vars(call.args))


def test_deployments_run_known_stages_and_cover_all_of_them() -> None:
    run_by: dict[str, str] = {}
    for deployment in _docs_of_kind("Deployment"):
        args = _parse_cli(_container(deployment)["args"])
        name = deployment["metadata"]["name"]
        assert args.handler is commands.cmd_run, f"{name} does not run `cdp-hub run`"
        assert args.stages, f"{name} runs every stage: give each stage its own Deployment"
        assert not args.no_http, f"{name}: --no-http leaves /metrics and the probes without a server"
        for stage in args.stages:
            assert stage in STAGE_NAMES, f"{name} runs unknown stage {stage!r}; stages: {STAGE_NAMES}"
            assert stage not in run_by, f"stage {stage} runs in both {run_by[stage]} and {name}"
            run_by[stage] = name
    assert set(run_by) == set(STAGE_NAMES), f"no Deployment runs {sorted(set(STAGE_NAMES) - set(run_by))}"


def test_sync_cronjobs_pull_configured_connectors() -> None:
    connectors = Settings(**_configmap_toml()).connectors
    cronjobs = [c for c in _docs_of_kind("CronJob") if _container(c["spec"]["jobTemplate"])["args"][0] == "sync"]
    assert cronjobs
    for cronjob in cronjobs:
        job = cronjob["spec"]["jobTemplate"]
        args = _parse_cli(_container(job)["args"])
        assert args.handler.__name__ == "cmd_sync", cronjob["metadata"]["name"]
        assert args.name in connectors, f"{cronjob['metadata']['name']} syncs unconfigured connector {args.name!r}"
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"


def test_job_cronjobs_run_configured_jobs_on_their_schedule() -> None:
    """Every other CronJob runs `cdp-hub jobs run NAME` of a [jobs.NAME] with the job's cron and zone, and
    the pods then do not schedule the jobs themselves."""
    from cdp_hub.jobs import cli as jobs_cli

    settings = Settings(**_configmap_toml())
    assert settings.scheduler_enabled is False, "CronJobs and the in-process scheduler would both run the jobs"
    cronjobs = [c for c in _docs_of_kind("CronJob") if _container(c["spec"]["jobTemplate"])["args"][0] != "sync"]
    assert {_parse_cli(_container(c["spec"]["jobTemplate"])["args"]).name for c in cronjobs} == set(settings.jobs)
    for cronjob in cronjobs:
        name = cronjob["metadata"]["name"]
        args = _parse_cli(_container(cronjob["spec"]["jobTemplate"])["args"])
        assert args.handler is jobs_cli.cmd_run, name
        job = settings.jobs[args.name]
        assert cronjob["spec"]["schedule"] == job.cron, name
        assert cronjob["spec"]["timeZone"] == job.timezone, name
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid", name


def test_migrate_job_runs_the_migrations() -> None:
    job = _one("Job", "cdp-hub-migrate")
    assert _parse_cli(_container(job)["args"]).handler is commands.cmd_migrate
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_pods_are_probed_scraped_and_configured_consistently() -> None:
    settings = Settings(**_configmap_toml())
    uid = _dockerfile_user()
    cronjobs = [c["spec"]["jobTemplate"] | {"kind": "Job", "metadata": c["metadata"]} for c in _docs_of_kind("CronJob")]
    for workload in [*_docs_of_kind("Deployment"), *_docs_of_kind("Job"), *cronjobs]:
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]
        container = _container(workload)
        env = {e["name"]: e for e in container.get("env", [])}
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        config_path = Path(env["CDP_HUB_CONFIG"]["value"])
        assert mounts[str(config_path.parent)]["configMap"]["name"] == "cdp-hub-config", name
        assert config_path.name == "cdp-hub.toml", name
        assert [s["secretRef"]["name"] for s in container["envFrom"]] == ["cdp-hub-secrets"], name
        assert container["resources"]["requests"] and container["resources"]["limits"], name
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True, name
        assert pod["spec"]["securityContext"]["runAsUser"] == uid, f"{name}: the image runs as {uid}"
        if workload["kind"] == "Job":
            continue
        assert mounts[str(settings.scenarios_dir)]["configMap"]["name"] == "cdp-hub-scenarios", name
        assert "emptyDir" in mounts[str(settings.data_dir)], f"{name}: data_dir must be writable"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["http"] == settings.http_port, name
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, name
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, name
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz", name
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/port"] == str(settings.http_port), name
        assert annotations["prometheus.io/path"] == "/metrics", name
        assert pod["spec"]["terminationGracePeriodSeconds"] >= 30, name


def _selects(selector: dict[str, str], deployment: dict[str, Any]) -> bool:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in selector.items())


def test_services_pdbs_and_hpa_point_at_real_pods() -> None:
    deployments = _docs_of_kind("Deployment")
    for deployment in deployments:
        assert _selects(deployment["spec"]["selector"]["matchLabels"], deployment)
    for service in _docs_of_kind("Service"):
        chosen = [d for d in deployments if _selects(service["spec"]["selector"], d)]
        assert chosen, f"Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            for d in chosen:
                assert port["targetPort"] in {p["name"] for p in _container(d)["ports"]}
    assert _selects(_one("Service", "cdp-hub-ingest")["spec"]["selector"], _one("Deployment", "cdp-hub-ingest"))
    covered = set()
    for pdb in _docs_of_kind("PodDisruptionBudget"):
        chosen = [d["metadata"]["name"] for d in deployments if _selects(pdb["spec"]["selector"]["matchLabels"], d)]
        assert len(chosen) == 1, f"PodDisruptionBudget {pdb['metadata']['name']} selects {chosen}"
        covered.update(chosen)
    assert covered == {d["metadata"]["name"] for d in deployments}
    partitions = Settings(**_configmap_toml()).topic_partitions
    for hpa in _docs_of_kind("HorizontalPodAutoscaler"):
        target = _one("Deployment", hpa["spec"]["scaleTargetRef"]["name"])
        assert "replicas" not in target["spec"], "an apply must not reset the replica count the HPA owns"
        assert hpa["spec"]["maxReplicas"] <= partitions, (
            "replicas beyond topic_partitions idle: a stage's consumers share the topic's partitions")
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


# -- Dockerfile -------------------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, rest = full.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def _exec_form(text: str) -> list[str]:
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
    return value


def _dockerfile_user() -> int:
    users = [rest for kw, rest in _instructions() if kw == "USER"]
    return int(users[-1].split(":")[0])


def _dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore globbing: ``**`` spans directories, ``*`` and ``?`` stay inside one."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether the build context leaves ``path`` out (the last matching pattern wins; a pattern matching a
    parent directory matches the files in it)."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _glob_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(c) for c in candidates):
            excluded = not negated
    return excluded


def test_dockerignore_reader_follows_docker() -> None:
    patterns = ["**", "!src", "**/__pycache__", "**/*.py[cod]"]
    assert dockerignored(".venv/bin/python", patterns)
    assert not dockerignored("src/pkg/mod.py", patterns)
    assert dockerignored("src/pkg/__pycache__/mod.cpython-311.pyc", patterns)
    assert dockerignored("src/pkg/mod.pyc", patterns)


def test_dockerfile_copies_only_what_exists_and_is_in_the_context() -> None:
    patterns = _dockerignore_patterns()
    copied: list[str] = []
    for keyword, rest in _instructions():
        if keyword not in ("COPY", "ADD"):
            continue
        assert keyword == "COPY", "use COPY, not ADD"
        args = _exec_form(rest) if rest.startswith("[") else shlex.split(rest)
        options = [a for a in args if a.startswith("--")]
        if any(o.startswith("--from=") for o in options):
            continue
        sources = [a for a in args if not a.startswith("--")][:-1]
        for source in sources:
            assert (REPO / source).exists(), f"Dockerfile copies {source}, which does not exist"
            assert not dockerignored(source, patterns), f".dockerignore keeps {source} out of the build context"
            copied.append(source.rstrip("/"))
    # What the wheel needs: the packages setuptools finds, and the files pyproject's metadata reads.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    needed = {"pyproject.toml", pyproject["project"]["readme"], "LICENSE"}
    needed |= {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert needed <= set(copied), f"the build stage lacks {sorted(needed - set(copied))}"
    for junk in (".venv/bin/python", ".git/HEAD", ".services/env", "tests/conftest.py", "bench/data/x.csv",
                 "cdp_hub/__pycache__/hub.cpython-311.pyc"):
        assert dockerignored(junk, patterns), f"{junk} would be sent to the Docker daemon"


def test_dockerfile_runtime_contract() -> None:
    instructions = _instructions()
    froms = [rest for kw, rest in instructions if kw == "FROM"]
    assert len(froms) >= 2, "multi-stage: build, then a clean runtime"
    args = dict(rest.split("=", 1) for kw, rest in instructions if kw == "ARG" and "=" in rest)
    assert args.get("PYTHON_IMAGE") == "python:3.11-slim"
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    entrypoint = _exec_form(next(rest for kw, rest in instructions if kw == "ENTRYPOINT"))
    assert entrypoint == ["cdp-hub"] and "cdp-hub" in pyproject["project"]["scripts"]
    cmd = _exec_form(next(rest for kw, rest in instructions if kw == "CMD"))
    assert _parse_cli(cmd).handler is commands.cmd_run
    assert _dockerfile_user() != 0
    exposed = {int(rest) for kw, rest in instructions if kw == "EXPOSE"}
    assert exposed == {Settings().http_port}
    env = " ".join(rest for kw, rest in instructions if kw == "ENV")
    assert "CDP_HUB_HTTP_HOST=0.0.0.0" in env, "a container must listen beyond its loopback"
    installs = " ".join(rest for kw, rest in instructions if kw == "RUN")
    assert "dev" not in re.findall(r"\[([a-z,]+)\]", installs), "no dev extras in the image"
    assert "curl" not in installs
    health = _healthcheck()
    assert health[0] == "python" and "/healthz" in health[-1]


def _healthcheck() -> list[str]:
    rest = next(rest for kw, rest in _instructions() if kw == "HEALTHCHECK")
    return _exec_form(rest.split(" CMD ", 1)[1])


# -- the manifests' commands on the real services ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pod_env(workload: dict[str, Any], tmp_path: Path, *, pg_dsn: str, redis_url: str, kafka: str,
             port: int) -> dict[str, str]:
    """The environment Kubernetes would give the container, pointed at the loopback services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDP_HUB_")}
    env.update(_secret_env())
    for item in _container(workload).get("env", []):
        env[item["name"]] = item.get("value", f"{workload['metadata']['name']}-test")  # fieldRef: the pod name
    config = tmp_path / "config" / "cdp-hub.toml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(_one("ConfigMap", "cdp-hub-config")["data"]["cdp-hub.toml"], encoding="utf-8")
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir(exist_ok=True)
    for name, text in _one("ConfigMap", "cdp-hub-scenarios")["data"].items():
        (scenarios / name).write_text(text, encoding="utf-8")
    env.update({
        "CDP_HUB_CONFIG": str(config),  # the mount paths of the pod, moved under tmp_path
        "CDP_HUB_SCENARIOS_DIR": str(scenarios),
        "CDP_HUB_DATA_DIR": str(tmp_path / "data"),
        # The cluster's services, replaced by the test services (a single broker, PostgreSQL not Greenplum).
        "CDP_HUB_POSTGRES_DSN": pg_dsn,
        "CDP_HUB_DIALECT": "postgres",
        "CDP_HUB_REDIS_URL": redis_url,
        "CDP_HUB_KAFKA_BOOTSTRAP": kafka,
        "CDP_HUB_KAFKA_REPLICATION_FACTOR": "1",
        "CDP_HUB_TOPIC_PARTITIONS": "2",
        "CDP_HUB_TOPIC_PREFIX": topic_prefix("deploy"),
        "CDP_HUB_HTTP_HOST": "127.0.0.1",
        "CDP_HUB_HTTP_PORT": str(port),
        "CDP_HUB_POLL_TIMEOUT_MS": "100",
        "PYTHONUNBUFFERED": "1",
        # The console script of the environment, running the source under test (not whichever checkout the
        # environment was installed from).
        "PYTHONPATH": str(REPO),
    })
    return env


def _cdp_hub() -> str:
    script = Path(sys.executable).parent / "cdp-hub"
    assert script.exists(), f"the cdp-hub console script is not installed next to {sys.executable}"
    return str(script)


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_ingest_pod_serves_probes_metrics_and_stops_cleanly_on_sigterm(
    tmp_path: Path, pg_dsn: str, redis_url: str, kafka_bootstrap: str
) -> None:
    deployment = _one("Deployment", "cdp-hub-ingest")
    container = _container(deployment)
    port = _free_port()
    env = _pod_env(deployment, tmp_path, pg_dsn=pg_dsn, redis_url=redis_url, kafka=kafka_bootstrap, port=port)
    log = tmp_path / "pod.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(_cdp_hub(), *container["args"], env=env, stdout=out,
                                                    stderr=asyncio.subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            startup = container["startupProbe"]["httpGet"]["path"]
            for _ in range(300):
                assert proc.returncode is None, f"the pod's process exited: {log.read_text()}"
                try:
                    if (await client.get(startup)).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
            else:
                pytest.fail(f"{startup} never answered 200: {log.read_text()}")
            assert (await client.get(container["livenessProbe"]["httpGet"]["path"])).status_code == 200
            ready = await client.get(container["readinessProbe"]["httpGet"]["path"])
            assert ready.status_code == 200, ready.text

            health = _healthcheck()
            checker = await asyncio.create_subprocess_exec(sys.executable, *health[1:], env=env)
            assert await checker.wait() == 0, "the Dockerfile HEALTHCHECK fails against a healthy server"

            now = datetime.now(UTC).isoformat()
            good = {"type": "customer.updated", "source": "shop", "source_record_id": "deploy-1",
                    "occurred_at": now, "identities": [{"kind": "email", "value": "deploy@example.ru"}]}
            bad = {**good, "source_record_id": "deploy-2", "identities": [{"kind": "phone", "value": "call me"}]}
            key = json.loads(_secret_env()["CDP_HUB_EVENT_SOURCES__SHOP__KEYS"])[0]
            answer = await client.post("/v1/events", json=[good, bad], headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == 207, answer.text

            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            metrics_path = annotations["prometheus.io/path"]
            samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
            # The dead letter goes round through cdp.dlq to the dlq stage this pod runs.
            for _ in range(150):
                samples = _samples((await client.get(metrics_path)).text)
                if samples.get(("cdp_stage_records_total", frozenset({("stage", "dlq")})), 0) >= 1:
                    break
                await asyncio.sleep(0.2)
            else:
                pytest.fail(f"the dlq stage of the ingest pod never archived the dead letter: {log.read_text()}")
        ingested = ("cdp_events_ingested_total", frozenset({("source", "shop"), ("type", "customer.updated")}))
        assert samples[ingested] == 1
        dlq = [v for (name, labels), v in samples.items()
               if name == "cdp_dlq_records_total" and ("stage", "http") in labels]
        assert dlq == [1]
        assert any(name == "cdp_consumer_lag" and ("stage", "dlq") in labels for name, labels in samples)
        assert {name for name, _ in samples} <= CATALOGUE.keys()

        proc.send_signal(signal.SIGTERM)
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert await asyncio.wait_for(proc.wait(), grace) == 0, log.read_text()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_migrate_job_command_succeeds_against_a_migrated_database(
    tmp_path: Path, pg_dsn: str, redis_url: str, kafka_bootstrap: str
) -> None:
    job = _one("Job", "cdp-hub-migrate")
    env = _pod_env(job, tmp_path, pg_dsn=pg_dsn, redis_url=redis_url, kafka=kafka_bootstrap, port=_free_port())
    proc = await asyncio.create_subprocess_exec(_cdp_hub(), *_container(job)["args"], env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, output.decode()
    assert output.decode().strip() == "up to date"
