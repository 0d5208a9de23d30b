from saerad.features.text import normalize_statement, report_keys, sentence_keys


def test_normalize_statement_drops_numbers_dates_ages_and_deid_marks():
    text = "A 54-year-old woman seen on March 3, 2020: 2.5 cm right-sided XXXX nodule (x-XXXX)."
    assert normalize_statement(text) == "a woman seen on right sided nodule"
    assert normalize_statement("  Small   LEFT pleural effusion. ") == "small left pleural effusion"


def test_negation_is_kept_in_keys():
    keys = sentence_keys("There is no focal consolidation, pneumothorax or pleural effusion.")
    assert "no pleural effusion" in keys and "no pneumothorax" in keys
    assert "pleural effusion" not in keys and "pneumothorax" not in keys
    positive = sentence_keys("Small right pleural effusion but no pneumothorax.")
    assert "pleural effusion" in positive and "small right pleural effusion" in positive
    assert "no pneumothorax" in positive and "no pleural effusion" not in positive


def test_pseudo_negation_does_not_negate():
    keys = sentence_keys("No change in the moderate cardiomegaly.")
    assert "moderate cardiomegaly" in keys and "no moderate cardiomegaly" not in keys


def test_keys_do_not_start_or_end_with_function_words():
    keys = sentence_keys("The heart is enlarged.")
    assert "heart is enlarged" in keys and "the heart is enlarged" in keys  # whole clause is kept
    assert not any(k.endswith(" is") or k.startswith("is ") for k in keys)


def test_report_keys():
    keys = report_keys("Cardiomegaly. No pleural effusion.")
    assert {"cardiomegaly", "no pleural effusion"} <= keys


def test_negation_agrees_with_the_rule_labeller():
    from saerad.radtext import label_report

    for sentence, condition, phrase in (
        ("Pleural effusion has resolved.", "Pleural Effusion", "pleural effusion"),
        ("Effusion is not seen.", "Pleural Effusion", "effusion"),
        ("Pneumothorax is absent.", "Pneumothorax", "pneumothorax"),
    ):
        assert label_report(sentence)[condition] == 0
        keys = sentence_keys(sentence)
        assert f"no {phrase}" in keys and phrase not in keys, (sentence, sorted(keys))
