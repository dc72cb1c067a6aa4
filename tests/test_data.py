"""Calibration data sources: builtin, text, JSONL, Parquet, hf_dataset; cleaning; windows."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from foundry.data import builtin_documents, clean_documents, load_documents, normalized_hash, token_windows
from foundry.errors import FoundryError


def test_builtin_source_is_the_calibration_split():
    documents = load_documents("builtin")
    assert documents == builtin_documents("calibration")
    evaluation = {normalized_hash(text) for text in builtin_documents("evaluation")}
    assert evaluation and not evaluation & {normalized_hash(text) for text in documents}


def test_text_file_documents_are_blank_line_separated(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("First document\nstill first.\n\n\nSecond one.\n  \nThird.\n")
    assert load_documents("text", str(path)) == ["First document\nstill first.", "Second one.", "Third.\n"]


def test_jsonl_reads_the_named_field_and_names_a_missing_one(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"body": "alpha text"}) + "\n\n" + json.dumps({"body": None}) + "\n")
    assert load_documents("jsonl", str(path), field="body") == ["alpha text", None]
    with pytest.raises(FoundryError, match=r"rows\.jsonl:1: no field 'text' \(calibration\.field\)"):
        load_documents("jsonl", str(path), field="text")
    path.write_text("{not json\n")
    with pytest.raises(FoundryError, match=r"rows\.jsonl:1: not valid JSON"):
        load_documents("jsonl", str(path), field="body")


def test_parquet_reads_the_named_column(tmp_path):
    path = tmp_path / "rows.parquet"
    pd.DataFrame({"content": ["one", None, "two"]}).to_parquet(path)
    assert load_documents("parquet", str(path), field="content") == ["one", None, "two"]
    with pytest.raises(FoundryError, match=r"rows\.parquet: no column 'text'.*\['content'\]"):
        load_documents("parquet", str(path), field="text")
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    with pytest.raises(FoundryError, match=r"broken\.parquet: cannot be read as Parquet"):
        load_documents("parquet", str(broken), field="text")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FoundryError, match=r"nowhere\.txt: calibration\.path not found"):
        load_documents("text", str(tmp_path / "nowhere.txt"))


HF_ROWS = {"text": ["first document", None, "third document"], "label": [0, 1, 2]}


def test_hf_dataset_from_a_local_folder_in_the_hub_layout(tmp_path):
    """The real `datasets.load_dataset` path (what a hub name also takes), on a folder of data files
    laid out like a hub repository: no hub is reachable here, so the test ships its own data."""
    import pandas as pd

    (tmp_path / "data").mkdir()
    pd.DataFrame(HF_ROWS).to_parquet(tmp_path / "data" / "train-00000-of-00001.parquet")
    assert load_documents("hf_dataset", str(tmp_path), field="text", split="train") == HF_ROWS["text"]
    with pytest.raises(FoundryError, match=r"no column 'body' \(calibration.field\); columns: \['text', 'label'\]"):
        load_documents("hf_dataset", str(tmp_path), field="body", split="train")
    with pytest.raises(FoundryError, match=r"calibration.path: cannot load local folder .* split 'validation'"):
        load_documents("hf_dataset", str(tmp_path), field="text", split="validation")


def test_hf_dataset_from_save_to_disk(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_dict(HF_ROWS)}).save_to_disk(str(tmp_path / "dict"))
    datasets.Dataset.from_dict(HF_ROWS).save_to_disk(str(tmp_path / "single"))
    assert load_documents("hf_dataset", str(tmp_path / "dict"), field="text", split="train") == HF_ROWS["text"]
    assert load_documents("hf_dataset", str(tmp_path / "single"), field="text") == HF_ROWS["text"]
    with pytest.raises(FoundryError, match="calibration.hf_split: .* has no split 'test'"):
        load_documents("hf_dataset", str(tmp_path / "dict"), field="text", split="test")


def test_hf_dataset_name_without_a_reachable_hub_is_a_clear_error(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # never wait on a network CI lacks
    with pytest.raises(FoundryError, match=r"cannot load Hugging Face dataset \(needs a reachable hub"):
        load_documents("hf_dataset", "no-such-org/no-such-dataset", field="text")


def test_clean_documents_drops_nulls_empties_and_layout_duplicates():
    assert clean_documents(["A  b", None, "", "   ", "a b", "c", 3]) == ["A  b", "c"]


def test_token_windows_refuse_too_little_text(smollm2_tokenizer):
    with pytest.raises(FoundryError, match=r"calibration: 4 samples × 64 tokens need 256 tokens"):
        token_windows(["just a few words"], smollm2_tokenizer, 4, 64, "calibration")
    with pytest.raises(FoundryError, match="calibration: no documents"):
        token_windows([], smollm2_tokenizer, 1, 8, "calibration")
