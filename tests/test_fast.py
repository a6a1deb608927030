"""The pure parts, without Ray or an engine: they run first and finish in seconds (`python -m pytest -m fast`), so a
change is checked before the end-to-end tests start."""

import json
import re
import subprocess
import sys
import time
from datetime import datetime

import pytest

from benchmark.peer_check import compare
from harness import report
from harness.config import CPU_CONFIG, PORTS, QWQ_CONFIG, ROOT, engine_cli_args, llm_config, load
from harness.load import arrival_times, broken
from harness.logs import MILESTONES, line_time, phases
from harness.results import machine
from harness.stats import mismatches, percentiles, summarize
from tests.plugin import files_containing

pytestmark = pytest.mark.fast


def test_percentiles_take_the_value_at_each_rank_and_skip_missing_ones():
    assert percentiles(list(range(1, 101))) == {"p50": 51, "p90": 91, "p99": 100}
    assert percentiles([None, 3.0]) == {"p50": 3.0, "p90": 3.0, "p99": 3.0}
    assert percentiles([None]) == {"p50": None, "p90": None, "p99": None}


def test_bare_vllm_gets_the_config_files_engine_arguments_as_flags():
    config = load(QWQ_CONFIG)
    assert engine_cli_args(config) == [
        *("--tensor-parallel-size", "8", "--max-model-len", "32768"),
        *("--reasoning-parser", "deepseek_r1"),  # from the config, as every other argument
    ]
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


def server_row(ttft_s, ttfo_s, tokens_per_s, concurrency=1, repeats=3):
    run = {"concurrency": concurrency, "ttft_s": {"p50": ttft_s}, "ttfo_s": {"p50": ttfo_s}}
    return {"cold_start_s": 40.0, "runs": [{**run, "output_tokens_per_s": tokens_per_s}] * repeats}


def test_the_summary_table_gives_ratios_to_the_best_bare_vllm_number_of_each_column():
    results = {
        "servers": {
            "bare vLLM": server_row(0.100, 0.400, 400.0),
            "bare vLLM, nice 15": server_row(0.080, 0.500, 500.0),  # best first token and throughput, not answer
            "tutorial": server_row(0.160, 0.600, 250.0),
            "broken": {"error": "did not start"},  # left out
        }
    }
    tutorial = next(line for line in report.summary_table(results, [1]).splitlines() if line.startswith("| tutorial"))
    assert tutorial == "| tutorial | 40 s | 160 ms | 2.00× | 600 ms | 1.50× | 250 | 0.50× |"
    assert "broken" not in report.summary_table(results, [1])


def test_a_stream_that_broke_off_counts_as_a_failed_request_and_ok_means_the_stream_finished():
    class Tokenizer:
        def encode(self, text, add_special_tokens=False):
            return text.split()

    finished = {"status": 200, "ttft": 0.1, "ttfr": 0.1, "ttfo": 0.5, "e2e": 1.0, "completion_tokens": 3}
    finished.update(reasoning="a b", answer="c", chunks=[(0.1, "reasoning"), (0.5, "answer")], done=True)
    cut = {**finished, "done": False}  # HTTP 200, but no [DONE]
    summary = summarize([finished, cut, broken(ConnectionResetError())], wall=2.0, tokenizer=Tokenizer())
    assert (summary["requests"], summary["ok"]) == (3, 1)
    assert summary["ttft_s"]["p50"] == 0.1  # the broken stream has no times to count


def test_merge_refuses_rows_measured_with_other_settings_or_another_machine():
    described = {"machine": machine(), "settings": {"max_tokens": 400, "concurrency": [1, 16]}}
    same = {"machine": described["machine"], "servers": {"bare vLLM": {**described, "runs": []}}}
    assert mismatches(same, described) == []
    other = {"machine": {**described["machine"], "cpus": 64}, "max_tokens": 2000, "concurrency": [1, 16]}
    older = {**other, "servers": {"bare vLLM": {"runs": []}}}  # an older file: its rows carry no description
    assert mismatches(older, described) == [
        "bare vLLM: max_tokens 2000, now 400",
        f"bare vLLM: cpus 64, now {machine()['cpus']}",
    ]


