"""The search: the space (:mod:`~nnfin.tune.space`), the Optuna study and its storage
(:mod:`~nnfin.tune.search`, :mod:`~nnfin.tune.storage`), the ranking and its outputs
(:mod:`~nnfin.tune.report`) and the search's progress bar.

The search is run by :func:`nnfin.tune` (:mod:`nnfin.app.tune`), which also writes the run
folder and refits the best configuration; candidates are scored by
:func:`nnfin.train.folds.evaluate_candidates`.
"""
