# Stage 3: fusion methods (HAF and its variants and ablations), one trainer for all of them.
# Detached methods train a small MLP on 128-d inputs: one intra-op thread (a second one only adds
# synchronisation); the no-detach ablations also train the CLAM encoders on the bags: two threads.


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
        method=name_pattern(FUSION_METHODS),
    conda:
        "../../envs/train.yaml"
    threads: lambda wildcards: 1 if METHODS[wildcards.method]["detach"] else 2
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