def test_the_peer_check_pools_ttft_over_rounds_and_compares_ours_with_vllms():
    rounds = {
        "vLLM's bench client": [{"ttft_s": [0.1, 0.2, 0.3], "output_tokens_per_s": 100.0}] * 3,
        "our load generator": [{"ttft_s": [0.2, 0.3, 0.4], "output_tokens_per_s": 90.0}] * 3,
    }
    difference = compare(rounds)["difference"]
    assert difference["ttft_p50_s"] == pytest.approx(0.5) and difference["output_tokens_per_s"] == pytest.approx(-0.1)


def test_files_containing_finds_a_secret_and_fails_when_grep_cannot_search(tmp_path):
    (tmp_path / "log.txt").write_text("a line with -secret- in it")
    assert files_containing("-secret-", tmp_path) == [str(tmp_path / "log.txt")]  # a secret that begins with "-"
    assert files_containing("absent", tmp_path) == []
    with pytest.raises(AssertionError):  # grep's exit status 2: not "found nothing"
        files_containing("-secret-", tmp_path / "no such folder")


def test_the_readme_lists_the_ports_the_tests_need_free():
    readme = (ROOT / "README.md").read_text()
    sentence = next(paragraph for paragraph in readme.split("\n\n") if "on the tutorial's ports" in paragraph)
    assert sorted(int(port) for port in re.findall(r"\b\d{4,5}\b", sentence)) == sorted(PORTS)


