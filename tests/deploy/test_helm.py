"""The Helm charts under deploy/k8s and the images under deploy/docker.

Every chart is copied to a temporary folder, its file:// dependencies are
vendored there (`helm dependency update`, offline), then it is linted and
rendered with `helm template`; the assertions read the rendered manifests.
helm is required: HELM_BIN, else `helm` on PATH, else ~/go/bin/helm
(scripts/install-tools.sh installs it).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKER = ROOT / "deploy" / "docker"

PORTS = {"gateway": 8080, "presence": 8081, "delivery": 8082, "metrics": 8083}
SERVICES = list(PORTS)
# Which Secret keys each service reads (gateway: JWT; delivery, presence: MongoDB).
NEEDS_JWT = {"gateway"}
NEEDS_MONGO = {"delivery", "presence"}
# Vendoring order: service charts pack chat-lib, the umbrella packs the service charts.
DEPENDENCY_ORDER = [*(f"chat-{s}" for s in SERVICES), "chat"]
ALL_CHARTS = ["chat-lib", *DEPENDENCY_ORDER]
HELM_INSTALL_HINT = (
    "install it with `go install helm.sh/helm/v3/cmd/helm@v3.22.0` "
    "(scripts/install-tools.sh), or point HELM_BIN at a helm binary"
)

Manifest = dict[str, Any]


# --- helm ---------------------------------------------------------------------------


def find_helm() -> str:
    """HELM_BIN, else helm on PATH, else ~/go/bin/helm; fails (never skips) without one."""
    explicit = os.environ.get("HELM_BIN")
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            pytest.fail(f"HELM_BIN={explicit!r} is not an executable file; {HELM_INSTALL_HINT}")
        return explicit
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    candidates = [Path.home() / "go" / "bin" / "helm"]
    if os.environ.get("GOPATH"):
        candidates.append(Path(os.environ["GOPATH"]) / "bin" / "helm")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail(f"helm not found (not HELM_BIN, not on PATH, not ~/go/bin): {HELM_INSTALL_HINT}")


class Helm:
    """Runs helm with its cache/config/data homes in a temporary folder."""

    def __init__(self, binary: str, home: Path, charts: Path) -> None:
        self.binary = binary
        self.charts = charts
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        if result.returncode != 0:
            pytest.fail(
                f"helm {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result.stdout

    def template(self, chart: str, *sets: str, release: str = "chat") -> list[Manifest]:
        args = ["template", release, str(self.charts / chart), "--namespace", "chat"]
        for item in sets:
            args += ["--set", item]
        docs = yaml.safe_load_all(self.ok(*args))
        return [doc for doc in docs if doc]

    def template_error(self, chart: str, *sets: str) -> str:
        args = ["template", "chat", str(self.charts / chart), "--namespace", "chat"]
        for item in sets:
            args += ["--set", item]
        result = self.run(*args)
        assert result.returncode != 0, f"helm template {chart} {sets} should have failed"
        return result.stderr


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    binary = find_helm()
    base = tmp_path_factory.mktemp("helm")
    charts = base / "k8s"
    # A copy, so vendored charts/ and Chart.lock never land in the work tree.
    shutil.copytree(K8S, charts, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    h = Helm(binary, base / "home", charts)
    version = h.ok("version", "--short").strip()
    assert version.startswith("v3."), f"Helm 3 is required, found {version}"
    for chart in DEPENDENCY_ORDER:
        h.ok("dependency", "update", "--skip-refresh", str(charts / chart))
    return h


# --- manifest helpers ---------------------------------------------------------------


def of_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    names = [d["metadata"]["name"] for d in of_kind(docs, kind)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {names}"
    return found[0]


def name_of(doc: Manifest) -> str:
    name: str = doc["metadata"]["name"]
    return name


def match_labels(doc: Manifest) -> dict[str, str]:
    labels: dict[str, str] = doc["spec"]["selector"]["matchLabels"]
    return labels


def component_of(deployment: Manifest) -> str:
    component: str = deployment["spec"]["template"]["metadata"]["labels"][
        "app.kubernetes.io/component"
    ]
    return component


def pod_spec(deployment: Manifest) -> Manifest:
    spec: Manifest = deployment["spec"]["template"]["spec"]
    return spec


def container(deployment: Manifest) -> Manifest:
    containers = pod_spec(deployment)["containers"]
    assert len(containers) == 1
    c: Manifest = containers[0]
    return c


def env_of(deployment: Manifest) -> dict[str, Manifest]:
    return {e["name"]: e for e in container(deployment).get("env", [])}


def secret_ref(deployment: Manifest, var: str) -> tuple[str, str]:
    env = env_of(deployment)
    assert var in env, f"{var} missing from env: {sorted(env)}"
    ref = env[var]["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def secret_data(secret: Manifest) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def config_of(docs: list[Manifest], deployment: Manifest) -> dict[str, str]:
    sources = container(deployment)["envFrom"]
    refs = [e["configMapRef"]["name"] for e in sources if "configMapRef" in e]
    assert len(refs) == 1
    data: dict[str, str] = one(docs, "ConfigMap", refs[0])["data"]
    return data


def render_service(helm: Helm, service: str, *sets: str) -> tuple[list[Manifest], Manifest]:
    docs = helm.template(f"chat-{service}", *sets)
    return docs, one(docs, "Deployment")


# --- lint ---------------------------------------------------------------------------


@pytest.mark.parametrize("chart", ALL_CHARTS)
def test_lint(helm: Helm, chart: str) -> None:
    out = helm.ok("lint", "--strict", str(helm.charts / chart))
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize(
    "chart,sets",
    [
        (
            "chat-gateway",
            [
                "ingress.enabled=true",
                "serviceMonitor.enabled=true",
                "preStop.useSleepAction=true",
                "global.chat.config.jwtAlgorithm=ES256",
                "secrets.jwtPublicKey=-----BEGIN PUBLIC KEY-----",
            ],
        ),
        ("chat-delivery", ["autoscaling.enabled=false", "podDisruptionBudget.minAvailable=1"]),
        ("chat", ["global.chat.secrets.existingSecret=chat-prod", "metrics.enabled=false"]),
    ],
)
def test_lint_with_options(helm: Helm, chart: str, sets: list[str]) -> None:
    args = ["lint", "--strict", str(helm.charts / chart)]
    for item in sets:
        args += ["--set", item]
    assert "0 chart(s) failed" in helm.ok(*args)


def test_library_chart_is_a_library() -> None:
    chart = yaml.safe_load((K8S / "chat-lib" / "Chart.yaml").read_text())
    assert chart["type"] == "library"
    for service in SERVICES:
        deps = yaml.safe_load((K8S / f"chat-{service}" / "Chart.yaml").read_text())["dependencies"]
        assert {"name": "chat-lib", "repository": "file://../chat-lib"}.items() <= deps[0].items()


def test_vendored_charts_are_ignored_by_git() -> None:
    lines = (K8S / ".gitignore").read_text().split()
    assert "*/charts/" in lines
    assert "*/Chart.lock" in lines


# --- every service chart ------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_service_chart_objects(helm: Helm, service: str) -> None:
    docs, deployment = render_service(helm, service)
    name = f"chat-chat-{service}"
    assert deployment["metadata"]["name"] == name
    for kind in ("Service", "ConfigMap", "ServiceAccount", "HorizontalPodAutoscaler"):
        one(docs, kind, name)
    one(docs, "PodDisruptionBudget", name)
    assert not of_kind(docs, "ServiceMonitor"), "ServiceMonitor must be off by default"
    assert not of_kind(docs, "Ingress"), "Ingress must be off by default"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == service
    assert labels["app.kubernetes.io/part-of"] == "chat"
    # Prometheus (deploy/prometheus/prometheus.k8s.yml) takes job="chat-<service>" from it.
    assert labels["app.kubernetes.io/name"] == f"chat-{service}"


@pytest.mark.parametrize("service", SERVICES)
def test_service_container(helm: Helm, service: str) -> None:
    docs, deployment = render_service(helm, service)
    c = container(deployment)
    port = PORTS[service]
    assert c["command"] == ["python", "-m", f"services.{service}"]
    assert c["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    env = env_of(deployment)
    assert env["CHAT_HTTP_HOST"]["value"] == "0.0.0.0"
    assert env[f"CHAT_{service.upper()}_PORT"]["value"] == str(port)
    assert env["CHAT_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # Service links would inject CHAT_GATEWAY_PORT=tcp://... for a Service named chat-gateway.
    assert pod_spec(deployment)["enableServiceLinks"] is False
    assert pod_spec(deployment)["automountServiceAccountToken"] is False

    config = config_of(docs, deployment)
    assert config["CHAT_LOG_FORMAT"] == "json"
    assert config["CHAT_COMMAND_PARTITIONS"] == "8"
    assert config["CHAT_REDIS_URL"].startswith("redis://")
    assert not {"CHAT_JWT_SECRET", "CHAT_MONGODB_URI"} & set(config), "secrets in a ConfigMap"


@pytest.mark.parametrize("service", SERVICES)
def test_probes(helm: Helm, service: str) -> None:
    _, deployment = render_service(helm, service)
    c = container(deployment)
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # /readyz waits up to 2 s on Redis/MongoDB before answering 503.
    assert c["readinessProbe"]["timeoutSeconds"] > 2
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("service", SERVICES)
def test_resources(helm: Helm, service: str) -> None:
    _, deployment = render_service(helm, service)
    resources = container(deployment)["resources"]
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[bound]), f"{bound}: {resources.get(bound)}"


@pytest.mark.parametrize("service", SERVICES)
def test_security_context(helm: Helm, service: str) -> None:
    _, deployment = render_service(helm, service)
    pod = pod_spec(deployment)["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 10001
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(deployment)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # The read-only root needs a writable /tmp.
    mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    assert mounts["tmp"] == "/tmp"
    assert "emptyDir" in volumes["tmp"]


@pytest.mark.parametrize("service", SERVICES)
def test_prometheus_scrape_annotations(helm: Helm, service: str) -> None:
    _, deployment = render_service(helm, service)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(PORTS[service])
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("service", SERVICES)
def test_service_selects_the_pods(helm: Helm, service: str) -> None:
    docs, deployment = render_service(helm, service)
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    svc = one(docs, "Service")
    assert svc["spec"]["selector"] == selector
    assert svc["spec"]["ports"][0]["port"] == PORTS[service]
    assert svc["spec"]["ports"][0]["targetPort"] == "http"


@pytest.mark.parametrize("service", SERVICES)
def test_hpa(helm: Helm, service: str) -> None:
    docs, deployment = render_service(helm, service)
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert target == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    metrics = {m["resource"]["name"]: m for m in hpa["spec"]["metrics"] if m["type"] == "Resource"}
    assert metrics["cpu"]["resource"]["target"]["type"] == "Utilization"
    # The HPA owns the replica count.
    assert "replicas" not in deployment["spec"]

    docs, deployment = render_service(helm, service, "autoscaling.enabled=false", "replicaCount=3")
    assert not of_kind(docs, "HorizontalPodAutoscaler")
    assert deployment["spec"]["replicas"] == 3


@pytest.mark.parametrize("service", SERVICES)
def test_pdb(helm: Helm, service: str) -> None:
    docs, deployment = render_service(helm, service)
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]

    docs, _ = render_service(helm, service, "podDisruptionBudget.minAvailable=50%")
    spec = one(docs, "PodDisruptionBudget")["spec"]
    assert spec["minAvailable"] == "50%"
    assert "maxUnavailable" not in spec

    docs, _ = render_service(helm, service, "podDisruptionBudget.enabled=false")
    assert not of_kind(docs, "PodDisruptionBudget")


@pytest.mark.parametrize("service", SERVICES)
def test_service_monitor_when_enabled(helm: Helm, service: str) -> None:
    docs, deployment = render_service(
        helm, service, "serviceMonitor.enabled=true", "serviceMonitor.labels.release=prom"
    )
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert match_labels(monitor) == match_labels(deployment)
    # job="chat-<service>", as the alert rules and the dashboard expect.
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
    assert one(docs, "Service")["metadata"]["labels"]["app.kubernetes.io/name"] == f"chat-{service}"
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http"
    assert endpoint["path"] == "/metrics"


# --- secrets ------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_secret_refs_from_chart_secret(helm: Helm, service: str) -> None:
    docs, deployment = render_service(
        helm,
        service,
        "secrets.jwtSecret=test-jwt-secret",
        "secrets.mongodbUri=mongodb://mongo-0.mongo:27017/?replicaSet=rs0",
    )
    env = env_of(deployment)
    if not (service in NEEDS_JWT or service in NEEDS_MONGO):
        assert not of_kind(docs, "Secret")
        assert not any("valueFrom" in e and "secretKeyRef" in e["valueFrom"] for e in env.values())
        return
    secret = one(docs, "Secret")
    data = secret_data(secret)
    if service in NEEDS_JWT:
        assert secret_ref(deployment, "CHAT_JWT_SECRET") == (name_of(secret), "jwt-secret")
        assert data["jwt-secret"] == "test-jwt-secret"
    else:
        assert "CHAT_JWT_SECRET" not in env
    if service in NEEDS_MONGO:
        assert secret_ref(deployment, "CHAT_MONGODB_URI") == (name_of(secret), "mongodb-uri")
        assert data["mongodb-uri"] == "mongodb://mongo-0.mongo:27017/?replicaSet=rs0"
    else:
        assert "CHAT_MONGODB_URI" not in env


def test_generated_jwt_secret_when_none_given(helm: Helm) -> None:
    docs, _ = render_service(helm, "gateway")
    assert len(secret_data(one(docs, "Secret"))["jwt-secret"]) >= 32


@pytest.mark.parametrize("service", sorted(NEEDS_JWT | NEEDS_MONGO))
def test_existing_secret(helm: Helm, service: str) -> None:
    docs, deployment = render_service(
        helm,
        service,
        "secrets.existingSecret=chat-prod",
        "global.chat.secrets.keys.mongodbUri=uri",
        "global.chat.secrets.keys.jwtSecret=jwt",
    )
    assert not of_kind(docs, "Secret"), "no Secret may be created with existingSecret"
    if service in NEEDS_JWT:
        assert secret_ref(deployment, "CHAT_JWT_SECRET") == ("chat-prod", "jwt")
    if service in NEEDS_MONGO:
        assert secret_ref(deployment, "CHAT_MONGODB_URI") == ("chat-prod", "uri")


@pytest.mark.parametrize(
    ("sets", "variable", "key", "value"),
    [
        (
            ("secrets.redisUrlFromSecret=true", "secrets.redisUrl=redis://:pw@redis:6379/0"),
            "CHAT_REDIS_URL",
            "redis-url",
            "redis://:pw@redis:6379/0",
        ),
        (
            ("secrets.redisPasswordFromSecret=true", "secrets.redisPassword=cluster-pw"),
            "CHAT_REDIS_PASSWORD",
            "redis-password",
            "cluster-pw",
        ),
    ],
)
def test_redis_access_from_secret(
    helm: Helm, sets: tuple[str, ...], variable: str, key: str, value: str
) -> None:
    docs, deployment = render_service(helm, "metrics", *sets)
    secret = one(docs, "Secret")
    assert secret_ref(deployment, variable) == (secret["metadata"]["name"], key)
    assert secret_data(secret)[key] == value
    assert variable not in config_of(docs, deployment)


def test_redis_password_is_refused_in_config(helm: Helm) -> None:
    err = helm.template_error("chat-metrics", "config.redisPassword=oops")
    assert "is a secret" in err


def test_jwt_public_key_is_mounted_for_rs256(helm: Helm) -> None:
    docs, deployment = render_service(
        helm, "gateway", "global.chat.config.jwtAlgorithm=RS256", "secrets.existingSecret=jwt-keys"
    )
    env = env_of(deployment)
    assert "CHAT_JWT_SECRET" not in env
    key_path = env["CHAT_JWT_PUBLIC_KEY"]["value"]
    assert config_of(docs, deployment)["CHAT_JWT_ALGORITHM"] == "RS256"
    mounts = {m["name"]: m for m in container(deployment)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    mount = mounts["jwt-public-key"]
    assert mount["readOnly"] is True
    secret_volume = volumes["jwt-public-key"]["secret"]
    assert secret_volume["secretName"] == "jwt-keys"
    [item] = secret_volume["items"]
    assert key_path == f"{mount['mountPath']}/{item['path']}"
    assert item["key"] == "jwt-public-key.pem"


def test_rs256_without_a_key_fails_clearly(helm: Helm) -> None:
    err = helm.template_error("chat-gateway", "global.chat.config.jwtAlgorithm=ES256")
    assert "secrets.jwtPublicKey" in err


def test_no_secret_source_fails_clearly(helm: Helm) -> None:
    err = helm.template_error("chat-gateway", "secrets.create=false")
    assert "secrets.existingSecret" in err
    err = helm.template_error("chat", "global.chat.secrets.create=false")
    assert "secrets.existingSecret" in err
    # The metrics service reads no secret, so it needs none.
    docs, _ = render_service(helm, "metrics", "secrets.create=false")
    assert not of_kind(docs, "Secret")


def test_secret_in_config_is_refused(helm: Helm) -> None:
    err = helm.template_error("chat-delivery", "config.mongodbUri=mongodb://u:p@db/")
    assert "is a secret" in err


# --- config -------------------------------------------------------------------------


def test_config_values_become_chat_env(helm: Helm) -> None:
    docs, deployment = render_service(
        helm,
        "delivery",
        "global.chat.config.redisClusterNodes=r-0:6379\\,r-1:6379",
        "config.commandStreamMaxlen=2000000",
        "config.logLevel=DEBUG",
    )
    config = config_of(docs, deployment)
    assert config["CHAT_REDIS_CLUSTER_NODES"] == "r-0:6379,r-1:6379"
    # No float formatting (2e+06) for big numbers.
    assert config["CHAT_COMMAND_STREAM_MAXLEN"] == "2000000"
    assert config["CHAT_LOG_LEVEL"] == "DEBUG"
    assert config["CHAT_MONGODB_DB"] == "chat"
    # Empty values are left out so the service default applies.
    docs, deployment = render_service(helm, "delivery")
    assert "CHAT_REDIS_CLUSTER_NODES" not in config_of(docs, deployment)
    assert "CHAT_JWT_ISSUER" not in config_of(docs, deployment)


def test_config_change_rolls_the_pods(helm: Helm) -> None:
    _, before = render_service(helm, "presence")
    _, after = render_service(helm, "presence", "config.logLevel=DEBUG")
    key = "checksum/config"
    annotations_before = before["spec"]["template"]["metadata"]["annotations"]
    annotations_after = after["spec"]["template"]["metadata"]["annotations"]
    assert annotations_before[key] != annotations_after[key]


# --- gateway ------------------------------------------------------------------------


def grace_floor(deployment: Manifest, drain: float) -> int:
    """preStop sleep + drain + 10 s: what terminationGracePeriodSeconds must exceed."""
    command = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    return int(command[1]) + int(drain) + 10


def test_gateway_prestop_and_grace_period(helm: Helm) -> None:
    docs, deployment = render_service(helm, "gateway")
    sleep = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    assert int(sleep[1]) >= 3, "the preStop sleep must give endpoints time to update"
    drain = float(config_of(docs, deployment)["CHAT_DRAIN_SECONDS"])
    assert drain == 5
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > grace_floor(deployment, drain)


def test_gateway_grace_period_follows_drain(helm: Helm) -> None:
    docs, deployment = render_service(helm, "gateway", "config.drainSeconds=42.5")
    assert config_of(docs, deployment)["CHAT_DRAIN_SECONDS"] == "42.5"
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace > grace_floor(deployment, 43)

    _, deployment = render_service(helm, "gateway", "terminationGracePeriodSeconds=120")
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] == 120


def test_gateway_grace_period_too_short_fails(helm: Helm) -> None:
    err = helm.template_error("chat-gateway", "terminationGracePeriodSeconds=12")
    assert "terminationGracePeriodSeconds=12 must exceed" in err


def test_gateway_native_sleep_action(helm: Helm) -> None:
    _, deployment = render_service(helm, "gateway", "preStop.useSleepAction=true")
    pre_stop = container(deployment)["lifecycle"]["preStop"]
    assert pre_stop == {"sleep": {"seconds": 5}}


@pytest.mark.parametrize("service", ["delivery", "presence", "metrics"])
def test_other_services_grace_period(helm: Helm, service: str) -> None:
    _, deployment = render_service(helm, service)
    # No sockets to hand over, so no preStop; the HTTP shutdown still takes drain + 5 s.
    assert "lifecycle" not in container(deployment)
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > 5 + 10


def test_gateway_ingress_websocket_annotations(helm: Helm) -> None:
    docs, _ = render_service(
        helm,
        "gateway",
        "ingress.enabled=true",
        "ingress.hosts[0].host=chat.example.org",
        "ingress.hosts[0].paths[0].path=/",
        "ingress.tls[0].secretName=chat-tls",
        "ingress.tls[0].hosts[0]=chat.example.org",
        "ingress.annotations.cert-manager\\.io/cluster-issuer=letsencrypt",
    )
    ingress = one(docs, "Ingress")
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "chat.example.org"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": one(docs, "Service")["metadata"]["name"], "port": {"number": 8080}}
    assert ingress["spec"]["tls"] == [{"hosts": ["chat.example.org"], "secretName": "chat-tls"}]


def test_gateway_ingress_annotations_can_be_overridden(helm: Helm) -> None:
    docs, _ = render_service(
        helm,
        "gateway",
        "ingress.enabled=true",
        "ingress.annotations.nginx\\.ingress\\.kubernetes\\.io/proxy-read-timeout=7200",
    )
    annotations = one(docs, "Ingress")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "7200"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"

    docs, _ = render_service(
        helm, "gateway", "ingress.enabled=true", "ingress.websocketAnnotations=false"
    )
    assert not one(docs, "Ingress")["metadata"].get("annotations")


# --- umbrella -----------------------------------------------------------------------


def test_umbrella_renders_all_four_services(helm: Helm) -> None:
    docs = helm.template("chat")
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    assert set(deployments) == {f"chat-{s}" for s in SERVICES}
    for service in SERVICES:
        deployment = deployments[f"chat-{service}"]
        assert container(deployment)["command"] == ["python", "-m", f"services.{service}"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == service
        # The same Prometheus job name as a service chart installed alone.
        assert labels["app.kubernetes.io/name"] == f"chat-{service}"
    for kind in ("Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert len(of_kind(docs, kind)) == 4, kind
    # Distinct selectors: no Service or PDB matches another service's pods.
    selectors = {
        json.dumps(d["spec"]["selector"]["matchLabels"], sort_keys=True)
        for d in deployments.values()
    }
    assert len(selectors) == 4


def test_umbrella_shares_one_secret(helm: Helm) -> None:
    docs = helm.template("chat", "global.chat.secrets.mongodbUri=mongodb://db/")
    secret = one(docs, "Secret")
    name = secret["metadata"]["name"]
    assert name == "chat-secrets"
    data = secret_data(secret)
    assert set(data) == {"jwt-secret", "mongodb-uri"}
    assert data["mongodb-uri"] == "mongodb://db/"
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    assert secret_ref(deployments["chat-gateway"], "CHAT_JWT_SECRET") == (name, "jwt-secret")
    for service in ("delivery", "presence"):
        ref = secret_ref(deployments[f"chat-{service}"], "CHAT_MONGODB_URI")
        assert ref == (name, "mongodb-uri")


def test_umbrella_existing_secret(helm: Helm) -> None:
    docs = helm.template("chat", "global.chat.secrets.existingSecret=chat-prod")
    assert not of_kind(docs, "Secret")
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    assert secret_ref(deployments["chat-gateway"], "CHAT_JWT_SECRET")[0] == "chat-prod"
    assert secret_ref(deployments["chat-delivery"], "CHAT_MONGODB_URI")[0] == "chat-prod"


def test_umbrella_global_config_and_service_overrides(helm: Helm) -> None:
    docs = helm.template(
        "chat",
        "global.chat.config.commandPartitions=16",
        "global.chat.config.redisUrl=redis://redis-master:6379/0",
        "gateway.config.logLevel=DEBUG",
        "global.chat.image.registry=ghcr.io/acme",
        "global.chat.image.tag=1.2.3",
    )
    for deployment in of_kind(docs, "Deployment"):
        config = config_of(docs, deployment)
        service = component_of(deployment)
        assert config["CHAT_COMMAND_PARTITIONS"] == "16"
        assert config["CHAT_REDIS_URL"] == "redis://redis-master:6379/0"
        assert config["CHAT_LOG_LEVEL"] == ("DEBUG" if service == "gateway" else "INFO")
        assert container(deployment)["image"] == f"ghcr.io/acme/chat-{service}:1.2.3"


def test_umbrella_services_are_enabled_by_value(helm: Helm) -> None:
    docs = helm.template("chat", "metrics.enabled=false", "gateway.enabled=false")
    names = {d["metadata"]["name"] for d in of_kind(docs, "Deployment")}
    assert names == {"chat-delivery", "chat-presence"}
    # Without the gateway the shared Secret holds no JWT secret.
    assert set(secret_data(one(docs, "Secret"))) == {"mongodb-uri"}


def test_umbrella_other_release_name(helm: Helm) -> None:
    docs = helm.template("chat", release="prod")
    names = {d["metadata"]["name"] for d in of_kind(docs, "Deployment")}
    assert names == {f"prod-{s}" for s in SERVICES}
    assert one(docs, "Secret")["metadata"]["name"] == "prod-chat-secrets"


# --- Dockerfiles --------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile(service: str) -> None:
    path = DOCKER / f"{service}.Dockerfile"
    assert path.is_file(), f"{path} missing"
    text = path.read_text()
    stages = re.findall(r"^FROM\s+\S+(?:\s+AS\s+(\S+))?", text, flags=re.MULTILINE | re.IGNORECASE)
    assert len(stages) >= 2, "multi-stage build expected"
    assert "builder" in stages
    assert re.search(r"uv sync --(locked|frozen) --no-dev", text), "locked deps with uv"
    assert re.search(r"^USER 10001(:10001)?$", text, flags=re.MULTILINE)
    assert "CHAT_HTTP_HOST=0.0.0.0" in text
    assert re.search(rf"^EXPOSE {PORTS[service]}$", text, flags=re.MULTILINE)
    cmd = [line for line in text.splitlines() if line.startswith("CMD ")]
    assert cmd == [f'CMD ["python", "-m", "services.{service}"]']
    # The runtime stage gets the venv, not the build tools.
    runtime = text.split(" AS runtime", 1)[1]
    assert "COPY --from=builder /app/.venv /app/.venv" in runtime
    assert "uv sync" not in runtime
