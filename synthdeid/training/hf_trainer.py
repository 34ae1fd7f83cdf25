"""What the annotator's and the generator's Hugging Face `Trainer` runs share."""

from __future__ import annotations

import os
from typing import Any

from transformers import TrainingArguments


def training_arguments(
    output_dir: str, *, device: str, progress: bool, bf16: bool = False, **settings: Any
) -> TrainingArguments:
    """`TrainingArguments` with a linear learning-rate schedule, nothing saved
    or reported during training (the callers keep the best epoch themselves),
    the CPU when `device` is "cpu" (else the Trainer's accelerator), bfloat16
    autocast only when `bf16`, and a progress bar when `progress`. `settings`
    are the remaining arguments."""
    # The Trainer's accelerator takes its precision from ACCELERATE_MIXED_PRECISION,
    # which TrainingArguments(bf16=True) exports to the whole process (and its
    # subprocesses): set it, so that neither an earlier bf16 run nor the caller's
    # environment turns a float32 run into bfloat16 (slow without bf16 kernels).
    os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16" if bf16 else "no"
    return TrainingArguments(
        output_dir=output_dir,
        lr_scheduler_type="linear",
        save_strategy="no",
        report_to="none",
        use_cpu=device == "cpu",
        disable_tqdm=not progress,
        bf16=bf16,
        **settings,
    )
