"""Pretrained LLMs (SmolLM2-135M): loading, word tasks, and task-vector evaluation through the engine.

:mod:`~tvlib.llm.load` (GGUF to a cached safetensors model), :mod:`~tvlib.llm.wordtasks` (the word
lists of ``tvlib/llm/data`` and prompts), :mod:`~tvlib.llm.evaluate` (TaskV by layer, dev and test),
:mod:`~tvlib.llm.findings` (the text the pretrained-LLM chapter generates from its numbers).
"""
