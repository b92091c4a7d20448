# UNI (or another registered encoder) patch embeddings from the TMA core images: the GPU rule.
# The per-patient h5 files are not declared outputs: they survive a failed or killed job, and a rerun
# redoes only the patients whose h5 is missing or was made with other settings (resume).
# threads: DataLoader workers decode and tile the cores. PNG decoding is the CPU-bound part on real
# HANCOCK cores (~1-2 s per 7,600-px core), so the rule asks for 16 (Snakemake caps it at --cores);
# on CUDA threads - 1 of them decode, on CPU half decode and half run the encoder.
# extract.precomputed.dir: features made elsewhere (TRIDENT/CLAM h5 or .pt) are validated and rewritten in
# this layout instead (haf.extract.precomputed); no encoder runs, so no GPU is asked for.


rule extract_tma:
    input:
        raw_inputs("tma_cores", demo=False),
        manifest=f"{RES}/cohort/manifest.tsv",
    output:
        index=TMA_INDEX,
    log:
        f"{LOGS}/extract_tma.log",
    benchmark:
        f"{LOGS}/benchmarks/extract_tma.tsv"
    conda:
        "../../envs/extract.yaml"
    threads: 16
    resources:
        gpu=0 if config["extract"]["precomputed"]["dir"] else 1,
        mem_mb=16000,
        runtime=240,
    params:
        extract=config["extract"],
        device=config["device"],
        h5_dir=f"{RES}/features/tma/{ENCODER}/h5",
        tma_maps=str(data_path(config, "tma_maps")),
    script:
        "../scripts/extract_tma_features.py"
