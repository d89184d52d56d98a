"""A trained model as an ordinary transformers checkpoint (the `export` command).

The final dense model of a run (or any of its checkpoints) becomes a ``LlamaForCausalLM``
directory (``config.json``, ``model.safetensors``, ``generation_config.json``) with the byte
tokenizer beside it (``tokenizer.json``, ``tokenizer_config.json``), so that
``AutoModelForCausalLM.from_pretrained(OUT)`` and ``AutoTokenizer.from_pretrained(OUT)`` load
it with no code of ours, and any transformers-based server can serve it. Runs of an HF
architecture are exported in their own architecture. The directory is
written atomically (``hf.model.save_pretrained``).
"""

from __future__ import annotations

import os
from pathlib import Path

from .settings import SettingError

EXPORT_FILES = {"config.json", "generation_config.json", "model.safetensors",
                "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "chat_template.jinja"}
"""Files an export writes (sharded weights ``model-*.safetensors`` too)."""


def is_export(path: Path) -> bool:
    """True when ``path`` holds an earlier export and nothing else."""
    names = {p.name for p in path.iterdir()}
    return ({"config.json"} <= names and any(n.endswith(".safetensors") for n in names) and
            all(n in EXPORT_FILES or (n.startswith("model-") and n.endswith(".safetensors"))
                for n in names))


def check_output_dir(out: Path, overwrite: bool, source: Path | None = None) -> None:
    """``ValueError`` unless ``out`` can be written: not a file or below one, not the source
    run nor a directory holding it, empty (or, with ``overwrite``, an earlier export), and
    a writable parent."""
    resolved = out.resolve()
    for parent in (resolved, *resolved.parents):
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"cannot write {out}: {parent} is a file, not a directory; choose "
                             "a directory path for the export")
    if source is not None:
        src = source.resolve()
        if resolved == src or resolved in src.parents:
            raise ValueError(f"{out} is or contains the run being exported ({source}); choose "
                             f"a new directory, e.g. {source.name}-hf")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise SettingError(f"{out} already holds files; choose a new directory (e.g. "
                               f"{out.name or 'run'}-hf), or pass overwrite to replace an "
                               "earlier export there", "overwrite")
        if not is_export(out):
            raise SettingError(f"{out} holds files that are not an earlier export; overwrite "
                               "replaces only an export (config.json, model.safetensors, "
                               "tokenizer files): choose a new directory", "overwrite")
    parent = resolved.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise ValueError(f"cannot write {out}: {parent} is not writable; choose another "
                         "directory")


def export(run: str | Path, out: str | Path, overwrite: bool = False) -> dict:
    """Write the model at ``run`` to ``out``; returns what was exported (``step``,
    ``trained_attention``, ``architecture``, ``parameters``, ``warnings``).

    Raises:
        ValueError: no model at ``run``, an unwritable ``out``, or a model that does not map
            exactly onto the transformers architecture.
    """
    from .data.hf_tokenizer import hf_tokenizer
    from .eval.loading import trained_seq_len
    from .hf.model import save_pretrained
    from .models import Llama
    from .models.loading import load_model, model_tokenizer, resolve_model_dir
    from .models.to_hf import to_hf_llama

    out = Path(out)
    check_output_dir(out, overwrite, source=Path(run))
    model_dir = resolve_model_dir(run)
    model, info = load_model(model_dir, attention="dense")
    tokenizer = model_tokenizer(model_dir)
    warnings = []
    if model_dir.parent.name == "checkpoints" and Path(run).resolve() != model_dir.resolve():
        warnings.append(f"{run} has not finished (no final/ model): exporting its newest "
                        f"checkpoint, {model_dir.name}")
    if info["trained_attention"] == "lighthouse":
        warnings.append(f"{model_dir} was saved during stage 1 (trained with Lighthouse "
                        "attention, before any dense recovery): it is exported as a dense model, "
                        "which it has not been trained to be; expect a higher loss than after "
                        "recovery")
    if isinstance(model, Llama):
        hf = to_hf_llama(model, max(trained_seq_len(model_dir) or 0, 2048), tokenizer.sep_id)
    else:
        hf = model.lm  # an --hf-config run: already a transformers model
        hf.config._attn_implementation = "sdpa"
    try:
        save_pretrained(hf, out, tokenizer=hf_tokenizer(tokenizer))  # atomic, replaces ``out``
    except OSError as err:
        raise ValueError(f"cannot write {out}: {err.strerror}; choose another directory"
                         ) from None
    return {"step": info["step"], "trained_attention": info["trained_attention"],
            "architecture": type(hf).__name__, "source": str(model_dir),
            "parameters": sum(p.numel() for p in hf.parameters()), "warnings": warnings,
            "tokenizer": "the byte tokenizer" if info["tokenizer"]["type"] == "byte" else
            "the run's tokenizer file"}
