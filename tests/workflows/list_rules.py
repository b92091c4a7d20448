"""Load a Snakemake workflow through Snakemake's own API and print its rules as JSON.

Used by tests/test_envs.py and tests/test_resources.py. It runs in a subprocess so that loading the
workflow (which changes the working directory, sys.path and Snakemake's logging) cannot leak into the
pytest process. Nothing is executed: the workflow is parsed, the config validated, no DAG is built.

What is declared is recorded while the rules are defined (a wrapper around ``Workflow.rule`` sees
each ``RuleInfo`` before Snakemake fills in defaults), so "declared threads" and "declared
resources" mean written in the rule, not Snakemake's defaults (``_cores=1``, ``tmpdir``, ...).

Usage: python list_rules.py SNAKEFILE [WORKDIR] [--config KEY=VALUE ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _plain(value):
    """JSON-friendly resource value: numbers and strings as they are, callables named."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return f"<{type(value).__name__}>"


def list_rules(snakefile: Path, workdir: Path, overrides: dict) -> list[dict]:
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
    from snakemake.workflow import Workflow

    declared: dict[str, dict] = {}
    original_rule = Workflow.rule

    def recording_rule(self, name=None, lineno=None, snakefile=None, checkpoint=False):
        decorate = original_rule(self, name=name, lineno=lineno, snakefile=snakefile, checkpoint=checkpoint)

        def wrapped(ruleinfo):
            rule_name = ruleinfo.name or name
            resources = {}
            if ruleinfo.resources:
                _args, kwargs = ruleinfo.resources
                resources = {k: _plain(v) for k, v in kwargs.items()}
            declared[rule_name] = {
                "threads": None if ruleinfo.threads is None else _plain(ruleinfo.threads),
                "resources": resources,
            }
            return decorate(ruleinfo)

        return wrapped

    Workflow.rule = recording_rule
    try:
        with SnakemakeApi(OutputSettings()) as api:
            workflow_api = api.workflow(
                resource_settings=ResourceSettings(),
                config_settings=ConfigSettings(config=overrides),
                snakefile=snakefile,
                workdir=workdir,
            )
            workflow = workflow_api._workflow
            rows = []
            for rule in workflow.rules:
                basedir = Path(rule.snakefile).parent
                conda = rule.conda_env
                script = rule.script
                rows.append(
                    {
                        "name": rule.name,
                        "snakefile": str(rule.snakefile),
                        "lineno": rule.lineno,
                        "conda": None if conda is None else str(conda),
                        "conda_path": (
                            None
                            if not isinstance(conda, str) or not conda.endswith((".yaml", ".yml"))
                            else str((basedir / conda).resolve())
                        ),
                        "script": None if script is None else str(script),
                        "script_path": None if script is None else str((basedir / script).resolve()),
                        "has_log": bool(rule.log),
                        "has_output": bool(rule.output),
                        "shell": rule.shellcmd is not None,
                        "norun": bool(rule.norun),
                        "declared_threads": declared.get(rule.name, {}).get("threads"),
                        "declared_resources": declared.get(rule.name, {}).get("resources", {}),
                    }
                )
            return rows
    finally:
        Workflow.rule = original_rule


def workflow_rules(
    snakefile: Path, workdir: Path, config: list[str] | None = None, timeout: float = 120
) -> list[dict]:
    """Run this file in a subprocess and return its rows (raises with Snakemake's output on failure)."""
    import subprocess

    cmd = [sys.executable, __file__, str(snakefile), str(workdir)]
    if config:
        cmd += ["--config", *config]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    marker = "\n@@RULES@@"
    if proc.returncode != 0 or marker not in proc.stdout:
        raise RuntimeError(
            f"loading {snakefile} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return json.loads(proc.stdout.rsplit(marker, 1)[1])


def main(argv: list[str]) -> int:
    args = list(argv)
    overrides: dict = {}
    if "--config" in args:
        i = args.index("--config")
        import yaml

        for item in args[i + 1 :]:
            key, _, value = item.partition("=")
            node = overrides
            parts = key.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = yaml.safe_load(value)
        args = args[:i]
    snakefile = Path(args[0]).resolve()
    workdir = Path(args[1]).resolve() if len(args) > 1 else snakefile.parent
    rows = list_rules(snakefile, workdir, overrides)
    sys.stdout.write("\n@@RULES@@" + json.dumps(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
