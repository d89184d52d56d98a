"""Continue a prompt with a trained or exported model (the `generate` command).

Dense attention with a key/value cache, greedy (``temperature=0``) or sampled (temperature,
top-p, seed), on the CPU or a GPU. Takes a run or checkpoint directory of this project, or an
exported transformers directory, which it runs through transformers' own ``generate``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .data import Tokenizer


def model_tokenizer_at(path: str | Path) -> Tokenizer:
    """The tokenizer of the model at ``path`` (a run, checkpoint or exported directory)."""
    from .models.hf_causal_lm import saved_tokenizer
    from .models.loading import is_hf_checkpoint, model_tokenizer, resolve_model_dir

    path = Path(path)
    if path.is_dir() and is_hf_checkpoint(path):
        return saved_tokenizer(path)
    return model_tokenizer(resolve_model_dir(path))


def run_generation(path: str | Path, prompt: list[int], *, max_new_tokens: int,
                   temperature: float, top_p: float, seed: int, stop: bool,
                   device: torch.device, sep_id: int) -> list[int]:
    """New token ids after ``prompt`` from the model at ``path`` (stopping after the document
    separator ``sep_id`` when ``stop``)."""
    from .models import Llama
    from .models.decode import generate
    from .models.loading import is_hf_checkpoint, load_model, resolve_model_dir

    path = Path(path)
    if path.is_dir() and is_hf_checkpoint(path):  # an export, or an --hf-config final model
        from transformers import AutoModelForCausalLM

        lm = AutoModelForCausalLM.from_pretrained(str(path), attn_implementation="sdpa")
        return _hf_generate(lm.to(device), prompt, max_new_tokens=max_new_tokens,
                            temperature=temperature, top_p=top_p, seed=seed, stop=stop,
                            sep_id=sep_id)
    model, _ = load_model(resolve_model_dir(path), attention="dense")
    model = model.to(device)
    if isinstance(model, Llama):
        return generate(model, prompt, max_new_tokens, temperature=temperature, top_p=top_p,
                        seed=seed, stop_ids=(sep_id,) if stop else ())
    return _hf_generate(model.lm, prompt, max_new_tokens=max_new_tokens,
                        temperature=temperature, top_p=top_p, seed=seed, stop=stop,
                        sep_id=sep_id)


def trained_context(path: str | Path) -> int | None:
    """The context length the model at ``path`` was trained on: its run's ``seq_len``, or an
    export's ``max_position_embeddings`` (``None`` when unknown)."""
    import json

    from .eval.loading import trained_seq_len
    from .models.loading import is_hf_checkpoint, resolve_model_dir

    path = Path(path)
    if path.is_dir() and is_hf_checkpoint(path):
        value = json.loads((path / "config.json").read_text()).get("max_position_embeddings")
        return value if isinstance(value, int) else None
    try:
        return trained_seq_len(resolve_model_dir(path))
    except ValueError:
        return None


def _hf_generate(lm, prompt: list[int], *, max_new_tokens: int, temperature: float,
                 top_p: float, seed: int, stop: bool, sep_id: int) -> list[int]:
    torch.manual_seed(seed)
    ids = torch.tensor([prompt], device=next(lm.parameters()).device)
    kwargs = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) \
        if temperature > 0 else dict(do_sample=False)
    out = lm.eval().generate(ids, attention_mask=torch.ones_like(ids),
                             max_new_tokens=max_new_tokens,
                             eos_token_id=sep_id if stop else None, pad_token_id=sep_id,
                             use_cache=True, **kwargs)
    return out[0, len(prompt):].tolist()
