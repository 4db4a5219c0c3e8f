from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from musiclm_pytorch.data.datasets import manifest_rows
from musiclm_pytorch.data.merge import merge_corpora


def _corpus(folder, split_sources):
    """A corpus folder: {split: [(id, source), ...]} with a short real FLAC per row."""
    for split, items in split_sources.items():
        (folder / "audio" / split).mkdir(parents=True, exist_ok=True)
        lines = []
        for rid, source in items:
            rel = f"audio/{split}/{rid}.flac"
            sf.write(folder / rel, np.zeros(1600, np.float32), 16000)
            lines.append(json.dumps({"id": rid, "path": rel, "caption": f"clip {rid}", "captions": [f"clip {rid}"],
                                     "tags": {"source": source}, "split": split}))  # fmt: skip
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_merge_keeps_base_val_and_drops_held_out_sources(tmp_path, monkeypatch):
    base = _corpus(tmp_path / "base", {"train": [("train-0", "gen-1"), ("train-1", "bach-7")],
                                       "val": [("val-2", "bach-9"), ("val-3", "gen-2")]})  # fmt: skip
    extra = _corpus(tmp_path / "extra", {"train": [("train-0", "gen-100"), ("train-1", "bach-9"),
                                                   ("train-2", "bach-7"), ("train-3", "gen-2")],
                                         "val": [("val-4", "gen-101")]})  # fmt: skip
    summary = merge_corpora(tmp_path / "merged", base, [extra])
    assert summary["train_rows"] == 4 and summary["val_rows"] == 2 and summary["held_out_sources"] == 2
    assert [c["dropped_held_out_source"] for c in summary["corpora"]] == [0, 2]
    monkeypatch.chdir(tmp_path / "extra")  # absolute paths: the manifests work from anywhere
    train, bad = manifest_rows(tmp_path / "merged" / "train.jsonl")
    val, _ = manifest_rows(tmp_path / "merged" / "val.jsonl")
    assert not bad
    assert [r["tags"]["source"] for r in train] == ["gen-1", "bach-7", "gen-100", "bach-7"]
    assert [r["id"] for r in train] == ["train-0", "train-1", "extra/train-0", "train-2"]  # collisions renamed
    assert [r["id"] for r in val] == ["val-2", "val-3"]  # extra's val rows (held-out wordings) are not trained on
    raw = json.loads((tmp_path / "merged" / "train.jsonl").read_text().splitlines()[2])
    assert set(raw) == {"id", "path", "caption", "captions", "tags", "split"}  # the row as written, nothing added
    assert json.loads((tmp_path / "merged" / "merge.json").read_text()) == summary


def test_merge_keeps_the_test_split_sealed(tmp_path):
    base = _corpus(tmp_path / "base", {"train": [("train-0", "gen-1")], "val": [("val-1", "gen-2")],
                                       "test": [("test-2", "gen-3"), ("test-3", "gen-3")]})  # fmt: skip
    extra = _corpus(tmp_path / "extra", {"train": [("train-9", "gen-3"), ("train-8", "gen-50")], "val": [],
                                         "test": [("test-7", "gen-51")]})  # fmt: skip
    summary = merge_corpora(tmp_path / "merged", base, [extra])
    assert summary["test_rows"] == 2 and summary["held_out_sources"] == 2
    train, _ = manifest_rows(tmp_path / "merged" / "train.jsonl")
    test, _ = manifest_rows(tmp_path / "merged" / "test.jsonl")
    assert [r["tags"]["source"] for r in train] == ["gen-1", "gen-50"]  # base's test composition never trained on
    assert [r["id"] for r in test] == ["test-2", "test-3"]  # base's whole; extra's neither trained nor merged
    merge_corpora(tmp_path / "m3", _corpus(tmp_path / "b3", {"train": [("a", "gen-7")], "val": []}), [base])
    assert not (tmp_path / "m3" / "test.jsonl").exists()


def test_merge_errors(tmp_path):
    base = _corpus(tmp_path / "base", {"train": [("a", "gen-1")], "val": [("b", "gen-2")]})
    with pytest.raises(ValueError, match="at least one corpus"):
        merge_corpora(tmp_path / "m", base, [])
    with pytest.raises(ValueError, match="named twice"):
        merge_corpora(tmp_path / "m", base, [base])
    with pytest.raises(ValueError, match="one of the corpora"):
        merge_corpora(base, base, [_corpus(tmp_path / "x", {"train": [("c", "gen-3")], "val": []})])
    with pytest.raises(FileNotFoundError, match="nowhere.*train.jsonl"):
        merge_corpora(tmp_path / "m", base, [tmp_path / "nowhere"])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "train.jsonl").write_text(json.dumps({"id": "z", "path": "gone.flac", "caption": "x"}))
    with pytest.raises(ValueError, match="1 unusable rows.*gone.flac"):
        merge_corpora(tmp_path / "m", base, [tmp_path / "broken"])


def test_merge_cli(tmp_path, capsys):
    from musiclm_pytorch.cli import main

    base = _corpus(tmp_path / "base", {"train": [("a", "gen-1")], "val": [("b", "gen-2")]})
    extra = _corpus(tmp_path / "extra", {"train": [("a", "gen-3"), ("c", "gen-2")], "val": []})
    assert main(["data", "merge", str(tmp_path / "m"), str(base), str(extra)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train_rows"] == 2 and summary["corpora"][1]["dropped_held_out_source"] == 1
    with pytest.raises(SystemExit):  # argparse: EXTRA is required
        main(["data", "merge", str(tmp_path / "m"), str(base)])
    assert "required: extra" in capsys.readouterr().err