def test_the_benchmark_fails_when_its_server_does_not_answer(tmp_path):
    """A server that fails is not a row left out of a table while the command exits 0."""
    out = tmp_path / "benchmark.json"
    command = [sys.executable, "-m", "benchmark", "--base-url", "http://127.0.0.1:9/v1", "--out", str(out)]
    run = subprocess.run(
        [*command, "--requests", "2", "--concurrency", "1", "--repeats", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1 and "http://127.0.0.1:9/v1 did not start or answer" in run.stderr, run.stderr[-2000:]
    assert "error" in json.loads(out.read_text())["servers"]["http://127.0.0.1:9/v1"]


def test_an_autoscaler_that_adds_no_node_for_a_waiting_replica_is_read_from_its_latest_report(tmp_path, monkeypatch):
    import wait_for_model

    monkeypatch.setattr(wait_for_model, "LOGS", str(tmp_path))

    def report(time, pending_nodes):
        return (
            f"{time},001\tINFO autoscaler.py:408 -- \n======== Autoscaler status: {time}.001000 ========\n"
            f"Node status\n---\nPending:\n {pending_nodes}\nResources\n---\nPending Demands:\n"
            " {'CPU': 1.0}: 1+ pending tasks/actors\n"
            f"{time},002\tINFO autoscaler.py:469 -- The autoscaler took 0.002 seconds.\n"
        )

    log = tmp_path / "monitor.log"
    deployed = time.mktime(time.strptime("2026-12-06 14:00:00", "%Y-%m-%d %H:%M:%S"))
    log.write_text(
        report("2026-12-06 14:00:30", "cpu-worker, 1 launching") + report("2026-12-06 14:00:35", "(no pending nodes)")
    )
    assert wait_for_model.autoscaler_idle_with({"CPU": 1}, since=deployed)
    assert not wait_for_model.autoscaler_idle_with({"CPU": 2}, since=deployed)  # not what the replica waits for
    assert not wait_for_model.autoscaler_idle_with({"CPU": 1}, since=deployed + 60)  # an earlier deployment's report
    log.write_text(report("2026-12-06 14:00:35", "cpu-worker, 1 launching"))  # a node is on its way
    assert not wait_for_model.autoscaler_idle_with({"CPU": 1}, since=deployed)


def test_the_key_builder_refuses_to_build_an_app_it_cannot_protect(monkeypatch):
    import api_key

    args = {"llm_configs": [llm_config(load(CPU_CONFIG))]}
    monkeypatch.delenv("API_KEY", raising=False)
    with pytest.raises(ValueError, match="API_KEY is not set"):
        api_key.build_openai_app(args)
    monkeypatch.setenv("API_KEY", "-a-key")
    with pytest.raises(ValueError, match="sets the ingress class itself"):
        api_key.build_openai_app({**args, "ingress_cls_config": {"ingress_cls": "api_key:ApiKeyIngress"}})


def test_a_resumed_chain_is_rendered_as_the_original_prompt_plus_the_chain_so_far():
    """resumable_stream.py sends the reasoning so far as an assistant message to continue; with the small model's chat
    template that prompt must be the first request's prompt followed by the chain, so that the model writes on."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ROOT / "tiny_reasoner")
    question = [{"role": "user", "content": "How often does s occur in psychoanalyst?"}]
    chain = 'Spell "psychoana'
    first = tokenizer.apply_chat_template(question, tokenize=False, add_generation_prompt=True)
    resumed = tokenizer.apply_chat_template(
        question + [{"role": "assistant", "content": "<think>\n" + chain}],
        tokenize=False,
        add_generation_prompt=False,
        continue_final_message=True,
    )
    assert first.endswith("<think>\n") and resumed == first + chain, (first, resumed)


def test_our_poisson_arrivals_are_the_ones_vllm_bench_serve_draws(monkeypatch):
    """benchmark.goodput compares our client with `vllm bench serve --request-rate --seed` on the same load: the same
    requests at the same moments. vLLM's own scheduler (get_request, seeded as its main() seeds it) runs here on a
    clock that its sleeps advance, so that the moments it sends at are read without waiting for them."""
    import asyncio

    import numpy as np
    from vllm.benchmarks import serve

    clock = [1000.0]

    async def sleep(seconds):
        clock[0] += seconds

    monkeypatch.setattr(serve.time, "time", lambda: clock[0])
    monkeypatch.setattr(serve.asyncio, "sleep", sleep)

    async def vllms_moments(count, rate, seed):
        np.random.seed(seed)
        return [clock[0] - 1000.0 async for _ in serve.get_request(list(range(count)), rate)]

    moments = asyncio.run(vllms_moments(50, 4.0, 3))
    assert arrival_times(50, 4.0, seed=3) == pytest.approx(moments, abs=1e-6)
    assert moments[-1] == pytest.approx(12.5)
    assert arrival_times(3, None) == [0.0, 0.0, 0.0]


EXPERIMENTS = {  # benchmark module: the committed result files that its Settings and harness.results.save wrote
    "cold_start": ["cold_start"],
    "goodput": ["goodput"],
    "long_chains": ["long_chains"],
    "node_loss": ["node_loss", "node_loss_chains"],
    "peer_check": ["peer_check"],
    "scale_up": ["scale_up"],
    "thinking_budget": ["thinking_budget"],
}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_an_experiments_results_carry_its_settings_the_machine_and_the_commit(experiment):
    """harness.results.save's one shape: the experiment's settings (every field of its Settings, nothing else), the
    machine and versions, the date and the commit (those written before that shape: "before <the commit that added
    them>", with the pins and date of that commit)."""
    import dataclasses
    import importlib

    from harness import results

    fields = {field.name for field in dataclasses.fields(importlib.import_module(f"benchmark.{experiment}").Settings)}
    for name in EXPERIMENTS[experiment]:
        record = results.read(name)
        assert set(record["settings"]) == fields, name
        assert set(record["machine"]) == set(machine()) and record["machine"]["ray"], name
        assert re.fullmatch(r"(before )?[0-9a-f]{7,}(\+changes)?", record["commit"]), name
