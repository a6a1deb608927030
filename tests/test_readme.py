"""README.md as a reader meets it: the tutorial first, links that land, and shell blocks that stand on their own.
CI follows the real README end to end (`python3 ci/follow_readme.py` in .ci/run); these tests check that the way it
follows them can fail, and how the README reads."""

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from ci import follow_readme, generate
from ci.generate import expected_files
from harness.config import ROOT

pytestmark = pytest.mark.fast  # no Ray


README = (ROOT / "README.md").read_text()


def follow(tmp_path, readme):
    blocks = follow_readme.path_blocks(readme)
    printed, status = follow_readme.run(blocks, cwd=tmp_path)
    return follow_readme.check(blocks, printed, status)


@pytest.fixture(scope="module")
def followed(tmp_path_factory):
    """{case: the problems that following a small README found}, the cases followed at once: each bash's exit trap
    runs `serve shutdown` and `local_cluster.py stop`, seconds of Python imports on their own."""
    # The README's own `serve run` block, with the block that sets its variables left out, as when a variable comes
    # from a notebook cell.
    serve_run = next(command for command, _ in follow_readme.path_blocks(README) if "serve run" in command)
    cases = {
        "notebook variable": (
            f"## Deploy locally\n\n```bash\necho ready\n```\n\n```bash\n{serve_run}```\n\n## Shut down\n"
        ),
        "other output": (
            "## Deploy locally\n\n```bash\necho 'Answer: 2550'\n```\n\n```text\nAnswer: 2550\n```\n\n"
            "```bash\necho 'Reasoning: none'\n```\n\nIt prints:\n\n```text\nReasoning:\n```\n\n## Shut down\n"
        ),
    }
    with ThreadPoolExecutor(len(cases)) as pool:
        running = {case: pool.submit(follow, tmp_path_factory.mktemp("follow"), text) for case, text in cases.items()}
        return {case: future.result() for case, future in running.items()}


def test_a_block_that_uses_a_variable_only_the_notebook_sets_fails(followed):
    """The run stops at the `serve run` block whose variables a notebook cell would set, before `serve` runs."""
    problems = followed["notebook variable"]
    assert len(problems) == 1 and "README block 2 failed" in problems[0] and "serve run" in problems[0], problems


def test_a_block_that_prints_other_than_the_readme_shows_fails(followed):
    problems = followed["other output"]
    assert len(problems) == 1 and "README block 2 printed other than the README shows" in problems[0], problems


def test_numbers_and_ids_may_differ_but_nothing_else():
    assert follow_readme.shape(
        '"id": "chatcmpl-9f2c4e1ab3d04a7e", "created": 1764771234, 12 tokens'
    ) == follow_readme.shape('"id": "chatcmpl-0a1b2c3d4e5f6071", "created": 1764779999, 9 tokens')
    assert follow_readme.shape("status: RUNNING") != follow_readme.shape("status: DEPLOY_FAILED")


def test_every_main_step_shows_what_it_printed():
    shown = [output for _, output in follow_readme.path_blocks(README) if output is not None]
    assert len(shown) >= 8 and not [output for output in shown if "recorded by" in output]
    text = "\n".join(shown)
    for printed in ("Reasoning:", "Answer:", "status: RUNNING", '"reasoning":', "none left"):
        assert printed in text, printed


def test_the_tutorial_comes_first():
    lines = README.splitlines()
    first_serve_run = next(number for number, line in enumerate(lines, 1) if line.startswith("serve run "))
    summary = lines.index("## Summary") + 1
    assert first_serve_run <= 250, first_serve_run
    assert summary <= 700, summary


def test_every_link_within_the_readme_lands_on_a_heading():
    """Within README.md and between it and the measurements it links to (benchmark/README.md), both ways."""
    measurements = (ROOT / generate.MEASUREMENTS).read_text()
    headings = {
        "README.md": {generate.anchor(h) for h in re.findall(r"^#+ (.+)$", README, re.MULTILINE)},
        generate.MEASUREMENTS: {generate.anchor(h) for h in re.findall(r"^#+ (.+)$", measurements, re.MULTILINE)},
    }
    links = [("README.md", a) for a in re.findall(r"\]\(#([^)]+)\)", README)]
    links += [(generate.MEASUREMENTS, a) for a in re.findall(r"\]\(benchmark/README\.md#([^)]+)\)", README)]
    links += [(generate.MEASUREMENTS, a) for a in re.findall(r"\]\(#([^)]+)\)", measurements)]
    links += [("README.md", a) for a in re.findall(r"\]\(\.\./README\.md#([^)]+)\)", measurements)]
    assert len(links) > 30
    broken = [(file, a) for file, a in links if a not in headings[file]]
    assert not broken, broken
    # Files and images the measurements link to, relative to benchmark/.
    targets = re.findall(r"\]\((?!#|https?:|\.\./README)([^)#\s]+)\)", measurements)
    assert targets and not [t for t in targets if not (ROOT / "benchmark" / t).exists()], targets


