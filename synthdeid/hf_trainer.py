"""What the annotator's and the generator's Hugging Face `Trainer` runs share."""

from __future__ import annotations

from typing import Any

from transformers import TrainingArguments


def training_arguments(output_dir: str, *, device: str, progress: bool, **settings: Any) -> TrainingArguments:
    """`TrainingArguments` with a linear learning-rate schedule, nothing saved
    or reported during training (the callers keep the best epoch themselves),
    the CPU when `device` is "cpu" (else the Trainer's accelerator) and a
    progress bar when `progress`. `settings` are the remaining arguments."""
    return TrainingArguments(
        output_dir=output_dir,
        lr_scheduler_type="linear",
        save_strategy="no",
        report_to="none",
        use_cpu=device == "cpu",
        disable_tqdm=not progress,
        **settings,
    )
