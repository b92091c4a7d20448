# Cohort: manifest, targets, folds and per-fold tabular matrices.


rule manifest:
    input:
        raw_inputs(*MANIFEST_SOURCES),
    output:
        manifest=f"{RES}/cohort/manifest.tsv",
        counts=f"{RES}/cohort/modality_counts.json",
    log:
        f"{LOGS}/manifest.log",
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        data_root=DATA,
        paths=config["paths"],
        markers=config["extract"]["markers"],
        wsi_dim=config["stage1"]["wsi_dim"],
        tabular=config["tabular"],
    script:
        "../scripts/build_manifest.py"


rule targets:
    input:
        raw_inputs("clinical"),
        manifest=f"{RES}/cohort/manifest.tsv",
    output:
        f"{RES}/cohort/targets.tsv",
    log:
        f"{LOGS}/targets.log",
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        data_root=DATA,
        paths=config["paths"],
        target=config["target"],
    script:
        "../scripts/build_targets.py"


rule folds:
    input:
        raw_inputs("splits"),
        targets=f"{RES}/cohort/targets.tsv",
    output:
        f"{RES}/cohort/folds.tsv",
    log:
        f"{LOGS}/folds.log",
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        data_root=DATA,
        paths=config["paths"],
        cv=config["cv"],
    script:
        "../scripts/make_folds.py"


rule tabular:
    input:
        raw_inputs(*TABULAR_SOURCES),
        manifest=f"{RES}/cohort/manifest.tsv",
        folds=f"{RES}/cohort/folds.tsv",
    output:
        per_fold(f"{RES}/tabular/fold_{{fold}}.npz"),
    log:
        f"{LOGS}/tabular.log",
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        data_root=DATA,
        paths=config["paths"],
        tabular=config["tabular"],
        folds=FOLDS,
    script:
        "../scripts/preprocess_tabular.py"


rule fold_inputs:
    input:
        **fold_embeddings(),
        tabular=per_fold(f"{RES}/tabular/fold_{{fold}}.npz"),
        targets=f"{RES}/cohort/targets.tsv",
        folds=f"{RES}/cohort/folds.tsv",
        manifest=f"{RES}/cohort/manifest.tsv",
    output:
        per_fold(f"{RES}/fold_inputs/fold_{{fold}}.npz"),
    log:
        f"{LOGS}/fold_inputs.log",
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        folds=FOLDS,
        pathology=PATHOLOGY_NEEDED,
    script:
        "../scripts/assemble_fold_inputs.py"
