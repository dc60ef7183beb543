"""The Helm chart, rendered and linted by Helm's own engine (helm-python-sdk), for the
default values and the GPU production example: every core resource, and every pod template
inside the RayService, validates against the Kubernetes API schemas; the pipeline
configuration and the Serve config it carries load as the code loads them; bad values are
refused with a message naming them."""

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


def render(values: dict | None) -> dict[str, dict]:
    """kind -> the rendered resource (the chart makes one of each)."""
    out = helm_python.Chart.load(CHART).render(values, name="ausm", namespace="video")
    manifests = [text for path, text in out.items() if path.endswith(".yaml")]  # not NOTES.txt
    docs = [d for text in manifests for d in yaml.safe_load_all(text) if d]
    kinds = [d["kind"] for d in docs]
    assert len(kinds) == len(set(kinds)), kinds
    return {d["kind"]: d for d in docs}


@pytest.mark.parametrize("values", [None, GPU_EXAMPLE], ids=["defaults", "gpu-production"])
def test_the_chart_lints_clean(values):
    report = helm_python.lint(CHART, values, strict=True, kube_version=f"v{KUBERNETES}.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("values", [None, GPU_EXAMPLE], ids=["defaults", "gpu-production"])
def test_every_rendered_resource_is_valid_kubernetes(values):
    docs = render(values)
    assert {"ConfigMap", "Service", "RayService"} <= set(docs)
    for kind in CORE:
        kubernetes_validate.validate(docs[kind], KUBERNETES, strict=True)
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
    ],
)
def test_bad_values_are_refused_naming_the_value(values, words):
    with pytest.raises(helm_python.HelmError, match=words.replace(".", r"\.")):
        render(values)
