"""A reasoning-aware serving benchmark: the tutorial's Ray Serve LLM deployment next to bare vLLM.

    python -m benchmark --base-url http://127.0.0.1:8000/v1 --model tiny-reasoner   # an endpoint that is running
    python -m benchmark --side-by-side                                               # starts and stops each server

--side-by-side starts each server in turn (bare vLLM, then Ray Serve LLM variants) with the model and engine
arguments of one Serve config file (--config: serve_tiny_reasoner.yaml by default), gives each the same load, and
stops it again. Results go to bench_results/benchmark.json and .png, or --out. The notebook's section "How fast is
it?" quotes benchmark/results/, which `python -m benchmark --side-by-side --out benchmark/results/cpu.json` wrote.

The parts, all in harness/: load.py sends the streamed requests and times them, measure.py measures one server,
stats.py turns timings into numbers, servers.py starts and stops the servers, report.py writes tables and the plot;
this file is the command line.
"""

import argparse
import copy
import json
import subprocess
from contextlib import nullcontext
from pathlib import Path

import yaml

from harness import report, servers, stats
from harness.config import CPU_CONFIG, MODEL_ID, ROOT, engine_cli_args, engine_env, llm_config
from harness.load import BROKEN, default_prompts
from harness.measure import Load, measure_server, rounded
from harness.results import machine

OUT = ROOT / "bench_results"
BARE_VLLM_LOG = OUT / "bare_vllm.log"  # bare vLLM's server and engine log, read for its KV-cache lines


def variant(config, name, standard_ingress=False, **fields):
    """The Serve config with some LLMConfig fields set, written to bench_results/serve_<name>.yaml.

    standard_ingress: Ray Serve LLM's standard path, where an OpenAI ingress replica (asking for no CPU of its own,
    so that it fits next to the engine on 2 cores) relays the LLM server's stream, in batches."""
    config = copy.deepcopy(config)
    args = config["applications"][0]["args"]
    if standard_ingress:
        args["ingress_deployment_config"] = {"ray_actor_options": {"num_cpus": 0}}
    llm_config(config).update(fields)
    path = OUT / f"serve_{name.replace(' ', '_').replace(',', '')}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def server_registry(config):
    """Every server the side-by-side mode knows, for the model and engine arguments of `config`."""
    model = llm_config(config)["model_loading_config"]
    model_dir = ROOT / model["model_source"] if not Path(model["model_source"]).is_absolute() else model["model_source"]
    bare_args, bare_env = engine_cli_args(config), engine_env(config)

    def start_bare_vllm(
        niceness=0,
    ):  # the engine's variables go to its server only, not to every later process of this one
        return servers.bare_vllm(
            model_dir, model["model_id"], bare_args, BARE_VLLM_LOG, niceness=niceness, env=bare_env
        )

    def start_serve(config_file, env=None):
        return servers.serve_deployment(config_file, env, model=model["model_id"])

    tutorial = variant(config, "tutorial")
    standard = servers.STANDARD_PATH
    return {
        "bare vLLM": lambda: start_bare_vllm(),
        # Ray runs its workers (replicas, engine) at nice 15, below the load generator; this bare server does too.
        "bare vLLM, nice 15": lambda: start_bare_vllm(niceness=15),
        "tutorial: direct streaming": lambda: start_serve(tutorial),
        "standard ingress, stream batching 50 ms (default)": lambda: start_serve(
            variant(config, "standard", True), standard
        ),
        "standard ingress, stream batching 0 ms": lambda: start_serve(
            variant(config, "batching0", True, experimental_configs={"stream_batching_interval_ms": 0}), standard
        ),
        "tutorial, Ray workers not niced": lambda: start_serve(tutorial, {"RAY_worker_niceness": "0"}),
        "tutorial, throughput-optimized Serve": lambda: start_serve(tutorial, {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}),
        "tutorial, no engine metrics": lambda: start_serve(variant(config, "no_metrics", log_engine_metrics=False)),
    }


def kv_cache_capacity(log_path):
    """vLLM's own lines on its KV cache: its size in tokens, and how many requests of max_model_len fit at once."""
    lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    return [line.split("] ", 1)[-1] for line in lines if "KV cache size" in line or "Maximum concurrency" in line]


