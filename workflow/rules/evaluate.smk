# Evaluation: every table and figure is a file under results/ with a short named target rule
# (`snakemake table1`, `snakemake fig_dropout`, ...). Asking for one builds only what it needs:
# each rule's inputs name only the methods (and folds) that its table or figure shows.


report: "../report/workflow.rst"


rule table1:
    input:
        predictions=prediction_files(EVAL_METHODS["table1"]),
        folds=COHORT["folds"],
    output:
        csv=report(
            f"{RES}/tables/table1.csv",
            caption="../report/table1.rst",
            category="1. Tables",
            labels={"table": "Table 1: cross-validated accuracy and AUC"},
        ),
        md=f"{RES}/tables/table1.md",
        tex=f"{RES}/tables/table1.tex",
        tests=report(
            f"{RES}/tables/table1_tests.csv",
            caption="../report/table1_tests.rst",
            category="1. Tables",
            labels={"table": "Table 1 (tests): paired bootstrap vs HAF"},
        ),
        per_fold=report(
            f"{RES}/tables/table1_folds.csv",
            caption="../report/table1_folds.rst",
            category="1. Tables",
            labels={"table": "Table 1 (folds): per-fold n, events and metrics"},
        ),
        per_repeat=f"{RES}/tables/table1_repeats.csv",
    log:
        f"{LOGS}/evaluate/table1.log",
    conda:
        "../../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        **eval_params("table1"),
        min_val_patients=config["training"]["min_val_patients"],
    script:
        "../scripts/make_table1.py"


rule table2:
    input:
        predictions=prediction_files(EVAL_METHODS["table2"]),
        folds=COHORT["folds"],
    output:
        csv=report(
            f"{RES}/tables/table2.csv",
            caption="../report/table2.rst",
            category="1. Tables",
            labels={"table": "Table 2: with vs without stage-wise detachment"},
        ),
        md=f"{RES}/tables/table2.md",
        tex=f"{RES}/tables/table2.tex",
    log:
        f"{LOGS}/evaluate/table2.log",
    conda:
        "../../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        **eval_params("table2"),
    script:
        "../scripts/make_table2.py"


rule fig_dropout:
    input:
        predictions=prediction_files(EVAL_METHODS["figure"]),
        masked=masked_files(EVAL_METHODS["figure"]),
        folds=COHORT["folds"],
    output:
        pdf=f"{RES}/figures/fig2_dropout.pdf",
        png=report(
            f"{RES}/figures/fig2_dropout.png",
            caption="../report/fig2_dropout.rst",
            category="2. Figures",
            labels={"figure": "Figure 2: robustness to test-time modality dropout"},
        ),
        csv=f"{RES}/figures/fig2_dropout.csv",
    log:
        f"{LOGS}/evaluate/fig_dropout.log",
    conda:
        "../../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        **eval_params("figure"),
    script:
        "../scripts/plot_dropout.py"


rule fig_tsne:
    input:
        aligned=ALIGNED,
    output:
        pdf=f"{RES}/figures/fig3_tsne.pdf",
        png=report(
            f"{RES}/figures/fig3_tsne.png",
            caption="../report/fig3_tsne.rst",
            category="2. Figures",
            labels={"figure": "Figure 3: t-SNE before and after alignment"},
        ),
        csv=f"{RES}/figures/fig3_tsne.csv",
        geometry=report(
            f"{RES}/figures/fig3_tsne_geometry.csv",
            caption="../report/fig3_tsne_geometry.rst",
            category="2. Figures",
            labels={
                "table": "Figure 3 (numbers): geometry before and after alignment"
            },
        ),
    log:
        f"{LOGS}/evaluate/fig_tsne.log",
    conda:
        "../../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        **eval_params(fold=TSNE_FOLD),
    script:
        "../scripts/plot_tsne.py"


rule fig_heatmap:
    input:
        aligned=ALIGNED,
    output:
        pdf=f"{RES}/figures/fig4_heatmap.pdf",
        png=report(
            f"{RES}/figures/fig4_heatmap.png",
            caption="../report/fig4_heatmap.rst",
            category="2. Figures",
            labels={"figure": "Figure 4: one patient's modality embeddings"},
        ),
        csv=f"{RES}/figures/fig4_heatmap.csv",
    log:
        f"{LOGS}/evaluate/fig_heatmap.log",
    conda:
        "../../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        **eval_params(fold=TSNE_FOLD),
    script:
        "../scripts/plot_heatmap.py"


