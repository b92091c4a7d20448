"""README.md stays true: CI runs exactly its test command, and every named target it lists is a rule."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _fenced_block_after(heading: str) -> str:
    """The first ```bash block after the line ``heading`` (one command expected)."""
    start = README.index(heading)
    match = re.search(r"```bash\n(.*?)\n```", README[start:], flags=re.S)
    assert match, f"README.md: no ```bash block after {heading!r}"
    return match.group(1).strip()


def test_ci_runs_exactly_the_readme_test_command():
    command = _fenced_block_after("Install and run the tests:")
    ci_lines = [ln.strip() for ln in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    commands = [ln for ln in ci_lines if ln and not ln.startswith("#")]
    assert commands[-1] == command, f".ci/run ends with {commands[-1]!r}, README.md says {command!r}"


def test_readme_demo_command_installs_and_runs_snakemake():
    command = _fenced_block_after("Install and run the demo end to end")
    assert command.startswith("python -m pip install -e .") and "snakemake --cores" in command


def test_every_named_target_in_the_readme_is_a_rule(workflow_rules):
    rules = {r["name"] for r in workflow_rules}
    named = set(re.findall(r"^\| `snakemake (\w+)`", README, flags=re.M))
    assert len(named) >= 10, f"README.md lists only {sorted(named)} as named targets"
    assert named <= rules, f"README.md names targets without a rule: {sorted(named - rules)}"
