# Evaluation: every table and figure is a file under results/ with a short named target rule
# (`snakemake table1`, `snakemake fig_dropout`, ...). Asking for one builds only what it needs.

TABLE2_METHODS = [
    m
    for m in ("fusion_mlp_all", "ga", "drop", "haf")
    if m in METHODS and f"{m}_nodetach" in METHODS
]
TABLE2_METHODS = TABLE2_METHODS + [f"{m}_nodetach" for m in TABLE2_METHODS]
FIGURE_METHODS = [m for m in config["evaluation"]["figure_methods"] if m in MASKED_METHODS]


rule table1:
    input:
        predictions=prediction_files(list(METHODS)),
        folds=f"{RES}/cohort/folds.tsv",
    output:
        csv=report(
            f"{RES}/tables/table1.csv",
            caption="../report/table1.rst",
            category="Tables",
        ),
        md=f"{RES}/tables/table1.md",
        tex=f"{RES}/tables/table1.tex",
        tests=f"{RES}/tables/table1_tests.csv",
        per_fold=f"{RES}/tables/table1_folds.csv",
    params:
        methods=METHODS,
        evaluation=config["evaluation"],
        synthetic=config["demo"]["enabled"],
    log:
        f"{LOGS}/evaluate/table1.log",
    conda:
        "../../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    script:
        "../scripts/make_table1.py"


rule table2:
    input:
        predictions=prediction_files(TABLE2_METHODS),
    output:
        csv=report(
            f"{RES}/tables/table2.csv",
            caption="../report/table2.rst",
            category="Tables",
        ),
        md=f"{RES}/tables/table2.md",
        tex=f"{RES}/tables/table2.tex",
    params:
        methods={m: METHODS[m] for m in TABLE2_METHODS},
        evaluation=config["evaluation"],
        synthetic=config["demo"]["enabled"],
    log:
        f"{LOGS}/evaluate/table2.log",
    conda:
        "../../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    script:
        "../scripts/make_table2.py"


rule fig_dropout:
    input:
        predictions=prediction_files(FIGURE_METHODS),
        masked=masked_files(FIGURE_METHODS),
    output:
        pdf=report(
            f"{RES}/figures/fig2_dropout.pdf",
            caption="../report/fig2_dropout.rst",
            category="Figures",
        ),
        png=f"{RES}/figures/fig2_dropout.png",
        csv=f"{RES}/figures/fig2_dropout.csv",
    params:
        methods={m: METHODS[m] for m in FIGURE_METHODS},
        evaluation=config["evaluation"],
        synthetic=config["demo"]["enabled"],
    log:
        f"{LOGS}/evaluate/fig_dropout.log",
    conda:
        "../../envs/eval.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    script:
        "../scripts/plot_dropout.py"
