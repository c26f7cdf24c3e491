"""The deployment artefacts' checks; run by scripts/check-deploy.sh, which provides the
virtual environment (PyYAML, jsonschema, promql-parser, helm-python-sdk,
kubernetes-validate, dockerfile). docs/operations.md ("What CI checks") describes what
is and is not checked.

Every check compares an artefact with the code or with another artefact, so that a
change on one side that the other does not follow fails here, with the file and the
object named:

  code        metric names and their labels, FLEET_* variables, topic names and default
              ports, read from services/ (the code is the truth)
  alerts      helm/fleet/files/alerts.yml (and its link deploy/prometheus/alerts.yml)
  dashboards  deploy/grafana: generated JSON up to date, fixed unique uids, a
              description on every panel, queries against real metrics
  chart       helm/fleet: values against values.schema.json (Python's jsonschema and
              Helm's own validator), helm lint, templates rendered by Helm's engine for
              each values file with and without the Prometheus Operator's API, every
              rendered object against the Kubernetes OpenAPI schemas, and the objects
              against each other and the code
  image       the Dockerfile, parsed by BuildKit's parser, against the workspace and
              .dockerignore
  strimzi     deploy/strimzi against the code's topics and the chart's defaults
  prometheus  deploy/prometheus/prometheus.yml against the code's default ports
  docs        docs/operations.md has a runbook for every alert

Run from the repository root: python3 scripts/check_deploy.py [SECTION...]
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "fleet"
ALERTS = CHART / "files" / "alerts.yml"
ALERTS_LINK = ROOT / "deploy" / "prometheus" / "alerts.yml"
GRAFANA = ROOT / "deploy" / "grafana"
OPERATIONS = ROOT / "docs" / "operations.md"

# Metrics the rules and dashboards may use that the services do not export.
EXTERNAL_METRICS = {
    "up": ("Prometheus itself, one series per scrape target", set()),
    "kafka_topic_partitions": ("kafka_exporter (Strimzi's Kafka Exporter)", {"topic"}),
}
# Labels Prometheus attaches to every scraped series (static configs and ServiceMonitors).
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "endpoint", "container"}
SEVERITIES = {"page", "ticket"}

# The services the chart runs, with the sources their FLEET_* variables come from: a
# directory means every .rs file below it, so a flag added in a new module is seen.
SERVICE_SOURCES = {
    "ingest": ["services/ingest/src", "services/runtime/src/lib.rs", "services/kafka/src/lib.rs"],
    "detector": ["services/detector/src", "services/runtime/src/lib.rs", "services/kafka/src/lib.rs"],
    "notifier": ["services/notifier/src", "services/runtime/src/lib.rs", "services/kafka/src/lib.rs"],
    "archiver": ["services/archiver/src", "services/runtime/src/lib.rs", "services/kafka/src/lib.rs"],
    "api": ["services/api/src", "services/runtime/src/lib.rs"],
    "canary": ["services/canary/src", "services/runtime/src/lib.rs"],
}


def rust_sources(entry: str) -> list[Path]:
    """The .rs files of a SERVICE_SOURCES entry (a file, or every file below a directory)."""
    path = ROOT / entry
    return sorted(path.rglob("*.rs")) if path.is_dir() else [path]


# FLEET_* variables a service reads that the chart deliberately neither sets nor offers.
NOT_IN_CHART = {
    "FLEET_TOPIC_SUFFIX": "test isolation only (topic names with a per-run suffix)",
    "FLEET_REGISTRY_FILE": "the chart's ingest reads the registry from the database (registryImport)",
}
_SHARED_FLAGS = "takes the shared endpoint flags (fleet_runtime::Endpoints) but does not use this one"
_MQTT_TLS = ("FLEET_MQTT_CA_FILE", "FLEET_MQTT_CERT_FILE", "FLEET_MQTT_KEY_FILE", "FLEET_MQTT_CERT_DIR")
_NO_MQTT = {n: _SHARED_FLAGS for n in ("FLEET_MQTT_URL", *_MQTT_TLS)}
_ONE_IDENTITY = ("a pod has one MQTT identity: the chart mounts its certificate and sets "
                 "FLEET_MQTT_CERT_FILE/FLEET_MQTT_KEY_FILE (<service>.mqttTls), not a directory")
NOT_IN_CHART_FOR = {
    "ingest": {"FLEET_MQTT_CERT_DIR": _ONE_IDENTITY},
    "detector": dict(_NO_MQTT),
    "notifier": dict(_NO_MQTT),
    "archiver": dict(_NO_MQTT),
    "api": {**_NO_MQTT, "FLEET_KAFKA_BROKERS": _SHARED_FLAGS},
    "canary": {"FLEET_MQTT_CERT_DIR": _ONE_IDENTITY, "FLEET_KAFKA_BROKERS": _SHARED_FLAGS},
}
# Services of which exactly one pod runs: replicas 1, strategy Recreate (two never
# overlap), no autoscaler, no disruption budget (helm/fleet/templates/_helpers.tpl).
SINGLETONS = {"canary"}
# Services whose port other pods dial through the Service (a virtual IP, and an endpoint
# even while not ready), rather than a headless Service for the ServiceMonitor only.
DIALLED = {"canary": "receiver"}
# Services whose MQTT identity the chart mounts from <service>.mqttTls.secretName.
MQTT_CLIENTS = {"ingest", "canary"}
BINARIES = {  # chart service -> binary (helm/fleet/templates/_helpers.tpl, fleet.components)
    "ingest": "fleet-ingest",
    "detector": "fleet-detector",
    "notifier": "fleet-notifier",
    "archiver": "fleet-archiver",
    "api": "fleet-api",
    "canary": "fleet-canary",
}
METRICS_ENV = {  # service -> the variable of its metrics address
    "ingest": "FLEET_INGEST_METRICS_ADDR",
    "detector": "FLEET_DETECTOR_METRICS_ADDR",
    "notifier": "FLEET_NOTIFIER_METRICS_ADDR",
    "archiver": "FLEET_ARCHIVER_METRICS_ADDR",
    "api": "FLEET_API_METRICS_ADDR",
    "canary": "FLEET_CANARY_METRICS_ADDR",
}
RELEASE, NAMESPACE = "fleet", "fleet"
MONITORING_API = "monitoring.coreos.com/v1"


# --------------------------------------------------------------------------- reporting


class Report:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.section = ""
        self.mark = 0

    def start(self) -> None:
        """Begins a group of checks whose ok() line is printed only if none failed."""
        self.mark = len(self.failures)

    def fail(self, where: str, what: str) -> None:
        self.failures.append(f"[{self.section}] {where}: {what}")
        print(f"  FAIL {where}: {what}", flush=True)

    def ok(self, what: str) -> None:
        if len(self.failures) == self.mark:
            print(f"  ok   {what}", flush=True)
        self.mark = len(self.failures)

    def check(self, cond: bool, where: str, what: str) -> bool:
        if not cond:
            self.fail(where, what)
        return cond


R = Report()


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        R.fail(rel(path), f"cannot read YAML: {e}")
        return None


# --------------------------------------------------------------------------- the code


class Code:
    """What the services say about themselves, read from their sources."""

    def __init__(self) -> None:
        self.metrics: dict[str, set[str]] = {}  # name -> label names
        sources = sorted((ROOT / "services").glob("*/src/**/*.rs"))
        for path in sources:
            text = path.read_text(encoding="utf-8")
            for m in re.finditer(r'"(fleet_[a-z0-9_]+)"', text):
                self.metrics.setdefault(m.group(1), set())
            for m in re.finditer(
                r'(?:counter|gauge|histogram)_vec\(\s*&?\w+,\s*"(fleet_[a-z0-9_]+)",\s*"(?:[^"\\]|\\.)*",\s*&\[([^\]]*)\]',
                text,
                re.S,
            ):
                self.metrics[m.group(1)] = set(re.findall(r'"([^"]+)"', m.group(2)))
        self.env: dict[str, set[str]] = {}
        self.env_defaults: dict[str, str] = {}  # variable -> the flag's default, as text
        for service, files in SERVICE_SOURCES.items():
            names: set[str] = set()
            for f in (p for entry in files for p in rust_sources(entry)):
                src = f.read_text(encoding="utf-8")
                names |= set(re.findall(r'env\s*=\s*"(FLEET_[A-Z0-9_]+)"', src))
                for attr in re.findall(r"#\[arg\((.*?)\)\]\s*(?:///[^\n]*\s*)*pub", src, re.S):
                    env = re.search(r'env\s*=\s*"(FLEET_[A-Z0-9_]+)"', attr)
                    default = re.search(r'default_value\s*=\s*"([^"]*)"|default_value_t\s*=\s*([0-9_ *]+)', attr)
                    if env and default:
                        text = default.group(1)
                        if text is None:  # an integer literal or a product of them (64 * 1024)
                            value = 1
                            for factor in default.group(2).replace("_", "").split("*"):
                                value *= int(factor)
                            text = str(value)
                        self.env_defaults[env.group(1)] = text
            self.env[service] = names
        kafka = (ROOT / "services/kafka/src/lib.rs").read_text(encoding="utf-8")
        self.topics = set(re.findall(r'pub const (?:READINGS|ALARMS|DEAD_LETTER): &str = "([^"]+)"', kafka))
        self.metrics_ports: dict[str, int] = {}
        for service, var in METRICS_ENV.items():
            for f in rust_sources(SERVICE_SOURCES[service][0]):
                m = re.search(var + r'",\s*default_value\s*=\s*"[^":]+:(\d+)"', f.read_text(encoding="utf-8"))
                if m:
                    self.metrics_ports[service] = int(m.group(1))

    def known(self, name: str) -> bool:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        return name in self.metrics or base in self.metrics

    def labels(self, name: str) -> set[str]:
        """The labels of a metric, or of the histogram a _bucket/_sum/_count series is of
        (a bucket also has `le`)."""
        if name in self.metrics:
            return self.metrics[name]
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        return self.metrics.get(base, set()) | ({"le"} if name.endswith("_bucket") else set())


def check_code(code: Code) -> None:
    R.check(len(code.metrics) >= 20, "services/", f"found only {len(code.metrics)} metric names: has the code moved?")
    for name, labels in sorted(code.metrics.items()):
        for label in labels:
            R.check("pump" not in label, "services/", f"metric {name} has a per-pump label {label!r}")
    R.check(len(code.topics) == 3, "services/kafka/src/lib.rs", f"expected 3 topic names, found {sorted(code.topics)}")
    R.check(set(code.metrics_ports) == set(METRICS_ENV), "services/", f"default metrics ports found: {code.metrics_ports}")
    R.ok(f"{len(code.metrics)} metric names, {sum(map(len, code.env.values()))} FLEET_* variables, "
         f"topics {sorted(code.topics)}, metrics ports {code.metrics_ports}")


# --------------------------------------------------------------------------- PromQL


def promql_names(expr: str, where: str, code: Code, grafana: bool = False) -> set[str]:
    """Parses one expression; fails on unknown metrics, unknown matcher labels and any
    per-pump label. Returns the metric names."""
    import promql_parser

    text = expr
    if grafana:  # Grafana's variables, replaced by something PromQL accepts
        text = re.sub(r"\$\{?(__\w+)\}?", "5m", text)
        text = re.sub(r"\$\{?(\w+)\}?", "x", text)
    try:
        ast = promql_parser.parse(text)
    except Exception as e:  # the parser raises ValueError with the position
        R.fail(where, f"PromQL does not parse: {e}: {expr!r}")
        return set()
    names: set[str] = set()
    labels_used: set[str] = set()

    def visit(node: Any, *_: Any) -> None:
        kind = type(node).__name__
        if kind == "VectorSelector":
            name = node.name
            if name:
                names.add(name)
            for m in node.matchers.matchers:
                if m.name == "__name__":
                    R.fail(where, f"selects metrics by __name__; name them instead: {expr!r}")
                    continue
                if name and name.startswith("fleet_") and code.known(name):
                    allowed = code.labels(name) | TARGET_LABELS
                    R.check(m.name in allowed, where, f"{name} has no label {m.name!r} (has {sorted(allowed)})")
                labels_used.add(m.name)
        elif kind == "AggregateExpr" and node.modifier is not None:
            labels_used.update(node.modifier.labels)
        elif kind == "BinaryExpr" and node.modifier is not None:
            matching = node.modifier.matching
            if matching is not None:
                labels_used.update(matching.labels)
            labels_used.update(node.modifier.group_labels or [])

    promql_parser.walk(ast, visit)
    for name in sorted(names):
        if not (code.known(name) or name in EXTERNAL_METRICS):
            R.fail(where, f"metric {name} is exported by no service (nor listed as external)")
    known_labels = set(TARGET_LABELS)
    for name in names:
        known_labels |= code.labels(name) | EXTERNAL_METRICS.get(name, ("", set()))[1]
    for label in sorted(labels_used):
        R.check("pump" not in label, where, f"per-pump label {label!r}: {expr!r}")
        R.check(label in known_labels, where, f"label {label!r} belongs to none of {sorted(names)}")
    return names


# --------------------------------------------------------------------------- alerts


def duration_ok(s: Any) -> bool:
    return isinstance(s, str) and re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", s) is not None


def load_alerts() -> list[dict]:
    doc = load_yaml(ALERTS)
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
        R.fail(rel(ALERTS), "not a Prometheus rule file (no 'groups' list)")
        return []
    return doc["groups"]


def check_alerts(code: Code) -> dict[str, dict]:
    R.check(ALERTS_LINK.is_symlink(), rel(ALERTS_LINK), "must be a symbolic link to helm/fleet/files/alerts.yml (one copy)")
    R.check(ALERTS_LINK.resolve() == ALERTS.resolve(), rel(ALERTS_LINK), f"resolves to {ALERTS_LINK.resolve()}, not {rel(ALERTS)}")
    alerts: dict[str, dict] = {}
    group_names = set()
    used: set[str] = set()
    for g in load_alerts():
        gname = g.get("name")
        where = f"{rel(ALERTS)} group {gname}"
        R.check(isinstance(gname, str) and gname not in group_names, where, "group names must be present and unique")
        group_names.add(gname)
        R.check(set(g) <= {"name", "rules", "interval"}, where, f"unexpected keys {sorted(set(g) - {'name', 'rules', 'interval'})}")
        for rule in g.get("rules") or []:
            name = rule.get("alert")
            where = f"{rel(ALERTS)} alert {name}"
            if not R.check(isinstance(name, str) and re.fullmatch(r"Fleet[A-Z][A-Za-z]+", name or "") is not None,
                           f"{rel(ALERTS)} group {gname}", f"rule without a Fleet... alert name: {rule}"):
                continue
            R.check(name not in alerts, where, "alert name used twice")
            alerts[name] = rule
            R.check(set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, where,
                    f"unexpected keys {sorted(set(rule))}")
            if "for" in rule:
                R.check(duration_ok(rule["for"]), where, f"'for' is not a duration: {rule['for']!r}")
            labels = rule.get("labels") or {}
            R.check(labels.get("severity") in SEVERITIES, where, f"labels.severity must be one of {sorted(SEVERITIES)}")
            ann = rule.get("annotations") or {}
            for key in ("summary", "description", "runbook_url"):
                R.check(bool(ann.get(key)), where, f"annotation {key} is missing")
            R.check(ann.get("runbook_url") == f"docs/operations.md#{name.lower()}", where,
                    f"runbook_url must be docs/operations.md#{name.lower()}")
            expr = rule.get("expr")
            if not R.check(isinstance(expr, str) and expr.strip() != "", where, "expr is missing"):
                continue
            used |= promql_names(expr, where, code)
            for text in ann.values():
                for label in re.findall(r"\$labels\.(\w+)", str(text)):
                    R.check(label in expr or label in {"instance", "job"}, where,
                            f"annotation uses $labels.{label}, which the expression does not keep")
                R.check(str(text).count("{{") == str(text).count("}}"), where, "unbalanced {{ }} in an annotation")
    R.check(len(alerts) > 0, rel(ALERTS), "no alert rules")
    R.ok(f"{len(alerts)} alerts in {len(group_names)} groups; metrics used: {len(used)}")
    return alerts


# --------------------------------------------------------------------------- dashboards


def walk_panels(panels: list[dict]) -> Iterable[dict]:
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels") or [])


def check_dashboards(code: Code, alerts: dict[str, dict]) -> set[str]:
    generated = subprocess.run([sys.executable, str(GRAFANA / "dashboards.py"), "--check"], capture_output=True, text=True)
    R.check(generated.returncode == 0, "deploy/grafana/dashboards/", generated.stderr.strip() or "out of date")
    datasource_uids = set()
    for path in sorted((GRAFANA / "provisioning" / "datasources").glob("*.yaml")):
        doc = load_yaml(path) or {}
        for ds in doc.get("datasources") or []:
            R.check(bool(ds.get("uid")), rel(path), f"data source {ds.get('name')} has no fixed uid")
            datasource_uids.add(ds.get("uid"))
    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "fleet.yaml") or {}
    R.check(bool(providers.get("providers")), "deploy/grafana/provisioning/dashboards/fleet.yaml", "no dashboard provider")
    uids: dict[str, str] = {}
    titles: set[str] = set()
    files = sorted((GRAFANA / "dashboards").glob("*.json"))
    R.check(len(files) >= 3, "deploy/grafana/dashboards/", f"expected 3 dashboards, found {len(files)}")
    panels_seen = 0
    for path in files:
        where = rel(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            R.fail(where, f"not JSON: {e}")
            continue
        uid = d.get("uid")
        if R.check(isinstance(uid, str) and re.fullmatch(r"[a-z0-9-]{1,40}", uid or "") is not None, where,
                   f"uid must be fixed, lower-case, at most 40 characters: {uid!r}"):
            R.check(uid not in uids, where, f"uid {uid} also used by {uids.get(uid)}")
            uids[uid] = where
        R.check(d.get("title") not in titles, where, f"title {d.get('title')!r} used twice")
        titles.add(d.get("title"))
        R.check(bool(d.get("description")), where, "the dashboard has no description")
        variables = {v.get("name"): v for v in (d.get("templating") or {}).get("list", [])}
        ds_var = variables.get("datasource", {})
        R.check(ds_var.get("type") == "datasource" and ds_var.get("current", {}).get("value") in datasource_uids, where,
                f"needs a 'datasource' variable defaulting to a provisioned uid {sorted(datasource_uids)}")
        for v in variables.values():
            if v.get("type") == "query":
                query = v.get("definition") or ""
                m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
                if R.check(m is not None, f"{where} variable {v.get('name')}", f"use label_values(metric, label): {query!r}"):
                    R.check(code.known(m.group(1)) and m.group(2) in code.metrics.get(m.group(1), set()),
                            f"{where} variable {v.get('name')}", f"{m.group(1)} has no label {m.group(2)}")
        ids = set()
        for p in walk_panels(d.get("panels") or []):
            panels_seen += 1
            pwhere = f"{where} panel {p.get('id')} {p.get('title')!r}"
            R.check(p.get("id") not in ids, pwhere, "panel id used twice")
            ids.add(p.get("id"))
            R.check(bool((p.get("description") or "").strip()), pwhere, "has no description")
            R.check(bool(p.get("title")), pwhere, "has no title")
            R.check("gridPos" in p, pwhere, "has no gridPos")
            for alert in re.findall(r"\bFleet[A-Z][A-Za-z]+\b", p.get("description") or ""):
                R.check(alert in alerts, pwhere, f"description names alert {alert}, which alerts.yml does not have")
            if p.get("type") in ("row", "text"):
                continue
            R.check((p.get("datasource") or {}).get("uid") == "${datasource}", pwhere,
                    "must query through the ${datasource} variable")
            targets = p.get("targets") or []
            R.check(len(targets) > 0, pwhere, "has no query")
            for t in targets:
                R.check((t.get("datasource") or {}).get("uid") == "${datasource}", pwhere,
                        "query must use the ${datasource} variable")
                promql_names(t.get("expr", ""), pwhere, code, grafana=True)
    R.ok(f"{len(files)} dashboards ({', '.join(sorted(uids))}), {panels_seen} panels")
    return set(uids)


# --------------------------------------------------------------------------- chart


def merge_values(base: Any, override: Any) -> Any:
    """Helm's coalescing of a values file over the defaults (null deletes a key)."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    out = copy.deepcopy(base)
    for k, v in override.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_values(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# Values that must be refused: (what, override). Each is tried against both validators.
MUST_REJECT = [
    ("the database URL inline", {"database": {"url": "postgres://fleet:secret@db:5432/fleet"}}),
    ("a secret value inline", {"notifier": {"signingSecret": {"name": "fleet-signing", "key": "secret", "value": "s3cret"}}}),
    ("a signing secret without a name", {"notifier": {"signingSecret": {"name": "", "key": "secret"}}}),
    ("an endpoint through a service's env", {"ingest": {"env": {"FLEET_MQTT_URL": "mqtt://elsewhere:1883"}}}),
    ("the signing secret through env", {"notifier": {"env": {"FLEET_SIGNING_SECRET": "s3cret"}}}),
    ("a number where env needs a string", {"ingest": {"env": {"FLEET_INGEST_MAX_IN_FLIGHT": 4000}}}),
    ("an unknown top-level key", {"replicas": 3}),
    ("an unknown service key", {"detector": {"replicas": 3}}),
    ("an ingress without host and TLS secret", {"api": {"ingress": {"enabled": True}}}),
    ("a Kafka address without port", {"kafka": {"brokers": "kafka"}}),
    ("an MQTT URL with another scheme", {"mqtt": {"url": "ws://broker:8083"}}),
    ("mqtts:// without ingest's client certificate", {"mqtt": {"url": "mqtts://broker:8883"},
                                                     "canary": {"mqttTls": {"secretName": "fleet-canary-mqtt"}}}),
    ("mqtts:// without the canary's client certificate", {"mqtt": {"url": "mqtts://broker:8883"},
                                                         "ingest": {"mqttTls": {"secretName": "fleet-ingest-mqtt"}}}),
    ("a client certificate with a plain mqtt:// URL", {"canary": {"mqttTls": {"secretName": "fleet-canary-mqtt"}}}),
    ("more than one canary", {"canary": {"replicaCount": 2}}),
    ("an autoscaled canary", {"canary": {"autoscaling": {"enabled": True}}}),
    ("a canary gateway id that is a service identity", {"canary": {"gatewayId": "fleet-ingest"}}),
    ("a canary gateway id that is no MQTT topic level", {"canary": {"gatewayId": "gw/canary"}}),
    ("a canary interval that is no duration", {"canary": {"interval": "every minute"}}),
    ("the canary's signing secret inline", {"canary": {"signingSecret": {"name": "", "key": "secret", "value": "s3cret-s3cret-s3cret"}}}),
    ("the canary's settings through env", {"canary": {"env": {"FLEET_CANARY_INTERVAL": "10s"}}}),
    ("an image digest that is not sha256", {"image": {"digest": "latest"}}),
]


def helm_render(chart: Any, values: dict, api_versions: list[str], kube_version: str) -> dict[str, str]:
    """Helm's own engine (helm-python-sdk wraps the Helm v4 Go library): the same as
    `helm template --api-versions ... --kube-version ...`, offline."""
    from helm_python import _native

    opts = {"name": RELEASE, "namespace": NAMESPACE, "is_install": True, "api_versions": api_versions,
            "kube_version": kube_version}
    return json.loads(_native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(opts)))


