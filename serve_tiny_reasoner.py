import os

from ray.serve.llm import LLMConfig, build_openai_app

ON_CPU = os.environ.get("TUTORIAL_DEVICE", "cpu") == "cpu"  # else one GPU, of whatever type the node has

llm_config = LLMConfig(
    model_loading_config=dict(
        model_id="tiny-reasoner",
        model_source=os.path.abspath("tiny_reasoner"),  # the model folder of this repository
    ),
    accelerator_config=dict(kind="cpu") if ON_CPU else None,  # vLLM's CPU engine
    deployment_config=dict(
        autoscaling_config=dict(min_replicas=1, max_replicas=1),
    ),
    runtime_env=dict(
        env_vars={
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),  # the KV cache, in GiB
            "VLLM_USE_AOT_COMPILE": "0",  # a compile cache that the CPU engine can load again (see below)
        }
    )
    if ON_CPU
    else None,
    engine_kwargs=dict(
        max_model_len=1024,
        reasoning_parser="deepseek_r1",  # the same parser as for QwQ
    ),
)

app = build_openai_app({"llm_configs": [llm_config]})
