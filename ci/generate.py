"""Generate README.md and the scripts from notebook.ipynb, or check that they match it.

    python ci/generate.py           # rewrite README.md and every script the notebook shows
    python ci/generate.py --check   # exit 1, with a diff, if any of them differs from what the notebook gives

A code cell whose first line is `%%writefile <name>.py` holds that file (the lines after the magic); a code cell whose
first line is `# <name>.py` is that file, byte for byte, and the notebook runs it in place. (Also .sh and .yaml.)
README.md is the notebook converted by nbconvert (`jupyter nbconvert --to markdown`), under a header that says so,
without the cells tagged `remove_cell` (the notebook's own checks and set-up; nbconvert's TagRemovePreprocessor),
with its code blocks made pasteable outside Jupyter (no `%%bash` line; a written file named in its first line), and
with a link in place of each file cell tagged `readme_link` (the helper scripts, which a reader opens beside it).
The cells tagged `measurements` (the measured reports of the appendices) go to benchmark/README.md instead, with the
links between the two files made to work from where each sits.
quickstart.sh is README.md's shell blocks from "Deploy locally" to "Shut down" (ci/follow_readme.py).
"""

import argparse
import difflib
import re
import sys
from pathlib import Path

import nbformat
from nbconvert import MarkdownExporter
from traitlets.config import Config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: import ci/ as the tests do
from ci.follow_readme import quickstart_script  # noqa: E402

NOTEBOOK = ROOT / "notebook.ipynb"
MEASUREMENTS = "benchmark/README.md"  # the cells tagged `measurements`: the appendices' measured reports
# A cell that writes a file (`%%writefile name`) or runs one and names it in its first line (`# name`).
FILE_CELL = re.compile(r"(%%writefile |# )([\w.-]+\.(?:py|sh|yaml))\n")
README_HEADER = """<!--
This file is generated from notebook.ipynb; do not edit it. Edit the notebook, then regenerate this file and the
scripts the notebook shows with:  python ci/generate.py
-->

"""


MEASUREMENTS_TITLE = """# Deploy a reasoning LLM: the measurements

The measured reports behind [the tutorial](../README.md) (its Appendix B): what the serving layer costs next to bare
vLLM, on 2 CPU cores, on one GPU and at QwQ-32B's size; thinking budgets; and how long chains and a dying node fare.
As in the README, a line under each block says where it ran. This file is generated from the tutorial's notebook.

Each experiment is a module of `benchmark/` with typed settings (`Settings`) and `run(settings)`. Its results file in
`benchmark/results/` begins with those settings, the machine and the versions it ran with, the date and the commit
(`harness/results.py`); a file measured before that shape says `before <commit>`, the commit that added it, with that
commit's pinned versions. The side-by-side and speculative-decoding files, which gather servers from several runs,
keep the settings and the machine per server instead, with no commit; `resumed_stream.json` is a test's output.

"""


def expected_files(notebook_path=NOTEBOOK):
    """{file name: its text} for README.md, quickstart.sh and every file the notebook shows."""
    notebook = nbformat.read(notebook_path, as_version=4)
    files = {}
    for index, cell in enumerate(notebook.cells):
        found = FILE_CELL.match(cell.source) if cell.cell_type == "code" else None
        if found:
            name = found.group(2)
            body = cell.source[found.end() :] if found.group(1) == "%%writefile " else cell.source
            files[name] = body.rstrip("\n") + "\n"
            if "readme_link" in cell.metadata.get("tags", []):  # a helper script: linked, not copied
                link = f"The whole file: [`{name}`]({name}), {files[name].count(chr(10))} lines."
                notebook.cells[index] = nbformat.v4.new_markdown_cell(link)
    readme = markdown(notebook, remove=("remove_cell", "measurements"))
    report = markdown(notebook, remove=("remove_cell",), keep_only="measurements")
    readme, report = cross_link(readme, report)
    files["README.md"] = README_HEADER + readme
    files[MEASUREMENTS] = README_HEADER + MEASUREMENTS_TITLE + report
    files["quickstart.sh"] = quickstart_script(files["README.md"])
    return files


