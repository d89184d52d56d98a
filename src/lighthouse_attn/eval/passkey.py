"""The passkey (needle-in-a-haystack) test: one digit hidden in random alphanumeric filler.

Prompt (bytes; exactly ``context`` tokens long)::

    PREFIX + filler[:j] + NEEDLE(d) + filler[j:] + QUESTION

``PREFIX = "Find the pass key hidden in the noise below and remember it. "``,
``NEEDLE(d) = " The pass key is d. Remember it. "``,
``QUESTION = " What is the pass key? The pass key is "``. The filler is ``F = context -
len(PREFIX + NEEDLE + QUESTION)`` random characters from ``[A-Za-z0-9]`` and spaces; the
needle's depth is the fraction of the filler before it, ``j = round(depth / 100 * F)``: depth 0
puts it right after the prefix, depth 100 right before the question. The model's logits at the
final position (the space after "is") are read for the ten digit tokens ``'0'..'9'`` (bytes
48-57) and the argmax is the answer. A trial (its digit and filler) is seeded by
``(seed, context, trial)``, so at one context every depth hides the same digit in the same
filler, only the needle moves.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from ..models import LlamaConfig
from ..models.memory import gib
from ..progress import bar_disable
from ..runtime import autocast
from .forward import bytes_per_sequence, final_logits, fit_batch

PREFIX = "Find the pass key hidden in the noise below and remember it. "
NEEDLE = " The pass key is {digit}. Remember it. "
QUESTION = " What is the pass key? The pass key is "
DIGIT_IDS = tuple(range(ord("0"), ord("9") + 1))
"""Token ids of ``'0'..'9'`` under the byte tokenizer."""
DEFAULT_CONTEXTS = (4096, 8192, 16384, 32768, 65536, 98304)
"""4K, 8K, 16K, 32K, 64K and 96K tokens (bytes), as in the paper."""
DEFAULT_DEPTHS = (0, 15, 30, 50, 70, 85, 100)
"""Needle depths in percent of the filler."""

_FILLER = np.frombuffer((string.ascii_letters + string.digits + " " * 10).encode(), np.uint8)
_OVERHEAD = len(PREFIX) + len(NEEDLE.format(digit=0)) + len(QUESTION)
MIN_CONTEXT = _OVERHEAD + 1
"""Shortest prompt: the fixed text plus one filler character."""


def check_grid(contexts: list[int], depths: list[float], trials: int) -> None:
    """``ValueError`` for a context shorter than :data:`MIN_CONTEXT`, a depth outside
    0..100, or fewer than one trial."""
    if not contexts:
        raise ValueError("no context lengths to evaluate")
    for c in contexts:
        if not isinstance(c, int) or c < MIN_CONTEXT:
            raise ValueError(f"context length {c!r} is too short for the passkey prompt: it "
                             f"needs at least {MIN_CONTEXT} tokens ({_OVERHEAD} of fixed text "
                             "plus filler)")
    if not depths:
        raise ValueError("no depths to evaluate")
    for d in depths:
        if not 0 <= d <= 100:
            raise ValueError(f"depth {d!r} is outside 0..100 (percent of the filler before "
                             "the needle)")
    if trials < 1:
        raise ValueError(f"trials must be >= 1 (got {trials})")


def trial_setup(context: int, trial: int, seed: int) -> tuple[int, np.ndarray]:
    """The digit and the filler bytes (``uint8``, ``context - overhead`` long) of a trial."""
    rng = np.random.default_rng([seed, context, trial])
    digit = int(rng.integers(10))
    filler = _FILLER[rng.integers(len(_FILLER), size=context - _OVERHEAD)]
    return digit, filler


def make_prompt(digit: int, filler: np.ndarray, depth: float) -> np.ndarray:
    """The prompt's token ids (``int64``, ``len(filler) + overhead`` long) with the needle
    for ``digit`` after ``round(depth / 100 * len(filler))`` filler characters."""
    j = round(depth / 100 * len(filler))
    parts = [PREFIX.encode(), filler[:j].tobytes(), NEEDLE.format(digit=digit).encode(),
             filler[j:].tobytes(), QUESTION.encode()]
    return np.frombuffer(b"".join(parts), np.uint8).astype(np.int64)


def score(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Answers and digit probabilities from last-position logits ``(B, V)``: the argmax over
    the ten digit tokens ``(B,)`` int64 (0-9), and the softmax over them ``(B, 10)``."""
    digits = logits[:, list(DIGIT_IDS)].float()
    return digits.argmax(-1), digits.softmax(-1)


@dataclass
class PasskeyResult:
    """Accuracy per cell: ``accuracy[i][j]`` for ``depths[i]`` and ``contexts[j]`` (fraction
    of trials answered right); ``digit_prob`` the mean probability of the right digit among
    the ten; ``records`` one dict per prompt (context, depth, trial, digit, answer); ``skipped``
    the contexts not evaluated and why."""

    contexts: list[int]
    depths: list[float]
    trials: int
    seed: int
    accuracy: list[list[float]]
    digit_prob: list[list[float]]
    records: list[dict]
    skipped: list[dict] = field(default_factory=list)

    @property
    def mean_accuracy(self) -> float | None:
        cells = [a for row in self.accuracy for a in row]
        return sum(cells) / len(cells) if cells else None

    def table(self) -> str:
        """The grid as text: one row per depth, one column per context, accuracy in %."""
        head = "depth \\ context" + "".join(f"{_short(c):>8}" for c in self.contexts)
        lines = [head]
        for depth, row in zip(self.depths, self.accuracy):
            lines.append(f"{depth:>14g}%" + "".join(f"{100 * a:>7.0f}%" for a in row))
        if self.contexts:
            means = [sum(col) / len(col) for col in zip(*self.accuracy)]
            lines.append(f"{'mean':>15}" + "".join(f"{100 * m:>7.0f}%" for m in means))
            lines.append(f"mean accuracy {100 * self.mean_accuracy:.1f}% over "
                         f"{len(self.depths) * len(self.contexts)} cells x {self.trials} trials")
        for s in self.skipped:
            lines.append(f"skipped context {s['context']:,}: {s['reason']}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"contexts": self.contexts, "depths": self.depths, "trials": self.trials,
                "seed": self.seed, "mean_accuracy": self.mean_accuracy,
                "accuracy": self.accuracy, "digit_prob": self.digit_prob,
                "skipped": self.skipped, "records": self.records}