def parse_manifests(rendered: dict[str, str], where: str) -> list[dict]:
    objects = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as e:
            R.fail(f"{where} {template}", f"rendered YAML does not parse: {e}")
            continue
        for doc in docs:
            if doc is None:
                continue
            if not R.check(isinstance(doc, dict) and {"apiVersion", "kind", "metadata"} <= set(doc), f"{where} {template}",
                           "a rendered document without apiVersion, kind and metadata"):
                continue
            doc["__template"] = template
            objects.append(doc)
    return objects


def kube_versions() -> list[str]:
    """The oldest Kubernetes release the chart supports (Chart.yaml kubeVersion) and the
    newest one kubernetes-validate has schemas for."""
    import kubernetes_validate

    chart = load_yaml(CHART / "Chart.yaml") or {}
    m = re.search(r">=\s*(\d+\.\d+)", str(chart.get("kubeVersion", "")))
    oldest = f"{m.group(1)}.0" if m else "1.27.0"
    return [oldest, kubernetes_validate.latest_version()]


def check_objects(objects: list[dict], where: str, values: dict, code: Code, monitoring: bool, versions: list[str]) -> None:
    import kubernetes_validate

    by_kind: dict[str, list[dict]] = {}
    seen = set()
    for o in objects:
        key = (o["kind"], o["metadata"].get("name"))
        R.check(key not in seen, where, f"{key[0]} {key[1]} rendered twice")
        seen.add(key)
        by_kind.setdefault(o["kind"], []).append(o)
        R.check(o["metadata"].get("namespace") in (None, NAMESPACE), where, f"{key} in another namespace")
        body = {k: v for k, v in o.items() if k != "__template"}
        if o["kind"] in ("ServiceMonitor", "PrometheusRule"):
            continue  # custom resources: checked below
        for version in versions:
            try:
                kubernetes_validate.validate(body, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = "/".join(str(x) for x in e.path)
                R.fail(f"{where} {o['__template']} {o['kind']} {key[1]}",
                       f"invalid for Kubernetes {version} at {path or '(top)'}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError:
                R.fail(f"{where} {o['kind']} {key[1]}", f"no schema for {o['apiVersion']} {o['kind']} in Kubernetes {version}")

    R.check("Secret" not in by_kind, where, "the chart must not create Secrets (secrets are referenced, never inlined)")
    deployments = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in by_kind.get("Deployment", [])}
    enabled = {s for s in BINARIES if values[s]["enabled"]}
    R.check(set(deployments) == enabled, where, f"Deployments for {sorted(deployments)}, enabled services {sorted(enabled)}")
    services = {s["metadata"]["labels"]["app.kubernetes.io/component"]: s for s in by_kind.get("Service", [])}
    secret_refs = {(values["database"]["urlSecret"]["name"], values["database"]["urlSecret"]["key"])}
    if values["notifier"]["enabled"]:
        secret_refs.add((values["notifier"]["signingSecret"]["name"], values["notifier"]["signingSecret"]["key"]))
    if values["canary"]["enabled"] and values["canary"]["signingSecret"]["name"]:
        secret_refs.add((values["canary"]["signingSecret"]["name"], values["canary"]["signingSecret"]["key"]))
    # Secrets mounted as volumes: the clinics' CA bundle and the MQTT client certificates.
    volume_secrets = {values["notifier"]["clinicCa"]["secretName"]} | {
        values[s]["mqttTls"]["secretName"] for s in MQTT_CLIENTS
    }
    volume_secrets.discard("")
    mqtts = values["mqtt"]["url"].startswith("mqtts://")
    for name, dep in deployments.items():
        w = f"{where} Deployment {dep['metadata']['name']}"
        pod = dep["spec"]["template"]
        spec = pod["spec"]
        R.check(dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items(), w,
                "selector does not match the pod labels")
        R.check(spec.get("securityContext", {}).get("runAsNonRoot") is True, w, "pods must run as non-root")
        R.check(spec.get("automountServiceAccountToken") is False, w, "the services need no API token")
        (container,) = spec["containers"]
        R.check(container.get("command") == [BINARIES[name]], w, f"command {container.get('command')}, want [{BINARIES[name]}]")
        R.check(container.get("securityContext", {}).get("readOnlyRootFilesystem") is True, w, "root filesystem must be read-only")
        env = container.get("env") or []
        names = [e["name"] for e in env]
        R.check(len(names) == len(set(names)), w, f"environment variable set twice: {names}")
        for e in env:
            if re.search(r"SECRET|PASSWORD|TOKEN|DATABASE_URL", e["name"]):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                R.check("value" not in e and ref is not None, w, f"{e['name']} must come from a Secret reference")
                if ref:
                    R.check((ref["name"], ref["key"]) in secret_refs, w, f"{e['name']} refers to {ref}, not to the values' Secret")
        configmaps = {c["metadata"]["name"] for c in by_kind.get("ConfigMap", [])}
        mounts = {m["name"] for m in container.get("volumeMounts") or []}
        for vol in spec.get("volumes") or []:
            R.check(vol["name"] in mounts, w, f"volume {vol['name']} is not mounted")
            if "configMap" in vol:
                R.check(vol["configMap"]["name"] in configmaps, w, f"volume {vol['name']} needs ConfigMap {vol['configMap']['name']}, not rendered")
            if "secret" in vol:
                R.check(vol["secret"]["secretName"] in volume_secrets, w,
                        f"volume {vol['name']} uses Secret {vol['secret']['secretName']}, not one the values name")
        for m in mounts:
            R.check(m in {v["name"] for v in spec.get("volumes") or []}, w, f"mount {m} has no volume")
        ports = {p["name"]: p["containerPort"] for p in container.get("ports") or []}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = (container.get(probe) or {}).get("httpGet")
            if R.check(get is not None, w, f"{probe} missing"):
                R.check(get["port"] in ports, w, f"{probe} port {get['port']} is not a container port {sorted(ports)}")
        if name in METRICS_ENV:
            R.check(container["startupProbe"]["httpGet"]["path"] == "/healthz"
                    and container["livenessProbe"]["httpGet"]["path"] == "/healthz"
                    and container["readinessProbe"]["httpGet"]["path"] == "/readyz", w,
                    "probes must use /healthz (startup, liveness) and /readyz (readiness)")
            addr = next((e.get("value") for e in env if e["name"] == METRICS_ENV[name]), None)
            R.check(addr == f"0.0.0.0:{ports.get('metrics')}", w, f"{METRICS_ENV[name]}={addr}, metrics port {ports.get('metrics')}")
            R.check(ports.get("metrics") == code.metrics_ports.get(name), w,
                    f"metrics port {ports.get('metrics')}, the code's default is {code.metrics_ports.get(name)}")
        svc = services.get(name)
        if R.check(svc is not None, w, "has no Service"):
            R.check(svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items(), w, "its Service selects other pods")
            for p in svc["spec"]["ports"]:
                R.check(p["targetPort"] in ports, w, f"Service port {p['name']} targets {p['targetPort']}, not a container port")
        # MQTT over TLS: the pod's identity (and the broker's CA) from its mqttTls Secret,
        # exactly when the URL is mqtts:// (the code refuses TLS files with mqtt://).
        env_values = {e["name"]: e.get("value") for e in env}
        tls_env = {n for n in _MQTT_TLS if n in env_values}
        want_tls = {"FLEET_MQTT_CA_FILE", "FLEET_MQTT_CERT_FILE", "FLEET_MQTT_KEY_FILE"} if mqtts and name in MQTT_CLIENTS else set()
        R.check(tls_env == want_tls, w, f"MQTT TLS variables {sorted(tls_env)}, expected {sorted(want_tls)} for {values['mqtt']['url']}")
        mount_paths = [m["mountPath"] for m in container.get("volumeMounts") or []]
        for n in tls_env:
            R.check(any(str(env_values[n]).startswith(mp.rstrip("/") + "/") for mp in mount_paths), w,
                    f"{n}={env_values[n]} is not under a mounted volume")
        # Every listen address the chart sets binds 0.0.0.0 on the code's default port,
        # which is a container port.
        for e in env:
            default = code.env_defaults.get(e["name"], "")
            if re.search(r"_(ADDR|LISTEN)$", e["name"]) and re.fullmatch(r"127\.0\.0\.1:\d+", default):
                port = int(default.rsplit(":", 1)[1])
                R.check(e.get("value") == f"0.0.0.0:{port}", w, f"{e['name']}={e.get('value')}, the code's default port is {port}")
                R.check(port in ports.values(), w, f"{e['name']} listens on {port}, which is no container port")
        if values["monitoring"]["scrapeAnnotations"]:
            ann = pod["metadata"].get("annotations") or {}
            R.check(ann.get("prometheus.io/port") == str(ports.get("metrics")), w,
                    f"prometheus.io/port {ann.get('prometheus.io/port')}, the metrics port is {ports.get('metrics')}")
        if name in SINGLETONS:
            R.check(dep["spec"].get("replicas") == 1 and dep["spec"].get("strategy", {}).get("type") == "Recreate", w,
                    "a singleton runs exactly one replica with strategy Recreate (two must never overlap)")
        if name in DIALLED and svc_ok(services.get(name)):
            svc = services[name]
            R.check(svc["spec"].get("clusterIP") != "None" and svc["spec"].get("publishNotReadyAddresses") is True, w,
                    "its Service is dialled by other pods: a virtual IP, and publishNotReadyAddresses so that it is "
                    "reachable while not ready")
            R.check(DIALLED[name] in {p["name"] for p in svc["spec"]["ports"]}, w, f"its Service lacks port {DIALLED[name]}")
        autoscaled = values[name].get("autoscaling", {}).get("enabled", False)
        R.check(("replicas" in dep["spec"]) != autoscaled, w, "replicas must be set exactly when there is no autoscaler")
    for kind in ("PodDisruptionBudget", "HorizontalPodAutoscaler"):
        for o in by_kind.get(kind, []):
            name = o["metadata"]["labels"]["app.kubernetes.io/component"]
            dep = deployments.get(name)
            if not R.check(dep is not None, where, f"{kind} {o['metadata']['name']} has no Deployment"):
                continue
            if kind == "PodDisruptionBudget":
                R.check(o["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"], where,
                        f"PodDisruptionBudget {o['metadata']['name']} selects other pods")
            else:
                R.check(name in ("ingest", "detector", "archiver", "api"), where, f"no autoscaler is offered for {name}")
                R.check(o["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"], where, f"HPA {o['metadata']['name']} targets another Deployment")
    hpas = {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in by_kind.get("HorizontalPodAutoscaler", [])}
    want_hpas = {s for s in enabled if values[s].get("autoscaling", {}).get("enabled")}
    R.check(hpas == want_hpas, where, f"autoscalers for {sorted(hpas)}, expected {sorted(want_hpas)}")
    pdbs = {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in by_kind.get("PodDisruptionBudget", [])}
    R.check(pdbs == {s for s in enabled if values[s].get("pdb", {}).get("enabled")}, where, f"disruption budgets for {sorted(pdbs)}")
    R.check(not (pdbs | hpas) & SINGLETONS, where, f"a singleton ({sorted(SINGLETONS)}) with a disruption budget or autoscaler")

    # The capability check: monitoring objects exactly when the Operator's API exists.
    monitors = by_kind.get("ServiceMonitor", [])
    rules = by_kind.get("PrometheusRule", [])
    want_monitors = {s for s in enabled if s in METRICS_ENV} if monitoring and values["monitoring"]["serviceMonitor"]["enabled"] else set()
    got = {m["metadata"]["labels"]["app.kubernetes.io/component"] for m in monitors}
    R.check(got == want_monitors, where, f"ServiceMonitors for {sorted(got)}, expected {sorted(want_monitors)}")
    for m in monitors:
        name = m["metadata"]["labels"]["app.kubernetes.io/component"]
        svc = services.get(name)
        (endpoint,) = m["spec"]["endpoints"]
        R.check(svc is not None and m["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(), where,
                f"ServiceMonitor {name} selects no fleet Service")
        R.check(svc is not None and endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}, where,
                f"ServiceMonitor {name} scrapes port {endpoint['port']}, which its Service lacks")
        jobs = [r.get("replacement") for r in endpoint.get("relabelings", []) if r.get("targetLabel") == "job"]
        R.check(jobs == [f"fleet-{name}"], where, f"ServiceMonitor {name} must set job=fleet-{name} (the rules use it)")
        for r in endpoint.get("relabelings", []):
            R.check("pump" not in str(r.get("targetLabel", "")), where, "per-pump label in a relabeling")
    want_rule = monitoring and values["monitoring"]["prometheusRule"]["enabled"]
    R.check(len(rules) == (1 if want_rule else 0), where, f"{len(rules)} PrometheusRules rendered, expected {int(want_rule)}")
    for rule in rules:
        R.check(rule["spec"] == {"groups": load_alerts()}, where,
                "the PrometheusRule's groups differ from helm/fleet/files/alerts.yml")

    job = by_kind.get("Job", [])
    R.check(len(job) == (1 if values["registryImport"]["enabled"] else 0), where, "registry import Job rendered iff enabled")
    for j in job:
        (c,) = j["spec"]["template"]["spec"]["containers"]
        R.check(c["command"][:3] == ["fleetctl", "registry", "import"], where, "the import Job must run fleetctl registry import")
        R.check("pre-install" in j["metadata"]["annotations"].get("helm.sh/hook", ""), where, "the import must run before the services")


def svc_ok(svc: dict | None) -> bool:
    return svc is not None and "spec" in svc


def schema_leaves(schema: dict, node: dict, path: str = "") -> Iterable[str]:
    if "$ref" in node:
        node = schema["definitions"][node["$ref"].split("/")[-1]]
    props = node.get("properties")
    if not props:
        if path:
            yield path
        return
    for key, sub in props.items():
        yield from schema_leaves(schema, sub, f"{path}.{key}" if path else key)


def check_chart(code: Code) -> None:
    import helm_python

    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    try:
        jsonschema.Draft7Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        R.fail("helm/fleet/values.schema.json", f"not a valid draft-07 schema: {e.message}")
        return
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    chart = helm_python.Chart.load(str(CHART))
    defaults = load_yaml(CHART / "values.yaml")
    versions = kube_versions()

    cases = [("values.yaml", {})] + [
        (rel(p), load_yaml(p) or {}) for p in sorted((CHART / "ci").glob("*-values.yaml"))
    ]
    R.check(len(cases) >= 3, "helm/fleet/ci/", "expected example override files (*-values.yaml)")
    rendered_env: dict[str, set[str]] = {s: set() for s in BINARIES}
    for label, override in cases:
        merged = merge_values(defaults, override)
        errors = sorted(validator.iter_errors(merged), key=lambda e: list(e.path))
        for e in errors:
            R.fail(label, f"values do not match values.schema.json at {'.'.join(map(str, e.path)) or '(top)'}: {e.message}")
        try:
            chart.validate_schema(override)
        except helm_python.HelmError as e:
            R.fail(label, f"Helm rejects the values: {e}")
            continue
        lint = helm_python.lint(str(CHART), override, namespace=NAMESPACE, kube_version=f"v{versions[0]}")
        for m in lint.get("messages", []):
            if m.get("severity", 0) >= 2:
                R.fail(label, f"helm lint: {m.get('path')}: {m.get('error')}")
        for e in lint.get("errors", []):
            R.fail(label, f"helm lint: {e}")
        for monitoring in (False, True):
            apis = [MONITORING_API] if monitoring else []
            where = f"{label} ({'with' if monitoring else 'without'} {MONITORING_API})"
            try:
                rendered = helm_render(chart, override, apis, f"v{versions[0]}")
            except helm_python.HelmError as e:
                R.fail(where, f"templates do not render: {e}")
                continue
            objects = parse_manifests(rendered, where)
            check_objects(objects, where, merged, code, monitoring, versions)
            for o in objects:
                if o["kind"] == "Deployment":  # what the chart sets, not what the values' env adds
                    name = o["metadata"]["labels"]["app.kubernetes.io/component"]
                    env = {e["name"] for e in o["spec"]["template"]["spec"]["containers"][0].get("env", [])}
                    rendered_env[name] |= env - set(merged[name].get("env") or {})
        R.ok(f"{label}: schema (jsonschema and Helm), helm lint, rendered with and without {MONITORING_API}, "
             f"objects valid for Kubernetes {' and '.join(versions)}")

    for label, override in MUST_REJECT:
        merged = merge_values(defaults, override)
        R.check(not validator.is_valid(merged), "helm/fleet/values.schema.json", f"accepts {label}")
        try:
            chart.validate_schema(override)
            R.fail("helm/fleet/values.schema.json", f"Helm accepts {label}")
        except helm_python.HelmError:
            pass
    R.ok(f"{len(MUST_REJECT)} bad values files refused by both validators")

    # The code's FLEET_* variables against the chart: each is set by the chart, offered
    # in the service's env (schema), or deliberately left out (NOT_IN_CHART).
    for service, names in code.env.items():
        offered = set(schema["properties"][service]["properties"]["env"].get("propertyNames", {}).get("enum", []))
        set_by_chart = {n for n in rendered_env[service] if n.startswith("FLEET_")}
        left_out = set(NOT_IN_CHART) | set(NOT_IN_CHART_FOR.get(service, {}))
        for n in sorted(names - offered - set_by_chart - left_out):
            R.fail(f"helm/fleet (service {service})",
                   f"{n} is read by the code but neither set by the chart nor offered in values.schema.json {service}.env")
        for n in sorted((offered | set_by_chart) - names):
            R.fail(f"helm/fleet (service {service})", f"{n} is set or offered by the chart but the code does not read it")
        for n in sorted(offered & set_by_chart):
            R.fail(f"helm/fleet (service {service})", f"{n} is set by the chart and also offered in env")
    R.ok("every FLEET_* variable of the code is set by the chart, offered in env, or left out with a reason")

    # Every value documented in the README's table; the keys every service shares may be
    # written once as <service>.key, the three probes once as probes.<probe>.key.
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\|\s*`([^`]+)`.*$", readme, re.M)}
    for leaf in schema_leaves(schema, schema):
        leaf = re.sub(r"\.resources\.(requests|limits)$", ".resources", leaf)
        generic = re.sub(r"^(ingest|detector|notifier|archiver|api|canary)\.", "<service>.", leaf)
        generic = re.sub(r"\.probes\.(startup|liveness|readiness)\.", ".probes.<probe>.", generic)
        R.check(leaf in rows or generic in rows, "helm/fleet/README.md", f"value {leaf} has no row in the values table")
    for service in BINARIES:
        for n in schema["properties"][service]["properties"]["env"].get("propertyNames", {}).get("enum", []):
            row = rows.get(n)
            if R.check(row is not None, "helm/fleet/README.md", f"{service}.env {n} has no row"):
                default = code.env_defaults.get(n)
                R.check(default is None or f"`{default}`" in row, "helm/fleet/README.md",
                        f"the row of {n} should give the code's default `{default}`")
    R.ok("every value and every offered FLEET_* variable (with the code's default) has a row in helm/fleet/README.md")


# --------------------------------------------------------------------------- image


def dockerignore_admits(patterns: list[str], path: str) -> bool:
    """Docker's rule: patterns in order, the last that matches decides; '!' re-admits."""
    admitted = True
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(p, pattern[3:]) for p in parts) or fnmatch.fnmatch(path, pattern[3:])
        else:
            hit = any(fnmatch.fnmatch(p, pattern) for p in prefixes)
        if hit:
            admitted = negate
    return admitted


def check_image() -> None:
    import dockerfile

    where = "Dockerfile"
    try:
        commands = dockerfile.parse_file(str(ROOT / "Dockerfile"))
    except dockerfile.GoParseError as e:
        R.fail(where, f"BuildKit's parser refuses it: {e}")
        return
    stages = [c for c in commands if c.cmd == "FROM"]
    R.check(len(stages) >= 2, where, "must be multi-stage (a builder and a minimal runtime)")
    final_index = commands.index(stages[-1])
    final = commands[final_index:]
    users = [c for c in final if c.cmd == "USER"]
    R.check(bool(users) and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1].value[0]) is not None, where,
            "the runtime stage must switch to a numeric non-root USER (runAsNonRoot checks it)")
    runtime_base = stages[-1].value[0]
    R.check(re.search(r"(debian:.*-slim|distroless/cc)", runtime_base) is not None, where,
            f"runtime base {runtime_base} is not debian-slim or distroless/cc")
    for c in commands:
        if c.cmd in ("ARG", "ENV"):
            for v in c.value:
                R.check(re.search(r"SECRET|PASSWORD|TOKEN|KEY|DATABASE_URL", v.split("=")[0], re.I) is None, where,
                        f"line {c.start_line}: {c.cmd} {v.split('=')[0]} looks like a secret baked into the image")
    build = " ".join(" ".join(c.value) for c in commands if c.cmd == "RUN" and "cargo build" in " ".join(c.value))
    packages = set(re.findall(r"-p\s+([\w-]+)", build))
    needed = set(BINARIES.values()) | {"fleetctl"}
    R.check(needed <= packages, where, f"cargo build lacks {sorted(needed - packages)}")
    copied_bins = set(re.findall(r"for bin in ([\w\s-]+);", build))
    R.check(any(needed <= set(b.split()) for b in copied_bins), where, "the binaries copied out must include every service and fleetctl")
    ignore = [ln.strip() for ln in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
              if ln.strip() and not ln.startswith("#")]
    sources = []
    for c in commands[:final_index]:
        if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags):
            sources += list(c.value[:-1])
    for s in sources:
        R.check((ROOT / s).exists(), where, f"COPY {s}: no such path")
        R.check(dockerignore_admits(ignore, s.rstrip("/")), ".dockerignore", f"excludes {s}, which the Dockerfile copies")
    for private in (".state", "target", ".git", "deploy/local", ".ci"):
        R.check(not dockerignore_admits(ignore, private), ".dockerignore", f"admits {private} into the build context")
    workspace = load_toml_members()
    for member in workspace:
        R.check(any(member == s.rstrip("/") or member.startswith(s.rstrip("/") + "/") for s in sources), where,
                f"workspace member {member} is not copied into the builder (cargo would fail)")
    R.ok(f"Dockerfile: {len(stages)} stages, runtime {runtime_base} as user {users[-1].value[0] if users else '?'}, "
         f"builds {len(packages)} packages; .dockerignore admits only the sources")


def load_toml_members() -> list[str]:
    import tomllib

    with open(ROOT / "Cargo.toml", "rb") as f:
        return list(tomllib.load(f)["workspace"]["members"])


# --------------------------------------------------------------------------- strimzi


def check_strimzi(code: Code) -> None:
    docs: list[dict] = []
    for path in sorted((ROOT / "deploy" / "strimzi").glob("*.yaml")):
        try:
            docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        except yaml.YAMLError as e:
            R.fail(rel(path), f"not YAML: {e}")
    topics = {d["spec"]["topicName"]: d for d in docs if d.get("kind") == "KafkaTopic"}
    R.check(set(topics) == code.topics, "deploy/strimzi/topics.yaml", f"topics {sorted(topics)}, the code's {sorted(code.topics)}")
    for name, t in topics.items():
        replicas = t["spec"].get("replicas", 0)
        isr = int(t["spec"].get("config", {}).get("min.insync.replicas", 1))
        R.check(replicas >= isr + 1, "deploy/strimzi/topics.yaml", f"{name}: {replicas} replicas with min.insync.replicas {isr}")
    kafkas = [d for d in docs if d.get("kind") == "Kafka"]
    defaults = load_yaml(CHART / "values.yaml")
    host, port = defaults["kafka"]["brokers"].split(",")[0].rsplit(":", 1)
    if R.check(len(kafkas) == 1, "deploy/strimzi/kafka.yaml", "expected one Kafka"):
        k = kafkas[0]
        want = f"{k['metadata']['name']}-kafka-bootstrap.{k['metadata']['namespace']}.svc.cluster.local"
        R.check(host == want, "helm/fleet/values.yaml", f"kafka.brokers host {host}, the Strimzi example serves {want}")
        plain = [lst for lst in k["spec"]["kafka"]["listeners"] if lst.get("port") == int(port)]
        R.check(len(plain) == 1 and plain[0].get("tls") is False and "authentication" not in plain[0],
                "deploy/strimzi/kafka.yaml", f"needs a plain listener on {port}: the services' client has no TLS or SASL")
        R.check("kafkaExporter" in k["spec"], "deploy/strimzi/kafka.yaml", "kafkaExporter feeds kafka_topic_partitions (FleetDetectorPartitionsUnowned) and must be on")
        pools = [d for d in docs if d.get("kind") == "KafkaNodePool"]
        R.check(sum(p["spec"]["replicas"] for p in pools) >= 3, "deploy/strimzi/kafka.yaml", "fewer than 3 brokers for replication 3")
    R.ok(f"Strimzi example: topics {sorted(topics)} match the code; listener matches the chart's kafka.brokers")


# --------------------------------------------------------------------------- prometheus, docs


def check_prometheus(code: Code) -> None:
    path = ROOT / "deploy" / "prometheus" / "prometheus.yml"
    doc = load_yaml(path) or {}
    R.check("alerts.yml" in (doc.get("rule_files") or []), rel(path), "must load alerts.yml")
    jobs = {j["job_name"]: j for j in doc.get("scrape_configs") or []}
    for service, port in code.metrics_ports.items():
        job = jobs.get(f"fleet-{service}")
        if R.check(job is not None, rel(path), f"no job fleet-{service} (the alert rules use that name)"):
            targets = [t for sc in job.get("static_configs", []) for t in sc.get("targets", [])]
            R.check(any(t.endswith(f":{port}") for t in targets), rel(path), f"fleet-{service} should scrape port {port}, the code's default")
    R.ok("deploy/prometheus/prometheus.yml scrapes each service on the code's default port")


def check_docs(alerts: dict[str, dict], uids: set[str]) -> None:
    if not R.check(OPERATIONS.exists(), rel(OPERATIONS), "missing"):
        return
    text = OPERATIONS.read_text(encoding="utf-8")
    headings = set(re.findall(r"^#+\s+(.+?)\s*$", text, re.M))
    for name in alerts:
        R.check(name in headings, rel(OPERATIONS), f"no runbook heading '{name}'")
    for uid in uids:
        R.check(uid in text, rel(OPERATIONS), f"dashboard {uid} is not described")
    R.ok(f"docs/operations.md: a runbook for each of the {len(alerts)} alerts, every dashboard described")


# --------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    sections = argv[1:] or ["code", "alerts", "dashboards", "chart", "image", "strimzi", "prometheus", "docs"]
    started = time.monotonic()
    code = Code()
    alerts: dict[str, dict] = {}
    uids: set[str] = set()
    steps: dict[str, Callable[[], Any]] = {
        "code": lambda: check_code(code),
        "alerts": lambda: alerts.update(check_alerts(code)),
        "dashboards": lambda: uids.update(check_dashboards(code, alerts or check_alerts(code))),
        "chart": lambda: check_chart(code),
        "image": check_image,
        "strimzi": lambda: check_strimzi(code),
        "prometheus": lambda: check_prometheus(code),
        "docs": lambda: check_docs(alerts or check_alerts(code), uids),
    }
    for name in sections:
        if name not in steps:
            print(f"unknown section {name}; sections: {', '.join(steps)}", file=sys.stderr)
            return 2
        R.section = name
        R.start()
        print(f"check-deploy: {name}", flush=True)
        steps[name]()
    took = time.monotonic() - started
    if R.failures:
        print(f"check-deploy: {len(R.failures)} problem(s) in {took:.1f} s:", file=sys.stderr)
        for f in R.failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    print(f"check-deploy: all deployment checks passed in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
