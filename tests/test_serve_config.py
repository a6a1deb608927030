"""The production files: the Serve config files say what the Python apps say, and service.yaml is a valid Anyscale
service definition. (Deploying serve_tiny_reasoner.yaml for real is a notebook
step; a wrong key in a config file is in test_failures.py.)"""

import functools
import json
import os
import subprocess
import sys

import pytest
import yaml

from harness.config import QWQ_CONFIG, ROOT, llm_config, load
from harness.servers import ONE_MACHINE, TUTORIAL_RAY_ENV

# (module, its config file, the mode (TUTORIAL_DEVICE) that tutorial_env.sh pairs them in)
CASES = [
    ("serve_qwq_32b", "serve_qwq_32b.yaml", "gpu"),
    ("serve_tiny_reasoner", "serve_tiny_reasoner.yaml", "cpu"),
    ("serve_tiny_reasoner", "serve_tiny_reasoner_gpu.yaml", "one-gpu"),
]
# Build each Python app and the app its config file describes, the way Serve does, and print both LLMConfigs.
# Building an app asks Ray for its runtime context, so this runs in a process connected to the test's cluster: one
# for every case, since each takes seconds of importing Ray and vLLM.
COMPARE = """
import importlib, json, os, sys, yaml
from ray.llm._internal.serve.core.ingress.builder import LLMServingArgs
from ray.serve.llm import build_openai_app

def autoscaling(app):  # as Serve will run it, Ray Serve LLM's defaults merged in; the LLM server is the ingress
    config = app._bound_deployment._deployment_config.autoscaling_config
    return config.dict() if config else None

built = {}
for module_name, config_file, device in json.loads(sys.argv[1]):
    os.environ["TUTORIAL_DEVICE"] = device  # a module reads its mode when it is imported
    module = importlib.reload(importlib.import_module(module_name))
    args = LLMServingArgs.model_validate(yaml.safe_load(open(config_file))["applications"][0]["args"])
    from_file = build_openai_app(args)
    without_target = module.llm_config.model_copy(deep=True)
    without_target.deployment_config["autoscaling_config"].pop("target_ongoing_requests", None)
    built[config_file] = {
        "python": module.llm_config.model_dump(), "yaml": args.llm_configs[0].model_dump(),
        "yaml_ingress": args.ingress_deployment_config,
        "autoscaling": {"python": autoscaling(module.app), "yaml": autoscaling(from_file),
                        "without_target": autoscaling(build_openai_app({"llm_configs": [without_target]}))}}
print(json.dumps(built, default=repr))  # classes by name
"""


