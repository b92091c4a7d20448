# Stage 2: alignment of the seven modality projections into a shared 128-d space (GA or CLIP), every
# fold in one job (the folds train side by side: haf.runtime.stacked).
# One intra-op thread: the per-step tensors are tiny (64 patients x 7 x 128), a second thread only
# adds synchronisation (measured: 3x the CPU time), so two folds run side by side on two cores.


rule align:
    input:
        fold_inputs=per_fold(f"{RES}/fold_inputs/fold_{{fold}}.npz"),
    output:
        projectors=per_fold(f"{RES}/stage2/{{align}}/fold_{{fold}}/projectors.pt"),
        aligned=per_fold(f"{RES}/stage2/{{align}}/fold_{{fold}}/aligned.npz"),
        train_log=per_fold(f"{RES}/stage2/{{align}}/fold_{{fold}}/train_log.tsv"),
    log:
        f"{LOGS}/stage2/{{align}}.log",
    benchmark:
        f"{LOGS}/benchmarks/align_{{align}}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        stage2=config["stage2"],
        device=config["device"],
        training=config["training"],
        folds=FOLDS,
    script:
        "../scripts/train_alignment.py"
