"""The linear self-attention model of Dong et al. (2025), Sections 2-4 and 6.1.

Kept apart from the task-vector engine: tasks and prompt layouts (``data``), the model (``model``),
the seed-vectorised trainer (``train``) and the measurements the chapter makes on trained models
and closed-form references (``analysis``).
"""