rule table5:
    input:
        predictions=prediction_files(EVAL_METHODS["parachute"]),
        masked=masked_files(EVAL_METHODS["parachute"]),
        folds=COHORT["folds"],
    output:
        csv=report(
            f"{RES}/tables/table5_degradation.csv",
            caption="../report/table5.rst",
            category="3. PARACHUTE protocol",
            labels={"table": "Table 5: degradation with missingness"},
        ),
        md=f"{RES}/tables/table5_degradation.md",
        tex=f"{RES}/tables/table5_degradation.tex",
        masked=report(
            f"{RES}/tables/parachute_masked.csv",
            caption="../report/parachute_masked.rst",
            category="3. PARACHUTE protocol",
            labels={"table": "Masked evaluation: C-index and AUC per scenario and p"},
        ),
        masked_md=f"{RES}/tables/parachute_masked.md",
    log:
        f"{LOGS}/evaluate/table5.log",
    conda:
        "../../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        **eval_params("parachute"),
    script:
        "../scripts/make_table5.py"


rule survival_table:
    input:
        **COHORT,
        predictions=prediction_files(EVAL_METHODS["survival"]),
    output:
        csv=report(
            f"{RES}/tables/survival_metrics.csv",
            caption="../report/survival_table.rst",
            category="3. PARACHUTE protocol",
            labels={
                "table": "Survival metrics: C-index (Harrell, Uno), td-AUC, Brier, log-rank"
            },
        ),
        md=f"{RES}/tables/survival_metrics.md",
        tex=f"{RES}/tables/survival_metrics.tex",
        per_fold=report(
            f"{RES}/tables/survival_folds.csv",
            caption="../report/survival_folds.rst",
            category="3. PARACHUTE protocol",
            labels={"table": "Survival metrics per fold"},
        ),
        tests=f"{RES}/tables/survival_tests.csv",
    log:
        f"{LOGS}/evaluate/survival_table.log",
    conda:
        "../../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        **eval_params("survival"),
    script:
        "../scripts/make_survival_table.py"


rule fig_td_auc:
    input:
        **COHORT,
        predictions=prediction_files(EVAL_METHODS["survival_figures"]),
    output:
        pdf=f"{RES}/figures/td_auc.pdf",
        png=report(
            f"{RES}/figures/td_auc.png",
            caption="../report/td_auc.rst",
            category="3. PARACHUTE protocol",
            labels={"figure": "Time-dependent AUC(t)"},
        ),
        csv=f"{RES}/figures/td_auc.csv",
    log:
        f"{LOGS}/evaluate/fig_td_auc.log",
    conda:
        "../../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        **eval_params("survival_figures"),
    script:
        "../scripts/plot_td_auc.py"


rule fig_calibration:
    input:
        **COHORT,
        predictions=prediction_files(EVAL_METHODS["survival_figures"]),
    output:
        pdf=f"{RES}/figures/calibration.pdf",
        png=report(
            f"{RES}/figures/calibration.png",
            caption="../report/calibration.rst",
            category="3. PARACHUTE protocol",
            labels={"figure": "Calibration at fixed horizons"},
        ),
        csv=f"{RES}/figures/calibration.csv",
        summary=report(
            f"{RES}/figures/calibration_summary.csv",
            caption="../report/calibration_summary.rst",
            category="3. PARACHUTE protocol",
            labels={"table": "Calibration: Brier scores at the horizons"},
        ),
    log:
        f"{LOGS}/evaluate/fig_calibration.log",
    conda:
        "../../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        **eval_params("survival_figures", target=config["target"]),
    script:
        "../scripts/plot_calibration.py"


rule fig_km:
    input:
        predictions=prediction_files(EVAL_METHODS["survival_figures"]),
        folds=COHORT["folds"],
    output:
        pdf=f"{RES}/figures/km.pdf",
        png=report(
            f"{RES}/figures/km.png",
            caption="../report/km.rst",
            category="3. PARACHUTE protocol",
            labels={"figure": "Kaplan-Meier curves of predicted risk groups"},
        ),
        csv=report(
            f"{RES}/figures/km.csv",
            caption="../report/km_table.rst",
            category="3. PARACHUTE protocol",
            labels={"table": "Kaplan-Meier: risk groups and number at risk"},
        ),
    log:
        f"{LOGS}/evaluate/fig_km.log",
    conda:
        "../../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        **eval_params("survival_figures"),
    script:
        "../scripts/plot_km.py"


