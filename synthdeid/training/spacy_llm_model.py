"""The adapted generator as a spacy-llm model: `synthdeid.HFCausalLM.v1`.

spacy-llm calls a model with the prompts of a batch of docs, nested per doc
(one prompt per doc shard), and expects the replies nested the same way. This
model flattens the prompts, samples continuations from a causal LM in batches
of `batch_size` and nests the replies back. A reply is the continuation only:
the text generated after the prompt, up to the end-of-sequence token.

A prompt is encoded as note openings were in training (`prompt_batch`):
note-start token (BOS, else EOS) + the prompt's tokens, left-padded; only
`input_ids` and `attention_mask` reach `model.generate`. A continuation has
at most `max_new_tokens` tokens and never runs past the generator's window
(window minus the padded prompt). Why each continuation ended - "eos" (the
model wrote its end-of-sequence token) or "length" (it hit that cap) - and
its number of tokens are kept, in prompt order, in `last_details` for the
latest call, since spacy-llm passes on nothing but the reply text.

Sampling is reproducible: before its i-th batch (counted from 0 over the
instance's life) the model seeds torch with `seed + i`, so the same prompts in
the same batches give the same replies.

Importing this module registers the model in spacy-llm's `llm_models`
registry, under MODEL_NAME.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

from spacy_llm.registry import registry

from .generator import load_generator, max_positions, prompt_batch

MODEL_NAME = "synthdeid.HFCausalLM.v1"
END_REASONS = ("eos", "length")


class HFCausalLM:
    def __init__(
        self,
        path: str | Path,
        *,
        max_new_tokens: int,
        top_p: float,
        temperature: float,
        batch_size: int,
        seed: int,
        device: str,
    ):
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError(f"{MODEL_NAME}: max_new_tokens and batch_size must be at least 1")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"{MODEL_NAME}: top_p must be in (0, 1], not {top_p}")
        if temperature <= 0.0:
            raise ValueError(f"{MODEL_NAME}: temperature must be positive, not {temperature}")
        self.max_new_tokens = max_new_tokens
        self.top_p = top_p
        self.temperature = temperature
        self.batch_size = batch_size
        self.seed = seed
        self.n_batches = 0
        # Per reply of the latest call, in prompt order: end_reason, new_tokens.
        self.last_details: List[Dict[str, Any]] = []
        self._model, self._tokenizer = load_generator(path, device=device)
        if self._tokenizer.eos_token_id is None:
            raise ValueError(f"{path}: the generator's tokenizer has no end-of-sequence token to stop at")
        # A max_new_tokens at or over the window is fine: a continuation stops
        # where prompt + continuation fill the window (end reason "length").
        self._window = max_positions(self._model.config)

    @property
    def context_length(self) -> Optional[int]:
        """The generator's window: spacy-llm shards a doc whose prompt (which
        it estimates in words) is longer. Not the window less max_new_tokens:
        generation stops at the window anyway, and a prompt cut into shards
        would be continued shard by shard."""
        return self._window

    def __call__(self, prompts: Iterable[Iterable[str]]) -> Iterable[Iterable[str]]:
        per_doc = [list(doc_prompts) for doc_prompts in prompts]
        flat = [prompt for doc_prompts in per_doc for prompt in doc_prompts]
        replies: List[str] = []
        details: List[Dict[str, Any]] = []
        for start in range(0, len(flat), self.batch_size):
            batch_replies, batch_details = self._generate(flat[start : start + self.batch_size])
            replies.extend(batch_replies)
            details.extend(batch_details)
        self.last_details = details
        it = iter(replies)
        return [[next(it) for _ in doc_prompts] for doc_prompts in per_doc]

    def _generate(self, prompts: List[str]) -> tuple[List[str], List[Dict[str, Any]]]:
        """(replies, details) of one batch: the continuations, and per
        continuation why it ended ("eos" or "length") and its new tokens (EOS
        not counted)."""
        import torch

        torch.manual_seed(self.seed + self.n_batches)
        self.n_batches += 1
        tok = self._tokenizer
        encoded = {key: value.to(self._model.device) for key, value in prompt_batch(tok, prompts).items()}
        prompt_len = encoded["input_ids"].shape[1]
        max_new = self.max_new_tokens
        if self._window is not None:
            max_new = min(max_new, self._window - prompt_len)
            if max_new < 1:
                raise ValueError(
                    f"{MODEL_NAME}: a prompt of {prompt_len} tokens fills the generator's {self._window}-token window"
                )
        with torch.inference_mode():
            output = self._model.generate(
                input_ids=encoded["input_ids"],
                attention_mask=encoded["attention_mask"],
                do_sample=True,
                top_p=self.top_p,
                temperature=self.temperature,
                top_k=0,  # pure nucleus sampling; transformers otherwise adds top-k 50
                max_new_tokens=max_new,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        replies, details = [], []
        for row, ids, mask in zip(output, encoded["input_ids"], encoded["attention_mask"]):
            # The note-start token is not text of the prompt.
            prompt_ids = ids[mask.bool()].tolist()[1:]
            new_ids = row[prompt_len:].tolist()
            # After EOS a finished row is padded until the batch's longest ends.
            reason = "eos" if tok.eos_token_id in new_ids else "length"
            if reason == "eos":
                new_ids = new_ids[: new_ids.index(tok.eos_token_id)]
            replies.append(self._continuation(prompt_ids, new_ids))
            details.append({"end_reason": reason, "new_tokens": len(new_ids)})
        return replies, details

    def _continuation(self, prompt_ids: List[int], new_ids: List[int]) -> str:
        """Text added by `new_ids` after the prompt. Decoding prompt and
        continuation together keeps the space between them (SentencePiece
        drops a leading space when a piece is decoded alone)."""

        def decode(ids: List[int]) -> str:
            return self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

        prefix, full = decode(prompt_ids), decode(prompt_ids + new_ids)
        text = full[len(prefix) :] if full.startswith(prefix) else decode(new_ids)
        # A byte-level model cut at max_new_tokens can end inside a character.
        return text.rstrip("\ufffd")


@registry.llm_models(MODEL_NAME)
def hf_causal_lm(
    path: Optional[str] = None,
    max_new_tokens: int = 1024,
    top_p: float = 0.95,
    temperature: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
    device: str = "cpu",
) -> Callable[[Iterable[Iterable[str]]], Iterable[Iterable[str]]]:
    """Nucleus sampling from the causal LM in `path` (an adapt_generator output
    folder or its model/ folder: a full model or a LoRA adapter) on `device`
    ("cpu", "cuda", "cuda:1", "auto"). `max_new_tokens` is capped at the
    generator's window minus the prompt, so the default (1024, the scratch
    generator's window) lets a note run until it writes EOS or fills the
    window. configs/generate.cfg sets every value; these defaults match it."""
    if not path:
        raise ValueError(f"{MODEL_NAME}: no generator folder given (set [paths] generator or the model's path)")
    return HFCausalLM(
        path,
        max_new_tokens=max_new_tokens,
        top_p=top_p,
        temperature=temperature,
        batch_size=batch_size,
        seed=seed,
        device=device,
    )
