"""Follow README.md as a reader in a terminal does: its shell blocks from "Deploy locally" to "Shut down", in order,
in one plain bash (no Jupyter, no notebook variables), checking that each block prints what the README shows.

    python3 ci/follow_readme.py            # exit 1 at the first block that fails, or prints other than shown
    python3 ci/follow_readme.py --record   # run them, and write what they printed into the notebook's output cells

The blocks run under `set -euo pipefail`: a failing command, or a variable that only the notebook sets, stops the
run at that block. A ```text block after a ```bash block is what that block printed; "the same" means line by line,
once numbers and hex ids (times, process ids, request ids, token counts) are set aside. quickstart.sh is these same
blocks (ci/generate.py writes it with quickstart_script()). Needs only Python's standard library.
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRST_SECTION, LAST_SECTION = "Deploy locally", "Shut down"
# Stops what the blocks started when one of them fails (after "Shut down", there is nothing left to stop).
CLEANUP = (
    "trap 'status=$?; set +e; serve shutdown -y &>/dev/null; python local_cluster.py stop &>/dev/null; exit $status'"
    " EXIT"
)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)


def fenced_blocks(text):
    """Every fenced block of `text`, also one indented in a list item (less its indent): [(language, body, the line
    under the block)]."""
    found = re.finditer(r"^( *)```(\w*)\n(.*?)^\1```\n *([^\n]*)", text, re.MULTILINE | re.DOTALL)
    return [(m[2], re.sub(rf"^{m[1]}", "", m[3], flags=re.MULTILINE), m[4]) for m in found]


def path_blocks(readme):
    """The main path's shell blocks, in order: [(command, the output shown after it, or None)]."""
    start = re.search(rf"^## {re.escape(FIRST_SECTION)}$", readme, re.MULTILINE)
    last = re.search(rf"^## {re.escape(LAST_SECTION)}$", readme, re.MULTILINE)
    assert start and last, f'README.md has no "## {FIRST_SECTION}" or "## {LAST_SECTION}" section'
    after_last = re.search(r"^## ", readme[last.end() :], re.MULTILINE)
    path = readme[start.start() : last.end() + (after_last.start() if after_last else len(readme))]
    blocks = []
    for fence in FENCE.finditer(path):
        language, body = fence.groups()
        if language == "bash":
            blocks.append([body, None])
        elif language == "text" and blocks and blocks[-1][1] is None:
            blocks[-1][1] = body
    return [tuple(block) for block in blocks]


def quickstart_script(readme):
    commands = "\n".join(command for command, _ in path_blocks(readme))
    return f"""#!/usr/bin/env bash
# The tutorial's main path in one command: README.md's shell blocks from "{FIRST_SECTION}" to "{LAST_SECTION}", in
# order, as a reader pastes them. Generated from notebook.ipynb by ci/generate.py; do not edit.
#
#   bash quickstart.sh                           # the small model on this CPU
#   TUTORIAL_DEVICE=one-gpu bash quickstart.sh   # the small model on one GPU (gpu: QwQ-32B on 8 GPUs)
set -euo pipefail
cd "$(dirname "$0")"
{CLEANUP}

{commands}"""


COLOUR_CODES = re.compile(r"\x1b\[[0-9;]*m")  # the README shows plain text


def shape(text):
    """Lines without their numbers and hex ids, and without colour codes or trailing blanks."""
    text = COLOUR_CODES.sub("", text)
    text = re.sub(r"[0-9a-f]{8,}(-[0-9a-f]{4,})*", "<id>", text)
    text = re.sub(r"\d+(\.\d+)?", "<n>", text)
    return [line.rstrip() for line in text.strip("\n").splitlines()]


def run(blocks, cwd=ROOT):
    """Run the blocks in one bash; return what each block printed (None for those that never started), and bash's
    exit status."""
    with tempfile.TemporaryDirectory() as folder:
        script = ["set -euo pipefail", CLEANUP]
        for number, (command, _) in enumerate(blocks):
            block_file = Path(folder) / f"block{number}.sh"
            block_file.write_text(command)
            script += [f"printf '\\n@@block {number}\\n'", f"source {block_file}"]
        script.append("printf '\\n@@end\\n'")
        bash = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-c", "\n".join(script)], cwd=cwd, stdout=subprocess.PIPE, text=True
        )
        printed, current = [None] * len(blocks), None
        for line in bash.stdout:
            marker = re.fullmatch(r"@@(block (\d+)|end)\n", line)
            if marker:
                current = int(marker.group(2)) if marker.group(2) else None
                if current is not None:
                    printed[current] = ""
                    print(f"$ # README block {current + 1} of {len(blocks)}", flush=True)
                continue
            if current is not None:
                printed[current] += line
            print(line, end="", flush=True)
        status = bash.wait()
    # What a block printed before the next marker, less the newline that the marker put before itself.
    return [text[:-1] if text and text.endswith("\n\n") else text for text in printed], status


def check(blocks, printed, status):
    """The problems: a block that failed, and a block that printed other than the README shows."""
    if status != 0:
        failed = max([i for i, text in enumerate(printed) if text is not None] or [0])
        return [f"README block {failed + 1} failed (bash exit status {status}):\n{blocks[failed][0]}"]
    problems = []
    for number, ((command, shown), text) in enumerate(zip(blocks, printed)):
        if shown is not None and shape(shown) != shape(text):
            problems.append(
                f"README block {number + 1} printed other than the README shows:\n{command}\n"
                f"--- shown\n{shown}--- printed\n{text}"
            )
    return problems


def record(printed_outputs):
    """Write what the blocks printed into the notebook's output cells (markdown cells tagged "output"), in order."""
    notebook_path = ROOT / "notebook.ipynb"
    notebook = json.loads(notebook_path.read_text())
    cells = [cell for cell in notebook["cells"] if "output" in cell["metadata"].get("tags", [])]
    assert len(cells) == len(printed_outputs), f"{len(cells)} output cells, {len(printed_outputs)} outputs"
    for cell, text in zip(cells, printed_outputs):
        text = COLOUR_CODES.sub("", text)
        cell["source"] = ("```text\n" + text.rstrip("\n") + "\n```").splitlines(True)
    notebook_path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true", help="write the outputs into the notebook's output cells")
    args = parser.parse_args()
    blocks = path_blocks((ROOT / "README.md").read_text())
    printed, status = run(blocks)
    if args.record:
        if status != 0:
            print("\n".join(check(blocks, printed, status)))
            return 1
        record([text for (_, shown), text in zip(blocks, printed) if shown is not None])
        print("recorded; now run: python ci/generate.py")
        return 0
    problems = check(blocks, printed, status)
    print("\n\n".join(problems) or f"README.md: all {len(blocks)} shell blocks ran and printed what it shows")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
