"""README.md and the scripts beside the notebook are generated from it; they must not drift."""

import json
import subprocess
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "ci"))
from generate import expected_files  # noqa: E402  (the generator's own list of files it writes)


def test_readme_and_scripts_match_the_notebook():
    check = subprocess.run([sys.executable, "ci/generate.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_an_edit_to_the_notebook_is_caught(tmp_path):
    """Change one word of a markdown cell without regenerating: the check must fail and name README.md."""
    for name in ["notebook.ipynb", *expected_files()]:
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "generate.py").write_bytes((ROOT / "ci" / "generate.py").read_bytes())
    notebook = json.loads((tmp_path / "notebook.ipynb").read_text())
    cell = next(c for c in notebook["cells"] if c["cell_type"] == "markdown")
    cell["source"] = "".join(cell["source"]).replace("reasoning", "thinking", 1)
    (tmp_path / "notebook.ipynb").write_text(json.dumps(notebook, indent=1))

    check = subprocess.run([sys.executable, "ci/generate.py", "--check"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 1 and "out of date: README.md" in check.stdout, check.stdout

    subprocess.run([sys.executable, "ci/generate.py"], cwd=tmp_path, check=True, capture_output=True)
    check = subprocess.run([sys.executable, "ci/generate.py", "--check"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout


def test_the_numbers_quoted_for_the_small_model_are_the_measured_ones():
    """The notebook and the model card quote tiny_reasoner/eval_results.json, which evaluate.py writes."""
    from tiny_reasoner.evaluate import thinking_table

    report = json.loads((ROOT / "tiny_reasoner" / "eval_results.json").read_text())
    readme, card = (ROOT / "README.md").read_text(), (ROOT / "tiny_reasoner" / "README.md").read_text()
    assert thinking_table(report) in readme
    assert thinking_table(report) in card
    letters_on, letters_off = report["thinking_on"]["letters"], report["thinking_off"]["letters"]
    for number in (f"{letters_on['correct']:.1%}", f"{letters_off['correct']:.1%}"):
        assert number in readme and number in card, number


def test_tests_and_quickstart_start_ray_the_way_the_notebooks_cpu_mode_does():
    from ci.local_cluster import CPU_MODE_ENV

    notebook = json.loads((ROOT / "notebook.ipynb").read_text())
    mode_cell = next("".join(c["source"]) for c in notebook["cells"] if c.get("id") == "cell-05")
    run = subprocess.run([sys.executable, "-c", mode_cell + "\nimport json; print(json.dumps(MODE))"],
                         env={"TUTORIAL_DEVICE": "cpu", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    mode = json.loads(run.stdout.strip().splitlines()[-1])
    assert {key: mode.get(key) for key in CPU_MODE_ENV} == CPU_MODE_ENV
    quickstart = (ROOT / "quickstart_cpu.sh").read_text()
    assert "export " + " ".join(f"{key}={value}" for key, value in CPU_MODE_ENV.items()) in quickstart


def test_the_benchmark_tables_in_the_notebook_are_the_measured_ones():
    """The notebook quotes benchmark.json, which `python benchmark.py --side-by-side --out benchmark.json` wrote."""
    from benchmark import questions_table, summary_table

    report = json.loads((ROOT / "benchmark.json").read_text())
    readme = (ROOT / "README.md").read_text()
    assert summary_table(report, report["concurrency"]) in readme
    assert questions_table(report, ["bare vLLM", "tutorial: direct streaming"]) in readme
    assert (ROOT / "benchmark.png").stat().st_size > 10_000
