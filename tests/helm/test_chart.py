"""The Helm chart, rendered and linted by Helm's own engine (helm-python-sdk), for the
default values and the GPU production example: every core resource, and every pod template
inside the RayService, validates against the Kubernetes API schemas; the pipeline
configuration and the Serve config it carries load as the code loads them; bad values are
refused with a message naming them. Its attack surface: Ray's token authentication, the
NetworkPolicies (evaluated here for who reaches which port), the restricted Pod Security
Standard, service account tokens, the read-only metrics token, images by digest, TLS."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import helm_python
import kubernetes_validate
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from ausm_stream.pipeline.config import PipelineConfig

CHART = Path(__file__).resolve().parents[2] / "helm" / "ausm-stream"
GPU_EXAMPLE = yaml.safe_load((CHART / "examples" / "gpu-production.yaml").read_text())
KUBERNETES = "1.30"
CORE = {"ConfigMap", "Service"}
SEVERAL = {"NetworkPolicy"}
"""Kinds the chart makes more than one of: keyed "kind/name"."""
DIGEST = "sha256:" + "0123456789abcdef" * 4
EVERYTHING_ON = {
    "image": {"digest": DIGEST},
    "rayAuth": {"secretName": "ausm-ray-token"},
    "networkPolicy": {
        "apiFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}]
    },
    "api": {"ingress": {"enabled": True, "className": "nginx", "tls": {"secretName": "api-tls"}}},
    "serviceMonitor": {"enabled": True},
}
"""Every optional part of the chart at once."""


def render(values: dict | None) -> dict[str, dict]:
    """kind -> the rendered resource (the chart makes one of each but of ``SEVERAL``)."""
    out = helm_python.Chart.load(CHART).render(values, name="ausm", namespace="video")
    manifests = [text for path, text in out.items() if path.endswith(".yaml")]  # not NOTES.txt
    docs = [d for text in manifests for d in yaml.safe_load_all(text) if d]
    keys = [
        f"{d['kind']}/{d['metadata']['name']}" if d["kind"] in SEVERAL else d["kind"] for d in docs
    ]
    assert len(keys) == len(set(keys)), keys
    return dict(zip(keys, docs, strict=True))


def notes(values: dict | None) -> str:
    out = helm_python.Chart.load(CHART).render(values, name="ausm", namespace="video")
    return next(text for path, text in out.items() if path.endswith("NOTES.txt"))


def pod_groups(docs: dict[str, dict]) -> dict[str, dict]:
    """head / api / gpu -> the group's spec (rayStartParams, template) in the RayService."""
    cluster = docs["RayService"]["spec"]["rayClusterConfig"]
    return {"head": cluster["headGroupSpec"]} | {
        g["groupName"]: g for g in cluster["workerGroupSpecs"]
    }


