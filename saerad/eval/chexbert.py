"""CheXbert (Smit et al., 2020): BERT report labeller behind "CheXbert F1".

Architecture (Smit et al., 2020; docs/method.md#evaluation), matching the published checkpoint key for key:

* ``bert``: a ``BertModel`` (bert-base-uncased: 12 layers, hidden 768, vocabulary 30,522);
* ``dropout`` on the last layer's [CLS] state;
* ``linear_heads``: 13 ``Linear(hidden, 4)`` heads (blank, positive, negative, uncertain) for the
  first 13 conditions and one ``Linear(hidden, 2)`` head (blank, positive) for No Finding.

The checkpoint is a dict with ``model_state_dict`` saved from ``nn.DataParallel`` (keys prefixed
``module.``), usually next to ``optimizer_state_dict`` and ``epoch``. It is read with
``torch.load(weights_only=True)`` and never downloaded: its path and the local bert-base-uncased
tokenizer directory come from :class:`~saerad.eval.settings.EvalSettings`
(``SAERAD_CHEXBERT_WEIGHTS``, ``SAERAD_CHEXBERT_TOKENIZER``). When either is missing,
:func:`chexbert_unavailable_reason` says so and the runner writes "unavailable: <why>" in the
CheXbert columns - they are never filled with the rule labeller's numbers.

Input text: strip, collapse whitespace, tokenise, truncate to 512 tokens (511 + [SEP]), as
CheXbert's own preprocessing does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from saerad.devices import resolve_device
from saerad.errors import BundleError, ConfigError
from saerad.radtext.conditions import CONDITIONS
from saerad.radtext.text import clean_text

MAX_TOKENS = 512
N_HEADS = len(CONDITIONS)
# Head class index -> label value: 0 blank, 1 positive, 2 negative, 3 uncertain.
_CLASS_TO_LABEL = np.array([np.nan, 1.0, 0.0, -1.0])


def chexbert_unavailable_reason(weights: str | Path | None, tokenizer: str | Path | None) -> str | None:
    """``None`` when CheXbert can be loaded from these paths, else a one-line reason."""
    if not weights:
        return "no CheXbert checkpoint configured (set SAERAD_CHEXBERT_WEIGHTS to chexbert.pth)"
    if not Path(weights).is_file():
        return f"CheXbert checkpoint {weights} not found"
    if not tokenizer:
        return "no bert-base-uncased tokenizer directory configured (set SAERAD_CHEXBERT_TOKENIZER)"
    if not (Path(tokenizer) / "vocab.txt").is_file():
        return f"tokenizer directory {tokenizer} has no vocab.txt"
    return None


def _build_model(config):
    """The CheXbert module (built lazily so importing this file does not import torch)."""
    import torch
    from torch import nn
    from transformers import BertModel

    class CheXbertModel(nn.Module):
        def __init__(self, config, dropout: float = 0.1) -> None:
            super().__init__()
            self.bert = BertModel(config)
            self.dropout = nn.Dropout(dropout)
            hidden = config.hidden_size
            heads = [nn.Linear(hidden, 4, bias=True) for _ in range(N_HEADS - 1)]
            heads.append(nn.Linear(hidden, 2, bias=True))
            self.linear_heads = nn.ModuleList(heads)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
            hidden = self.bert(input_ids, attention_mask=attention_mask)[0]
            cls = self.dropout(hidden[:, 0, :])
            return [head(cls) for head in self.linear_heads]

    return CheXbertModel(config)


def _config_for(state: dict, tokenizer_dir: Path):
    """bert-base-uncased config: from ``config.json`` in the tokenizer dir, else from tensor shapes."""
    from transformers import BertConfig

    if (tokenizer_dir / "config.json").is_file():
        return BertConfig.from_pretrained(str(tokenizer_dir))
    try:
        vocab, hidden = state["bert.embeddings.word_embeddings.weight"].shape
        max_pos = state["bert.embeddings.position_embeddings.weight"].shape[0]
        type_vocab = state["bert.embeddings.token_type_embeddings.weight"].shape[0]
        intermediate = state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0]
    except KeyError as exc:
        raise BundleError(f"not a CheXbert checkpoint: missing {exc.args[0]}") from exc
    layers = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("bert.encoder.layer."))
    heads = max(1, hidden // 64)  # bert-base: 768 / 64 = 12
    return BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_pos,
        type_vocab_size=type_vocab,
    )


def load_state_dict(path: str | Path) -> dict:
    """``model_state_dict`` of a CheXbert checkpoint without the DataParallel ``module.`` prefix."""
    import torch

    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many error types for bad files
        raise BundleError(f"cannot read CheXbert checkpoint {path}: {exc}") from exc
    if not isinstance(checkpoint, dict):
        raise BundleError(f"{path} is not a CheXbert checkpoint (expected a dict)")
    state = checkpoint.get("model_state_dict", checkpoint)
    if not isinstance(state, dict) or not state:
        raise BundleError(f"{path} has no model_state_dict")
    out = {}
    for key, value in state.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        out[key] = value
    # Older transformers saved this buffer; newer BertModel recreates it.
    out.pop("bert.embeddings.position_ids", None)
    return out


class CheXbertLabeler:
    """Labels reports with CheXbert: ``(N, 14)`` float arrays, 1 / 0 / -1 / NaN."""

    def __init__(self, weights: str | Path, tokenizer: str | Path, *, device: str | None = None, batch_size: int = 0) -> None:
        from transformers import BertTokenizerFast

        reason = chexbert_unavailable_reason(weights, tokenizer)
        if reason:
            raise ConfigError(reason)
        tokenizer_dir = Path(tokenizer)
        state = load_state_dict(weights)
        self.tokenizer = BertTokenizerFast.from_pretrained(str(tokenizer_dir))
        self.model = _build_model(_config_for(state, tokenizer_dir))
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise BundleError(
                f"CheXbert checkpoint {weights} does not match the architecture: "
                f"missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}"
            )
        self.device = resolve_device(device)
        self.model.to(self.device).eval()
        self.batch_size = batch_size or (128 if self.device.type == "cuda" else 16)
        self.source = str(weights)

    @classmethod
    def from_settings(cls, settings=None, **kwargs) -> CheXbertLabeler:
        from saerad.eval.settings import EvalSettings

        settings = settings or EvalSettings()
        return cls(settings.chexbert_weights, settings.chexbert_tokenizer, batch_size=settings.chexbert_batch_size, **kwargs)

    def encode(self, texts: Sequence[str | None]) -> list[list[int]]:
        """Token ids per report: cleaned text, [CLS] ... [SEP], at most 512 (511 + [SEP])."""
        ids = []
        for text in texts:
            tokens = self.tokenizer(clean_text(text), add_special_tokens=True)["input_ids"]
            if len(tokens) > MAX_TOKENS:
                tokens = tokens[: MAX_TOKENS - 1] + [self.tokenizer.sep_token_id]
            ids.append(tokens)
        return ids

    def label(self, texts: Sequence[str | None], *, progress: bool = False) -> np.ndarray:
        import torch
        from tqdm import tqdm

        encoded = self.encode(texts)
        out = np.full((len(texts), N_HEADS), np.nan)
        order = np.argsort([len(e) for e in encoded], kind="stable")  # similar lengths per batch
        batches = range(0, len(order), self.batch_size)
        pad = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for start in tqdm(batches, desc="CheXbert", disable=not progress, unit="batch"):
                rows = order[start : start + self.batch_size]
                width = max(len(encoded[r]) for r in rows)
                ids = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for i, r in enumerate(rows):
                    ids[i, : len(encoded[r])] = torch.tensor(encoded[r])
                    mask[i, : len(encoded[r])] = 1
                heads = self.model(ids.to(self.device), mask.to(self.device))
                classes = torch.stack([h.argmax(dim=1) for h in heads], dim=1).cpu().numpy()
                out[rows] = _CLASS_TO_LABEL[classes]
        return out