def main():
    servers.stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default=MODEL_ID, help="the model name clients ask for")
    parser.add_argument("--tokenizer", default=str(ROOT / "tiny_reasoner"), help="counts reasoning/answer tokens")
    parser.add_argument("--side-by-side", action="store_true", help="start each server in turn, same load on each")
    parser.add_argument(
        "--config",
        type=Path,
        default=CPU_CONFIG,
        help="with --side-by-side: the Serve config whose model and engine arguments every server uses",
    )
    parser.add_argument("--servers", nargs="*", help="with --side-by-side: which ones (default: all)")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 16])
    parser.add_argument(
        "--requests", type=int, nargs="*", default=[32], help="requests per run: one number, or one per concurrency"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--ignore-eos", action="store_true", help="every answer exactly --max-tokens long")
    parser.add_argument("--warmup-tokens", type=int, help="max tokens of the warm-up requests (default: --max-tokens)")
    parser.add_argument("--merge", action="store_true", help="keep the servers already in --out, replace those run")
    parser.add_argument("--prompts-file", type=Path, help="one prompt per line, instead of the built-in ones")
    parser.add_argument("--out", type=Path, default=OUT / "benchmark.json")
    args = parser.parse_args()
    if len(args.requests) == 1:
        args.requests = args.requests * len(args.concurrency)
    if len(args.requests) != len(args.concurrency):
        parser.error("--requests takes one number, or one per --concurrency")

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    prompts = args.prompts_file.read_text().splitlines() if args.prompts_file else default_prompts(max(args.requests))
    load = Load(
        args.model,
        [p for p in prompts if p.strip()],
        args.concurrency,
        args.requests,
        args.repeats,
        args.max_tokens,
        {"ignore_eos": True} if args.ignore_eos else None,
        args.warmup_tokens,
    )
    OUT.mkdir(exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {
        "prompts": max(args.requests),
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "ignore_eos": args.ignore_eos,
        "concurrency": args.concurrency,
        "repeats": args.repeats,
    }
    if args.side_by_side:
        config = yaml.safe_load(args.config.read_text())
        load.model = llm_config(config)["model_loading_config"]["model_id"]
        settings["config"] = config
        registry = server_registry(config)
        targets = [(name, registry[name]) for name in (args.servers or registry)]
    else:  # the endpoint at --base-url, already running (its cold start is unknown)
        targets = [(args.base_url, lambda: nullcontext((args.base_url, None)))]
    # Every server's row says how and where it was measured; the file's top level repeats this run's settings.
    described = {"machine": machine(), "settings": settings}
    result = {"machine": described["machine"], **settings, "servers": {}}
    if args.merge and args.out.exists():
        kept = json.loads(args.out.read_text())
        differ = stats.mismatches(kept, described)
        if differ:
            parser.error(f"--merge: {args.out} was measured otherwise ({'; '.join(differ)}); measure all again")
        result["servers"] = kept["servers"]
    failed = []
    for name, start in targets:
        try:
            result["servers"][name] = {**measure_server(start, name, load, tokenizer), **described}
            if name.startswith("bare vLLM"):  # Ray's engines log the same lines in Ray's session logs
                result["servers"][name]["kv_cache"] = kv_cache_capacity(BARE_VLLM_LOG)
        except (RuntimeError, TimeoutError, subprocess.CalledProcessError, *BROKEN) as error:  # the next still runs
            detail = getattr(error, "stderr", None) or ""
            result["servers"][name] = {"error": f"{type(error).__name__}: {error} {detail}"[-2000:], **described}
            failed.append(name)
            print(f"{name}: did not start: {result['servers'][name]['error']}")
    print("\n" + report.summary_table(result, args.concurrency))
    print("\n" + report.questions_table(result))
    for concurrency in args.concurrency:
        print("\n" + report.cpu_table(result, concurrency))
    args.out.write_text(json.dumps(rounded(result), indent=1))
    report.plot(result, args.out.with_suffix(".png"))
    print(f"\nsaved {args.out} and {args.out.with_suffix('.png')}")
    unfinished = {
        name: sum(run["requests"] - run["ok"] for run in result["servers"][name]["runs"])
        for name, _ in targets
        if name not in failed
    }
    problems = [f"{name} did not start or answer (the tables leave it out)" for name in failed]
    problems += [f"{name}: {count} streams did not finish" for name, count in unfinished.items() if count]
    if problems:
        raise SystemExit("; ".join(problems))


if __name__ == "__main__":
    main()
