"""A failing command in a %%bash cell must fail the notebook run, as the tutorial's shell cells rely on."""

import subprocess
import sys

import nbformat

from harness.config import ROOT


def run_notebook(tmp_path, bash_source):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("%%bash\n" + bash_source), nbformat.v4.new_code_cell("print('after')")]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "shell.ipynb"
    nbformat.write(notebook, path)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--nbmake", "-p", "no:cacheprovider", "-c", "/dev/null", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_failing_bash_cell_fails_the_run(tmp_path):
    result = run_notebook(tmp_path, "echo before\nexit 3")
    assert result.returncode == 1, result.stdout
    assert "CalledProcessError" in result.stdout and "returned non-zero exit status 3" in result.stdout


def test_the_tutorials_curl_cell_fails_the_run_on_an_http_error(tmp_path):
    """The notebook's own curl cell (--fail-with-body, pipefail), sent to a port where nothing answers: an HTTP error
    fails the cell, instead of a printed error that the run passes over."""
    notebook = nbformat.read(ROOT / "notebook.ipynb", as_version=4)
    curl = next(cell.source for cell in notebook.cells if cell.source.startswith("%%bash\nset -o pipefail\ncurl"))
    assert "--fail-with-body" in curl and "http://localhost:8000/v1/" in curl
    result = run_notebook(tmp_path, curl.removeprefix("%%bash\n").replace("localhost:8000", "127.0.0.1:9"))
    assert result.returncode == 1, result.stdout
    assert "CalledProcessError" in result.stdout


def test_a_passing_bash_cell_passes(tmp_path):
    result = run_notebook(tmp_path, "echo fine")
    assert result.returncode == 0, result.stdout
