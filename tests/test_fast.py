"""The pure parts, without Ray or an engine: they run first and finish in seconds (`python -m pytest -m fast`), so a
change is checked before the end-to-end tests start."""

import time
from datetime import datetime

import pytest
import yaml

from benchmark.cold_start import MILESTONES, line_time, phases
from benchmark.config import engine_cli_args, llm_config
from benchmark.servers import ROOT
from benchmark.stats import percentiles

pytestmark = pytest.mark.fast


def test_percentiles_take_the_value_at_each_rank_and_skip_missing_ones():
    assert percentiles(list(range(1, 101))) == {"p50": 51, "p90": 91, "p99": 100}
    assert percentiles([None, 3.0]) == {"p50": 3.0, "p90": 3.0, "p99": 3.0}
    assert percentiles([None]) == {"p50": None, "p90": None, "p99": None}


def test_bare_vllm_gets_the_config_files_engine_arguments_as_flags():
    config = yaml.safe_load((ROOT / "serve_qwq_32b.yaml").read_text())
    assert engine_cli_args(config) == ["--tensor-parallel-size", "8", "--max-model-len", "32768"]  # parser: its own
    llm_config(config)["engine_kwargs"]["enforce_eager"] = True
    assert engine_cli_args(config)[-1] == "--enforce-eager"


def test_log_lines_of_ray_and_of_vllm_give_the_time_they_were_written():
    ray_line = "INFO 2026-12-03 12:04:29,569 default_LLMServer:tiny-reasoner kn8qzjq3 -- Started initializing replica."
    vllm_line = "(ServeReplica pid=7714) INFO 12-03 12:24:19 [kernel.py:369] Final IR op priority"
    assert line_time(ray_line) == datetime(2026, 12, 3, 12, 4, 29, 569000).timestamp()
    assert line_time(vllm_line) == datetime(datetime.now().year, 12, 3, 12, 24, 19).timestamp()
    assert line_time("no time in this line") is None


def test_cold_start_phases_follow_the_milestones_in_order():
    first, second, third = (phase for phase, _, _ in MILESTONES[:3])
    assert phases(0.0, {first: 10.0, third: 25.0}) == [(first, 0.0, 10.0), (third, 10.0, 15.0)]
    # vLLM's whole seconds can fall before the line before them: a phase never lasts less than nothing
    assert phases(0.0, {first: 10.0, second: 9.0}) == [(first, 0.0, 10.0), (second, 10.0, 0.0)]


def test_the_autoscalers_refusal_is_read_from_its_log_with_a_tab_after_the_time(tmp_path, monkeypatch):
    import wait_for_model

    monkeypatch.setattr(wait_for_model, "LOGS", str(tmp_path))
    request = "{'CPU': 1.0, 'accelerator_type:A100-40G': 0.001}"
    (tmp_path / "monitor.log").write_text(
        "2026-12-03 12:00:04,001\tINFO autoscaler.py:1 -- Resized to 4 CPUs.\n"
        f"2026-12-03 12:00:05,123\tWARNING resource_demand_scheduler.py:1 -- The autoscaler could not find a node "
        f"type to satisfy the request: No available node types can fulfill resource request {request}.\n"
    )
    deployed = time.mktime(time.strptime("2026-12-03 12:00:00", "%Y-%m-%d %H:%M:%S"))
    assert wait_for_model.autoscaler_refused(since=deployed) == [{"CPU": 1.0, "accelerator_type:A100-40G": 0.001}]
    assert wait_for_model.autoscaler_refused(since=deployed + 60) == []  # an earlier deployment's refusal


def test_a_failed_replica_start_is_read_from_the_controllers_log(tmp_path, monkeypatch):
    """Serve's status says "A replica failed to start" only until a slow retry replaces the message; the controller's
    log keeps it (a fresh-clone CI run missed the status message)."""
    import wait_for_model

    monkeypatch.setattr(wait_for_model, "LOGS", str(tmp_path))
    (tmp_path / "serve").mkdir()
    (tmp_path / "serve" / "controller_22985.log").write_text(
        "INFO 2026-12-03 13:15:00,001 controller 22985 -- Deploying new version of Deployment(name='LLMServer').\n"
        "ERROR 2026-12-03 13:18:10,904 controller 22985 -- Exception in Replica(id='3ng7mj7m', "
        "deployment='LLMServer:no-engine', app='no-engine'), the replica will be stopped.\n"
    )
    deployed = time.mktime(time.strptime("2026-12-03 13:15:00", "%Y-%m-%d %H:%M:%S"))
    assert wait_for_model.replica_start_failed("no-engine", since=deployed)
    assert not wait_for_model.replica_start_failed("default", since=deployed)  # another application
    assert not wait_for_model.replica_start_failed("no-engine", since=deployed + 600)  # an earlier deployment's
