# Stage 3: fusion methods (HAF and its variants and ablations), one trainer and one script for all,
# every fold of a method in one job (the folds train side by side: haf.runtime.stacked). Two rules only
# because their inputs differ: the detached methods train on the fold inputs (and frozen Stage 2
# projectors), the no-detach ablations (Eq. 12) also re-train the CLAM encoders on the bags (and the
# warm-started ones, init: stage1, read each fold's Stage 1 models).


rule fusion:
    input:
        unpack(fusion_inputs),
    output:
        model=per_fold(f"{RES}/methods/{{method}}/fold_{{fold}}/model.pt"),
        predictions=per_fold(f"{RES}/methods/{{method}}/fold_{{fold}}/predictions.tsv"),
        masked=per_fold(f"{RES}/methods/{{method}}/fold_{{fold}}/masked.tsv.gz"),
        train_log=per_fold(f"{RES}/methods/{{method}}/fold_{{fold}}/train_log.tsv"),
    log:
        f"{LOGS}/methods/{{method}}.log",
    benchmark:
        f"{LOGS}/benchmarks/{{method}}.tsv"
    wildcard_constraints:
        method=name_pattern(DETACHED_FUSION_METHODS),
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=120,
    params:
        declaration=lambda wildcards: METHODS[wildcards.method],
        stage1=config["stage1"],
        stage2=config["stage2"],
        stage3=config["stage3"],
        evaluation=config["evaluation"],
        device=config["device"],
        training=config["training"],
        folds=FOLDS,
    script:
        "../scripts/train_fusion.py"


rule fusion_joint:
    input:
        unpack(joint_inputs),
    output:
        model=per_fold(f"{RES}/methods/{{method}}/fold_{{fold}}/model.pt"),
        predictions=per_fold(f"{RES}/methods/{{method}}/fold_{{fold}}/predictions.tsv"),
        masked=per_fold(f"{RES}/methods/{{method}}/fold_{{fold}}/masked.tsv.gz"),
        train_log=per_fold(f"{RES}/methods/{{method}}/fold_{{fold}}/train_log.tsv"),
    log:
        f"{LOGS}/methods/{{method}}.log",
    benchmark:
        f"{LOGS}/benchmarks/{{method}}.tsv"
    wildcard_constraints:
        method=name_pattern(JOINT_FUSION_METHODS),
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    params:
        declaration=lambda wildcards: METHODS[wildcards.method],
        stage1=config["stage1"],
        stage2=config["stage2"],
        stage3=config["stage3"],
        evaluation=config["evaluation"],
        device=config["device"],
        training=config["training"],
        folds=FOLDS,
        pathology=PATHOLOGY_NEEDED,
    script:
        "../scripts/train_fusion.py"
