"""Small GPTs trained from scratch (Yang et al. 2025): tasks, the model, training with the TVP-loss, evaluation.

Floors: :mod:`~tvlib.scratch.tasks` and :mod:`~tvlib.scratch.gpt` (tasks and the model), then
:mod:`~tvlib.scratch.train` (the run cache, the TVP-loss) and, beside it and never importing it,
:mod:`~tvlib.scratch.evaluate` and :mod:`~tvlib.scratch.baselines`; last :mod:`~tvlib.scratch.findings`
(the chapters' generated text).
"""
