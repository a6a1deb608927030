"""The tutorial's Serve config files, read: the one place that knows their shape.

    config = load("serve_tiny_reasoner.yaml"); llm_config(config)["engine_kwargs"]

Each application of the tutorial serves one model, so an application has one LLM config; engine_cli_args and
engine_env give bare vLLM the same engine as an application's config.
"""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def load(name):
    """A Serve config file of this repository, as a dict."""
    return yaml.safe_load((ROOT / name).read_text())


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
        if key == "reasoning_parser":
            continue  # bare_vllm always sets it
        flag = "--" + key.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    return args


def engine_env(config):
    """The Serve config's runtime_env variables (e.g. the CPU engine's KV cache size), for bare vLLM's engine."""
    return {k: str(v) for k, v in llm_config(config).get("runtime_env", {}).get("env_vars", {}).items()}
