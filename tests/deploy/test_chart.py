"""The Helm chart rendered by a real Helm, every object validated against Kubernetes' schemas."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .config_schema import config_schema
from .support import ALL_ON, CHART, KUBE_VERSIONS, NAMESPACE, RELEASE, Helm, by_kind, one

try:
    import kubernetes_validate
except ImportError:  # pragma: no cover - the dev extras install it
    kubernetes_validate = None

HPA_ON = ("keda.enabled=false", "autoscaling.enabled=true")
PORT_NAME = "http-metrics"
# Custom resources: Kubernetes' own schemas (kubernetes-validate) do not know them, so their
# shape is checked by check_custom_resource below instead.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
}
# The metrics the bridge exports (the contract the dashboard and KEDA are built on).
CONTRACT_METRICS = (
    "bridge_records_consumed_total",
    "bridge_entries_total",
    "bridge_dead_lettered_total",
    "bridge_put_events_duration_seconds",
    "bridge_batch_entries",
    "bridge_batch_bytes",
    "bridge_in_flight_entries",
    "bridge_buffered_records",
    "bridge_committed_offset",
    "bridge_consumer_lag",
    "bridge_retries_total",
    "bridge_throttled_total",
    "bridge_rebalances_total",
    "bridge_dlq_write_failures_total",
)


def validate_objects(docs: list[dict[str, Any]], kube_version: str) -> None:
    """Every object against Kubernetes' OpenAPI schemas (strict: unknown fields fail)."""
    if kubernetes_validate is None:
        from .support import missing_tool

        missing_tool("kubernetes-validate (pip, a dev dependency)")
    errors = []
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            check_custom_resource(doc)
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")
    assert not errors, "\n".join(errors)


def check_custom_resource(doc: dict[str, Any]) -> None:
    """The shape KEDA and prometheus-operator require of the chart's custom resources."""
    meta, spec = doc["metadata"], doc["spec"]
    assert meta["name"] and meta["namespace"] and meta["labels"]
    kind = doc["kind"]
    if kind == "ServiceMonitor":
        assert spec["selector"]["matchLabels"]
        assert spec["namespaceSelector"]["matchNames"] == [NAMESPACE]
        (endpoint,) = spec["endpoints"]
        assert endpoint["port"] == PORT_NAME and endpoint["path"] == "/metrics"
        assert re.fullmatch(r"\d+(ms|s|m|h)", endpoint["interval"])
    elif kind == "ScaledObject":
        target = spec["scaleTargetRef"]
        assert target["kind"] in ("Deployment", "StatefulSet") and target["apiVersion"] == "apps/v1"
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        metadata = trigger["metadata"]
        assert all(isinstance(v, str) for v in metadata.values()), "KEDA metadata are strings"
        for key in ("bootstrapServers", "consumerGroup", "lagThreshold"):
            assert metadata[key], key
        assert int(metadata["lagThreshold"]) >= 1
        assert metadata["sasl"] in ("none", "plaintext", "scram_sha256", "scram_sha512")
        assert metadata["tls"] in ("enable", "disable")
        if metadata["sasl"] != "none":
            assert trigger["authenticationRef"]["name"]
    elif kind == "TriggerAuthentication":
        params = {ref["parameter"]: ref for ref in spec["secretTargetRef"]}
        assert set(params) == {"username", "password"}
        assert all(ref["name"] and ref["key"] for ref in params.values())
    else:  # pragma: no cover
        raise AssertionError(f"no shape check for {kind}")


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def bridge_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    cm = one(docs, "ConfigMap", "-config")
    loaded: dict[str, Any] = yaml.safe_load(cm["data"]["config.yaml"])
    return loaded