# A block's mark of where it ran: the line under it. A block without one ran in CI (the README's legend says so).
MARKS = ("◆ **Ran on a lent GPU:** ", "◇ **Ran by hand on the 2-core CI machine:** ", "○ **Not run here:** ")


def shown_blocks(readme):
    """[(language, text, the line under the block)] for every block a reader could run or save."""
    return [block for block in follow_readme.fenced_blocks(readme) if block[0] in ("bash", "sh", "python", "yaml")]


def run_in_ci(readme):
    """What CI runs of the README: the main path's shell blocks (ci/follow_readme.py) and the blocks the tests paste as
    written (Appendix A's key sequence), the test command that .ci/run gives, and the files those run or the tests
    deploy."""
    from tests.test_api_key import readme_key_sequence

    commands = [command for command, _ in follow_readme.path_blocks(readme)] + [readme_key_sequence()]
    ci_run = (ROOT / ".ci" / "run").read_text()
    tests = "\n".join(path.read_text() for path in (ROOT / "tests").glob("test_*.py"))
    files = set(re.findall(r"(?:python|source) ([\w.-]+\.(?:py|sh))\b", "\n".join(commands)))
    files |= {f"{module}.py" for module in re.findall(r'"import_path": "(\w+):', tests)}
    return commands, ci_run, files


def unproven_blocks(text, readme=None):
    """The first lines of the blocks of `text` that have no mark and that CI does not run (CI follows `readme`, by
    default `text` itself); fails on a mark CI contradicts."""
    commands, ci_run, files = run_in_ci(readme or text)
    unproven = []
    for language, block, under in shown_blocks(text):
        named = re.match(r"# ([\w.-]+)\n", block)
        if under.startswith(MARKS):
            assert block not in commands, f"CI runs this block, but the README says otherwise:\n{block}{under}"
        elif under.startswith(("◆", "◇", "○")):
            raise AssertionError(f"a mark not in the legend: {under}")
        elif not (
            block in commands or (language == "bash" and block.strip() in ci_run) or (named and named[1] in files)
        ):
            unproven.append(block.splitlines()[0])
    return unproven


def test_every_block_says_where_it_ran_and_the_unmarked_ones_ran_in_ci():
    measurements = (ROOT / generate.MEASUREMENTS).read_text()
    assert len(shown_blocks(README)) > 20 and len(shown_blocks(measurements)) > 5
    assert unproven_blocks(README) == []
    assert unproven_blocks(measurements, README) == []


def test_a_block_that_ci_does_not_run_needs_a_mark():
    kubectl = "```bash\nkubectl apply -f ray-service.qwq-32b.yaml\n```\n\n"
    assert unproven_blocks(README.replace("## Appendix D", kubectl + "## Appendix D", 1)) == [
        "kubectl apply -f ray-service.qwq-32b.yaml"
    ]
    unmarked = README.replace("```\n○ **Not run here:** no Kubernetes", "```\nNo Kubernetes", 1)
    assert unproven_blocks(unmarked) == ["# ray-service.qwq-32b.yaml"]
    serve_run = next(command for command, _ in follow_readme.path_blocks(README) if "serve run" in command)
    with pytest.raises(AssertionError, match="CI runs this block"):
        unproven_blocks(README.replace(serve_run + "```\n", serve_run + "```\n○ **Not run here:** no.\n", 1))


