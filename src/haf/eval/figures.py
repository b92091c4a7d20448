"""The paper's figures and the survival figures, each written as PDF and PNG.

Every figure: labelled axes with units, a legend, method colours from :mod:`haf.eval.palette` (the
same colour for a method in every figure), and "SYNTHETIC demo data" in the title when the demo
cohort was used.  matplotlib runs on the Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from haf.artifacts.files import atomic_path
from haf.eval.palette import method_color, method_linestyle, modality_color
from haf.eval.survival import DAYS_PER_YEAR
from haf.modalities import MODALITY_NAMES


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def title_prefix(synthetic: bool) -> str:
    return "SYNTHETIC demo data — " if synthetic else ""


def save_figure(fig: Any, pdf: str | Path, png: str | Path, dpi: int = 200) -> None:
    """Write ``fig`` as PDF and PNG atomically, then close it.

    The PDF carries no creation date, so the same figure gives the same bytes on every run.
    """
    plt = _pyplot()
    with atomic_path(pdf, ".pdf") as tmp:
        fig.savefig(tmp, format="pdf", bbox_inches="tight", metadata={"CreationDate": None})
    with atomic_path(png, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def _legend_right(fig: Any, axes: Any) -> None:
    """One legend for all panels, right of the figure (bbox_inches='tight' keeps it in the file)."""
    handles, labels = [], []
    for ax in np.atleast_1d(axes).ravel():
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="center left", frameon=False, bbox_to_anchor=(1.0, 0.5))


def plot_dropout(
    agg: pd.DataFrame, labels: dict[str, str], pdf: str | Path, png: str | Path, *, title: str
) -> None:
    """Fig. 2: test AUC and accuracy against the drop probability p; band = ± SD over folds."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, metric, name in ((axes[0], "auc", "AUC"), (axes[1], "accuracy", "Accuracy")):
        for method in labels:
            rows = agg[agg["method"] == method].sort_values("p")
            if rows.empty:
                continue
            x = rows["p"].to_numpy(float)
            m = rows[f"{metric}_mean"].to_numpy(float)
            s = np.nan_to_num(rows[f"{metric}_std"].to_numpy(float))
            color = method_color(method)
            ax.plot(x, m, marker="o", ms=3, color=color, ls=method_linestyle(method), label=labels[method])
            ax.fill_between(x, m - s, m + s, color=color, alpha=0.07, lw=0)
        ax.set_xlabel("Test-time modality drop probability p (per modality)")
        ax.set_ylabel(f"{name} on test patients (mean over folds)")
        ax.grid(alpha=0.3)
        if metric == "auc":
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    fig.suptitle(title)
    fig.tight_layout()
    _legend_right(fig, axes)
    save_figure(fig, pdf, png)