@pytest.mark.parametrize(
    "values", [None, GPU_EXAMPLE, EVERYTHING_ON], ids=["defaults", "gpu-production", "all-on"]
)
def test_the_chart_lints_clean(values):
    report = helm_python.lint(CHART, values, strict=True, kube_version=f"v{KUBERNETES}.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize(
    "values", [None, GPU_EXAMPLE, EVERYTHING_ON], ids=["defaults", "gpu-production", "all-on"]
)
def test_every_rendered_resource_is_valid_kubernetes(values):
    docs = render(values)
    assert {"ConfigMap", "Service", "RayService"} <= set(docs)
    for doc in docs.values():  # all but the custom resources (RayService, ServiceMonitor)
        if doc["kind"] in CORE | SEVERAL | {"Ingress"}:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    cluster = docs["RayService"]["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:  # the pods KubeRay makes from them
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}
        pod["spec"] = group["template"]["spec"]
        kubernetes_validate.validate(pod, KUBERNETES, strict=True)
    # the API Service selects the pods that serve it, the API group, which carry the probes;
    # the head keeps KubeRay's probes (the API is deployed only once the head is ready)
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    selector = docs["Service"]["spec"]["selector"].items()
    api = groups["api"]["template"]
    assert selector <= api["metadata"]["labels"].items()
    for other in (groups["gpu"]["template"], cluster["headGroupSpec"]["template"]):
        assert not selector <= other["metadata"]["labels"].items()
        assert "readinessProbe" not in other["spec"]["containers"][0]
    container = api["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz?probe=live"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz?probe=live"
    # one API replica per API pod: each pod offers one unit of the resource a replica takes
    offered = json.loads(json.loads(groups["api"]["rayStartParams"]["resources"]))
    args = yaml.safe_load(docs["RayService"]["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert offered == {args["api_resource"]: 1}
    assert args["api_replicas"] == groups["api"]["replicas"] == groups["api"]["maxReplicas"]
    # one cluster at a time: a second one would run a second pipeline on the same topic
    assert docs["RayService"]["spec"]["upgradeStrategy"] == {"type": "None"}


def test_the_pipeline_and_serve_configs_load_as_the_code_loads_them():
    docs = render(GPU_EXAMPLE)
    cfg = PipelineConfig.from_dict(yaml.safe_load(docs["ConfigMap"]["data"]["pipeline.yaml"]))
    assert cfg.kafka.bootstrap == "video-kafka-bootstrap.kafka:9092"
    assert cfg.kafka.partitions == 32
    assert (cfg.storage.url, cfg.storage.endpoint) == (
        "s3://video-segmentation/ausm",
        "http://minio.minio:9000",
    )
    assert (cfg.worker.device, cfg.worker.gpus, cfg.worker.count) == ("cuda", 1, 8)
    assert cfg.worker.autocast == "bfloat16" and cfg.worker.resident_streams == 256  # extra
    assert (cfg.ingest.streams_per_process, cfg.ingest.cpus_per_process) == (64, 1)
    assert (cfg.api.host, cfg.api.port, cfg.api.token) == ("0.0.0.0", 8000, None)  # Secret
    serve_config = yaml.safe_load(docs["RayService"]["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_config)  # Ray's own schema of serveConfigV2
    (application,) = serve_config["applications"]
    module, attr = application["import_path"].split(":")
    assert callable(getattr(importlib.import_module(module), attr))
    assert application["args"]["config"] == "/etc/ausm-stream/pipeline.yaml"


def test_gpus_replicas_and_monitoring_follow_the_values():
    docs = render(GPU_EXAMPLE)
    (group,) = [
        g
        for g in docs["RayService"]["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        if g["groupName"] == "gpu"
    ]
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (8, 8, 8)
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1 and group["rayStartParams"]["num-gpus"] == "1"
    env = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in group["template"]["spec"]["containers"][0]["env"]
        if "valueFrom" in e
    }
    assert env["AUSM_API__TOKEN"] == {"name": "ausm-stream-secrets", "key": "api-token"}
    monitor = docs["ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["endpoints"][0]["bearerTokenSecret"]["name"] == "ausm-stream-secrets"
    assert "ServiceMonitor" not in render(None)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"gpuWorkers": {"minReplicas": -1}}, "/gpuWorkers/minReplicas"),
        ({"kafka": {"bootstrap": ""}}, "/kafka/bootstrap"),
        ({"storage": {"url": "http://minio:9000/bucket"}}, "/storage/url"),
        ({"pipeline": {"autocast": "fp8"}}, "/pipeline/autocast"),
        ({"api": {"port": 70000}}, "/api/port"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"rayAuth": {"mode": "off"}}, "/rayAuth/mode"),
        ({"networkPolicy": {"apiFrom": "anyone"}}, "/networkPolicy/apiFrom"),
        ({"api": {"ingress": {"host": "https://ausm.example.com"}}}, "/api/ingress/host"),
        ({"rayVersion": "2.51.0"}, "rayAuth.mode=token needs Ray 2.52.0 or newer"),
        ({"gpuWorker": {"replicas": 2}}, "'gpuWorker' not allowed"),
        ({"pipeline": {"workers": 99}}, "pipeline.workers=99 is more than kafka.partitions=8"),
        (
            {"gpuWorkers": {"minReplicas": 5, "maxReplicas": 2}},
            "gpuWorkers.minReplicas=5 is more than gpuWorkers.maxReplicas=2",
        ),
        (
            {"pipeline": {"workers": 6}, "gpuWorkers": {"maxReplicas": 4}},
            "needs 6 GPUs, more than gpuWorkers.maxReplicas=4",
        ),
        (
            {"gpuWorkers": {"replicas": 9, "minReplicas": 1, "maxReplicas": 8}},
            "gpuWorkers.replicas=9 lies outside gpuWorkers.minReplicas=1 to maxReplicas=8",
        ),
        ({"kafka": {"securityProtocol": "SSL", "mutualTls": True}}, "kafka.mutualTls needs"),
        ({"kafka": {"tlsSecret": "kafka-ca"}}, "need kafka.securityProtocol SSL or SASL_SSL"),
        ({"kafka": {"securityProtocol": "SASL_SSL"}}, "needs kafka.saslUsername"),
    ],
)
def test_bad_values_are_refused_naming_the_value(values, words):
    with pytest.raises(helm_python.HelmError, match=words.replace(".", r"\.")):
        render(values)


# --- the attack surface --------------------------------------------------------------------


def test_ray_token_authentication_is_on_through_kuberay():
    """Ray's dashboard, Jobs API, client server and GCS refuse callers without the token:
    KubeRay's authOptions sets RAY_AUTH_MODE=token and RAY_AUTH_TOKEN in every Ray container
    and authenticates the operator's own calls that deploy the Serve application."""
    cluster = render(None)["RayService"]["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token"}  # KubeRay generates the token
    cluster = render(EVERYTHING_ON)["RayService"]["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token", "secretName": "ausm-ray-token"}
    for group in pod_groups(render(None)).values():  # nothing of ours turns it off
        for container in group["template"]["spec"]["containers"]:
            assert not {e["name"] for e in container["env"]} & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}
    off = {"rayAuth": {"mode": "disabled"}}
    assert "authOptions" not in render(off)["RayService"]["spec"]["rayClusterConfig"]
    assert "WARNING: Ray's token authentication is off" in notes(off)


