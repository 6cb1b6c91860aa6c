"""ablate's GPT as an lm-evaluation-harness language model (Gao et al., "A framework for few-shot
language model evaluation", EleutherAI; `lm_eval.api.model.TemplateLM`).

It scores requests the way lm-eval's own Hugging Face backend (`lm_eval.models.huggingface.HFLM`)
does, so that the two give the same numbers for the same weights:

- log-likelihoods: context and continuation are encoded together and split (TemplateLM's
  `_encode_pair`); the last `context_length + 1` tokens are kept, the model reads all but the
  last, and the continuation's tokens are scored from the positions that predict them (only
  its last `context_length` when it is longer than that). An empty context is the end-of-text
  token. Requests are batched longest first, right-padded.
- rolling log-likelihoods (perplexity tasks): the text in disjoint windows of the context
  length, each conditioned on the tokens before it (lm-eval's `get_rolling_token_windows`).
- generation: greedy, with the KV cache, until a stop string or `max_gen_toks` tokens.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from lm_eval import utils as lm_eval_utils
from lm_eval.api.model import TemplateLM

from harness.data.tokenizers import Tokenizer
from harness.errors import AblateError
from harness.model.generate import generate
from harness.model.gpt import GPT


class AblateLM(TemplateLM):
    """`model` (in eval mode) and the `tokenizer` it was trained with, scored in batches of
    `batch_size` sequences under `autocast()` (a context manager; none by default)."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, batch_size: int = 16, autocast=None,
                 max_gen_toks: int = 256):
        super().__init__()
        self.model, self.tokenizer_of_run = model, tokenizer
        self.batch_size = batch_size
        self.autocast = autocast or contextlib.nullcontext
        self.max_gen_toks = max_gen_toks
        self.on = model.token_embedding.weight.device

    @property
    def eot_token_id(self) -> int:
        """The tokenizer's end-of-text token; a vocabulary without one (characters, a BPE trained
        here) starts a text after a line break, or after token 0 if it has no line break either."""
        if self.tokenizer_of_run.end_of_text is not None:
            return self.tokenizer_of_run.end_of_text
        newline = self.tokenizer_of_run.encode("\n") if self._encodes("\n") else []
        return newline[0] if len(newline) == 1 else 0

    def _encodes(self, text: str) -> bool:
        try:
            self.tokenizer_of_run.encode(text)
            return True
        except Exception:  # a character vocabulary without the character
            return False

    @property
    def max_length(self) -> int:
        return self.model.cfg.context_length

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer_of_run.kind

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        try:
            return self.tokenizer_of_run.encode(string)
        except AblateError as err:  # a character vocabulary meets a character it never saw
            raise AblateError(f"a task's text cannot be read by this model's tokenizer ({err}); score tasks "
                              "written in its characters, or train with a bpe or tiktoken tokenizer") from None

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer_of_run.decode(tokens)

    @torch.no_grad()
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """Per request ((context, continuation), context tokens, continuation tokens): the
        continuation's summed log-probability and whether it is the greedy continuation."""
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        windows = []
        for index, (_, context, continuation) in enumerate(requests):
            whole = (list(context) + list(continuation))[-(self.max_length + 1):]
            count = min(len(continuation), len(whole) - 1)  # a continuation longer than the context: its last part
            windows.append((index, whole[:-1], whole[-count:], count))
        windows.sort(key=lambda w: -len(w[1]))  # longest first: batches of similar lengths
        for start in range(0, len(windows), self.batch_size):
            batch = windows[start:start + self.batch_size]
            width = max(len(w[1]) for w in batch)
            inputs = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (_, tokens, _, _) in enumerate(batch):
                inputs[row, :len(tokens)] = torch.tensor(tokens)
            with self.autocast():
                logits, _ = self.model(inputs.to(self.on))
            log_probs = F.log_softmax(logits.float(), dim=-1)
            for row, (index, tokens, targets, count) in enumerate(batch):
                scored = log_probs[row, len(tokens) - count:len(tokens)]  # (count, vocab)
                wanted = torch.tensor(targets, device=scored.device)
                total = scored.gather(1, wanted[:, None]).sum().item()
                greedy = bool((scored.argmax(-1) == wanted).all())
                results[index] = (total, greedy)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        totals = []
        for (text,) in [request.args for request in requests]:
            windows = map(lm_eval_utils.make_disjoint_window, lm_eval_utils.get_rolling_token_windows(
                token_list=self.tok_encode(text), prefix_token=self.prefix_token_id, max_seq_len=self.max_length,
                context_len=1))
            scored = self._loglikelihood_tokens([(None, context, continuation) for context, continuation in windows])
            totals.append(sum(log_prob for log_prob, _ in scored))
        return totals

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        texts = []
        for context, options in [request.args for request in requests]:
            until = options.get("until") or [self.tok_decode([self.eot_token_id])]
            until = [until] if isinstance(until, str) else list(until)
            new_tokens = int(options.get("max_gen_toks", self.max_gen_toks))
            room = max(1, self.max_length - new_tokens)
            prompt = (self.tok_encode(context) or [self.prefix_token_id])[-room:]
            idx = torch.tensor([prompt], device=self.on)
            with self.autocast():
                out = generate(self.model, idx, new_tokens, temperature=0.0, vocab_size=self.tokenizer_of_run.vocab_size)
            text = self.tok_decode(out[0, len(prompt):].tolist())
            cut = min((text.find(stop) for stop in until if stop and stop in text), default=len(text))
            texts.append(text[:cut])
        return texts