def plot_tsne(
    before: np.ndarray,
    after: np.ndarray,
    modality: np.ndarray,
    pdf: str | Path,
    png: str | Path,
    *,
    title: str,
    caption: str | None = None,
) -> None:
    """Fig. 3: t-SNE maps of modality embeddings before and after alignment, coloured by modality.

    ``caption``: text under the panels (the rule puts the geometry numbers of
    :func:`haf.eval.geometry.geometry_caption` there).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, xy, name in ((axes[0], before, "Before alignment"), (axes[1], after, "After global alignment")):
        for m in dict.fromkeys(modality):
            sel = modality == m
            ax.scatter(
                xy[sel, 0], xy[sel, 1], s=14, alpha=0.8, color=modality_color(m), label=MODALITY_NAMES[m]
            )
        ax.set_title(name)
        ax.set_xlabel("t-SNE dimension 1 (arbitrary units)")
        ax.set_ylabel("t-SNE dimension 2 (arbitrary units)")
    fig.suptitle(title)
    fig.tight_layout()
    if caption:
        fig.text(0.5, -0.01, caption, ha="center", va="top", fontsize=8)
    _legend_right(fig, axes)
    save_figure(fig, pdf, png)


def plot_heatmap(
    before: np.ndarray,
    after: np.ndarray,
    modalities: list[str],
    pdf: str | Path,
    png: str | Path,
    *,
    title: str,
    subtitles: tuple[str, str] = ("Before alignment", "After global alignment"),
) -> None:
    """Fig. 4: one patient's modality embeddings (modalities x dimensions), before and after.

    Each row is z-scored across its dimensions so that the pattern, not the scale, is compared.
    """
    plt = _pyplot()

    def z(rows: np.ndarray) -> np.ndarray:
        sd = rows.std(axis=1, keepdims=True)
        return (rows - rows.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1)

    fig, axes = plt.subplots(2, 1, figsize=(12, 1.2 + 0.55 * len(modalities) * 2 + 1.5), sharex=True)
    for ax, matrix, name in ((axes[0], before, subtitles[0]), (axes[1], after, subtitles[1])):
        image = ax.imshow(z(matrix), aspect="auto", cmap="RdBu_r", vmin=-3, vmax=3, interpolation="nearest")
        ax.set_yticks(range(len(modalities)), [MODALITY_NAMES[m] for m in modalities])
        ax.set_title(name)
        ax.set_ylabel("Modality")
        fig.colorbar(image, ax=ax, label="Value (z-score within modality)", pad=0.01)
    axes[1].set_xlabel("Embedding dimension (index)")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, pdf, png)


def plot_td_auc(
    curves: pd.DataFrame, labels: dict[str, str], pdf: str | Path, png: str | Path, *, title: str
) -> None:
    """Cumulative/dynamic AUC(t) of the pooled out-of-fold risk (scope ``pooled``: the mean over CV
    repeats); band = ± SD of the fold curves (``fold_k``, every fold of every repeat)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for method in labels:
        rows = curves[curves["method"] == method]
        if rows.empty:
            continue
        pooled = rows[rows["scope"] == "pooled"].sort_values("time_days")
        folds = rows[rows["scope"].str.startswith("fold_")].pivot_table(
            index="time_days", columns="scope", values="auc"
        )
        x = pooled["time_days"].to_numpy(float) / DAYS_PER_YEAR
        color = method_color(method)
        ax.plot(
            x, pooled["auc"], color=color, ls=method_linestyle(method), marker="o", ms=3, label=labels[method]
        )
        if not folds.empty:
            sd = folds.std(axis=1, ddof=1).reindex(pooled["time_days"]).to_numpy(float)
            y = pooled["auc"].to_numpy(float)
            ax.fill_between(x, y - np.nan_to_num(sd), y + np.nan_to_num(sd), color=color, alpha=0.08, lw=0)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("Time since diagnosis t (years)")
    ax.set_ylabel("Cumulative/dynamic AUC(t)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    save_figure(fig, pdf, png)


def plot_calibration(
    bins: pd.DataFrame,
    horizons: list[float],
    labels: dict[str, str],
    pdf: str | Path,
    png: str | Path,
    *,
    title: str,
) -> None:
    """Predicted P(death by t) against the Kaplan-Meier observed fraction, one panel per horizon."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(horizons), figsize=(5 * len(horizons), 5), squeeze=False)
    for ax, horizon in zip(axes[0], horizons, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="Perfect calibration")
        shown = 0
        for method in labels:
            if bins.empty:
                break
            rows = bins[(bins["method"] == method) & np.isclose(bins["horizon_days"], horizon)]
            if rows.empty:
                continue
            shown += 1
            color = method_color(method)
            ax.errorbar(
                rows["predicted_mean"],
                rows["observed"],
                yerr=[
                    np.nan_to_num(rows["observed"] - rows["observed_ci_low"]),
                    np.nan_to_num(rows["observed_ci_high"] - rows["observed"]),
                ],
                color=color,
                ls=method_linestyle(method),
                marker="o",
                ms=4,
                capsize=2,
                lw=1.2,
                elinewidth=0.6,
                label=labels[method],
            )
        if not shown:
            ax.text(0.5, 0.5, "no method defines\nP(death by t) here", ha="center", va="center", color="grey")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"t = {horizon:g} days ({horizon / DAYS_PER_YEAR:.1f} years)")
        ax.set_xlabel("Predicted P(death by t) (bin mean)")
        ax.set_ylabel("Observed P(death by t) (Kaplan-Meier, 95% CI)")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    _legend_right(fig, axes)
    save_figure(fig, pdf, png)


def plot_km(
    groups: dict[str, pd.DataFrame],
    summaries: dict[str, dict],
    labels: dict[str, str],
    pdf: str | Path,
    png: str | Path,
    *,
    title: str,
    at_risk: dict[str, pd.DataFrame] | None = None,
) -> None:
    """Kaplan-Meier curves of predicted high/low risk groups, one panel per method, log-rank p.

    Censored patients are ticks (``|``) on their group's curve; under each panel the number at risk of
    each group at the ``at_risk`` tables' times (:func:`haf.eval.survival_tables.km_at_risk`; computed
    here at whole years when not given).
    """
    from haf.eval.survival import censor_marks, km_curve
    from haf.eval.survival_tables import at_risk_years, km_at_risk

    plt = _pyplot()
    methods = [m for m in labels if m in groups]
    if at_risk is None:
        years = at_risk_years({m: groups[m] for m in methods})
        at_risk = {m: km_at_risk(groups[m], years) for m in methods}
    ncol = min(3, max(1, len(methods)))
    nrow = int(np.ceil(len(methods) / ncol)) if methods else 1
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 4.6 * nrow), squeeze=False, sharey=True)
    for ax in axes.ravel()[len(methods) :]:
        ax.axis("off")
    for ax, method in zip(axes.ravel(), methods, strict=False):
        g = groups[method]
        color = method_color(method)
        for name, style, shade in (("low", "--", 0.35), ("high", "-", 1.0)):
            sel = g["group"] == name
            if not sel.any():
                continue
            time, event = g.loc[sel, "time"].to_numpy(float), g.loc[sel, "event"].to_numpy(int)
            curve = km_curve(time, event)
            t = curve.time / DAYS_PER_YEAR
            ax.step(
                t,
                curve.survival,
                where="post",
                color=color,
                ls=style,
                alpha=max(shade, 0.6),
                label=f"{name} risk (n={int(sel.sum())}, {int(event.sum())} deaths)",
            )
            ax.fill_between(
                t, curve.low, curve.high, step="post", color=color, alpha=0.1 * shade + 0.05, lw=0
            )
            ct, cs = censor_marks(curve, time, event)
            ax.plot(
                ct / DAYS_PER_YEAR,
                cs,
                ls="none",
                marker="|",
                ms=6,
                mew=0.9,
                color=color,
                alpha=max(shade, 0.6),
            )
        p = summaries[method].get("logrank_p", float("nan"))
        median = summaries[method].get("logrank_p_median")
        text = f"log-rank p = {p:.3g}" if not np.isnan(p) else ""
        if text and median is not None and not np.isnan(median):
            text += f" (median over repeats {median:.3g})"
        ax.set_title(f"{labels[method]}\n{text}" if text else labels[method], fontsize=9)
        ax.set_xlabel("Time since diagnosis (years)")
        ax.set_ylabel("Overall survival probability")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.plot([], [], ls="none", marker="|", color="0.3", label="censored")
        ax.legend(fontsize=7, loc="lower left", frameon=False)
        table = at_risk.get(method)
        if table is not None and len(table):
            ticks = np.unique(table["years"].to_numpy(float))
            ax.set_xticks(ticks)
            ax.set_xlim(left=ticks[0] - 0.05 * max(ticks[-1], 1))  # the right end: the longest follow-up
            trans = ax.get_xaxis_transform()
            ax.text(ticks[0], -0.25, "Number at risk", transform=trans, fontsize=7, ha="left", va="top")
            for row, name in enumerate(("high", "low")):
                part = table[table["group"] == name]
                for rec in part.itertuples():
                    ax.text(
                        rec.years, -0.32 - 0.07 * row, str(int(rec.at_risk)), transform=trans,
                        fontsize=7, ha="center", va="top", color=color, alpha=1.0 if name == "high" else 0.7,
                    )  # fmt: skip
                ax.text(
                    -0.02, -0.32 - 0.07 * row, name, transform=ax.transAxes, fontsize=7, ha="right", va="top"
                )
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, pdf, png)


def fig3_tsne(
    aligned: Any, *, fold: int, seed: int, title: str, pdf: str | Path, png: str | Path, part: str = "test"
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Fig. 3 of one fold: t-SNE before/after alignment with the geometry numbers as its caption.

    Returns the points (``patient_id, modality, before_x, before_y, after_x, after_y``), the geometry
    (one row: :func:`haf.eval.geometry.geometry_summary` with ``fold`` and ``part``) and the caption
    drawn under the panels (:func:`haf.eval.geometry.geometry_caption`).
    """
    from haf.eval.embeddings import stack, tsne_2d
    from haf.eval.geometry import geometry_caption, geometry_summary

    pre, post, modality, patient = stack(aligned, part)
    before, after = tsne_2d(pre, seed), tsne_2d(post, seed)
    points = pd.DataFrame(
        dict(
            patient_id=patient,
            modality=modality,
            before_x=before[:, 0],
            before_y=before[:, 1],
            after_x=after[:, 0],
            after_y=after[:, 1],
        )
    )
    summary = geometry_summary(aligned, part)
    caption = geometry_caption(summary, fold, part)
    plot_tsne(before, after, modality, pdf, png, title=title, caption=caption)
    geometry = pd.DataFrame([{"fold": int(fold), "part": part, **summary}])
    return points, geometry, caption
