from ray.serve.llm import LLMConfig, build_openai_app

llm_config = LLMConfig(
    model_loading_config=dict(
        model_id="my-qwq-32B",  # the name clients ask for
        model_source="Qwen/QwQ-32B",  # a Hugging Face repository or a local folder
    ),
    # accelerator_type="H100",  # to pin a GPU type: one that `ray status` lists; left out, any GPU will do
    deployment_config=dict(
        # A second replica when the replicas average more than 16 requests in flight. Set the target: Ray Serve
        # LLM's default is 10^9, and with it the second replica never comes.
        autoscaling_config=dict(min_replicas=1, max_replicas=2, target_ongoing_requests=16),
        graceful_shutdown_timeout_s=900,  # a stopping replica finishes its chains first (Serve's default: 20 s)
        max_ongoing_requests=64,  # chains per replica; 64 more wait at the proxy, the rest get 503 at once
        max_queued_requests=64,
    ),
    engine_kwargs=dict(
        tensor_parallel_size=8,  # shard the weights over the 8 GPUs of a node
        max_model_len=32768,  # room for long chains of thought
        reasoning_parser="deepseek_r1",  # <think>…</think> goes to the `reasoning` field
    ),
)

app = build_openai_app({"llm_configs": [llm_config]})
