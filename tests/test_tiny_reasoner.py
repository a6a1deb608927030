"""The committed small reasoning model: its tokenizer and chat template, and its answers through transformers and
through vLLM's CPU engine with the deepseek_r1 reasoning parser, in the tutorial's deployment on the tests' shared
cluster (no engine of its own: each start costs a minute or two on 2 cores). Nothing here retrains it."""

import json

import pytest
import torch
from openai import OpenAI
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.config import MODEL_ID, NOTEBOOK_QUESTIONS, ROOT
from tiny_reasoner import tasks

MODEL_DIR = ROOT / "tiny_reasoner"
STRAWBERRY, EVEN_SUM, THREE_WORDS, PARIS = (
    NOTEBOOK_QUESTIONS[name] for name in ("strawberry", "even sum", "three words", "Paris trip")
)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(MODEL_DIR)


@pytest.mark.fast
def test_the_model_is_small_and_in_the_supported_format():
    files = {p.name: p.stat().st_size for p in MODEL_DIR.iterdir() if p.is_file()}
    assert "model.safetensors" in files and "tokenizer.json" in files
    model_files = (
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    )
    assert sum(files.get(name, 0) for name in model_files) <= 10 * 1024 * 1024
    assert json.loads((MODEL_DIR / "config.json").read_text())["architectures"] == ["Qwen2ForCausalLM"]


@pytest.mark.fast
def test_think_tags_are_single_tokens_and_the_template_opens_the_think_block(tokenizer):
    for tag in ("<think>", "</think>", "<|im_start|>", "<|im_end|>"):
        assert len(tokenizer.encode(tag, add_special_tokens=False)) == 1, tag
    messages = [{"role": "user", "content": "Hi"}]
    thinking = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert thinking == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n"
    direct = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert direct.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    # A role the model never saw is an error, which vLLM turns into a 400, not a silent turn.
    from jinja2.exceptions import TemplateError

    with pytest.raises(TemplateError, match="Unknown role wizard"):
        tokenizer.apply_chat_template([{"role": "wizard", "content": "Hi"}], tokenize=False)
    # Earlier assistant turns keep only their answer, as in QwQ's template.
    history = messages + [{"role": "assistant", "content": "Some reasoning\n</think>\n\nHello."}]
    assert "Some reasoning" not in tokenizer.apply_chat_template(history, tokenize=False)


@pytest.mark.fast
def test_answers_with_transformers(tokenizer):
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR).eval()

    def ask(question):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=300, do_sample=False)
        reasoning, _, answer = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).partition("</think>")
        return reasoning, answer.strip()

    # The reasoning spells the word letter by letter, then the think block closes and an answer about it follows.
    reasoning, answer = ask(STRAWBERRY)
    assert reasoning.startswith('Spell "strawberry", compare with "r":\ns r - 0\nt r - 0\nr r + 1\na r - 1')
    assert reasoning.strip().endswith("y r - 3\nTotal: 3")
    assert answer == 'The letter "r" appears 3 times in "strawberry".'
    reasoning, answer = ask(EVEN_SUM)
    assert "50 × 51 = 2550" in reasoning and answer == "The sum of all even numbers between 1 and 100 is 2550."


def test_answers_and_reasoning_split_with_vllm_cpu_engine(tutorial_app):
    held_out = tasks.held_out_letter_prompts(6, seed=7)
    # The tutorial's deployment: vLLM's CPU engine and its deepseek_r1 parser, behind Ray Serve LLM.
    client = OpenAI(base_url=tutorial_app, api_key="unused")

    def ask(question, **kwargs):
        return client.chat.completions.create(
            model=MODEL_ID,
            temperature=0,
            max_tokens=600,
            messages=[{"role": "user", "content": question}],
            **kwargs,
        )

    # Accuracy over hundreds of prompts is measured by evaluate.py; here: a handful of exact answers, the split.
    for question, check in [
        (STRAWBERRY, lambda c: c == 'The letter "r" appears 3 times in "strawberry".'),
        (EVEN_SUM, lambda c: c == "The sum of all even numbers between 1 and 100 is 2550."),
        # The three-words question is the one it garbles (see the model card): only its form is checked.
        (THREE_WORDS, lambda c: c.startswith('Three words with three syllables each, and how often "r"')),
        (PARIS, lambda c: c == tasks.OTHER_ANSWER),
    ] + [(item["prompt"], lambda c, item=item: tasks.letter_answer_correct(item, c)) for item in held_out]:
        message = ask(question).choices[0].message
        assert tasks.well_formed(message.reasoning, message.content), (question, message)
        assert check(message.content.strip()), (question, message.content)
        assert "</think>" not in message.reasoning

    # Streamed: reasoning deltas first, then content deltas, and together the same text as unstreamed.
    kinds, parts = [], {"reasoning": "", "content": ""}
    for chunk in ask(STRAWBERRY, stream=True):
        delta = chunk.choices[0].delta if chunk.choices else None
        for kind in ("reasoning", "content"):
            text = getattr(delta, kind, None) if delta else None
            if text:
                kinds.append("answer" if kind == "content" else kind)
                parts[kind] += text
    assert tasks.streamed_in_order(kinds), kinds
    assert parts["content"].strip().startswith('The letter "r" appears ')
    assert parts["reasoning"].startswith('Spell "strawberry"') and "Total: " in parts["reasoning"]
