"""Models trained from scratch for the book's Part I chapters."""

from tvlib.models.gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig"]