def _short(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else f"{n:,}"


@torch.no_grad()
def run_passkey(model: Callable[[torch.Tensor], torch.Tensor], contexts: list[int],
                depths: list[float] = DEFAULT_DEPTHS, trials: int = 10, seed: int = 0,
                batch_size: int | dict[int, int] = 8, device: torch.device | str = "cpu",
                precision: str = "fp32", progress: bool = True,
                skipped: list[dict] | None = None) -> PasskeyResult:
    """Run the passkey grid.

    Args:
        model: a :class:`~lighthouse_attn.models.Llama` or any ``model(ids (B, N) int64) ->
            logits (B, N, V)``.
        contexts: prompt lengths in tokens, each ``>= MIN_CONTEXT``.
        depths: needle depths in percent (0..100).
        trials: seeded trials per cell.
        batch_size: prompts per forward pass, or a dict context -> prompts per pass.
        precision: ``"fp32"``, ``"bf16"`` (autocast) or ``"auto"`` (bf16 on CUDA).
        skipped: contexts left out before the run, recorded in the result.

    Raises:
        ValueError: a context too short for the prompt, a depth outside 0..100, trials < 1,
            a batch size < 1.
    """
    contexts, depths, device = list(contexts), list(depths), torch.device(device)
    check_grid(contexts, depths, trials)
    sizes = batch_size if isinstance(batch_size, dict) else dict.fromkeys(contexts, batch_size)
    if any(not isinstance(sizes.get(c), int) or sizes[c] < 1 for c in contexts):
        raise ValueError(f"batch_size must be an integer >= 1 for every context (got "
                         f"{batch_size!r})")
    total = len(contexts) * len(depths) * trials
    bar = tqdm(total=total, unit="prompt", dynamic_ncols=True, disable=bar_disable(progress))
    correct = np.zeros((len(depths), len(contexts)))
    prob = np.zeros((len(depths), len(contexts)))
    records = []
    for j, context in enumerate(contexts):
        bar.set_description(f"passkey {_short(context)}")
        per_pass = sizes[context]
        jobs = [(t, i) for t in range(trials) for i in range(len(depths))]
        setups = [trial_setup(context, t, seed) for t in range(trials)]
        for start in range(0, len(jobs), per_pass):
            batch = jobs[start:start + per_pass]
            ids = torch.from_numpy(np.stack([make_prompt(setups[t][0], setups[t][1], depths[i])
                                             for t, i in batch])).to(device)
            with autocast(device, precision):
                logits = final_logits(model, ids)
            answers, probs = score(logits)
            for (t, i), answer, p in zip(batch, answers.tolist(), probs.cpu()):
                digit = setups[t][0]
                correct[i, j] += answer == digit
                prob[i, j] += float(p[digit])
                records.append({"context": context, "depth": depths[i], "trial": t,
                                "digit": digit, "answer": answer})
            bar.update(len(batch))
    bar.close()
    return PasskeyResult(contexts, depths, trials, seed, (correct / trials).tolist(),
                         (prob / trials).tolist(), records, list(skipped or []))


def plan_contexts(config: LlamaConfig, contexts: list[int], *, attention: str,
                  batch_size: int, memory_budget: int, max_context: int | None,
                  trained_seq_len: int | None, bf16: bool = False
                  ) -> tuple[dict[int, int], list[dict]]:
    """Which contexts can run and with how many prompts per forward pass.

    Returns ``(batches, skipped)``: ``batches`` maps each runnable context to its micro-batch
    (``batch_size`` or fewer, to fit ``memory_budget`` bytes of activations); ``skipped``
    lists the others as dicts with ``context``, ``kind`` (``"max-context"``, ``"lighthouse
    budget"`` or ``"memory"``) and ``reason`` (a sentence).
    """
    batches, skipped = {}, []
    lh = config.lighthouse
    uses_lighthouse = attention == "lighthouse" and bool(config.lighthouse_layer_indices)
    for c in contexts:
        if max_context is not None and c > max_context:
            trained = (f"the checkpoint trained at {trained_seq_len:,}"
                       if trained_seq_len else "its training length is unknown")
            skipped.append({"context": c, "kind": "max-context", "reason": (
                f"longer than max_context {max_context:,} ({trained}); raise max_context "
                "to test length extrapolation")})
            continue
        if uses_lighthouse and not (lh.short_seq == "dense" and lh.is_short(c)):
            try:
                lh.validate(c)
            except ValueError as err:
                skipped.append({"context": c, "kind": "lighthouse budget",
                                "reason": f"Lighthouse cannot run it: {err}"})
                continue
        per = bytes_per_sequence(config, c, attention=attention, bf16=bf16)
        fit = fit_batch(per, memory_budget, batch_size)
        if fit == 0:
            skipped.append({"context": c, "kind": "memory", "reason": (
                f"one prompt needs about {gib(per)} of activations, more than the "
                f"{gib(memory_budget)} available (memory budget)")})
            continue
        batches[c] = fit
    return batches, skipped
