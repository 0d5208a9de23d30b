"""The language-search index: which words reach which features, and a script no text can break."""

from __future__ import annotations

import json
import re

from atlas_builders import TRACKED

from saerad.radtext.labeler import label_sentence, plain_mentions


def _index(site):
    text = (site / "search-index.js").read_text()
    match = re.fullmatch(r"window\.SAERAD_ATLAS = (.*);\n", text, flags=re.S)
    assert match, text[:80]
    return json.loads(match.group(1))


def test_plain_mentions_are_read_as_their_condition():
    mentions = plain_mentions()
    assert "pacemaker" in mentions["Support Devices"] and "hemothorax" in mentions["Pleural Effusion"]
    for words in mentions.values():
        for word in words:
            assert re.fullmatch(r"[a-z][a-z' -]*", word), word
    # every listed word is labelled as its condition by the labeller itself
    for condition in ("Support Devices", "Cardiomegaly", "Lung Lesion"):
        for word in mentions[condition]:
            assert label_sentence(word).get(condition) in (1, -1), (condition, word)


def test_index_holds_descriptions_conditions_and_images(built_site):
    out, _ = built_site
    index = _index(out)
    feats = {f["id"]: f for f in index["features"]}
    assert feats[4]["tracked"] == TRACKED[4] and feats[0]["tracked"] == TRACKED[0]
    assert "Cardiomegaly" in feats[2]["conditions"]  # shared label and the labeller on "Cardiomegaly."
    assert "Pleural Effusion" in feats[7]["conditions"]  # "Small left pleural effusion." read by the labeller
    assert "Pleural Effusion" not in feats[1]["conditions"]  # "No pleural effusion." is a negative
    for f in feats.values():
        assert f["page"] == f"features/f{f['id']:05d}.html"
        assert all((out / src).is_file() for _, src, _ in f["images"])
        acts = [a for _, _, a in f["images"]]
        assert acts == sorted(acts, reverse=True) and all(a > 0 for a in acts)
    assert index["mentions"] == {c: list(w) for c, w in plain_mentions().items()}
