# HAF-flow: multimodal, missing-modality-robust survival prediction on HANCOCK.
# Wiring only: every rule's work is a library call in workflow/scripts/*.py.


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/cohort.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/stage1.smk"
include: "workflow/rules/stage2.smk"
include: "workflow/rules/stage3.smk"
include: "workflow/rules/comparators.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    default_target: True
    input:
        all_targets(),
