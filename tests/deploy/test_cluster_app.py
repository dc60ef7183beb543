"""The Serve application a cluster deploys itself (the Helm chart's RayService path):
built from its import path and a config file, it starts the pipeline once, serves the API,
and a restarted API replica finds the running pipeline."""

from __future__ import annotations

import uuid

import pytest
import ray
import requests
import yaml
from minio import Minio
from ray import serve

from ausm_stream.deploy.cluster import app, cluster_token, pipeline_name
from ausm_stream.errors import ConfigError
from ausm_stream.model.data import ShapesSpec, generate_video
from ausm_stream.pipeline.broker import free_port
from ausm_stream.pipeline.config import PipelineConfig
from ausm_stream.pipeline.video_files import write_h264
from tests.conftest import wait_for

TOKEN = "cluster-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_a_cluster_needs_a_broker_shared_storage_and_a_token():
    with pytest.raises(ConfigError, match="needs the Kafka servers"):
        cluster_token(PipelineConfig())
    kafka = {"bootstrap": "kafka:9092"}
    with pytest.raises(ConfigError, match="pods need shared storage"):
        cluster_token(PipelineConfig.from_dict({"kafka": kafka}))
    s3 = {"url": "s3://b/p"}
    with pytest.raises(ConfigError, match="AUSM_API__TOKEN"):
        cluster_token(PipelineConfig.from_dict({"kafka": kafka, "storage": s3}))


@pytest.fixture(scope="module")
def ray_with_api_pods():
    """A local Ray whose node offers what the chart's API pods do: the "ausm_api" resource
    that each API replica takes one of (two pods' worth)."""
    ray.init(
        num_cpus=2,
        resources={"ausm_api": 2},
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    yield
    ray.shutdown()


@pytest.mark.slow
def test_the_cluster_app_runs_the_pipeline_and_outlives_its_replica(
    tmp_path, broker, s3_endpoint, ray_with_api_pods, monkeypatch
):
    bucket = f"cluster-{uuid.uuid4().hex[:8]}"
    Minio(s3_endpoint.removeprefix("http://"), "test", "test-secret", secure=False).make_bucket(
        bucket
    )
    topic = uuid.uuid4().hex[:8]
    config = tmp_path / "pipeline.yaml"  # as the chart's ConfigMap holds it: no secrets
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {
                    "bootstrap": broker.bootstrap,
                    "frames_topic": f"frames-{topic}",
                    "tracks_topic": f"tracks-{topic}",
                    "dead_letter_topic": f"dlq-{topic}",
                },
                "storage": {"url": f"s3://{bucket}/data", "endpoint": s3_endpoint},
                "worker": {"count": 1, "parquet_frames": 16},
                "ingest": {"media_root": str(tmp_path)},
            }
        )
    )
    # ... and the secrets as the chart passes them, from a Secret into the environment
    monkeypatch.setenv("AUSM_STORAGE__ACCESS_KEY", "test")
    monkeypatch.setenv("AUSM_STORAGE__SECRET_KEY", "test-secret")
    monkeypatch.setenv("AUSM_API__TOKEN", TOKEN)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"
    try:
        args = {"config": str(config), "api_replicas": 2, "api_resource": "ausm_api"}
        serve.run(app(args), name="ausm-stream", route_prefix="/")
        health = wait_for(
            "the pipeline's health",
            lambda: (r := requests.get(f"{base}/healthz", headers=AUTH, timeout=30)).ok and r,
            timeout_s=120,
        )
        assert health.json()["status"] == "ok" and health.json()["store"] == "ok"
        anonymous = requests.get(f"{base}/healthz", timeout=30)
        assert anonymous.json() == {"status": "ok"}
        live = requests.get(f"{base}/healthz?probe=live", timeout=30)
        assert live.status_code == 200
        video = generate_video("test", 3, ShapesSpec(size=(128, 128), frames=24))
        path = write_h264(tmp_path / "cam.mp4", video.frames, fps=8)
        body = {"id": "cam-1", "source": str(path)}
        created = requests.post(f"{base}/streams", json=body, headers=AUTH, timeout=60)
        assert created.status_code == 201, created.text

        def frames_out() -> int:
            seg = requests.get(f"{base}/streams/cam-1", headers=AUTH, timeout=30).json()
            return (seg["segmentation"] or {}).get("frames_out", 0) >= 24

        wait_for("the stream's frames", frames_out)
        pipeline = ray.get_actor(pipeline_name(PipelineConfig.load(config)))

        # An API replica that dies is replaced; the pipeline it found is the same one.
        replicas = [
            a
            for a in ray.util.list_named_actors(all_namespaces=True)
            if "ControlPlaneApp" in a["name"]
        ]
        assert len(replicas) == 2  # one per API pod's resource
        replica = replicas[0]
        ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]))
        wait_for(
            "a new replica",
            lambda: requests.get(f"{base}/streams", headers=AUTH, timeout=30).ok,
        )
        listed = requests.get(f"{base}/streams", headers=AUTH, timeout=30).json()
        assert [s["id"] for s in listed] == ["cam-1"]
        serve.run(app(args), name="ausm-stream", route_prefix="/")
        again = ray.get_actor(pipeline_name(PipelineConfig.load(config)))
        assert again._actor_id == pipeline._actor_id  # redeployed: not a second pipeline
    finally:
        serve.shutdown()
        try:
            handle = ray.get_actor(pipeline_name(PipelineConfig.load(config)))
        except ValueError:
            handle = None
        if handle is not None:
            ray.get(handle.stop.remote())
            ray.kill(handle, no_restart=True)