def _matches(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # no matchExpressions in the chart
    return selector.get("matchLabels", {}).items() <= labels.items()


def _admits(policies: list[dict], pod: dict, port: int, source: dict) -> bool:
    """Whether the NetworkPolicies let ``source`` (labels, namespace labels, same namespace)
    reach ``port`` of a pod with labels ``pod``: Kubernetes' rules, for the peers the chart
    writes (pod and namespace selectors)."""
    selecting = [p for p in policies if _matches(p["spec"]["podSelector"], pod)]
    if not selecting:
        return True  # a pod no policy selects is not isolated
    for policy in selecting:
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"].get("ingress", []):
            if "ports" in rule and port not in [p["port"] for p in rule["ports"]]:
                continue
            for peer in rule.get("from", [{"namespaceSelector": {}}]):  # no from: anyone
                namespace = (
                    _matches(peer["namespaceSelector"], source["namespace"])
                    if "namespaceSelector" in peer
                    else source["same_namespace"]
                )
                if namespace and _matches(peer.get("podSelector", {}), source["labels"]):
                    return True
    return False


RELEASE = {"app.kubernetes.io/name": "ausm-stream", "app.kubernetes.io/instance": "ausm"}
SOURCES = {
    "stranger": {"labels": {"app": "other"}, "namespace": {}, "same_namespace": True},
    "elsewhere": {"labels": {}, "namespace": {"team": "x"}, "same_namespace": False},
    "release": {"labels": RELEASE | {"ausm-stream/role": "gpu-worker"}, "namespace": {},
                "same_namespace": True},
    "operator": {"labels": {"app.kubernetes.io/name": "kuberay-operator"},
                 "namespace": {"kubernetes.io/metadata.name": "ray-system"},
                 "same_namespace": False},
    "prometheus": {"labels": {"app": "prometheus"},
                   "namespace": {"kubernetes.io/metadata.name": "monitoring"},
                   "same_namespace": False},
}  # fmt: skip
RAY_PORTS = {"gcs": 6379, "dashboard": 8265, "client": 10001, "agent": 52365, "worker": 10123}


def test_network_policies_admit_only_the_api_from_outside_the_release():
    docs = render(None)
    policies = [d for key, d in docs.items() if key.startswith("NetworkPolicy/")]
    pods = {
        name: group["template"]["metadata"]["labels"] for name, group in pod_groups(docs).items()
    }
    api_port = 8000

    def reach(source: str, pod: str, port: int) -> bool:
        return _admits(policies, pods[pod], port, SOURCES[source])

    for pod in pods:  # Ray's ports: the release's own pods only
        for port in [*RAY_PORTS.values(), 8080, api_port]:
            assert reach("release", pod, port), (pod, port)
            for outsider in ("stranger", "elsewhere"):
                assert reach(outsider, pod, port) == (pod == "api" and port == api_port)
    # KubeRay's operator: the dashboard (deploys the Serve app) and each Serve proxy
    assert reach("operator", "head", RAY_PORTS["dashboard"])
    assert all(reach("operator", pod, api_port) for pod in pods)
    assert not any(reach("operator", "head", RAY_PORTS[p]) for p in ("gcs", "client", "worker"))
    # the monitoring namespace: Ray's metrics, nothing else of Ray's
    assert all(reach("prometheus", pod, 8080) for pod in pods)
    assert not reach("prometheus", "head", RAY_PORTS["dashboard"])
    # apiFrom narrows the API port to the Ingress controller's namespace
    docs = render(EVERYTHING_ON)
    policies = [d for key, d in docs.items() if key.startswith("NetworkPolicy/")]
    ingress = {"labels": {}, "namespace": {"name": "ingress-nginx"}, "same_namespace": False}
    assert _admits(policies, pods["api"], api_port, ingress)
    assert not _admits(policies, pods["api"], api_port, SOURCES["stranger"])
    assert not [k for k in render({"networkPolicy": {"enabled": False}}) if "NetworkPolicy" in k]


ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                   "persistentVolumeClaim", "projected", "secret"}  # fmt: skip


