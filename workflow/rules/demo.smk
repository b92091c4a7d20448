# The embedded demo cohort: SYNTHETIC patients written in the exact HANCOCK layout and formats.


rule demo_cohort:
    output:
        f"{DATA}/demo_cohort.json",
    log:
        f"{LOGS}/demo_cohort.log",
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        demo=config["demo"],
        paths=config["paths"],
        markers=config["extract"]["markers"],
    script:
        "../scripts/make_demo_cohort.py"