def markdown(notebook, remove, keep_only=None):
    """The notebook as pasteable Markdown (nbconvert's), without the cells tagged with any of `remove`, and with only
    those tagged `keep_only` if given."""
    notebook = nbformat.from_dict(notebook)  # a copy: the cells are filtered, the caller's notebook is not
    if keep_only:
        notebook.cells = [cell for cell in notebook.cells if keep_only in cell.metadata.get("tags", [])]
    config = Config()
    config.TagRemovePreprocessor.remove_cell_tags = remove
    text, _ = MarkdownExporter(config=config).from_notebook_node(notebook)
    return pasteable(text).strip("\n") + "\n"


def anchor(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def cross_link(readme, report):
    """Links that work from where each file sits: the README's links to a section that moved to the measurements
    point there, and the measurements' links (written for the README, at the top) point back up."""
    moved = {anchor(h) for h in re.findall(r"^#+ (.+)$", report, re.M)}
    readme = re.sub(r"\]\(#([^)]+)\)", lambda m: f"]({MEASUREMENTS}#{m[1]})" if m[1] in moved else m[0], readme)

    def from_folder(found):
        target = found[1]
        if target.startswith("#"):
            return found[0] if target[1:] in moved else f"](../README.md{target})"
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            return found[0]
        folder = MEASUREMENTS.rsplit("/", 1)[0] + "/"
        return f"]({target.removeprefix(folder)})" if target.startswith(folder) else f"](../{target})"

    return readme, re.sub(r"\]\(([^)\s]+)\)", from_folder, report)


def pasteable(markdown):
    """Code blocks a reader can paste outside Jupyter: a shell cell without its `%%bash` line, and a cell that writes
    a file as that file, named in its first line (`# name`), in its own language."""
    markdown = markdown.replace("```bash\n%%bash\n", "```bash\n")

    def as_file(found):
        name = found.group(1)
        # A shell script is `sh`: it is a file to read, and ```bash blocks are the commands a reader runs.
        language = {".yaml": "yaml", ".sh": "sh"}.get(Path(name).suffix, "python")
        return f"```{language}\n# {name}\n"

    markdown = re.sub(r"```python\n%%writefile ([\w.-]+)\n", as_file, markdown)
    # A block's mark of where it ran (◆ ○ ◇, from a cell of its own) sits on the line under the block.
    markdown = re.sub(r"^```\n\n+([◆○◇] )", r"```\n\1", markdown, flags=re.M)
    # One blank line between blocks, as nbconvert leaves two before a code cell; code blocks are kept as they are.
    lines, in_code = [], False
    for line in markdown.split("\n"):
        if line.startswith("```"):
            in_code = not in_code
        if in_code or line or (lines and lines[-1]):
            lines.append(line)
    return "\n".join(lines)


def notebook_outputs(notebook_path=NOTEBOOK):
    notebook = nbformat.read(notebook_path, as_version=4)
    return sum(
        len(cell.get("outputs", [])) + (cell.get("execution_count") is not None)
        for cell in notebook.cells
        if cell.cell_type == "code"
    )


def sync(root=ROOT, check=False):
    """Compare (check) or rewrite the generated files in `root` with what its notebook.ipynb gives; return the names
    that differed (with notebook.ipynb itself when checking a notebook that holds outputs)."""
    stale = []
    for name, text in expected_files(Path(root) / "notebook.ipynb").items():
        path = Path(root) / name
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        stale.append(name)
        if check:
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(True), text.splitlines(True), f"{name} (committed)", f"{name} (from notebook)"
                )
            )
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {name}")
    if check and notebook_outputs(Path(root) / "notebook.ipynb"):
        print("notebook.ipynb holds outputs or execution counts: clear them before committing")
        stale.append("notebook.ipynb")
    return stale


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if anything differs")
    args = parser.parse_args()
    stale = sync(check=args.check)
    if args.check:
        if stale:
            print(f"\nout of date: {', '.join(stale)}. Run: python ci/generate.py")
            return 1
        print("README.md and the scripts match notebook.ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
