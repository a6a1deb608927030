"""A failing command in a %%bash cell must fail the notebook run, as the tutorial's shell cells rely on.

Each case is a small notebook run by nbmake in a pytest of its own; the three run at once (a Jupyter kernel's start is
most of each), and each test checks its own."""

import subprocess
import sys

import nbformat
import pytest

from harness.config import ROOT

pytestmark = pytest.mark.fast  # no Ray


def tutorials_curl_cell():
    """The notebook's own curl cell (--fail-with-body, pipefail), sent to a port where nothing answers."""
    notebook = nbformat.read(ROOT / "notebook.ipynb", as_version=4)
    curl = next(cell.source for cell in notebook.cells if cell.source.startswith("%%bash\nset -o pipefail\ncurl"))
    assert "--fail-with-body" in curl and "http://localhost:8000/v1/" in curl
    return curl.removeprefix("%%bash\n").replace("localhost:8000", "127.0.0.1:9")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{case: the finished nbmake run of a notebook whose first cell is that case's %%bash cell}."""
    cases = {"failing": "echo before\nexit 3", "curl": tutorials_curl_cell(), "passing": "echo fine"}
    started = {}
    for case, bash_source in cases.items():
        notebook = nbformat.v4.new_notebook()
        notebook.cells = [
            nbformat.v4.new_code_cell("%%bash\n" + bash_source),
            nbformat.v4.new_code_cell("print('after')"),
        ]
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        path = tmp_path_factory.mktemp(case) / "shell.ipynb"
        nbformat.write(notebook, path)
        started[case] = subprocess.Popen(
            [sys.executable, "-m", "pytest", "--nbmake", "-p", "no:cacheprovider", "-c", "/dev/null", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    finished = {}
    try:
        for case, run in started.items():
            finished[case] = (run.communicate(timeout=300)[0], run.returncode)
    finally:  # one that timed out, and the others with it, leave nothing running
        for run in started.values():
            run.kill()
            run.wait()
    return finished


def test_a_failing_bash_cell_fails_the_run(runs):
    stdout, status = runs["failing"]
    assert status == 1, stdout
    assert "CalledProcessError" in stdout and "returned non-zero exit status 3" in stdout


def test_the_tutorials_curl_cell_fails_the_run_on_an_http_error(runs):
    """An HTTP error fails the cell, instead of a printed error that the run passes over."""
    stdout, status = runs["curl"]
    assert status == 1, stdout
    assert "CalledProcessError" in stdout


def test_a_passing_bash_cell_passes(runs):
    stdout, status = runs["passing"]
    assert status == 0, stdout
