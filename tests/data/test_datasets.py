from __future__ import annotations

import io
import json
import re
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from musiclm_pytorch.data.datasets import (
    BadRow,
    CaptionedAudioDataset,
    ClipOptions,
    SkipStats,
    WebDatasetSource,
    check_split,
    collate,
    data_rows,
    folder_rows,
    manifest_rows,
    normalize_loudness,
    split_rows,
)


def _tone(seconds: float, sr: int = 22050, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def manifest(tmp_path):
    sf.write(tmp_path / "good.flac", _tone(3.0), 22050)
    sf.write(tmp_path / "stereo.wav", np.stack([_tone(2.5), _tone(2.5, freq=220)], 1), 22050)
    sf.write(tmp_path / "short.wav", _tone(0.5), 22050)
    (tmp_path / "noise.wav").write_text("not audio at all " * 50)
    sf.write(tmp_path / "trunc.wav", _tone(3.0), 22050)
    data = (tmp_path / "trunc.wav").read_bytes()
    (tmp_path / "trunc.wav").write_bytes(data[: len(data) // 2])
    lines = [
        {"path": "good.flac", "caption": "a tone", "tags": {"source": "a"}},
        {"path": "stereo.wav", "captions": ["stereo tone", "two tones"]},
        {"path": "short.wav", "caption": "too short"},
        {"path": "noise.wav", "caption": "text file"},
        {"path": "trunc.wav", "caption": "truncated"},
        {"path": "missing.wav", "caption": "gone"},
        {"path": "good.flac", "caption": "   "},
        {"caption": "no path"},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n{not json\n\n"
    path = tmp_path / "train.jsonl"
    path.write_text(text)
    return path


def test_manifest_counts_cheap_bad_rows(manifest):
    rows, bad = manifest_rows(manifest)
    assert [r["captions"] for r in rows][:2] == [["a tone"], ["stereo tone", "two tones"]]
    assert len(rows) == 5
    reasons = sorted(b.reason.split(":")[0] for b in bad)
    assert reasons == ["empty caption", "invalid JSON", "missing file", "no path"]
    assert any("train.jsonl:9" in b.source for b in bad)  # line numbers name the row
    missing = next(b for b in bad if b.reason == "missing file")  # the row's line and the file it names
    assert re.fullmatch(r"train\.jsonl:\d+ \(.+\)", missing.source), missing.source
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        manifest_rows(manifest.parent / "nope.jsonl")


def test_a_bad_byte_costs_its_row_not_the_manifest(manifest):
    manifest.write_bytes(manifest.read_bytes() + b'{"path": "good.flac", "caption": "caf\xe9"}\n')
    rows, bad = manifest_rows(manifest)
    assert len(rows) == 5  # the rows before it all load
    utf = [b for b in bad if b.reason.startswith("not UTF-8")]
    assert len(utf) == 1 and utf[0].source == "train.jsonl:11" and "byte 0xe9 at column 38" in utf[0].reason


def test_decode_time_bad_rows_are_skipped_and_counted(manifest):
    rows, bad = manifest_rows(manifest)
    ds = CaptionedAudioDataset(rows, ClipOptions(sample_rate=16000, crop_seconds=2.0, crop="random"))
    stats = SkipStats()
    stats.update(bad)
    batches = list(DataLoader(ds, batch_size=3, collate_fn=collate, num_workers=0))
    good = 0
    for batch in batches:
        stats.update(batch["skipped"])
        good += len(batch["captions"])
        if len(batch["captions"]):
            assert batch["wavs"].shape[1] == 32000 and batch["wavs"].dtype == torch.float32
    assert good == 2
    assert stats.counts == {"too short": 1, "unreadable audio": 2, "empty caption": 1, "invalid JSON": 1,
                            "missing file": 1, "no path": 1}  # fmt: skip
    report = stats.report()
    assert report.startswith("7 rows skipped") and "short.wav" in report


def test_crops_padding_and_determinism(manifest):
    rows, _ = manifest_rows(manifest)
    good = [r for r in rows if r["path"].endswith(("good.flac", "stereo.wav"))]
    center = CaptionedAudioDataset(good, ClipOptions(crop_seconds=1.0, crop="center", caption="first"))
    item = center[0]
    assert item["wav"].shape == (16000,) and item["caption"] == "a tone"
    rnd = CaptionedAudioDataset(good, ClipOptions(crop_seconds=1.0), seed=5)
    a, b = rnd[1]["wav"], CaptionedAudioDataset(good, ClipOptions(crop_seconds=1.0), seed=5)[1]["wav"]
    torch.testing.assert_close(a, b)  # same seed, same crop
    rnd.set_epoch(1)
    assert not torch.equal(rnd[1]["wav"], a)  # another epoch, another crop
    padded = CaptionedAudioDataset(good, ClipOptions(crop_seconds=4.0, min_seconds=1.0))[0]["wav"]
    assert padded.shape == (64000,) and torch.all(padded[48000:] == 0)
    whole = CaptionedAudioDataset(good, ClipOptions(crop_seconds=None))[1]["wav"]
    assert whole.shape == (40000,)  # 2.5 s at 16 kHz, stereo averaged to mono
    with pytest.raises(ValueError, match="dataset is empty"):
        CaptionedAudioDataset([])


def test_loudness_normalisation():
    x = _tone(1.0) * 0.01
    rms = lambda w: np.sqrt(np.mean(w**2))  # noqa: E731
    assert 20 * np.log10(rms(normalize_loudness(x, "rms", -20.0))) == pytest.approx(-20.0, abs=0.01)
    assert np.abs(normalize_loudness(x, "peak")).max() == pytest.approx(0.95)
    loud = np.concatenate([np.zeros(1000, np.float32), np.ones(10, np.float32) * 0.5])  # peaky: limited
    assert np.abs(normalize_loudness(loud, "rms", -3.0)).max() <= 0.99
    assert normalize_loudness(np.zeros(10, np.float32), "rms").sum() == 0


def test_folder_with_sidecars_and_split(tmp_path):
    for i in range(20):
        sf.write(tmp_path / f"clip{i}.wav", _tone(1.0), 22050)
        if i % 2:
            (tmp_path / f"clip{i}.txt").write_text(f"caption {i}\n")
        elif i % 4 == 0:
            (tmp_path / f"clip{i}.json").write_text(
                json.dumps({"caption": f"json {i}", "tags": {"source": f"s{i % 3}"}})
            )
    (tmp_path / "clip2.json").write_text("{broken")
    rows, bad = folder_rows(tmp_path)
    assert len(rows) == 15
    assert sorted(b.reason.split(":")[0] for b in bad) == ["empty caption"] * 4 + ["unreadable sidecar"]
    train, val = split_rows(rows, "train", val_fraction=0.3), split_rows(rows, "val", val_fraction=0.3)
    assert len(train) + len(val) == 15 and val and train
    assert split_rows(rows, "val", val_fraction=0.3) == val  # deterministic
    src = lambda rs: {r.get("tags", {}).get("source") for r in rs if r.get("tags")}  # noqa: E731
    assert not (src(train) & src(val))  # a source never straddles the split
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        folder_rows(tmp_path / "no_such_dir")


def test_a_folder_without_audio_is_named_with_a_hint(tmp_path):
    with pytest.raises(ValueError, match=r"audio folder '.*' holds no audio files \(\.wav") as err:
        folder_rows(tmp_path)
    assert "train.jsonl" not in str(err.value)
    (tmp_path / "train.jsonl").write_text("")
    with pytest.raises(ValueError, match="for a corpus pass its manifest, '.*train.jsonl'"):
        folder_rows(tmp_path)


def test_data_rows_reads_a_corpus_split_a_manifest_or_an_audio_folder(manifest, tmp_path):
    """The one reader every trainer and evaluation uses for a --data path."""
    from_manifest = data_rows(manifest)
    assert [r["path"] for r in from_manifest[0]] == [r["path"] for r in manifest_rows(manifest)[0]]
    assert data_rows(tmp_path)[0] == from_manifest[0]  # a corpus folder: its train.jsonl
    (tmp_path / "val.jsonl").write_text(json.dumps({"path": "good.flac", "caption": "held out"}) + "\n")
    val, _ = data_rows(tmp_path, split="val")
    assert [r["captions"] for r in val] == [["held out"]]
    folder = tmp_path / "audio"
    folder.mkdir()
    sf.write(folder / "a.wav", _tone(1.0), 22050)
    assert [r["key"] for r in data_rows(folder, require_caption=False)[0]] == ["a.wav"]
    assert data_rows(folder)[0] == [] and len(data_rows(folder)[1]) == 1  # no caption: skipped and counted
    with pytest.raises(FileNotFoundError, match="codec data '.*nowhere' not found"):
        data_rows(tmp_path / "nowhere", what="codec data")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_webdataset_shards(tmp_path):
    buf = io.BytesIO()
    sf.write(buf, _tone(2.0), 22050, format="FLAC")
    shard = tmp_path / "train-000000.tar"
    with tarfile.open(shard, "w") as tar:
        _add(tar, "a.flac", buf.getvalue())
        _add(tar, "a.json", json.dumps({"caption": "a tone", "tags": {"x": 1}}).encode())
        _add(tar, "b.flac", b"garbage bytes")
        _add(tar, "b.txt", b"broken audio")
        _add(tar, "c.flac", buf.getvalue())
        _add(tar, "d.txt", b"caption without audio")
        _add(tar, "e.flac", buf.getvalue())
        _add(tar, "e.json", b"{not json")
    ds = WebDatasetSource([str(shard)], ClipOptions(crop_seconds=1.0))
    items = list(ds)
    good = [i for i in items if not isinstance(i, BadRow)]
    bad = {i.reason.split(":")[0] for i in items if isinstance(i, BadRow)}
    assert len(good) == 1 and good[0]["tags"] == {"x": 1} and good[0]["wav"].shape == (16000,)
    assert bad == {"unreadable audio", "empty caption", "missing file", "unreadable sidecar"}
    batch = next(iter(DataLoader(ds, batch_size=8, collate_fn=collate)))
    assert batch["wavs"].shape == (1, 16000) and len(batch["skipped"]) == 4
    with pytest.raises(ValueError, match="cannot open shard"):
        list(WebDatasetSource([str(tmp_path / "missing.tar")]))


def test_collate_refuses_ragged_batches():
    items = [{"wav": torch.zeros(10), "caption": "a", "tags": {}, "path": "x"},
             {"wav": torch.zeros(12), "caption": "b", "tags": {}, "path": "y"}]  # fmt: skip
    with pytest.raises(ValueError, match="set crop_seconds"):
        collate(items)


def test_the_sealed_test_split_is_read_only_when_named():
    val, test = [{"split": "val"}, {"split": "val"}], [{"split": "test"}] * 2
    check_split(val, "val", "v.jsonl")
    check_split([{"text": "x"}], "val", "prompts.jsonl")  # rows of no split (a prompt set): as validation
    check_split(test, "test", "t.jsonl")
    with pytest.raises(ValueError, match="'t.jsonl' holds rows of the sealed test split: pass --split test"):
        check_split(test, "val", "t.jsonl")
    with pytest.raises(ValueError, match=r"--split test, but 'v.jsonl' holds rows of \['val'\]"):
        check_split(val, "test", "v.jsonl")
    with pytest.raises(ValueError, match=r"holds rows of \['None'\]"):
        check_split([{"text": "x"}], "test", "prompts.jsonl")
    with pytest.raises(ValueError, match="split must be one of"):
        check_split(val, "train", "v.jsonl")
