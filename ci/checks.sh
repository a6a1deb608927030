#!/usr/bin/env bash
# The repository's hygiene, before the tests (CI and the pre-commit hook run the same): the formatter and the linter
# with the settings in pyproject.toml, and README.md and the scripts equal to what notebook.ipynb gives.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff format --check .
.venv/bin/ruff check .
.venv/bin/python ci/generate.py --check
