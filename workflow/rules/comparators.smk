# Comparable methods re-implemented from their published descriptions: late fusion (MDLM-style),
# attention fusion (PS3-style), MFMF, simple feature interaction, PARACHUTE; every fold of a method in
# one job (the folds train side by side: haf.runtime.stacked). The token-level attention methods
# (tokens: instance) also read the bags (manifest, TMA index) for their instance tokens.


rule comparator:
    input:
        unpack(comparator_inputs),
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
        method=name_pattern(COMPARATOR_METHODS),
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    params:
        declaration=lambda wildcards: METHODS[wildcards.method],
        stage3=config["stage3"],
        parachute=config["parachute"],
        evaluation=config["evaluation"],
        device=config["device"],
        training=config["training"],
        folds=FOLDS,
        bags=comparator_bag_params,
    script:
        "../scripts/train_comparator.py"


# Classical survival baselines (family sksurv: CoxPH, CoxNet via scikit-survival), fitted per fold on the
# training part in closed form: CPU only, seconds per method.
rule sksurv:
    input:
        fold_inputs=per_fold(f"{RES}/fold_inputs/fold_{{fold}}.npz"),
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
        method=name_pattern(SKSURV_METHODS),
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        declaration=lambda wildcards: METHODS[wildcards.method],
        sksurv=config["sksurv"],
        evaluation=config["evaluation"],
        folds=FOLDS,
    script:
        "../scripts/train_sksurv.py"
