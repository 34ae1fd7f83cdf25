"""Generate the synthetic corpus (JSONL) with the adapted generator through spacy-llm."""

from pathlib import Path
from typing import Optional

import typer

from synthdeid.kinds import read_label_kinds
from synthdeid.training.synthesis import GaveUp, generate


def main(
    validation_path: Path = typer.Argument(..., help="Held-out DocBin; each document's first three words are a prompt"),
    gold_train_path: Path = typer.Argument(..., help="Gold train DocBin (its words set the target size)"),
    generator_dir: Path = typer.Argument(..., help="Generator folder (adapt_generator output or its model/ folder)"),
    output_path: Path = typer.Argument(..., help="JSONL file to write, one record per document"),
    config: Path = typer.Option(Path("configs/generate.cfg"), help="spacy-llm pipeline config"),
    size_multiple: float = typer.Option(
        1.0,
        help="Target size in words: synthetic words / gold train words (whitespace words); generation stops at "
        "the note that reaches ceil(size_multiple x gold train words)",
    ),
    samples_per_prompt: int = typer.Option(8, help="Samples per prompt in one round"),
    max_new_tokens: Optional[int] = typer.Option(
        None,
        help="Most new tokens per document, capped at the generator's window minus the prompt "
        "[default: the config's, which fills the scratch generator's window]",
    ),
    top_p: Optional[float] = typer.Option(None, help="Nucleus sampling mass [default: the config's, 0.95]"),
    temperature: Optional[float] = typer.Option(None, help="Sampling temperature [default: the config's, 1.0]"),
    batch_size: Optional[int] = typer.Option(None, help="Prompts per generation batch [default: the config's]"),
    seed: Optional[int] = typer.Option(None, help="Base seed; batch i samples with seed + i [default: the config's]"),
    device: Optional[str] = typer.Option(None, help="torch device: cpu, cuda, cuda:1, auto [default: the config's]"),
    max_idle_rounds: int = typer.Option(3, help="Give up after this many rounds in a row keep nothing"),
    resume: bool = typer.Option(
        True, help="Continue an interrupted run, or grow a finished corpus, when the settings are the same"
    ),
    stats: Optional[Path] = typer.Option(
        None, help="JSON file for the generation statistics; a Markdown report (.md) is written next to it"
    ),
    screen_gold_values: bool = typer.Option(
        True, help="Drop a note that holds a distinctive gold train value of an identifying label (a real name, "
        "place, identifier or contact), as the privacy report finds them"
    ),
    label_kinds: str = typer.Option("", help="JSON file of label -> kind, over the shipped schemes and guesses"),
    engine: str = typer.Option("local", help="local: batches one after another here; ray: batches on Ray actors "
                               "(the same notes; pip install 'synthdeid[ray]')"),
    num_workers: int = typer.Option(2, help="Ray actors (engine ray), each with the generator loaded once"),
    ray_address: str = typer.Option("", help="Ray cluster address (engine ray); empty starts a local Ray"),
):
    try:
        result = generate(
            validation_path,
            gold_train_path,
            output_path,
            config_path=config,
            generator=generator_dir,
            model_options={
                "max_new_tokens": max_new_tokens,
                "top_p": top_p,
                "temperature": temperature,
                "batch_size": batch_size,
                "seed": seed,
                "device": device,
            },
            size_multiple=size_multiple,
            samples_per_prompt=samples_per_prompt,
            max_idle_rounds=max_idle_rounds,
            stats_path=stats,
            resume=resume,
            screen_gold_values=screen_gold_values,
            label_kinds=read_label_kinds(label_kinds) if label_kinds else None,
            engine=engine,
            num_workers=num_workers,
            ray_address=ray_address or None,
        )
    except (ValueError, OSError, GaveUp) as err:  # bad input named by file, a missing model, or gave up
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    dropped = ", ".join(f"{reason} {n}" for reason, n in result["dropped"].items())
    ended = ", ".join(
        f"{reason} {share['share']:.0%}" for reason, share in result["end_reasons"]["kept"].items() if share["count"]
    )
    if result["resumed_from"]:
        typer.echo(f"Resumed after {result['resumed_from']['records']} kept documents")
    typer.echo(
        f"Kept {result['kept']} of {result['generated']} generated documents ({dropped}) in "
        f"{result['rounds']} round(s), {result['seconds']:.1f} s ({result['docs_per_second']:.2f} docs/s); "
        f"{result['words_kept']} words for a target of {result['words_target']} "
        f"({result['words_ratio']:.2f} x the gold train words), {result['words_per_doc']:.0f} words per document "
        f"(gold {result['words_per_note']['gold_train']['mean']:.0f}); ended by {ended}"
        + (f", {result['tokens_kept_per_second']:.0f} kept tokens/s" if result["tokens_kept"] is not None else "")
        + f". Wrote {output_path}"
    )


if __name__ == "__main__":
    typer.run(main)