def _restricted_problems(pod: dict, containers: list[dict]) -> list[str]:
    """What keeps a pod from the "restricted" Pod Security Standard (Kubernetes 1.30), for
    the fields a pod template of this chart can hold."""
    problems = []
    context = pod.get("securityContext", {})
    for volume in pod.get("volumes", []):
        if not set(volume) - {"name"} <= ALLOWED_VOLUMES:
            problems.append(f"volume {volume['name']}")
    problems += [f for f in ("hostNetwork", "hostPID", "hostIPC") if pod.get(f)]
    for c in containers:
        own = c.get("securityContext", {})
        if own.get("runAsNonRoot", context.get("runAsNonRoot")) is not True:
            problems.append(f"{c['name']}: runAsNonRoot")
        if own.get("runAsUser", context.get("runAsUser")) == 0:
            problems.append(f"{c['name']}: runAsUser 0")
        seccomp = own.get("seccompProfile", context.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{c['name']}: seccompProfile {seccomp}")
        if own.get("allowPrivilegeEscalation") is not False or own.get("privileged"):
            problems.append(f"{c['name']}: privilege escalation")
        capabilities = own.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{c['name']}: capabilities not dropped")
        if not set(capabilities.get("add", [])) <= {"NET_BIND_SERVICE"}:
            problems.append(f"{c['name']}: capabilities added")
    return problems


@pytest.mark.parametrize(
    "values", [None, GPU_EXAMPLE, EVERYTHING_ON], ids=["defaults", "gpu-production", "all-on"]
)
def test_every_pod_meets_the_restricted_pod_security_standard(values):
    docs = render(values)
    cluster = docs["RayService"]["spec"]["rayClusterConfig"]
    for name, group in pod_groups(docs).items():
        pod = group["template"]["spec"]
        containers = list(pod["containers"])
        if name == "head":  # the autoscaler sidecar KubeRay adds to the head pod
            autoscaler = cluster["autoscalerOptions"]
            containers.append({"name": "autoscaler", **autoscaler})
            # KubeRay gives the sidecar no writable /tmp: its root stays writable
            assert "readOnlyRootFilesystem" not in autoscaler["securityContext"]
        assert _restricted_problems(pod, containers) == [], name
        assert pod["securityContext"]["runAsUser"] == 1000  # the image's "ray"
        for container in pod["containers"]:  # a read-only root; /tmp and HOME writable
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            (volume,) = [v for v in pod["volumes"] if v["name"] == tmp["name"]]
            assert "emptyDir" in volume
            assert {"name": "HOME", "value": "/tmp"} in container["env"]
    # the check itself: a pod with none of it fails on four counts
    bare = {"containers": [{"name": "ray-head"}], "volumes": [{"name": "c", "configMap": {}}]}
    assert len(_restricted_problems(bare, bare["containers"])) == 4


def test_only_kuberays_autoscaler_gets_a_service_account_token():
    """No Ray container (which runs the application's code) holds a service account token;
    the autoscaler, which scales the worker groups through the Kubernetes API, mounts one."""
    docs = render(None)
    groups = pod_groups(docs)
    for group in groups.values():
        assert group["template"]["spec"]["automountServiceAccountToken"] is False
        for container in group["template"]["spec"]["containers"]:
            assert "autoscaler-token" not in [m["name"] for m in container["volumeMounts"]]
    autoscaler = docs["RayService"]["spec"]["rayClusterConfig"]["autoscalerOptions"]
    (mount,) = autoscaler["volumeMounts"]
    assert mount["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
    (volume,) = [
        v for v in groups["head"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    ]
    sources = volume["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    assert [i["path"] for s in sources[1:] for i in next(iter(s.values()))["items"]] == [
        "ca.crt",
        "namespace",
    ]  # what ray's KubeRay node provider reads
    cluster = render({"autoscaling": {"enabled": False}})["RayService"]["spec"]["rayClusterConfig"]
    assert "autoscalerOptions" not in cluster
    assert "autoscaler-token" not in [
        v["name"] for v in cluster["headGroupSpec"]["template"]["spec"]["volumes"]
    ]


def _secret_env(container: dict) -> dict[str, dict]:
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}


def test_metrics_are_scraped_with_a_read_only_token():
    docs = render(GPU_EXAMPLE)
    endpoint = docs["ServiceMonitor"]["spec"]["endpoints"][0]
    assert endpoint["bearerTokenSecret"] == {"name": "ausm-stream-secrets", "key": "metrics-token"}
    for group in pod_groups(docs).values():
        (container,) = group["template"]["spec"]["containers"]
        env = _secret_env(container)
        assert env["AUSM_API__METRICS_TOKEN"] == endpoint["bearerTokenSecret"]
        assert env["AUSM_API__TOKEN"]["key"] != env["AUSM_API__METRICS_TOKEN"]["key"]
        # every secret comes from the existing Secret, none as a value of the chart's
        assert all(ref["name"] == "ausm-stream-secrets" for ref in env.values())
        assert not [e for e in container["env"] if e["name"].startswith("AUSM_") and "value" in e]
    assert "token" not in docs["ConfigMap"]["data"]["pipeline.yaml"]


def test_the_secrets_the_pods_get_load_as_the_code_loads_them(tmp_path):
    """Every Ray container's variables and the ConfigMap, as deploy/cluster.py:app loads
    them (PipelineConfig.load of the file, then AUSM_SECTION__KEY variables)."""
    docs = render(GPU_EXAMPLE)
    config = tmp_path / "pipeline.yaml"
    config.write_text(docs["ConfigMap"]["data"]["pipeline.yaml"])
    for group in pod_groups(docs).values():
        (container,) = group["template"]["spec"]["containers"]
        env = {name: f"<{ref['key']}>" for name, ref in _secret_env(container).items()}
        cfg = PipelineConfig.load(config, env=env)
        assert (cfg.storage.access_key, cfg.storage.secret_key) == (
            "<s3-access-key>",
            "<s3-secret-key>",
        )
        assert (cfg.api.token, cfg.api.metrics_token) == ("<api-token>", "<metrics-token>")


def test_the_image_is_pinned_by_its_digest():
    docs = render({"image": {"digest": DIGEST}})
    for group in pod_groups(docs).values():
        for container in group["template"]["spec"]["containers"]:
            assert container["image"] == f"ghcr.io/ausm-stream/ausm-stream@{DIGEST}"
    assert "pin it by digest" not in notes({"image": {"digest": DIGEST}})
    for group in pod_groups(render(None)).values():  # by tag, and the notes say so
        assert group["template"]["spec"]["containers"][0]["image"].endswith(":0.1.0-gpu")
    assert "pin it by digest (image.digest)" in notes(None)


def test_an_ingress_serves_the_api_over_tls():
    assert "Ingress" not in render(None)
    docs = render(EVERYTHING_ON)
    ingress = docs["Ingress"]
    kubernetes_validate.validate(ingress, KUBERNETES, strict=True)
    assert ingress["spec"]["tls"] == [{"hosts": ["ausm.example.com"], "secretName": "api-tls"}]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    service = docs["Service"]
    assert path["backend"]["service"] == {
        "name": service["metadata"]["name"],
        "port": {"name": service["spec"]["ports"][0]["name"]},
    }
    assert "https://ausm.example.com/streams" in notes(EVERYTHING_ON)
    plain = {"api": {"ingress": {"enabled": True}}}
    assert "tls" not in render(plain)["Ingress"]["spec"]
    assert "the token crosses the network in the clear" in notes(plain)


def test_kafka_tls_and_sasl_reach_every_ray_container(tmp_path):
    """SASL over TLS with a client certificate: the ConfigMap names the mounted files and the
    mechanism, the password comes from the existing Secret, the TLS Secret is mounted
    read-only in every Ray container, and the whole loads as the code loads it."""
    values = {
        "kafka": {
            "securityProtocol": "SASL_SSL",
            "tlsSecret": "kafka-client-tls",
            "mutualTls": True,
            "saslUsername": "ausm",
            "replicationFactor": 3,
        }
    }
    docs = render(values)
    data = yaml.safe_load(docs["ConfigMap"]["data"]["pipeline.yaml"])
    mounted = "/etc/ausm-stream-kafka"
    assert (data["kafka"]["ssl_cafile"], data["kafka"]["ssl_keyfile"]) == (
        f"{mounted}/ca.crt",
        f"{mounted}/tls.key",
    )
    for group in pod_groups(docs).values():
        spec = group["template"]["spec"]
        (container,) = spec["containers"]
        mount = next(m for m in container["volumeMounts"] if m["name"] == "kafka-tls")
        assert (mount["mountPath"], mount["readOnly"]) == (mounted, True)
        volume = next(v for v in spec["volumes"] if v["name"] == "kafka-tls")
        assert volume["secret"]["secretName"] == "kafka-client-tls"
        env = _secret_env(container)
        assert env["AUSM_KAFKA__SASL_PASSWORD"] == {
            "name": "ausm-stream-secrets",
            "key": "kafka-password",
        }
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):  # the files, as mounted
        (tmp_path / key).write_text("PEM")
        data["kafka"][key] = str(tmp_path / key)
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(data))
    cfg = PipelineConfig.load(config, env={"AUSM_KAFKA__SASL_PASSWORD": "<kafka-password>"})
    settings = cfg.kafka.client_settings()
    assert settings["security_protocol"] == "SASL_SSL"
    assert (settings["sasl_mechanism"], settings["sasl_plain_username"]) == (
        "SCRAM-SHA-512",
        "ausm",
    )
    assert settings["sasl_plain_password"] == "<kafka-password>"
    assert cfg.kafka.replication_factor == 3
    plain = render(None)  # PLAINTEXT by default: no password variable, no TLS volume
    for group in pod_groups(plain).values():
        (container,) = group["template"]["spec"]["containers"]
        assert "AUSM_KAFKA__SASL_PASSWORD" not in _secret_env(container)
        assert all(v["name"] != "kafka-tls" for v in group["template"]["spec"]["volumes"])
