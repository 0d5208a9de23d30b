"""CheXbert loader and labeller on a tiny randomly initialised BERT saved in CheXbert's format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from saerad.errors import BundleError, ConfigError
from saerad.eval.chexbert import CheXbertLabeler, _build_model, chexbert_unavailable_reason

WORDS = ["heart", "size", "is", "normal", "no", "pleural", "effusion", "the", "lungs", "are", "clear", ".", "small", "left"]
HIDDEN = 32


def _tokenizer_dir(path: Path, *, with_config: bool) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    if with_config:
        config = {
            "model_type": "bert",
            "vocab_size": len(vocab),
            "hidden_size": HIDDEN,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 37,
            "max_position_embeddings": 512,
            "type_vocab_size": 2,
        }
        (path / "config.json").write_text(json.dumps(config))
    return path


def _checkpoint(path: Path, tokenizer: Path, *, force: bool = True) -> Path:
    """A CheXbert-format file: DataParallel prefixes, optimizer state, an old position_ids buffer."""
    from transformers import BertConfig

    torch.manual_seed(0)
    vocab_size = len((tokenizer / "vocab.txt").read_text().split())
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=512,
    )
    model = _build_model(config)
    if force:  # heads ignore the input: condition i gets class i % 4, No Finding class 1
        with torch.no_grad():
            for i, head in enumerate(model.linear_heads):
                head.weight.zero_()
                head.bias.fill_(-5.0)
                head.bias[1 if i == 13 else i % 4] = 5.0
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.tensor([[2, 5, 3]]), torch.ones(1, 3, dtype=torch.long))[0].sum().backward()
    optimizer.step()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    state["module.bert.embeddings.position_ids"] = torch.arange(512)[None]
    torch.save({"epoch": 3, "model_state_dict": state, "optimizer_state_dict": optimizer.state_dict()}, path)
    return path


@pytest.mark.parametrize("with_config", [True, False])
def test_loads_chexbert_format_and_labels(tmp_path: Path, with_config: bool) -> None:
    tok = _tokenizer_dir(tmp_path / "bert-base-uncased", with_config=with_config)
    weights = _checkpoint(tmp_path / "chexbert.pth", tok)
    labeler = CheXbertLabeler(weights, tok, device="cpu", batch_size=2)
    labels = labeler.label(["The heart size is normal.", "", "Small left pleural effusion.", "no effusion"])
    assert labels.shape == (4, 14)
    # class 0 blank, 1 positive, 2 negative, 3 uncertain; No Finding head class 1 -> positive
    expected = np.array([[np.nan, 1, 0, -1][i % 4] for i in range(13)] + [1.0])
    for row in labels:
        np.testing.assert_array_equal(row, expected)


def test_truncates_to_512_tokens(tmp_path: Path) -> None:
    tok = _tokenizer_dir(tmp_path / "tok", with_config=True)
    labeler = CheXbertLabeler(_checkpoint(tmp_path / "c.pth", tok, force=False), tok, device="cpu")
    ids = labeler.encode(["  the  lungs are\nclear " * 200, "heart size"])
    assert len(ids[0]) == 512 and ids[0][0] == labeler.tokenizer.cls_token_id and ids[0][-1] == labeler.tokenizer.sep_token_id
    assert len(ids[1]) == 4
    out = labeler.label(["the lungs are clear " * 200, "heart"])  # random weights: any valid label values
    assert set(np.unique(out[~np.isnan(out)])) <= {-1.0, 0.0, 1.0}


def test_unavailable_and_broken(tmp_path: Path) -> None:
    assert "SAERAD_CHEXBERT_WEIGHTS" in chexbert_unavailable_reason(None, None)
    assert "not found" in chexbert_unavailable_reason(tmp_path / "missing.pth", tmp_path)
    tok = _tokenizer_dir(tmp_path / "tok", with_config=True)
    with pytest.raises(ConfigError):
        CheXbertLabeler(tmp_path / "missing.pth", tok)
    bad = tmp_path / "bad.pth"
    torch.save({"model_state_dict": {"module.something.else": torch.zeros(2)}}, bad)
    with pytest.raises(BundleError):
        CheXbertLabeler(bad, tok)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(BundleError):
        CheXbertLabeler(garbage, tok)