@functools.cache  # the printed JSON: each caller parses a fresh copy
def built_configs_json():
    # Built in the notebook's environment (direct streaming), without what the Python apps would pass on.
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "VLLM_CPU_KVCACHE_SPACE")} | TUTORIAL_RAY_ENV
    run = subprocess.run(
        [sys.executable, "-c", COMPARE, json.dumps(CASES)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.strip().splitlines()[-1]


def built_configs(config_file):
    """What building `config_file` and its Python app gave."""
    return json.loads(built_configs_json())[config_file]


@pytest.mark.parametrize("module, config_file, device", CASES)
def test_config_file_gives_the_same_llm_config_as_the_python_app(shared_cluster, module, config_file, device):
    """Each config file is its Python app in the mode (TUTORIAL_DEVICE) that tutorial_env.sh pairs them in."""
    shared_cluster.deploy()  # building an app needs a running cluster
    configs = built_configs(config_file)
    python, from_file = configs["python"], configs["yaml"]
    if module == "serve_tiny_reasoner":
        # The Python app resolves the model folder itself; the file names it relative to the replicas' directory.
        assert from_file["model_loading_config"]["model_source"] == "tiny_reasoner"
        from_file["model_loading_config"]["model_source"] = str(ROOT / "tiny_reasoner")
    # With direct streaming the LLM server is the ingress: neither app may configure a separate one.
    assert not configs["yaml_ingress"]
    assert from_file == python
    assert python["engine_kwargs"]["reasoning_parser"] == "deepseek_r1"


def test_the_qwq_app_scales_to_its_second_replica_and_would_not_without_a_target(shared_cluster):
    """Ray Serve LLM merges its default target of 10^9 ongoing requests per replica into an autoscaling_config that
    has none: min 1 / max 2 alone never adds the second replica. The tutorial sets the target, in both files."""
    shared_cluster.deploy()  # building an app needs a running cluster
    autoscaling = built_configs("serve_qwq_32b.yaml")["autoscaling"]
    assert autoscaling["python"] == autoscaling["yaml"]
    assert (autoscaling["python"]["min_replicas"], autoscaling["python"]["max_replicas"]) == (1, 2)
    assert autoscaling["python"]["target_ongoing_requests"] == 16
    assert autoscaling["without_target"]["target_ongoing_requests"] == 10**9


@pytest.mark.fast
def test_service_yaml_is_a_valid_anyscale_service_for_the_qwq_app():
    from anyscale.service.models import ServiceConfig

    service = ServiceConfig.from_yaml(str(ROOT / "service.yaml"))
    assert service.applications == [{"import_path": "serve_qwq_32b:app"}]
    assert service.query_auth_token_enabled is True
    assert service.working_dir == "."


@pytest.mark.fast
def test_an_anyscale_service_uploads_only_what_it_runs():
    """The upload list, built by the Anyscale CLI's own packing of working_dir with service.yaml's excludes: the
    application's module and nothing else (no tests, notebook, benchmark, model or virtual environment)."""
    import zipfile

    from anyscale.service.models import ServiceConfig
    from anyscale.utils.runtime_env import zip_local_dir

    service = ServiceConfig.from_yaml(str(ROOT / "service.yaml"))
    with zip_local_dir(str(ROOT / service.working_dir), excludes=service.excludes) as (path, _, _):
        uploaded = [name.split("/", 1)[1] for name in zipfile.ZipFile(path).namelist()]
    assert uploaded == ["serve_qwq_32b.py"]


@pytest.mark.fast
def test_a_misspelled_service_field_is_rejected(tmp_path):
    from anyscale.service.models import ServiceConfig

    bad = tmp_path / "service.yaml"
    bad.write_text((ROOT / "service.yaml").read_text().replace("query_auth_token_enabled", "query_auth_enabled"))
    with pytest.raises(TypeError, match="query_auth_enabled"):
        ServiceConfig.from_yaml(str(bad))


def ray_service_serve_config(manifest_text):
    """The Serve config that ray-service.qwq-32b.yaml gives KubeRay (its serveConfigV2, a YAML string)."""
    return yaml.safe_load(yaml.safe_load(manifest_text)["spec"]["serveConfigV2"])


def validate_with_ray(serve_config):
    """Ray's own checks of a Serve config: Serve's schema, and Ray Serve LLM's arguments of build_openai_app."""
    from ray.llm._internal.serve.core.ingress.builder import LLMServingArgs
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(serve_config)
    for app in serve_config["applications"]:
        LLMServingArgs.model_validate(app["args"])


@pytest.mark.fast
def test_the_ray_service_deploys_serve_qwq_32b_yaml():
    """KubeRay's RayService runs the tutorial's Serve config file: the same applications, and no http_options (in a
    pod Serve listens on every interface, behind the operator's Service)."""
    serve_config = ray_service_serve_config((ROOT / "ray-service.qwq-32b.yaml").read_text())
    config_file = load(QWQ_CONFIG)
    assert serve_config == {"applications": config_file["applications"]}
    validate_with_ray(serve_config)
    manifest = yaml.safe_load((ROOT / "ray-service.qwq-32b.yaml").read_text())["spec"]["rayClusterConfig"]
    workers = manifest["workerGroupSpecs"][0]
    gpus = workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    engine = llm_config(config_file)["engine_kwargs"]
    assert int(gpus) == engine["tensor_parallel_size"], "one replica per GPU pod"
    autoscaling = llm_config(config_file)["deployment_config"]["autoscaling_config"]
    assert workers["maxReplicas"] == autoscaling["max_replicas"]
    assert manifest["authOptions"] == {"mode": "token"}
    # Every pod gets tutorial_env.sh's Serve settings (token auth comes from authOptions), but those for one machine:
    # a stopping replica keeps Ray's 30 s drain, which covers HAProxy on every node.
    serve_env = {k: v for k, v in TUTORIAL_RAY_ENV.items() if k.startswith("RAY_SERVE_") and k not in ONE_MACHINE}
    for group in (manifest["headGroupSpec"], workers):
        env = {item["name"]: item.get("value") for item in group["template"]["spec"]["containers"][0]["env"]}
        assert {name: env.get(name) for name in serve_env} == serve_env
        assert not set(ONE_MACHINE) & set(env)
    # HAProxy's old process keeps a connection for a chain in flight and one more: two grace periods.
    grace = llm_config(config_file)["deployment_config"]["graceful_shutdown_timeout_s"]
    assert int(serve_env["RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S"]) >= 2 * grace
    # An upgrade deletes the old cluster this long after the switch: a chain in flight there gets the same grace.
    assert (
        yaml.safe_load((ROOT / "ray-service.qwq-32b.yaml").read_text())["spec"]["rayClusterDeletionDelaySeconds"]
        == grace
    )


@pytest.mark.fast
@pytest.mark.parametrize("right, wrong", [("engine_kwargs", "engine_kwarg"), ("import_path", "import_pth")])
def test_a_misspelled_key_in_the_ray_service_is_rejected(right, wrong):
    text = (ROOT / "ray-service.qwq-32b.yaml").read_text().replace(right, wrong, 1)
    with pytest.raises(Exception, match=wrong if wrong == "engine_kwarg" else "import_path"):
        validate_with_ray(ray_service_serve_config(text))
