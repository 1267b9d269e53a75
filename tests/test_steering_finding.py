"""The steering finding's own metric (findings/steering/steering.py): a naive-Bayes register
classifier trained on the toy's corpus, checked on held-out documents of the corpus."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import pytest

from harness.toy import corpus

FOLDER = Path(__file__).resolve().parents[1] / "findings" / "steering"


@pytest.fixture(scope="module")
def steering():
    if str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))
    return importlib.import_module("steering")


def test_the_classifier_separates_held_out_documents_of_the_two_registers(steering):
    # Seed 7 is not the training seed: these documents were not seen in training.
    docs = list(corpus.documents(7, 200))
    right = sum((steering.register_probability(text) > 0.5) == (register == "self") for register, text in docs)
    assert right / len(docs) >= 0.99


def test_one_sentence_of_each_register_is_classified_by_its_words(steering):
    assert steering.register_probability("the loop observes itself observing") > 0.99
    assert steering.register_probability("the river flows to the sea in spring") < 0.01
    # Punctuation alone carries almost nothing; no word at all is undefined, not 0.5.
    assert 0.3 < steering.register_probability(".") < 0.7
    assert math.isnan(steering.register_probability("   "))


def test_the_finding_judges_on_the_classifier_with_its_own_family(steering):
    f = steering.FINDING
    assert f.metric_for("corrected") == f.metric_for("original") == "register_probability"
    assert f.ledger_path == FOLDER / "ledger.toml" and f.ledger_path.is_file()
    assert f.bank_path is None and f.family_size == 4
