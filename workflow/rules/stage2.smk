# Stage 2: alignment of the seven modality projections into a shared 128-d space (GA or CLIP).
# One intra-op thread: the per-step tensors are tiny (64 patients x 7 x 128), a second thread only
# adds synchronisation (measured: 3x the CPU time), so two folds run side by side on two cores.


rule align:
    input:
        fold_inputs=f"{RES}/fold_inputs/fold_{{fold}}.npz",
    output:
        projectors=f"{RES}/stage2/{{align}}/fold_{{fold}}/projectors.pt",
        aligned=f"{RES}/stage2/{{align}}/fold_{{fold}}/aligned.npz",
        train_log=f"{RES}/stage2/{{align}}/fold_{{fold}}/train_log.tsv",
    log:
        f"{LOGS}/stage2/{{align}}/fold_{{fold}}.log",
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        stage2=config["stage2"],
        device=config["device"],
    script:
        "../scripts/train_alignment.py"
