"""The facts that the tests, CI, the benchmark and the model's evaluation share, each defined here once: the Serve
config files' shape, the CPU model's name, the tutorial's ports, where Ray keeps a cluster's logs.

    config = load(CPU_CONFIG); llm_config(config)["engine_kwargs"]

Each application of the tutorial serves one model, so an application has one LLM config; engine_cli_args and
engine_env give bare vLLM the same engine as an application's config.
"""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CPU_CONFIG = ROOT / "serve_tiny_reasoner.yaml"  # the tutorial's application on CPU, as a Serve config file
QWQ_CONFIG = ROOT / "serve_qwq_32b.yaml"  # QwQ-32B's, the production configuration


# The ports the tutorial's cluster listens on (the README's list, kept equal by tests/test_readme.py).
PORTS = {
    6379: "Ray GCS",
    8265: "Ray dashboard",
    10001: "Ray client server",
    52365: "Ray dashboard agent",
    44217: "Ray autoscaler metrics",
    44227: "Ray dashboard metrics",
    8000: "Serve HTTP",
    8085: "Ray metrics export (the tests' shared cluster)",
    8404: "HAProxy statistics",
    9101: "HAProxy metrics",
}


def ray_logs(ray_tmp):
    """The log folder of the newest Ray cluster whose files are in `ray_tmp` (its RAY_TMPDIR)."""
    return Path(ray_tmp) / "ray" / "session_latest" / "logs"


def load(path):
    """A Serve config file (a path, or a name in this repository), as a dict."""
    return yaml.safe_load((ROOT / path).read_text())


def app_llm_config(app):
    """The LLM config of one application (an entry of a Serve config's `applications`)."""
    return app["args"]["llm_configs"][0]


def llm_config(config):
    """The LLM config of a Serve config's first application."""
    return app_llm_config(config["applications"][0])


def engine_cli_args(config):
    """The Serve config's engine_kwargs as `vllm serve` flags, for bare vLLM with the same engine."""
    args = []
    for key, value in llm_config(config)["engine_kwargs"].items():
        flag = "--" + key.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    return args


def engine_env(config):
    """The Serve config's runtime_env variables (e.g. the CPU engine's KV cache size), for bare vLLM's engine."""
    return {k: str(v) for k, v in llm_config(config).get("runtime_env", {}).get("env_vars", {}).items()}


# The CPU deployment's model name, as clients ask for it.
MODEL_ID = llm_config(load(CPU_CONFIG))["model_loading_config"]["model_id"]

# The questions the notebook asks (curl, client.py, client_streaming.py, and the three-words example of the reference).
NOTEBOOK_QUESTIONS = {
    "strawberry": "How many R's are in the word strawberry?",
    "even sum": "What is the sum of all even numbers between 1 and 100?",
    "three words": "Pick three random words with 3 syllables each and count the number of R's in each of them",
    "Paris trip": (
        "I need to plan a trip to Paris from Seattle. Can you help me research flight costs, create an "
        "itinerary for 3 days, and suggest restaurants based on my dietary restrictions (vegetarian)?"
    ),
}
