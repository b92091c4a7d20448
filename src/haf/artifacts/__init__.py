"""The files between rules: one module per file contract, holding its columns/keys, reader and writer.

Every writer and every reader of a file goes through its module here, so a contract cannot drift
between the rule that writes it and the rules that read it (docs/ARCHITECTURE.md, "Files between
rules", maps each file to its module).  Writes are atomic and byte-stable (:mod:`.files`); readers
validate and raise :class:`haf.errors.HafInputError` naming the file, the row and the field.
``.pt`` files go through :mod:`.torch_files` (the only module here that imports torch).

=================================================  =================================
file (under ``results/``)                          module
=================================================  =================================
``cohort/manifest.tsv``, ``modality_counts.json``  :mod:`.manifest`
``cohort/targets.tsv``                             :mod:`.targets`
``cohort/folds.tsv``                               :mod:`.folds`
``tabular/fold_{k}.npz``                           :mod:`.tabular`
``features/tma/{encoder}/index.tsv``               :mod:`.tma_index`
``features/tma/{encoder}/h5/{patient}.h5``         :mod:`.bags` (also HANCOCK's WSI h5)
``stage1/{pmod}/fold_{k}/embeddings.npz``          :mod:`.embeddings`
``stage1/{pmod}/fold_{k}/model.pt``                :mod:`.stage1_model`
``stage1/{pmod}/fold_{k}/attention.h5``            :mod:`.attention`
``fold_inputs/fold_{k}.npz``                       :mod:`.fold_inputs`
``stage2/{align}/fold_{k}/projectors.pt``          :mod:`.projectors`
``stage2/{align}/fold_{k}/aligned.npz``            :mod:`.aligned`
``*/predictions.tsv``                              :mod:`.predictions`
``methods/{method}/fold_{k}/masked.tsv.gz``        :mod:`.masked`
``*/train_log.tsv``                                :mod:`.train_log`
``methods/{method}/fold_{k}/model.pt``             :mod:`.checkpoints`
=================================================  =================================
"""
