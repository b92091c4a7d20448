# Stage 3: fusion methods (HAF and its variants and ablations), one trainer and one script for all.
# Two rules only because their needs differ: the detached methods train a small MLP on 128-d inputs
# (one intra-op thread; a second one only adds synchronisation), the no-detach ablations (Eq. 12)
# also re-train the CLAM encoders on the bags (two threads, the bag files as inputs).


rule fusion:
    input:
        unpack(fusion_inputs),
    output:
        model=f"{RES}/methods/{{method}}/fold_{{fold}}/model.pt",
        predictions=f"{RES}/methods/{{method}}/fold_{{fold}}/predictions.tsv",
        masked=f"{RES}/methods/{{method}}/fold_{{fold}}/masked.tsv.gz",
        train_log=f"{RES}/methods/{{method}}/fold_{{fold}}/train_log.tsv",
    log:
        f"{LOGS}/methods/{{method}}/fold_{{fold}}.log",
    wildcard_constraints:
        method=name_pattern(DETACHED_FUSION_METHODS),
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=30,
    params:
        declaration=lambda wildcards: METHODS[wildcards.method],
        stage1=config["stage1"],
        stage2=config["stage2"],
        stage3=config["stage3"],
        evaluation=config["evaluation"],
        device=config["device"],
    script:
        "../scripts/train_fusion.py"


rule fusion_joint:
    input:
        fold_inputs=f"{RES}/fold_inputs/fold_{{fold}}.npz",
        manifest=f"{RES}/cohort/manifest.tsv",
        tma_index=TMA_INDEX,
    output:
        model=f"{RES}/methods/{{method}}/fold_{{fold}}/model.pt",
        predictions=f"{RES}/methods/{{method}}/fold_{{fold}}/predictions.tsv",
        masked=f"{RES}/methods/{{method}}/fold_{{fold}}/masked.tsv.gz",
        train_log=f"{RES}/methods/{{method}}/fold_{{fold}}/train_log.tsv",
    log:
        f"{LOGS}/methods/{{method}}/fold_{{fold}}.log",
    wildcard_constraints:
        method=name_pattern(JOINT_FUSION_METHODS),
    conda:
        "../../envs/train.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    params:
        declaration=lambda wildcards: METHODS[wildcards.method],
        stage1=config["stage1"],
        stage2=config["stage2"],
        stage3=config["stage3"],
        evaluation=config["evaluation"],
        device=config["device"],
    script:
        "../scripts/train_fusion.py"