def check_config_file(path: Path) -> subprocess.CompletedProcess[str]:
    """`bridge check-config` of the virtualenv running the tests (.venv/bin/bridge).

    ``--skip-files``: the files the Kafka settings name (ssl.ca.location) are mounted in the
    pod, not here; SASL credentials missing here (they come from a Secret) are only a warning.
    """
    bridge = Path(sys.executable).with_name("bridge")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return subprocess.run(
        [str(bridge), "check-config", "--config", str(path), "--skip-files"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


# ---- helm lint and helm template, validated ----


@pytest.mark.parametrize("values", [(), (ALL_ON,)], ids=["defaults", "all-on"])
def test_helm_lint_strict(helm: Helm, values: tuple[Path, ...]) -> None:
    result = helm.lint(values)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_defaults_render_valid_objects(helm: Helm, kube_version: str) -> None:
    docs = helm.template(kube_version=kube_version)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"]
    validate_objects(docs, kube_version)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_all_on_renders_valid_objects(helm: Helm, kube_version: str) -> None:
    docs = helm.template([ALL_ON], kube_version=kube_version)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ConfigMap",  # the configuration
        "ConfigMap",  # the Grafana dashboard
        "Deployment",
        "PodDisruptionBudget",
        "ScaledObject",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
        "TriggerAuthentication",
    ]
    validate_objects(docs, kube_version)

    hpa_docs = helm.template([ALL_ON], HPA_ON, kube_version=kube_version)
    assert not by_kind(hpa_docs, "ScaledObject") and not by_kind(hpa_docs, "TriggerAuthentication")
    hpa = one(hpa_docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(hpa_docs, "Deployment")["metadata"]["name"]
    validate_objects(hpa_docs, kube_version)


# ---- the Deployment ----


@pytest.mark.parametrize("values", [(), (ALL_ON,)], ids=["defaults", "all-on"])
def test_deployment_security_context_and_tmp(helm: Helm, values: tuple[Path, ...]) -> None:
    docs = helm.template(values)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    c = container(docs)
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # The only writable place: an emptyDir at /tmp. The configuration, read-only, at /etc/bridge.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert mounts["/etc/bridge"]["readOnly"] is True
    config_volume = volumes[mounts["/etc/bridge"]["name"]]["configMap"]
    assert config_volume["items"] == [{"key": "config.yaml", "path": "config.yaml"}]
    assert c["args"] == ["run", "--config", "/etc/bridge/config.yaml"]
    assert "command" not in c, "the image's ENTRYPOINT (bridge) must stay PID 1"


@pytest.mark.parametrize("values", [(), (ALL_ON,)], ids=["defaults", "all-on"])
def test_probes_on_the_observability_port(helm: Helm, values: tuple[Path, ...]) -> None:
    docs = helm.template(values)
    c = container(docs)
    port = bridge_config(docs).get("observability", {}).get("port", 9464)
    assert c["ports"] == [{"name": PORT_NAME, "containerPort": port, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": PORT_NAME}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": PORT_NAME}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": PORT_NAME}
    service = one(docs, "Service")
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == PORT_NAME
    assert service["spec"]["selector"].items() <= (
        one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )


def test_port_follows_config_observability_port(helm: Helm) -> None:
    docs = helm.template(sets=["config.observability.port=9100"])
    (port,) = container(docs)["ports"]
    assert port == {"name": PORT_NAME, "containerPort": 9100, "protocol": "TCP"}
    assert bridge_config(docs)["observability"]["port"] == 9100


@pytest.mark.parametrize(
    ("sets", "shutdown_s"),
    [((), 30), (("config.pipeline.shutdown_timeout_s=120",), 120), ((), 45.5)],
    ids=["default-30", "120", "all-on-45.5"],
)
def test_grace_period_exceeds_drain_deadline(
    helm: Helm, sets: tuple[str, ...], shutdown_s: float
) -> None:
    values = (ALL_ON,) if shutdown_s == 45.5 else ()
    docs = helm.template(values, sets)
    assert bridge_config(docs)["pipeline"]["shutdown_timeout_s"] == shutdown_s
    grace = one(docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert isinstance(grace, int)
    assert grace > shutdown_s
    assert grace == math.ceil(shutdown_s) + 15


def test_config_checksum_rolls_pods_on_config_change(helm: Helm) -> None:
    def checksum(*sets: str) -> str:
        docs = helm.template(sets=sets)
        annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
        value: str = annotations["checksum/config"]
        return value

    base = checksum()
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum("config.batch.linger_ms=50") != base
    assert checksum("config.aws.event_bus_name=orders") != base
    assert checksum("replicaCount=2") == base, "only the configuration changes the checksum"


def test_replicas_left_to_the_autoscaler(helm: Helm) -> None:
    assert one(helm.template(), "Deployment")["spec"]["replicas"] == 1
    assert one(helm.template([ALL_ON]), "Deployment")["spec"].get("replicas") is None  # keda
    assert one(helm.template([ALL_ON], HPA_ON), "Deployment")["spec"].get("replicas") is None


# ---- credentials, IRSA, KEDA ----


def test_sasl_credentials_from_the_secret(helm: Helm) -> None:
    docs = helm.template([ALL_ON])
    env = {e["name"]: e for e in container(docs)["env"]}
    assert env["BRIDGE_KAFKA__SASL_USERNAME"]["valueFrom"]["secretKeyRef"] == {
        "name": "bridge-kafka",
        "key": "user",
    }
    assert env["BRIDGE_KAFKA__SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "bridge-kafka",
        "key": "pass",
    }
    assert env["BRIDGE_LOGGING__LEVEL"] == {"name": "BRIDGE_LOGGING__LEVEL", "value": "info"}
    assert "sasl_password" not in bridge_config(docs)["kafka"]
    # Without the Secret, no credential variables at all.
    assert "env" not in container(helm.template())


@pytest.mark.parametrize(
    "setting",
    ["config.kafka.sasl_password=hunter2", "config.kafka.properties.sasl\\.password=hunter2"],
    ids=["sasl_password", "properties"],
)
def test_a_password_in_the_values_is_refused(helm: Helm, setting: str) -> None:
    stderr = helm.template_fails(sets=[setting])
    assert "config.kafka.sasl_password" in stderr and "kafka.sasl.existingSecret" in stderr
    assert "hunter2" not in stderr


def test_the_validator_catches_a_bad_object(helm: Helm) -> None:
    """kubernetes-validate is live: a misspelt field and a wrong type are both caught."""
    docs = helm.template()
    deployment = one(docs, "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pth"] = "/"
    with pytest.raises(AssertionError, match="pth"):
        validate_objects([deployment], KUBE_VERSIONS[-1])
    service = one(docs, "Service")
    service["spec"]["ports"][0]["port"] = "metrics"
    with pytest.raises(AssertionError, match="port"):
        validate_objects([service], KUBE_VERSIONS[-1])


# ---- static membership (workload: statefulset) ----

STATEFULSET = ("workload=statefulset", "replicaCount=3")


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_statefulset_gives_each_pod_its_name_as_group_instance_id(
    helm: Helm, kube_version: str
) -> None:
    docs = helm.template(sets=STATEFULSET, kube_version=kube_version)
    validate_objects(docs, kube_version)
    assert not by_kind(docs, "Deployment")
    sts = one(docs, "StatefulSet")
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    # the governing Service: headless, selecting the same pods
    governing = one(docs, "Service", "-pods")
    assert sts["spec"]["serviceName"] == governing["metadata"]["name"]
    assert governing["spec"]["clusterIP"] == "None"
    assert governing["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    env = [e["name"] for e in c["env"]]
    values = {e["name"]: e for e in c["env"]}
    assert values["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # $(POD_NAME) is expanded by Kubernetes only when POD_NAME comes earlier in the list
    assert values["BRIDGE_KAFKA__GROUP_INSTANCE_ID"]["value"] == "$(POD_NAME)"
    assert env.index("POD_NAME") < env.index("BRIDGE_KAFKA__GROUP_INSTANCE_ID")
    # the same pod template otherwise: probes, grace period, security context
    deployment_pod = one(helm.template(), "Deployment")["spec"]["template"]["spec"]
    sts_pod = sts["spec"]["template"]["spec"]
    for key in ("terminationGracePeriodSeconds", "securityContext", "volumes"):
        assert sts_pod[key] == deployment_pod[key], key


def test_statefulset_prefix_strategy_and_scalers(helm: Helm, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "workload": "statefulset",
                "statefulset": {
                    "groupInstanceIdPrefix": "eu-west-1.",
                    "podManagementPolicy": "OrderedReady",
                },
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                "env": [{"name": "BRIDGE_LOGGING__LEVEL", "value": "debug"}],
            }
        ),
        encoding="utf-8",
    )
    docs = helm.template([values])
    validate_objects(docs, KUBE_VERSIONS[-1])
    sts = one(docs, "StatefulSet")
    assert sts["spec"]["updateStrategy"]["rollingUpdate"] == {"partition": 0}
    assert "strategy" not in sts["spec"]
    assert sts["spec"]["podManagementPolicy"] == "OrderedReady"
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["BRIDGE_KAFKA__GROUP_INSTANCE_ID"]["value"] == "eu-west-1.$(POD_NAME)"
    assert env["BRIDGE_LOGGING__LEVEL"]["value"] == "debug"
    for extra in (HPA_ON, ("keda.enabled=true",)):
        scaled = helm.template([values], extra)
        scaler = by_kind(scaled, "HorizontalPodAutoscaler") or by_kind(scaled, "ScaledObject")
        target = scaler[0]["spec"]["scaleTargetRef"]
        assert target["kind"] == "StatefulSet"
        assert target["name"] == sts["metadata"]["name"]
        assert one(scaled, "StatefulSet")["spec"].get("replicas") is None
    assert helm.template_fails(sets=["workload=daemonset"])


@pytest.mark.parametrize(
    "setting",
    ["config.kafka.group_instance_id=bridge-1", "config.kafka.properties.group\\.instance\\.id=b1"],
    ids=["group_instance_id", "properties"],
)
def test_one_group_instance_id_for_every_pod_is_refused(helm: Helm, setting: str) -> None:
    stderr = helm.template_fails(sets=[setting])
    assert "every pod would use the same id" in stderr and "workload: statefulset" in stderr


def test_statefulset_pod_config_passes_check_config_and_names_the_member(
    helm: Helm, tmp_path: Path
) -> None:
    """The rendered file, with the variable Kubernetes sets from the pod's name."""
    cm = one(helm.template(sets=STATEFULSET), "ConfigMap", "-config")
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"], encoding="utf-8")
    bridge = Path(sys.executable).with_name("bridge")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env["BRIDGE_KAFKA__GROUP_INSTANCE_ID"] = f"{RELEASE}-kafka-eventbridge-bridge-2"
    result = subprocess.run(
        [str(bridge), "check-config", "--config", str(path), "--skip-files"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.split("\n", 1)[1])
    membership = summary["kafka"]["membership"]
    assert membership["group.instance.id"] == f"{RELEASE}-kafka-eventbridge-bridge-2"
    assert "static" in membership["explanation"]


def test_irsa_service_account(helm: Helm) -> None:
    docs = helm.template([ALL_ON])
    sa = one(docs, "ServiceAccount")
    assert sa["metadata"]["name"] == "bridge"
    assert sa["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/kafka-eventbridge-bridge"
    }
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "bridge"
    no_sa = helm.template(sets=["serviceAccount.create=false", "serviceAccount.name=existing"])
    assert not by_kind(no_sa, "ServiceAccount")
    assert one(no_sa, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "existing"


def test_keda_scales_on_the_consumer_group_lag(helm: Helm) -> None:
    docs = helm.template([ALL_ON])
    scaled = one(docs, "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["metadata"] == {
        "bootstrapServers": "b-1.msk.example:9096,b-2.msk.example:9096",
        "consumerGroup": "orders-to-eventbridge",
        "topic": "orders",
        "lagThreshold": "500",
        "activationLagThreshold": "10",
        "offsetResetPolicy": "earliest",
        "allowIdleConsumers": "false",
        "limitToPartitionsWithLag": "false",
        "sasl": "scram_sha512",
        "tls": "enable",
    }
    auth = one(docs, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert refs == {"username": ("bridge-kafka", "user"), "password": ("bridge-kafka", "pass")}
    assert scaled["spec"]["scaleTargetRef"]["name"] == one(docs, "Deployment")["metadata"]["name"]

    # Without SASL: no TriggerAuthentication; group and brokers from config.kafka.
    plain = helm.template(sets=["keda.enabled=true"])
    assert not by_kind(plain, "TriggerAuthentication")
    metadata = one(plain, "ScaledObject")["spec"]["triggers"][0]["metadata"]
    assert metadata["consumerGroup"] == "eventbridge-bridge"
    assert metadata["bootstrapServers"] == "kafka-bootstrap.kafka.svc:9092"
    assert (metadata["sasl"], metadata["tls"]) == ("none", "disable")
    assert "topic" not in metadata


def test_keda_and_hpa_are_exclusive(helm: Helm) -> None:
    stderr = helm.template_fails([ALL_ON], ["autoscaling.enabled=true"])
    assert "autoscaling.enabled and keda.enabled" in stderr


def test_guards_name_the_value(helm: Helm) -> None:
    stderr = helm.template_fails(sets=["serviceMonitor.enabled=true", "service.enabled=false"])
    assert "serviceMonitor.enabled needs service.enabled" in stderr
    stderr = helm.template_fails(sets=["config.observability.enabled=false"])
    assert "config.observability.enabled" in stderr


def test_existing_config_map(helm: Helm) -> None:
    docs = helm.template(sets=["existingConfigMap=my-bridge-config"])
    assert not [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-config")]
    pod = one(docs, "Deployment")["spec"]["template"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "my-bridge-config"
    assert "checksum/config" not in (pod["metadata"].get("annotations") or {})


def test_pdb_and_service_monitor(helm: Helm) -> None:
    assert one(helm.template(), "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    docs = helm.template([ALL_ON])
    assert one(docs, "PodDisruptionBudget")["spec"] == {
        "minAvailable": 1,
        "selector": one(docs, "Deployment")["spec"]["selector"],
    }
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        one(docs, "Service")["metadata"]["labels"].items()
    )


# ---- the configuration file ----


@pytest.mark.parametrize("values", [(), (ALL_ON,)], ids=["defaults", "all-on"])
def test_rendered_config_passes_bridge_check_config(
    helm: Helm, values: tuple[Path, ...], tmp_path: Path
) -> None:
    cm = one(helm.template(values), "ConfigMap", "-config")
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"], encoding="utf-8")
    result = check_config_file(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_bad_config_value_is_caught_by_the_bridge(helm: Helm, tmp_path: Path) -> None:
    """What the schema lets through (templates), the bridge's own check catches."""
    values = tmp_path / "values.yaml"
    mapping = {"topic": "t", "source": "${vaule.x}", "detail_type": "T"}
    values.write_text(yaml.safe_dump({"config": {"mappings": [mapping]}}), encoding="utf-8")
    cm = one(helm.template([values]), "ConfigMap", "-config")
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"], encoding="utf-8")
    result = check_config_file(path)
    assert result.returncode == 2
    assert "mappings[0].source" in result.stdout + result.stderr


def without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [without_descriptions(v) for v in node]
    return node


def test_schema_config_part_matches_the_bridge_model() -> None:
    """The chart refuses unknown config keys, so it must know every key the bridge has."""
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    chart_config = without_descriptions(schema["properties"]["config"])
    assert chart_config == without_descriptions(config_schema()), (
        "helm/kafka-eventbridge-bridge/values.schema.json is out of date with"
        " bridge/config/: run .venv/bin/python tests/deploy/config_schema.py"
    )


def test_values_yaml_documents_idle_replicas() -> None:
    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    assert "replicas beyond the partition count" in text.lower()
    assert "sit idle" in text


# ---- NOTES.txt and the dashboard ----


def notes_chart(tmp_path: Path) -> Path:
    """A copy of the chart that renders NOTES.txt into a ConfigMap (through tpl: `helm
    template` skips NOTES.txt)."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "notes").mkdir()
    shutil.copy(CHART / "templates" / "NOTES.txt", chart / "notes" / "NOTES.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
        '  notes: {{ tpl (.Files.Get "notes/NOTES.txt") . | quote }}\n',
        encoding="utf-8",
    )
    return chart


def rendered_notes(helm: Helm, chart: Path, *args: Any, **kwargs: Any) -> str:
    docs = helm.template(*args, chart=chart, **kwargs)
    notes: str = next(d for d in docs if d["metadata"]["name"] == "notes")["data"]["notes"]
    return notes


def test_notes_tell_how_to_check_it_works(helm: Helm, tmp_path: Path) -> None:
    """NOTES.txt rendered by Helm."""
    chart = notes_chart(tmp_path)
    for values in ((), (ALL_ON,)):
        notes = rendered_notes(helm, chart, values)
        fullname = f"{RELEASE}-kafka-eventbridge-bridge"
        assert f"kubectl -n {NAMESPACE} logs deploy/{fullname}" in notes
        assert f"kubectl -n {NAMESPACE} port-forward deploy/{fullname} 9464:9464" in notes
        assert "localhost:9464/readyz" in notes and "localhost:9464/metrics" in notes
        assert "kafka-consumer-groups.sh" in notes and "--describe --group" in notes
        assert "bridge_consumer_lag" in notes
    assert "get scaledobject" in notes  # the last one rendered: all-on, KEDA


def exported_series() -> dict[str, set[str]]:
    """Series names the bridge exports (histograms expanded), with their label names."""
    from prometheus_client.metrics import MetricWrapperBase

    from bridge.observability.metrics import Metrics

    series: dict[str, set[str]] = {}
    for metric in vars(Metrics()).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        name, labels = metric._name, set(metric._labelnames)
        kind = metric._type
        if kind == "counter":
            series[f"{name}_total"] = labels
        elif kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                series[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
            series[name] = labels
        else:
            series[name] = labels
    return series


def test_grafana_dashboard_panels_use_the_bridge_metrics(helm: Helm) -> None:
    docs = helm.template([ALL_ON])
    cm = one(docs, "ConfigMap", "-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Kafka"}
    (content,) = cm["data"].values()
    dashboard = json.loads(content)
    assert dashboard["uid"] and dashboard["title"]
    variables = [v["name"] for v in dashboard["templating"]["list"]]
    assert variables == ["datasource", "namespace", "pod"]

    exported = exported_series()
    exprs = [t["expr"] for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]
    assert len(exprs) >= 20
    used: set[str] = set()
    for expr in exprs:
        names = set(re.findall(r"\bbridge_[a-z_]+\b", expr))
        assert names, expr
        unknown = names - set(exported)
        assert not unknown, f"{expr}: the bridge does not export {unknown}"
        used |= names
        allowed = set().union(*(exported[n] for n in names)) | {"le", "namespace", "pod"}
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            labels = {label.strip() for label in group.split(",")}
            assert labels <= allowed, f"{expr}: no label {labels - allowed}"
        matchers = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", expr))
        assert matchers <= allowed, f"{expr}: no label {matchers - allowed}"
    for metric in CONTRACT_METRICS:
        assert any(u == metric or u.startswith(metric + "_") for u in used), f"no panel: {metric}"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    # Shipped as a file: the same bytes the chart packs.
    shipped = (CHART / "dashboards" / "kafka-eventbridge-bridge.json").read_text(encoding="utf-8")
    assert json.loads(shipped) == dashboard


def test_the_packaged_chart_renders_the_same(helm: Helm, tmp_path: Path) -> None:
    """`helm package` keeps what the templates read (the dashboard file, the schema)."""
    result = helm.run("package", str(CHART), "--destination", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (package,) = tmp_path.glob("kafka-eventbridge-bridge-*.tgz")
    assert helm.template([ALL_ON], chart=package) == helm.template([ALL_ON])
    assert "replicaCount" in helm.template_fails(sets=["replicaCount=0"], chart=package)


# ---- memory: the chart's requests and limits agree with the bridge's budget ----


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (``512Mi``, ``1G``, ``536870912``) in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6}
    units |= {"G": 10**9, "T": 10**12}
    for suffix, factor in sorted(units.items(), key=lambda u: -len(u[0])):
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(quantity)


@pytest.mark.parametrize("values", [(), (ALL_ON,)], ids=["defaults", "all-on"])
def test_memory_request_limit_and_budget_agree(helm: Helm, values: tuple[Path, ...]) -> None:
    """The request equals the limit (the bridge fills its budget during an outage), and the
    budget the bridge derives from that limit, with the rendered configuration, fits in it."""
    from bridge.config.load import config_from_dict
    from bridge.source.budget import RUNTIME_BYTES, derive_budget, in_flight_bytes

    docs = helm.template(values)
    resources = container(docs)["resources"]
    limit = quantity_bytes(resources["limits"]["memory"])
    if not values:  # the defaults; all-on keeps a user's own choice (512Mi of 1Gi)
        assert resources["limits"]["memory"] == "512Mi"
        assert resources["requests"]["memory"] == resources["limits"]["memory"]
    config = config_from_dict(bridge_config(docs))
    flight = in_flight_bytes(config.pipeline.max_in_flight_calls, config.packing()[1])
    derived = derive_budget(limit, in_flight_bytes=flight)
    assert derived.records + derived.prefetch + RUNTIME_BYTES + flight <= limit
    # ~100 records of 900 KB, ~900 of 100 KB (the 256 calls in flight the adaptive limit may
    # reach keep their share: with a ceiling of 128 this was 130 MiB)
    assert derived.records >= 90 * 2**20
    budget = derive_budget(
        limit, override=config.pipeline.max_buffered_bytes, in_flight_bytes=flight
    )
    assert budget.records + budget.prefetch + RUNTIME_BYTES + flight <= limit


def test_values_and_notes_say_how_to_size_memory(helm: Helm, tmp_path: Path) -> None:
    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    assert "pipeline.max_buffered_bytes" in text and "cgroup" in text
    chart = notes_chart(tmp_path)
    notes = rendered_notes(helm, chart)
    assert "Memory: the limit is 512Mi" in notes
    assert "config.pipeline.max_buffered_bytes" in notes
    assert "requests.memory equal to the limit" in notes
    unlimited = rendered_notes(helm, chart, sets=["resources.limits=null"])
    assert "no limit is set" in unlimited and "256 MiB of records" in unlimited
