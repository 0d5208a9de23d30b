import numpy as np
from sklearn.metrics import roc_auc_score

from saerad.features.scoring import HeldOutReports, Target, auroc, auroc_sparse, score_descriptions
from saerad.radtext import label_report


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.random(200) < 0.3
        s = np.round(rng.random(200) * y + rng.random(200), 1) * (rng.random(200) < 0.5)  # many ties, zeros
        ref = roc_auc_score(y, s)
        assert abs(auroc(s, y) - ref) < 1e-12
        rows = np.flatnonzero(s)
        assert abs(auroc_sparse(len(s), rows, s[rows], y) - ref) < 1e-12
    assert auroc(np.ones(4), np.zeros(4, bool)) is None
    assert auroc_sparse(3, np.array([], int), np.array([]), np.array([True, False, False])) == 0.5


def test_target_of_positive_negative_and_normal_statements():
    assert Target.of("small right pleural effusion", label_report).conditions == {"Pleural Effusion": {1, -1}}
    assert Target.of("no pneumothorax", label_report).conditions == {"Pneumothorax": {0}}
    assert Target.of("no acute cardiopulmonary abnormality", label_report).conditions == {"No Finding": {1}}
    assert Target.of("history of hypertension", label_report).conditions == {}


def test_presence_and_scores():
    texts = [
        "Moderate left pleural effusion. Heart size is normal.",
        "The lungs are clear. No pleural effusion.",
        "Bilateral pleural effusions with adjacent atelectasis.",
        "Prior granulomatous disease. No pneumothorax.",
        "Calcified granuloma in the right upper lobe.",
    ] * 2
    reports = HeldOutReports(texts, label_report)
    present = reports.presence(Target.of("pleural effusion", label_report))
    assert present.tolist() == [True, False, True, False, False] * 2
    phrase = reports.presence(Target.of("calcified granuloma", label_report))
    assert phrase.tolist() == [False, False, False, False, True] * 2

    from scipy import sparse

    acts = np.zeros((10, 3))
    acts[[0, 2, 5, 7], 0] = [2.0, 1.5, 1.8, 1.1]  # fires exactly on the effusion reports
    acts[[1, 4], 1] = 1.0
    scores = score_descriptions(
        {0: "pleural effusion", 1: "pleural effusion", 2: "xyzzy"},
        sparse.csc_matrix(acts),
        reports,
        label_report,
        min_positives=2,
    )
    assert scores[0].auroc == 1.0 and scores[0].n_positive == 4
    assert scores[1].auroc < 0.5
    assert scores[2].auroc is None and scores[2].n_positive == 0
