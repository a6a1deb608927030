"""README.md and the scripts beside the notebook are generated from it; they must not drift."""

import json
import re
import subprocess
import sys

import pytest

from ci import generate
from ci.generate import expected_files  # the generator's own list of files it writes
from harness import results as committed
from harness.config import CPU_CONFIG, ROOT, llm_config

pytestmark = pytest.mark.fast  # no Ray


def published():
    """What a reader reads: README.md and the measurements it links to (benchmark/README.md), both generated."""
    return (ROOT / "README.md").read_text() + (ROOT / generate.MEASUREMENTS).read_text()


def test_readme_and_scripts_match_the_notebook():
    check = subprocess.run([sys.executable, "ci/generate.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_an_edit_to_the_notebook_is_caught(tmp_path):
    """Change one word of a markdown cell without regenerating: the check must fail and name README.md; regenerating
    mends it. (The check's command line is the test above; this calls the same function in this process.)"""
    for name in ["notebook.ipynb", *expected_files()]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    notebook = json.loads((tmp_path / "notebook.ipynb").read_text())
    cell = next(c for c in notebook["cells"] if c["cell_type"] == "markdown")
    cell["source"] = "".join(cell["source"]).replace("reasoning", "thinking", 1)
    (tmp_path / "notebook.ipynb").write_text(json.dumps(notebook, indent=1))

    assert generate.sync(tmp_path, check=True) == ["README.md"]
    assert generate.sync(tmp_path) == ["README.md"]
    assert generate.sync(tmp_path, check=True) == []


def test_the_numbers_quoted_for_the_small_model_are_the_measured_ones():
    """The notebook and the model card quote tiny_reasoner/eval_results.json, which evaluate.py writes."""
    from tiny_reasoner.evaluate import thinking_table

    report = json.loads((ROOT / "tiny_reasoner" / "eval_results.json").read_text())
    readme, card = published(), (ROOT / "tiny_reasoner" / "README.md").read_text()
    assert thinking_table(report) in readme
    assert thinking_table(report) in card
    letters_on, letters_off = report["thinking_on"]["letters"], report["thinking_off"]["letters"]
    for number in (f"{letters_on['correct']:.1%}", f"{letters_off['correct']:.1%}"):
        assert number in readme and number in card, number


def test_the_tests_and_the_benchmark_start_ray_with_tutorial_env_sh():
    """tutorial_env.sh's settings for Ray (token, loopback, direct streaming) are what the tests and the benchmark
    use (TUTORIAL_RAY_ENV), and it picks each mode's application, config file and model."""
    from harness.servers import TUTORIAL_RAY_ENV

    def sourced(device):
        run = subprocess.run(
            ["bash", "-c", "source tutorial_env.sh && env"],
            cwd=ROOT,
            env={"PATH": "/usr/bin:/bin", **({"TUTORIAL_DEVICE": device} if device else {})},
            capture_output=True,
            text=True,
        )
        return run.returncode, dict(line.split("=", 1) for line in run.stdout.splitlines()), run.stderr

    status, env, _ = sourced(None)
    # The same settings, none more: every RAY_ variable that tutorial_env.sh exports is one the tests use too.
    assert status == 0 and {name: value for name, value in env.items() if name.startswith("RAY_")} == TUTORIAL_RAY_ENV
    assert env["TUTORIAL_DEVICE"] == "cpu" and env["SERVE_CONFIG"] == CPU_CONFIG.name
    assert sourced("one-gpu")[1]["SERVE_CONFIG"] == "serve_tiny_reasoner_gpu.yaml"
    assert sourced("gpu")[1]["SERVE_APP"] == "serve_qwq_32b:app" and sourced("gpu")[1]["MODEL_ID"] == "my-qwq-32B"
    status, _, error = sourced("tpu")
    assert status != 0 and "must be cpu, one-gpu or gpu" in error


def test_the_benchmark_tables_in_the_notebook_are_the_measured_ones():
    """The notebook quotes benchmark/results/, which `python -m benchmark --side-by-side --out ...` wrote."""
    from harness.report import cpu_table, questions_table, summary_table

    results = committed.read("cpu")
    readme = published()
    assert summary_table(results, results["concurrency"]) in readme
    assert cpu_table(results, 16) in readme
    assert questions_table(results, ["bare vLLM", "tutorial: direct streaming"]) in readme
    assert (ROOT / "benchmark" / "results" / "cpu.png").stat().st_size > 10_000


def test_the_peer_check_in_the_notebook_is_the_measured_one_and_the_clients_agree():
    """The notebook quotes benchmark/results/peer_check.json, which `python -m benchmark.peer_check` wrote: our load
    generator and vLLM's benchmark client within 20% of each other at c=1 and c=16, on the CPU machine."""
    from benchmark.peer_check import table

    results = committed.read("peer_check")
    assert table(results) in published()
    assert results["machine"]["gpus"] == [] and set(results["concurrency"]) == {"1", "16"}
    for numbers in results["concurrency"].values():
        assert all(abs(difference) <= 0.20 for difference in numbers["difference"].values()), numbers


def test_the_one_gpu_table_in_the_notebook_is_the_measured_one():
    """The notebook quotes benchmark/results/one_gpu.json, which `bash benchmark/run_on_gpu.sh one-gpu` wrote."""
    from harness.report import questions_table, summary_table

    results = committed.read("one_gpu")
    readme = published()
    # requirements-gpu.txt's versions, and all three servers measured in that one run (one machine, one client)
    assert results["machine"]["gpus"] == ["NVIDIA H200"]
    assert (results["machine"]["ray"], results["machine"]["vllm"]) == ("2.60.0", "0.29.0")
    assert set(results["servers"]) == {
        "bare vLLM",
        "tutorial: direct streaming",
        "standard ingress, stream batching 50 ms (default)",
    }
    assert summary_table(results, results["concurrency"]) in readme
    assert questions_table(results, list(results["servers"])) in readme


def test_the_gpu_plots_are_drawn_from_their_results_files(tmp_path):
    from harness.report import GPU_PLOTS, write_gpu_plots

    write_gpu_plots(tmp_path)
    for name in GPU_PLOTS:
        assert (tmp_path / f"{name}.png").read_bytes() == (ROOT / "benchmark/results" / f"{name}.png").read_bytes()
        assert f"](benchmark/results/{name}.png)" in (ROOT / "README.md").read_text()


def test_the_production_shape_table_in_the_notebook_is_the_measured_one():
    """The notebook quotes benchmark/results/production_tp1.json, which `TENSOR_PARALLEL_SIZE=1 bash
    benchmark/run_on_gpu.sh production` wrote: QwQ-32B's shape with the tutorial's engine arguments, three servers."""
    from harness.report import long_output_table

    results = committed.read("production_tp1")
    engine = llm_config(results["config"])["engine_kwargs"]
    assert engine == {
        "tensor_parallel_size": 1,
        "max_model_len": 32768,
        "reasoning_parser": "deepseek_r1",
        "load_format": "dummy",
    }
    assert results["machine"]["gpus"] == ["NVIDIA H200"] and results["max_tokens"] == 2000 and results["ignore_eos"]
    servers = results["servers"]
    assert set(servers) == {
        "bare vLLM",
        "tutorial: direct streaming",
        "standard ingress, stream batching 50 ms (default)",
    }
    assert all(r["ok"] == r["requests"] for server in servers.values() for r in server["runs"])
    readme = " ".join(published().split())
    assert " ".join(long_output_table(results).split()) in readme
    capacity = " and ".join(f'"{line}"' for line in servers["bare vLLM"]["kv_cache"])
    assert "281,216 tokens" in capacity and f"from bare vLLM's engine (kept in the JSON): {capacity}." in readme


def test_the_cold_start_table_in_the_notebook_is_the_measured_one():
    """The notebook quotes benchmark/results/cold_start.json, which `python -m benchmark.cold_start` wrote."""
    from benchmark.cold_start import table

    results = committed.read("cold_start")
    assert table(results) in published()
    assert (ROOT / "benchmark" / "results" / "cold_start.png").stat().st_size > 10_000
    # And the price of compiling: tokens/s with and without (the mean of the repeats).
    speed = committed.read("cpu_compiled_vs_eager")

    def tokens_per_s(engine, concurrency):
        (server,) = speed[engine]["servers"].values()
        runs = [r["output_tokens_per_s"] for r in server["runs"] if r["concurrency"] == concurrency]
        return f"{sum(runs) / len(runs):.0f}"

    readme = " ".join(published().split())
    assert (
        f"made {tokens_per_s('compiled', 1)} tokens/s compiled and {tokens_per_s('enforce_eager', 1)} eager at "
        f"concurrency 1, {tokens_per_s('compiled', 16)} and {tokens_per_s('enforce_eager', 16)} at 16"
    ) in readme


def test_the_scale_up_in_the_notebook_is_the_measured_one():
    """The notebook quotes benchmark/results/scale_up.json, which `python -m benchmark.scale_up` wrote."""
    from benchmark.scale_up import scaled_config, table

    results = committed.read("scale_up")
    decided, started, _ = results["seconds_after_the_load_started"].values()
    readme = published()
    assert table(results) in readme
    assert (
        f"Serve added the replica {decided} s after the load began: it averages the load over `look_back_period_s` "
        f"(30 s) and waits `upscale_delay_s` (30 s) before it acts. The new replica's cold start then took "
        f"{started - decided:.0f} s, on the same two cores as the first replica, which served the load meanwhile: "
        f"{results['requests']['ok']} streams ended, {results['requests']['failed']} failed."
    ) in " ".join(readme.split())
    assert results["autoscaling_config"] == scaled_config()[1]  # measured with the QwQ app's autoscaling as it is


def test_the_node_loss_in_the_notebook_is_the_measured_one():
    """The notebook quotes benchmark/results/node_loss.json, which `python -m benchmark.node_loss` wrote."""
    from benchmark.node_loss import outcome, table

    results = committed.read("node_loss")
    readme = published()
    assert table(results) in readme
    assert outcome(results) in " ".join(readme.split())


def test_the_speculative_decoding_tables_are_the_measured_ones():
    """The notebook's tables are benchmark.speculative.table() of the two GPU leases' and the CPU run's results."""
    from benchmark.speculative import table

    readme = published()
    for name in ("speculative_gpu", "speculative_gpu_ablations", "speculative_cpu"):
        results = committed.read(name)
        assert table(results) in readme, name
        assert all(
            row["answers"]["identical_to_none"] == row["answers"]["questions"] for row in results["rows"].values()
        )


def test_the_resumed_stream_in_the_notebook_is_the_measured_one():
    """The notebook shows benchmark/results/resumed_stream.json, the output of tests/test_resume.py's run."""
    results = committed.read("resumed_stream")
    readme = published()
    assert "```text\n" + results["output"].rstrip("\n") + "\n```" in readme
    assert f"on {results['stall_s']} s after the kill" in " ".join(readme.split())
    assert f"{results['killed_after_bytes']} bytes into the output" in " ".join(readme.split())


def test_the_node_loss_with_the_tutorials_client_is_the_measured_one():
    """benchmark/results/node_loss_chains.json (`--client both`): the notebook quotes it, and in it no chain of the
    resuming client was lost, each with the right answer and the text of an uninterrupted run."""
    from harness import chains

    results = committed.read("node_loss_chains")
    assert chains.outcome(results) in " ".join(published().split())
    resuming = [c for c in results["in_flight_chains"] if c["client"] == "resuming"]
    assert any(c["breaks"] for c in resuming)  # some were on the node that died
    assert all(c["finished"] and c["correct"] and c["same_as_uninterrupted"] for c in resuming), resuming


def test_the_long_chains_in_the_notebook_are_the_measured_ones():
    """The notebook quotes benchmark/results/long_chains.json, which `python -m benchmark.long_chains` wrote, measured
    with the deployment options that serve_qwq_32b.yaml has now and the HAProxy settings of tutorial_env.sh."""
    from benchmark.long_chains import deployment_config, haproxy_env, outcome, table
    from harness.config import llm_config

    results = committed.read("long_chains")
    readme = published()
    assert table(results) in readme
    assert outcome(results) in " ".join(readme.split())
    for settings, run in results["runs"].items():
        assert run["deployment_config"] == llm_config(deployment_config(settings, 2))["deployment_config"]
        env = haproxy_env(settings)
        assert str(run["haproxy_hard_stop_after_s"]) == env["RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S"]
        assert run["min_draining_period_s"] == float(env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"])


def test_the_thinking_budget_curve_is_the_measured_one():
    """The notebook's budget table and plot are benchmark.thinking_budget's run, and the budgets it names per task kind
    are the smallest measured within 1 point of unlimited thinking."""
    from benchmark.thinking_budget import smallest_budget_within, table

    results = committed.read("thinking_budget")
    readme = published()
    assert table(results) in readme
    assert (
        "](results/thinking_budget.png)" in (ROOT / generate.MEASUREMENTS).read_text()
        and (ROOT / "benchmark/results/thinking_budget.png").exists()
    )
    for family, budget in results["smallest_budget_within_1_point"].items():
        assert budget == smallest_budget_within(results, family)
        assert f"{family}: {budget} tokens" in " ".join(readme.split()), family


def test_the_goodput_sweep_is_the_measured_one_and_agrees_with_vllm():
    from benchmark.goodput import table

    results = committed.read("goodput")
    readme = published()
    assert table(results) in readme
    tolerance = results["settings"]["tolerance"]
    assert all(abs(row["ttft_goodput_difference"]) <= tolerance for row in results["rates"].values())
    assert f"{results['sustained_rate']:g} requests per second" in " ".join(readme.split())


def test_output_cells_hold_only_what_a_block_printed():
    """`ci/follow_readme.py --record` rewrites each markdown cell tagged "output" with what its block printed; any
    prose in such a cell would be lost, so it lives in a cell of its own."""

    notebook = json.loads((ROOT / "notebook.ipynb").read_text())
    outputs = [c for c in notebook["cells"] if "output" in c["metadata"].get("tags", [])]
    assert outputs
    for cell in outputs:
        one_block = r"```text\n(?:(?!\n```).)*\n```\n?"  # one text block, and nothing after it
        assert re.fullmatch(one_block, "".join(cell["source"]), re.S), "".join(cell["source"])[-200:]
