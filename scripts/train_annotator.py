"""Fine-tune a Hugging Face encoder as the BIO token-classification annotator."""

from pathlib import Path
from typing import Optional

import typer

from synthdeid.training.annotator import train_annotator
from synthdeid.training.hf_trainer import close_processes, is_world_process_zero


def main(
    train_path: Path = typer.Argument(..., help="Gold train DocBin"),
    validation_path: Path = typer.Argument(..., help="Gold validation DocBin (model selection)"),
    output_dir: Path = typer.Argument(..., help="Folder for the model, tokenizer and training_log.json"),
    base_model: Optional[str] = typer.Option(
        None, help="Hub id or local folder of the encoder [default: the offline all-MiniLM-L6-v2]"
    ),
    epochs: int = typer.Option(4, help="Training epochs; the best on validation is kept"),
    min_steps: int = typer.Option(0, help="Add epochs until training takes at least this many optimizer steps"),
    batch_size: int = typer.Option(16, help="Windows per training step"),
    learning_rate: float = typer.Option(2e-4, help="Peak AdamW learning rate (linear warmup/decay)"),
    window_words: int = typer.Option(128, help="Most spaCy tokens per training window"),
    max_length: int = typer.Option(512, help="Most sub-tokens per sequence"),
    seed: int = typer.Option(0, help="Seed for initialisation, dropout and data order"),
    eval_batch_size: int = typer.Option(8, help="Windows per forward pass during validation"),
    stride: int = typer.Option(32, help="Words shared by consecutive inference windows"),
    word_features: bool = typer.Option(True, help="Add trainable word-shape (case, digit, accent) embeddings"),
    lexical_rows: int = typer.Option(20000, help="With word features: rows of hashed word embeddings (prefix, suffix: a quarter each); 0: none"),
    group_by_length: bool = typer.Option(True, help="Batch windows of similar length (2% padding, not 25%)"),
    precision: str = typer.Option(
        "auto", help="fp32, bf16 (bfloat16 autocast in training) or auto (bf16 where the device has bfloat16 kernels)"
    ),
    limit: int = typer.Option(0, help="Train on the first N train docs only (0: all)"),
    device: str = typer.Option(
        "cpu", help="cpu, or cuda / mps: the Trainer's accelerator (pick a GPU with CUDA_VISIBLE_DEVICES)"
    ),
):
    log = train_annotator(
        train_path,
        validation_path,
        output_dir,
        base_model=base_model,
        epochs=epochs,
        min_steps=min_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        window_words=window_words,
        max_length=max_length,
        seed=seed,
        eval_batch_size=eval_batch_size,
        stride=stride,
        word_features=word_features,
        lexical_rows=lexical_rows,
        group_by_length=group_by_length,
        precision=precision,
        limit=limit,
        device=device,
    )
    close_processes()
    best = log["best_validation"]
    if is_world_process_zero():  # under torchrun, once
        typer.echo(f"Saved epoch {log['best_epoch']} (validation P {best['p']:.4f} R {best['r']:.4f} "
                   f"F1 {best['f']:.4f}) to {output_dir}")


if __name__ == "__main__":
    typer.run(main)
