"""``results/tables/benchmarks.{csv,md}`` (rule ``benchmarks``): what each training and extraction job cost.

Snakemake writes a ``benchmark:`` TSV (``logs/benchmarks/*.tsv``) after each job of the rules that declare
one (``extract_tma``, ``stage1``, ``align``, ``fusion``, ``fusion_joint``, ``comparator``): one row per
run of the job with Snakemake's columns (:data:`BENCHMARK_COLUMNS`).  The rule depends on those jobs'
outputs, so it runs after them, and reads the TSVs that exist: a job whose TSV is missing (its outputs were
made before the ``benchmark:`` directive existed, or copied from another run) gets a row with status
``missing`` and is named in the Markdown.

One row per job: the mean over the TSV's rows (a job benchmarked with ``repeat()`` has several), their
count in ``n_runs``; then a ``total`` row: the sums of wall and CPU seconds and I/O over the jobs, the
largest peak memory.  Units (Snakemake's): ``s`` wall-clock seconds, ``cpu_time`` CPU seconds (user +
system, all threads and child processes), ``max_rss`` / ``max_vms`` / ``max_uss`` / ``max_pss`` peak memory
in MB, ``io_in`` / ``io_out`` MB read / written, ``mean_load`` mean CPU load in percent of one core.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from haf.errors import HafInputError

BENCHMARK_COLUMNS: tuple[str, ...] = (
    "s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in", "io_out", "mean_load", "cpu_time",
)  # fmt: skip
NUMERIC = tuple(c for c in BENCHMARK_COLUMNS if c != "h:m:s")
SUMMED = ("s", "cpu_time", "io_in", "io_out")
TABLE_COLUMNS = ("job", "rule", "status", "n_runs", *NUMERIC, "benchmark")
MD_COLUMNS = {
    "job": "Job",
    "rule": "Rule",
    "status": "Status",
    "wall": "Wall time",
    "cpu_time": "CPU s",
    "max_rss": "Peak RSS (MB)",
    "mean_load": "Mean load (%)",
    "io_out": "Written (MB)",
}


def read_benchmark(path: str | Path) -> pd.DataFrame:
    """One Snakemake benchmark TSV (numeric columns as floats, ``NA`` as NaN); errors name the file."""
    try:
        frame = pd.read_csv(path, sep="\t", na_values=["NA", "-"])
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise HafInputError(path, f"cannot read the benchmark file: {exc}") from exc
    if "s" not in frame.columns or frame.empty:
        raise HafInputError(path, "not a Snakemake benchmark file (no 's' column or no row)", field="s")
    for column in NUMERIC:
        frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else np.nan
    return frame


def _clock(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "–"
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def benchmark_table(jobs: Sequence[Mapping[str, str]]) -> tuple[pd.DataFrame, list[Mapping[str, str]]]:
    """``(table, missing)`` from jobs ``{job, rule, benchmark}`` (see the module docstring)."""
    rows, missing = [], []
    for job in jobs:
        path = Path(job["benchmark"])
        row = {"job": job["job"], "rule": job["rule"], "benchmark": str(path)}
        if not path.is_file():
            missing.append(job)
            rows.append({**row, "status": "missing", "n_runs": 0, **dict.fromkeys(NUMERIC, np.nan)})
            continue
        frame = read_benchmark(path)
        rows.append({**row, "status": "ok", "n_runs": len(frame), **frame[list(NUMERIC)].mean().to_dict()})
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    ok = table[table["status"] == "ok"]
    total = {"job": "total", "rule": "", "status": f"{len(ok)} of {len(table)} jobs", "benchmark": ""}
    total["n_runs"] = int(ok["n_runs"].sum())
    for column in NUMERIC:
        values = ok[column].dropna()
        if column in SUMMED:
            total[column] = float(values.sum()) if len(values) else np.nan
        elif column.startswith("max_"):
            total[column] = float(values.max()) if len(values) else np.nan
        else:
            total[column] = np.nan
    table = pd.concat([table, pd.DataFrame([total], columns=list(TABLE_COLUMNS))], ignore_index=True)
    table["n_runs"] = table["n_runs"].astype(int)
    return table, missing


def benchmark_markdown(table: pd.DataFrame, missing: Sequence[Mapping[str, str]], *, title: str) -> str:
    """The Markdown version: wall time as h:mm:ss, the main columns, the missing TSVs named."""
    from haf.eval.tables import markdown_table

    shown = table.assign(wall=table["s"].map(_clock))
    for column in ("cpu_time", "max_rss", "mean_load", "io_out"):
        shown[column] = shown[column].map(lambda v: "–" if not np.isfinite(v) else f"{v:.1f}")
    notes = [
        "Snakemake's `benchmark:` files (logs/benchmarks/*.tsv), one per job; a job run several times "
        "(`repeat()`): the mean. Wall time and CPU seconds of the total: summed over jobs (jobs may have run "
        "in parallel, so this is not the run's elapsed time); peak RSS: the largest of any job. All columns "
        "(MB, seconds) in benchmarks.csv.",
    ]
    if missing:
        notes.append("")
        notes.append(
            f"Missing benchmark files ({len(missing)}): "
            + "; ".join(f"{m['job']} (`{m['benchmark']}`)" for m in missing)
            + ". Their jobs' outputs exist but no TSV was written for them (made before the rule had a "
            "`benchmark:` directive, or copied from another run); rerun the job to measure it."
        )
    else:
        notes.append("")
        notes.append("Every job's benchmark file was found.")
    return markdown_table(shown, MD_COLUMNS, title=title, notes=notes)
