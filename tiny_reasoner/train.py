"""Train the tiny reasoning model from scratch, on CPU, and save it (weights, tokenizer, chat template) beside this
file.

    python -m tiny_reasoner.train            # about 27 minutes on 2 CPU cores; seeded, so it is reproducible

The model is a small Qwen2ForCausalLM over bytes: every byte is a token, plus ChatML's special tokens and the added
tokens <think> and </think>. Spelling a word is then a copy task a small transformer can learn, which is what the
letter-counting reasoning needs. The chat template is QwQ's style: the generation prompt opens the think block.
"""

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from tiny_reasoner import tasks

HERE = Path(__file__).resolve().parent
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK_TOKENS = ["<think>", "</think>"]

# QwQ-style template: the generation prompt ends with "<think>\n", so the model's output starts inside its
# reasoning. enable_thinking=False closes an empty think block in the prompt, so the model answers at once.
# Earlier assistant turns keep only their answer, as QwQ's template does. An unknown role is an error (vLLM then
# answers 400), rather than a turn the model has never seen.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{- raise_exception('Unknown role ' ~ message['role'] ~ ': this model knows system, user and assistant.') -}}"
    "{%- endif -%}"
    "{%- set content = message['content'] if message['content'] is string else '' -%}"
    "{%- if message['role'] == 'assistant' and '</think>' in content -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n<think>\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}{{- '\\n</think>\\n\\n' -}}{%- endif -%}"
    "{%- endif -%}"
)


def build_tokenizer():
    """A byte-level BPE tokenizer with no merges: one token per byte, like Qwen2's tokenizer before its merges."""
    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(byte_chars, key=lambda c: ord(c)))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        clean_up_tokenization_spaces=False,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tokenizer.add_tokens(THINK_TOKENS)  # added tokens, not special: they must survive decoding, as in QwQ
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = 1024
    return tokenizer


def render(tokenizer, prompt, reasoning, answer, thinking):
    """Token ids and labels for one conversation; only the assistant's part is learned."""
    prompt_text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True, enable_thinking=thinking
    )
    target = (f"{reasoning}\n</think>\n\n{answer}" if thinking else answer) + "<|im_end|>"
    prompt_ids = tokenizer.encode(prompt_text, add_special_tokens=False)
    target_ids = tokenizer.encode(target, add_special_tokens=False)
    return prompt_ids + target_ids, [-100] * len(prompt_ids) + target_ids


def batches(tokenizer, rng, size, thinking_off_share, group=16):
    """Endless padded batches. Examples are drawn `group` batches at a time and sorted by length, so that short
    examples are not padded to the length of long ones (which would waste half the compute)."""
    while True:
        rows = [
            render(tokenizer, *tasks.training_example(rng), thinking=rng.random() >= thinking_off_share)
            for _ in range(size * group)
        ]
        rows.sort(key=lambda row: len(row[0]))
        chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
        rng.shuffle(chunks)
        for chunk in chunks:
            # Round the width up so that only a few tensor shapes occur: each new shape costs memory in
            # oneDNN's kernel cache, which otherwise grows by gigabytes over a run.
            width = -(-max(len(ids) for ids, _ in chunk) // 32) * 32
            ids = torch.full((size, width), tokenizer.pad_token_id)
            labels = torch.full((size, width), -100)
            for i, (row_ids, row_labels) in enumerate(chunk):
                ids[i, : len(row_ids)] = torch.tensor(row_ids)
                labels[i, : len(row_labels)] = torch.tensor(row_labels)
            yield ids, labels


def save(model, tokenizer, args, seconds):
    args.out.mkdir(parents=True, exist_ok=True)
    model.config.dtype = torch.float32
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    # Greedy decoding by default: vLLM takes its default sampling parameters from this file, and a model this
    # small makes more mistakes when it samples.
    generation = {
        "bos_token_id": model.config.bos_token_id,
        "eos_token_id": model.config.eos_token_id,
        "pad_token_id": model.config.pad_token_id,
        "temperature": 0.0,
    }
    (args.out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"}
    (args.out / "training_args.json").write_text(json.dumps({**settings, "train_seconds": round(seconds)}, indent=2))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2.5e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--thinking-off-share", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    rng = random.Random(args.seed)

    tokenizer = build_tokenizer()
    config = Qwen2Config(
        vocab_size=288,  # 256 bytes + 5 added tokens, rounded up
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=1024,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    model.train()
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, vocab {len(tokenizer)}")

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = 100

    def lr_at(step):
        if step < warmup:
            return args.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))

    start = time.time()
    data = batches(tokenizer, rng, args.batch_size, args.thinking_off_share)
    for step in range(args.steps):
        ids, labels = next(data)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        # bfloat16 matmuls are about 1.5x faster on this CPU; the weights and optimizer stay in float32.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 800 == 799:
            save(model, tokenizer, args, time.time() - start)  # lets a long run be inspected before it ends
        if step % 50 == 0 or step == args.steps - 1:
            print(
                f"step {step:5d}  loss {loss.item():.4f}  lr {lr_at(step):.2e}  {time.time() - start:6.0f}s", flush=True
            )

    save(model, tokenizer, args, time.time() - start)
    print(f"saved to {args.out} after {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
