"""A model of QwQ-32B's shape, for measuring the production configuration without its weights.

    python -m benchmark.production_shape /tmp/qwq-32b-shape --tensor-parallel-size 2

writes a model folder (QwQ-32B's config.json with the small model's tokenizer, no weights) and, beside it,
`<folder>.yaml`: serve_qwq_32b.yaml's application for that folder, with `load_format: dummy` (vLLM fills the weights
with random numbers, so each token costs what it costs QwQ-32B; only the words are noise), the given tensor
parallelism, and no `accelerator_type` (the measuring machine has its own). Nothing here is committed but this script.

QwQ-32B's architecture, from its published config.json (https://huggingface.co/Qwen/QwQ-32B/blob/main/config.json,
checked field by field against Lightning-AI/litgpt's `qwq` config, which cites it, against Qwen2.5-32B's config.json,
which QwQ-32B is trained from, and against the model card: 64 layers, 40 query and 8 key/value heads):
max_position_embeddings was 131072 at the first upload and 40960 since commit 2d67d9d ("update README & config";
QwenLM/QwQ issue 26); either is above the tutorial's max_model_len of 32768.

The small model's tokenizer has 288 tokens where QwQ's has 152064 (padded). That shrinks the embedding and the output
layer from 152064 × 5120 to 288 × 5120: 1.56 of the 64.0 GFLOP that QwQ-32B computes per token (2.4%), and 3.1 of its
65.5 GB of weights. Everything else (attention, MLP, KV cache) is QwQ-32B's.
"""

import argparse
import json
import shutil
from pathlib import Path

import yaml

from harness.config import QWQ_CONFIG, ROOT, llm_config, load

TINY = ROOT / "tiny_reasoner"

QWQ_32B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 5120,
    "intermediate_size": 27648,
    "num_hidden_layers": 64,
    "num_attention_heads": 40,  # head_dim 5120 / 40 = 128
    "num_key_value_heads": 8,
    "max_position_embeddings": 40960,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-05,
    "hidden_act": "silu",
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "tie_word_embeddings": False,
    "use_sliding_window": False,
    "sliding_window": 32768,
    "max_window_layers": 64,
    "use_cache": True,
    "torch_dtype": "bfloat16",
    "vocab_size": 152064,
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


def write_model(folder):
    """QwQ-32B's config with the small model's tokenizer (its vocabulary size and special token ids)."""
    folder.mkdir(parents=True, exist_ok=True)
    tiny = json.loads((TINY / "config.json").read_text())
    config = {**QWQ_32B, **{key: tiny[key] for key in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")}}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in TOKENIZER_FILES:
        shutil.copy(TINY / name, folder / name)


def write_serve_config(folder, tensor_parallel_size):
    """serve_qwq_32b.yaml, for the folder: the same application and engine arguments, dummy weights."""
    config = load(QWQ_CONFIG)
    llm = llm_config(config)
    llm["model_loading_config"]["model_source"] = str(folder)
    llm.pop("accelerator_type", None)
    llm["engine_kwargs"].update(tensor_parallel_size=tensor_parallel_size, load_format="dummy")
    path = folder.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--tensor-parallel-size", type=int, default=2)
    args = parser.parse_args()
    write_model(args.folder.resolve())
    print(f"wrote {args.folder}/ and {write_serve_config(args.folder.resolve(), args.tensor_parallel_size)}")


if __name__ == "__main__":
    main()
