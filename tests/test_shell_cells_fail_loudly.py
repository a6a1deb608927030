"""A failing command in a %%bash cell must fail the notebook run, as the tutorial's shell cells rely on."""

import subprocess
import sys

import nbformat


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


def test_a_failing_curl_fails_the_run(tmp_path):
    """The tutorial's curl cell uses --fail-with-body and pipefail, so an HTTP error is not printed and passed over."""
    result = run_notebook(
        tmp_path,
        "set -o pipefail\ncurl --silent --show-error --fail-with-body "
        "http://127.0.0.1:9/v1/models | python -m json.tool",
    )
    assert result.returncode == 1, result.stdout
    assert "CalledProcessError" in result.stdout


def test_a_passing_bash_cell_passes(tmp_path):
    result = run_notebook(tmp_path, "echo fine")
    assert result.returncode == 0, result.stdout
