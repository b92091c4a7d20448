# Comparable methods re-implemented from their published descriptions: late fusion (MDLM-style),
# attention fusion (PS3-style), MFMF, simple feature interaction, PARACHUTE.


rule comparator:
    input:
        fold_inputs=f"{RES}/fold_inputs/fold_{{fold}}.npz",
    output:
        model=f"{RES}/methods/{{method}}/fold_{{fold}}/model.pt",
        predictions=f"{RES}/methods/{{method}}/fold_{{fold}}/predictions.tsv",
        masked=f"{RES}/methods/{{method}}/fold_{{fold}}/masked.tsv.gz",
        train_log=f"{RES}/methods/{{method}}/fold_{{fold}}/train_log.tsv",
    log:
        f"{LOGS}/methods/{{method}}/fold_{{fold}}.log",
    wildcard_constraints:
        method=name_pattern(COMPARATOR_METHODS),
    conda:
        "../../envs/train.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    params:
        declaration=lambda wildcards: METHODS[wildcards.method],
        stage3=config["stage3"],
        parachute=config["parachute"],
        evaluation=config["evaluation"],
        device=config["device"],
    script:
        "../scripts/train_comparator.py"
