# Stage 1: CLAM gated-attention MIL per pathology model (wsi, tma, wsi_tma), every fold in one job.
# attention.h5: every patient's attention over its full bag (haf.artifacts.attention; fig_attention).
# One intra-op thread: the folds train side by side (haf.runtime.stacked), and two such jobs share two
# cores better than one job with two threads.


rule stage1:
    input:
        stage1_raw_inputs,
        manifest=f"{RES}/cohort/manifest.tsv",
        targets=f"{RES}/cohort/targets.tsv",
        folds=f"{RES}/cohort/folds.tsv",
        tma_index=tma_index_input,
    output:
        model=per_fold(f"{RES}/stage1/{{pmod}}/fold_{{fold}}/model.pt"),
        embeddings=per_fold(f"{RES}/stage1/{{pmod}}/fold_{{fold}}/embeddings.npz"),
        predictions=per_fold(f"{RES}/stage1/{{pmod}}/fold_{{fold}}/predictions.tsv"),
        train_log=per_fold(f"{RES}/stage1/{{pmod}}/fold_{{fold}}/train_log.tsv"),
        loss_curve=per_fold_report(
            f"{RES}/stage1/{{pmod}}/fold_{{fold}}/loss_curve.png",
            caption="../report/loss_curve.rst",
            category="4. Training",
            subcategory="Stage 1 loss curves",
            labels={"model": "{pmod}"},
        ),
        attention=per_fold(f"{RES}/stage1/{{pmod}}/fold_{{fold}}/attention.h5"),
    log:
        f"{LOGS}/stage1/{{pmod}}.log",
    benchmark:
        f"{LOGS}/benchmarks/stage1_{{pmod}}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    params:
        stage1=config["stage1"],
        encoder=ENCODER,
        device=config["device"],
        training=config["training"],
        folds=FOLDS,
    script:
        "../scripts/train_stage1.py"
