# UNI (or another registered encoder) patch embeddings from the TMA core images: the GPU rule.


rule extract_tma:
    input:
        manifest=f"{RES}/cohort/manifest.tsv",
    output:
        index=TMA_INDEX,
    params:
        extract=config["extract"],
        device=config["device"],
        h5_dir=f"{RES}/features/tma/{ENCODER}/h5",
    log:
        f"{LOGS}/extract_tma.log",
    conda:
        "../../envs/extract.yaml"
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    script:
        "../scripts/extract_tma_features.py"
