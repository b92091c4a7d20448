# Stage 1: CLAM gated-attention MIL per fold and pathology model (wsi, tma, wsi_tma).


rule stage1:
    input:
        stage1_raw_inputs,
        manifest=f"{RES}/cohort/manifest.tsv",
        targets=f"{RES}/cohort/targets.tsv",
        folds=f"{RES}/cohort/folds.tsv",
        tma_index=TMA_INDEX,
    output:
        model=f"{RES}/stage1/{{pmod}}/fold_{{fold}}/model.pt",
        embeddings=f"{RES}/stage1/{{pmod}}/fold_{{fold}}/embeddings.npz",
        predictions=f"{RES}/stage1/{{pmod}}/fold_{{fold}}/predictions.tsv",
        train_log=f"{RES}/stage1/{{pmod}}/fold_{{fold}}/train_log.tsv",
        loss_curve=f"{RES}/stage1/{{pmod}}/fold_{{fold}}/loss_curve.png",
    log:
        f"{LOGS}/stage1/{{pmod}}/fold_{{fold}}.log",
    conda:
        "../../envs/train.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    params:
        stage1=config["stage1"],
        encoder=ENCODER,
        device=config["device"],
    script:
        "../scripts/train_stage1.py"