def test_the_readmes_code_blocks_can_be_pasted_outside_jupyter():
    """No block starts with a cell magic (`%%bash`, `%%writefile`): shell blocks are plain shell, and a file's block
    names the file in its first line. The helper scripts are links, not copies."""
    import re

    readme = README + (ROOT / generate.MEASUREMENTS).read_text()
    first_lines = re.findall(r"^```\w*\n(.*)$", readme, re.MULTILINE)
    assert first_lines and not [line for line in first_lines if line.startswith("%%")]
    for name in expected_files():
        if name.endswith((".py", ".yaml")):  # shown whole, or (a helper script) linked
            assert f"\n# {name}\n" in readme or f"The whole file: [`{name}`]({name})" in readme, name


# Tables that hold no measurement: a comparison in words, and what went wrong and what fixed it.
QUALITATIVE_TABLES = (
    "| | Reasoning model (QwQ-32B, DeepSeek-R1, …) | Non-reasoning model |",
    "| you see | why | what to do |",
)


def numeric_tables(text):
    """[(the table's first line, the text of its section before it)] for each table with a number in its rows."""
    lines, found = text.split("\n"), []
    for number, line in enumerate(lines):
        starts = line.lstrip().startswith("|") and not lines[number - 1].lstrip().startswith("|")
        if not starts or not any(re.search(r"\d", row) for row in lines[number + 2 : number + 4]):
            continue
        heading = max(i for i in range(number + 1) if lines[i].startswith("#"))
        found.append((line.strip(), "\n".join(lines[heading:number])))
    return found


def unsourced_tables(text):
    """The first lines of the tables of numbers in `text` whose section names no existing file before them."""
    unsourced = []
    for first_line, before in numeric_tables(text):
        sources = re.findall(r"`([\w/.-]+\.(?:json|py|log))`", before)
        found = any((ROOT / source).exists() or (ROOT / "benchmark/results" / source).exists() for source in sources)
        if first_line not in QUALITATIVE_TABLES and not found:
            unsourced.append(first_line[:80])
    return unsourced


def test_every_table_of_numbers_names_the_file_it_comes_from():
    """Each table of measurements is introduced, in its section, by the file that holds its numbers (a results file,
    or the test that measures it); the tests above regenerate each such table from its file."""
    readme, measurements = (ROOT / "README.md").read_text(), (ROOT / generate.MEASUREMENTS).read_text()
    assert len(numeric_tables(readme) + numeric_tables(measurements)) > 15
    assert unsourced_tables(readme) == [] and unsourced_tables(measurements) == []
    table = "| rate | goodput |\n| ---: | ---: |\n| 2/s | 1.93/s |\n"
    assert unsourced_tables(f"### Goodput\n\nMeasured:\n\n{table}") == ["| rate | goodput |"]
    assert unsourced_tables(f"### Goodput\n\nMeasured (`benchmark/results/goodput.json`):\n\n{table}") == []
    assert unsourced_tables(f"### Goodput\n\nMeasured (`benchmark/results/nowhere.json`):\n\n{table}") != []


QUICKSTART_LOGS = ["ci/quickstart_cpu.log", "ci/quickstart_one-gpu.log"]  # ci/time_quickstart.sh's, committed


def test_the_time_to_complete_and_the_step_times_are_the_logged_ones():
    """The quick start's time near the top and the table of step times are read from the timed quick starts' logs,
    each a run that passed, the CPU one in CI's 2-core machine's shape."""
    from harness.logs import QUICKSTART_STEPS, quickstart_machine, quickstart_steps
    from harness.report import quickstart_table, step_times, time_to_complete

    logs = [(ROOT / name).read_text() for name in QUICKSTART_LOGS if (ROOT / name).exists()]
    columns = {quickstart_machine(log): quickstart_steps(log) for log in logs}
    assert "2 CPU cores" in columns and None not in columns.values(), columns
    assert quickstart_table(columns) in README
    assert time_to_complete(columns) in " ".join(README.split())  # (the sentence may wrap)
    # and where each slow step is shown, its time
    for step, first_command in QUICKSTART_STEPS[1:3] + QUICKSTART_STEPS[4:5]:
        assert f"took {step_times(columns, step)}" in " ".join(README.split()), (step, first_command)
    # On one GPU: the notebook's run by ci/gpu_runner.sh
    gpu = float(re.search(r"1 passed in ([\d.]+)s", (ROOT / "ci/gpu_runner.log").read_text())[1])
    assert f"on one H200 the notebook took {round(gpu / 60)}." in " ".join(README.split())
    assert f"the notebook's same steps took {gpu:.0f} s in all" in " ".join(README.split())
