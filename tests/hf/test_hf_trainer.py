"""A short two-stage run with transformers' Trainer and RecoveryCallback."""

import math

import pytest
import torch

pytest.importorskip("accelerate")

from tiny_models import LH, N, tiny_model, tokens
from transformers import Trainer, TrainerCallback, TrainingArguments

import lighthouse_attn.hf as lh_hf
from lighthouse_attn.hf import attention as hf_attention


class Rows(torch.utils.data.Dataset):
    """Unpadded rows of concatenated text: input_ids only (labels = input_ids)."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return {"input_ids": self.rows[i], "labels": self.rows[i]}


class StepLog(TrainerCallback):
    """Per optimizer step: the attention implementation and how many Lighthouse calls ran."""

    def __init__(self, counter):
        self.counter, self.steps = counter, []

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self.counter[0] = 0
        self.impl = model.config._attn_implementation

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append((self.impl, self.counter[0]))


def test_recovery_callback_switches_at_the_right_step(tmp_path, monkeypatch):
    counter = [0]

    def counting(*args, **kwargs):
        counter[0] += 1
        return lighthouse_attention(*args, **kwargs)

    lighthouse_attention = hf_attention.lighthouse_attention
    monkeypatch.setattr(hf_attention, "lighthouse_attention", counting)
    model = lh_hf.configure(tiny_model(), LH, dense_layers=[0, -1])  # 2 Lighthouse layers
    recovery, log = lh_hf.RecoveryCallback(switch_step=3), StepLog(counter)
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=5, per_device_train_batch_size=2,
        gradient_accumulation_steps=2, learning_rate=1e-3, logging_steps=1, save_strategy="no",
        report_to=[], use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=0)
    rows = list(tokens(batch=20, n=N))
    trainer = Trainer(model=model, args=args, train_dataset=Rows(rows),
                      callbacks=[recovery, log])
    trainer.train()

    # Steps 0-2: Lighthouse (2 layers x 2 micro-batches); steps 3-4: dense SDPA.
    assert log.steps == [("lighthouse", 4)] * 3 + [("sdpa", 0)] * 2
    assert recovery.switched_at == 3
    assert model.config._attn_implementation == "sdpa"
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 5 and all(math.isfinite(x) for x in losses)


def test_recovery_callback_validates_and_switches_a_resumed_run():
    with pytest.raises(ValueError, match="switch_step"):
        lh_hf.RecoveryCallback(switch_step=-1)
    model = lh_hf.configure(tiny_model(), LH, dense_layers=[0])
    callback = lh_hf.RecoveryCallback(switch_step=10)
    state = type("State", (), {"global_step": 12})()
    callback.on_train_begin(None, state, None, model=model)  # resumed past the switch
    assert lh_hf.lighthouse_layers(model) == [] and callback.switched_at == 12
