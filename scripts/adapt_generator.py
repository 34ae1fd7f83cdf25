"""Domain-adapt the generator: LoRA on a pretrained causal LM, or (no base
model) a small GPT-2 trained from scratch, on the gold train texts."""

from pathlib import Path
from typing import Optional

import typer

from synthdeid.training.generator import DEFAULT_LEARNING_RATES, adapt_generator
from synthdeid.training.hf_trainer import close_processes, is_world_process_zero


def main(
    train_path: Path = typer.Argument(..., help="Gold train DocBin"),
    output_dir: Path = typer.Argument(..., help="Folder for model/, loss.json and adapt_config.json"),
    base_model: str = typer.Option(
        "", help="Hub id or local folder of a causal LM to adapt with LoRA; empty: train a GPT-2 from scratch"
    ),
    fraction: float = typer.Option(1.0, help="Share of train documents used, in (0, 1] (seeded choice)"),
    validation: Optional[Path] = typer.Option(
        None, help="Gold validation DocBin: reports a loss and perplexity per epoch"
    ),
    epochs: int = typer.Option(6, help="Training epochs"),
    learning_rate: float = typer.Option(
        0.0,
        help="Peak AdamW learning rate (linear warmup/decay); 0: "
        + ", ".join(f"{lr:g} for {mode}" for mode, lr in DEFAULT_LEARNING_RATES.items()),
    ),
    batch_size: int = typer.Option(1, help="Notes per training step (batched by similar length, padded)"),
    block_size: int = typer.Option(
        1024,
        help="Longest training sequence in tokens (note-start + note + EOS, one note each; longer notes are "
        "truncated and counted), capped at the model's window",
    ),
    lora_r: int = typer.Option(8, help="LoRA rank"),
    lora_alpha: int = typer.Option(32, help="LoRA scaling alpha"),
    lora_dropout: float = typer.Option(0.05, help="LoRA dropout"),
    target_modules: str = typer.Option(
        "", help="Comma-separated modules LoRA adapts; empty: peft's default for the architecture"
    ),
    qlora: bool = typer.Option(False, help="Load the base in 4-bit NF4 (needs CUDA and bitsandbytes)"),
    vocab_size: int = typer.Option(8000, help="Scratch: byte-level BPE vocabulary size"),
    n_layer: int = typer.Option(4, help="Scratch: transformer layers"),
    n_embd: int = typer.Option(256, help="Scratch: hidden size"),
    n_head: int = typer.Option(4, help="Scratch: attention heads"),
    n_positions: int = typer.Option(1024, help="Scratch: longest sequence the model can read (its window)"),
    dropout: float = typer.Option(
        0.0, help="Scratch: dropout of embeddings, residuals and attention (GPT-2's is 0.1)"
    ),
    seed: int = typer.Option(0, help="Seed for the document choice, initialisation, dropout and data order"),
    log_every: int = typer.Option(10, help="Log the mean training loss every N steps"),
    limit: int = typer.Option(0, help="Use the first N train docs only (0: all), before --fraction"),
    device: str = typer.Option("cpu", help="cpu, auto (CUDA if available) or cuda (pick a GPU with CUDA_VISIBLE_DEVICES)"),
    inline_tags: bool = typer.Option(
        False, help="Learn the notes with each entity wrapped in its label's tag, so generated notes carry labels"
    ),
    keep_best_epoch: bool = typer.Option(
        True, help="Save the weights of the epoch with the lowest validation loss (else the last epoch's)"
    ),
):
    try:
        config = adapt_generator(
            train_path,
            output_dir,
            base_model=base_model,
            fraction=fraction,
            seed=seed,
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            block_size=block_size,
            validation_path=validation,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=target_modules,
            qlora=qlora,
            vocab_size=vocab_size,
            n_layer=n_layer,
            n_embd=n_embd,
            n_head=n_head,
            n_positions=n_positions,
            dropout=dropout,
            log_every=log_every,
            device=device,
            limit=limit,
            keep_best_epoch=keep_best_epoch,
            inline_tags=inline_tags,
        )
    except (OSError, ValueError) as err:  # a missing or unreadable corpus or base model, a bad setting
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    close_processes()
    kept, params, train = config["kept"], config["parameters"], config["tokens"]["train"]
    validation_loss = kept["validation_loss"]
    if not is_world_process_zero():  # under torchrun, once
        return
    typer.echo(
        f"Saved the {config['mode']} generator ({params['trainable']:,} of {params['total']:,} parameters trained, "
        f"{config['documents']['used']}/{config['documents']['available']} documents, "
        f"{train['truncated']} truncated to {config['block_size']} tokens, "
        f"{config['wall_seconds']:.0f} s) to {output_dir}: epoch {kept['epoch']}, train loss {kept['train_loss']:.4f}"
        + (
            f", validation loss {validation_loss:.4f} (perplexity {kept['validation_perplexity']:.2f})"
            if validation_loss is not None
            else ""
        )
    )


if __name__ == "__main__":
    typer.run(main)
