"""What the annotator's and the generator's Hugging Face `Trainer` share:
their `TrainingArguments`, best-epoch selection by the Trainer itself
(`load_best_model_at_end` on a metric that `EpochScoringTrainer.score`
computes after the validated epochs), and what training on several
processes needs (`torchrun` or `accelerate launch`: DDP, gloo on CPUs):
the world's size, which process writes, and counts summed over processes."""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Container, Dict, Iterator, List, Optional, Sequence, Tuple

from transformers import Trainer, TrainerCallback, TrainingArguments


def world_size() -> int:
    """Training processes, as torchrun and accelerate launch set them (1 without)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_world_process_zero() -> bool:
    """Whether this process writes the outputs: the first of the world (or the only one)."""
    return int(os.environ.get("RANK", "0")) == 0


@contextmanager
def checkpoint_dir(output_dir: str | Path) -> Iterator[str]:
    """Where the Trainer keeps the best epoch's checkpoint until it loads it
    at the end: beside `output_dir`, one path for every process (each loads
    the weights the first saved there), emptied by the first process before
    and after. Leave the block only after a step every process takes
    together (`summed_over_processes`), so that none is still loading."""
    path = Path(output_dir).parent / f".{Path(output_dir).name}.checkpoints"
    if is_world_process_zero():
        shutil.rmtree(path, ignore_errors=True)  # what a killed run left
    try:
        yield str(path)
    finally:
        if is_world_process_zero():
            shutil.rmtree(path, ignore_errors=True)


def summed_over_processes(trainer: Trainer, values: Sequence[float]) -> List[float]:
    """`values` summed over the training processes (each counts its own batches)."""
    import torch

    if world_size() == 1:
        return [float(value) for value in values]
    tensor = torch.tensor([float(value) for value in values], dtype=torch.float64, device=trainer.args.device)
    return trainer.accelerator.reduce(tensor, reduction="sum").tolist()


def process_share(trainer: Trainer, count: int) -> List[int]:
    """The indices (of `count` items) that this process scores: every
    world-size-th from its rank, so that validation divides among the
    processes (all of them in one process)."""
    return list(range(trainer.args.process_index, count, trainer.args.world_size))


def gathered_from_processes(value: Any) -> List[Any]:
    """`value` of every training process, in process order ([value] in one)."""
    from accelerate.utils import gather_object

    return gather_object([value])


def close_processes() -> None:
    """Under torchrun, once training is over: wait until the first process has
    written, then close the process group. A process that exits with its gloo
    group still open can abort ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def training_arguments(
    output_dir: str,
    *,
    device: str,
    progress: bool,
    bf16: bool = False,
    validate: bool = False,
    best_metric: Optional[str] = None,
    greater_is_better: bool = True,
    **settings: Any,
) -> TrainingArguments:
    """`TrainingArguments` with a linear learning-rate schedule, nothing
    reported, the CPU when `device` is "cpu" (else the Trainer's
    accelerator), bfloat16 autocast only when `bf16`, and a progress bar when
    `progress`. With `validate` the Trainer evaluates after epochs (see
    `EpochScoringTrainer`); with `best_metric` too, it saves the model (not
    the optimizer) to `output_dir` after each validated epoch, keeping the
    best and the last, and loads the best at the end (ties keep the earlier
    epoch). `settings` are the remaining arguments."""
    # The Trainer's accelerator takes its precision from ACCELERATE_MIXED_PRECISION,
    # which TrainingArguments(bf16=True) exports to the whole process (and its
    # subprocesses): set it, so that neither an earlier bf16 run nor the caller's
    # environment turns a float32 run into bfloat16 (slow without bf16 kernels).
    os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16" if bf16 else "no"
    if best_metric:
        # save_strategy "best" would suit, but transformers 4.53 then never
        # records the best checkpoint, so load_best_model_at_end loads nothing.
        selection: Dict[str, Any] = dict(
            eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
            metric_for_best_model=best_metric, greater_is_better=greater_is_better,
            save_only_model=True, save_total_limit=1,
        )
    else:
        selection = dict(eval_strategy="epoch" if validate else "no", save_strategy="no")
    return TrainingArguments(
        output_dir=output_dir,
        lr_scheduler_type="linear",
        report_to="none",
        use_cpu=device == "cpu",
        disable_tqdm=not progress,
        bf16=bf16,
        # Every parameter gets a gradient (the whole annotator, the LoRA adapters):
        # DDP need not search the graph for unused ones after each step.
        ddp_find_unused_parameters=False,
        **selection,
        **settings,
    )


class EpochScoringTrainer(Trainer):
    """A `Trainer` whose evaluation is `score()` on `eval_dataset`, run after
    the epochs in `validated_epochs` (all when None) when the arguments
    validate. `validation` keeps each validated epoch's record (its number,
    metrics and details), `epoch_seconds` every epoch's training time."""

    def __init__(self, *args: Any, validated_epochs: Optional[Container[int]] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.validation: List[Dict[str, Any]] = []
        self.epoch_seconds: List[float] = []
        self.add_callback(_EpochClock(self, validated_epochs))

    def score(self) -> Tuple[Dict[str, float], Dict[str, Any]]:
        """(metrics, details) of the model now, on `self.eval_dataset`."""
        raise NotImplementedError

    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval") -> Dict:
        metrics, details = self.score()
        self.validation.append({"epoch": round(self.state.epoch), **metrics, **details})
        logged = {f"{metric_key_prefix}_{key}": value for key, value in metrics.items()}
        self.log(logged)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, logged)
        return logged

    def save_model(self, output_dir: Optional[str] = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        # The Trainer marks a checkpoint as the best only where its folder exists:
        # under DDP no process may look before the first has written it.
        self.accelerator.wait_for_everyone()

    def best_epoch(self) -> Optional[int]:
        """The epoch whose weights the model holds after training (None: the last)."""
        if not self.args.load_best_model_at_end or self.state.best_metric is None:
            return None
        metric = self.args.metric_for_best_model
        return next(r["epoch"] for r in self.validation if r[metric] == self.state.best_metric)


class _EpochClock(TrainerCallback):
    """Times each epoch and asks for evaluation (and a checkpoint) after the validated ones only."""

    def __init__(self, trainer: EpochScoringTrainer, validated_epochs: Optional[Container[int]]) -> None:
        self.trainer, self.validated_epochs = trainer, validated_epochs
        self.start = 0.0

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.trainer.epoch_seconds.append(time.perf_counter() - self.start)
        if self.validated_epochs is not None and round(state.epoch) not in self.validated_epochs:
            control.should_evaluate = control.should_save = False
        return control