rule claims:
    input:
        **COHORT,
        predictions=prediction_files(EVAL_METHODS["claims"]),
        masked=masked_files(EVAL_METHODS["claims_masked"]),
        aligned=per_fold(f"{RES}/stage2/{FIGURE_ALIGNMENT}/fold_{{fold}}/aligned.npz"),
    output:
        csv=report(
            f"{RES}/tables/claims.csv",
            caption="../report/claims.rst",
            category="1. Tables",
            labels={"table": "Claims of the HAF paper: effect, 95% CI, verdict"},
        ),
        md=f"{RES}/tables/claims.md",
    log:
        f"{LOGS}/evaluate/claims.log",
    conda:
        "../../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        **eval_params("claims"),
    script:
        "../scripts/make_claims.py"


rule fig_attention:
    input:
        attention=[f"{stage1_dir(m, TSNE_FOLD)}/attention.h5" for m in ATTENTION_MODELS],
    output:
        pdf=f"{RES}/figures/attention.pdf",
        png=report(
            f"{RES}/figures/attention.png",
            caption="../report/attention.rst",
            category="2. Figures",
            labels={"figure": "Stage 1 attention of chosen test patients"},
        ),
        csv=f"{RES}/figures/attention.csv",
    log:
        f"{LOGS}/evaluate/fig_attention.log",
    conda:
        "../../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        **eval_params(
            fold=TSNE_FOLD,
            pmods=ATTENTION_MODELS,
            labels=pathology_labels(ATTENTION_MODELS),
        ),
    script:
        "../scripts/plot_attention.py"


rule metrics:
    input:
        table1=f"{RES}/tables/table1.csv",
        survival=f"{RES}/tables/survival_metrics.csv",
    output:
        json=report(
            f"{RES}/metrics.json",
            caption="../report/metrics.rst",
            category="1. Tables",
            labels={
                "table": "metrics.json: every method's pooled metrics (for trackers)"
            },
        ),
    log:
        f"{LOGS}/evaluate/metrics.log",
    conda:
        "../../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        **eval_params(cv=config["cv"]),
        methods=METHODS,
    script:
        "../scripts/make_metrics.py"


# The kept epoch of every per-fold model, and the folds whose validation part was small (docs/selection.md).
rule selected_epochs:
    input:
        logs=[p for m in selected_epoch_models() for p in m["logs"]],
        counts=[p for m in selected_epoch_models() for p in m["counts"]],
        folds=COHORT["folds"],
    output:
        csv=report(
            f"{RES}/tables/selected_epochs.csv",
            caption="../report/selected_epochs.rst",
            category="4. Training",
            labels={"table": "Kept epochs per model and small validation parts"},
        ),
        md=f"{RES}/tables/selected_epochs.md",
        per_fold=f"{RES}/tables/selected_epochs_folds.csv",
    log:
        f"{LOGS}/evaluate/selected_epochs.log",
    conda:
        "../../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        **eval_params(),
        models=selected_epoch_models(),
        sksurv=SKSURV_METHODS,
        training=config["training"],
    script:
        "../scripts/make_selected_epochs.py"


# After every benchmarked job (its inputs are one output of each): reads the benchmark TSVs that exist.
rule benchmarks:
    input:
        [job["output"] for job in benchmark_jobs()],
    output:
        csv=report(
            f"{RES}/tables/benchmarks.csv",
            caption="../report/benchmarks.rst",
            category="4. Training",
            labels={"table": "Wall time, CPU time and memory of each job"},
        ),
        md=f"{RES}/tables/benchmarks.md",
    log:
        f"{LOGS}/evaluate/benchmarks.log",
    conda:
        "../../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        jobs=[
            {k: job[k] for k in ("job", "rule", "benchmark")}
            for job in benchmark_jobs()
        ],
        synthetic=SYNTHETIC,
    script:
        "../scripts/make_benchmarks.py"
