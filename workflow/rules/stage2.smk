# Stage 2: alignment of the seven modality projections into a shared 128-d space (GA or CLIP).


rule align:
    input:
        fold_inputs=f"{RES}/fold_inputs/fold_{{fold}}.npz",
    output:
        projectors=f"{RES}/stage2/{{align}}/fold_{{fold}}/projectors.pt",
        aligned=f"{RES}/stage2/{{align}}/fold_{{fold}}/aligned.npz",
        train_log=f"{RES}/stage2/{{align}}/fold_{{fold}}/train_log.tsv",
    params:
        stage2=config["stage2"],
        device=config["device"],
    log:
        f"{LOGS}/stage2/{{align}}/fold_{{fold}}.log",
    conda:
        "../../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/train_alignment.py"
