from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from musiclm_pytorch.cli import MAX_CANDIDATES, MAX_SECONDS, build_parser, main


def test_demo_info_similarity(tmp_path, capsys):
    ckpt = tmp_path / "mulan.safetensors"
    assert main(["demo", "--steps", "5", "--quiet", "--threads", "1", "--out", str(ckpt)]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{") :])
    assert report["steps"] == 5 and report["checkpoint"] == str(ckpt)
    assert main(["info", str(ckpt)]) == 0
    assert json.loads(capsys.readouterr().out)["component"] == "mulan"
    wav = tmp_path / "tone.wav"
    sf.write(wav, (0.3 * np.sin(np.arange(22050) * 0.1)).astype(np.float32), 22050)  # resampled to 16 kHz
    assert main(["similarity", "--checkpoint", str(ckpt), "--audio", str(wav), "--text", "a", "b c"]) == 0
    sims = json.loads(capsys.readouterr().out)["cosine"]
    assert np.asarray(sims).shape == (1, 2) and all(-1 <= s <= 1 for s in sims[0])


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "missing.safetensors" in err and "no such file" in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_a_value_error_from_inside_a_library_is_a_bug_not_a_user_error(monkeypatch, tmp_path, capsys):
    import numpy as np

    import musiclm_pytorch.cli as cli

    def broken(args):
        np.zeros(3).reshape(2, 2)  # numpy raises a ValueError: a bug here, not a bad input

    monkeypatch.setattr(cli, "_cmd_info", broken)
    with pytest.raises(ValueError, match="cannot reshape"):
        main(["info", str(tmp_path / "x.safetensors")])


def test_info_into_a_closed_pipe_is_quiet():
    """`musiclm info x | head -1`: the reader is gone before the output is written; no traceback."""
    import subprocess
    import sys

    from musiclm_pytorch.pipeline import DEFAULT_MODEL

    argv = [sys.executable, "-m", "musiclm_pytorch.cli", "info", str(DEFAULT_MODEL / "semantic_lm.safetensors")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the interpreter has even started: every write meets a closed pipe
    err = proc.stderr.read()
    assert proc.wait() == 1 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["--debug", "info", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "ValueError: bad checkpoint" in err and "no such file" in err
    assert "read_checkpoint_header" in err  # the frames, not only the message
    assert main(["--debug", "generate", "calm piano", "--candidates", "0"]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert build_parser().parse_args(["info", "x"]).debug is False


# Runs the CLI in a fresh interpreter without the package's __init__ (which imports torch for its public
# API): what cli.py itself imports for --help and info. Prints the heavy modules that got imported.
_WITHOUT_PACKAGE_INIT = """
import importlib.util, json, sys, types
spec = importlib.util.find_spec("musiclm_pytorch")
package = types.ModuleType("musiclm_pytorch")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["musiclm_pytorch"] = package
from musiclm_pytorch.cli import main
try:
    main(["--help"])
except SystemExit as e:
    assert e.code == 0, e.code
assert main(["info", sys.argv[1]]) == 0
heavy = ("torch", "numpy", "safetensors", "librosa", "transformers", "accelerate")
print(json.dumps(sorted(m for m in heavy if m in sys.modules)), file=sys.stderr)
"""


def test_help_and_info_do_not_import_torch(tmp_path):
    from musiclm_pytorch import save
    from musiclm_pytorch.checkpoint import read_header
    from musiclm_pytorch.codec import MDCTCodec

    path = save(MDCTCodec(hop=32, dim=8, width=16, depth=1, num_quantizers=3, codebook_size=16), tmp_path / "c.st")
    done = subprocess.run([sys.executable, "-c", _WITHOUT_PACKAGE_INIT, str(path)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stderr.strip().splitlines()[-1]) == []
    out = done.stdout
    assert "usage: musiclm" in out and "--debug" in out
    assert json.loads(out[out.index("\n{") :]) == read_header(path)  # info prints what read_header reads


def test_the_entry_point_does_not_import_torch():
    code = ("import sys; from musiclm_pytorch.cli import main; main(['--help'])" + " if False else None; "
            "print('torch' in sys.modules)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False"  # the package's exports load lazily
    code = "import musiclm_pytorch as m; print(m.MuLaN.__name__, m.MusicLM.__name__, 'MuLaN' in dir(m))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["MuLaN", "MusicLM", "True"]


def test_info_refuses_bad_files_on_one_line(tmp_path, capsys):
    from safetensors.numpy import save_file

    cases = {
        "short.st": b"\x01\x02",
        "garbage.st": b"\x00" * 100,  # header length 0: not JSON
        "huge.st": struct.pack("<Q", 10**12) + b"{}",
        "notjson.st": struct.pack("<Q", 4) + b"{{{{",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    save_file({"w": np.zeros(2, dtype=np.float32)}, str(tmp_path / "foreign.st"))
    save_file({"w": np.zeros(2, dtype=np.float32)}, str(tmp_path / "badjson.st"),
              metadata={"format_version": "1", "component": "mdct_codec", "config": "{"})  # fmt: skip
    expected = {"short.st": "shorter than the 8-byte header length", "garbage.st": "header is not JSON",
                "huge.st": "header length 1000000000000 but the file has 10 bytes",
                "notjson.st": "header is not JSON", "foreign.st": "not a musiclm_pytorch checkpoint",
                "badjson.st": "config is not valid JSON"}  # fmt: skip
    for name, reason in expected.items():
        assert main(["info", str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and name in err and reason in err, err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--candidates", "0"], f"--candidates must be between 1 and {MAX_CANDIDATES}, got 0"),
        (["--candidates", "17"], f"--candidates must be between 1 and {MAX_CANDIDATES}, got 17"),
        (["--seconds", "0"], f"--seconds must be > 0 and <= {MAX_SECONDS:g}, got 0"),
        (["--seconds", "-3"], "got -3"),
        (["--seconds", "60.5"], "--seconds must be > 0 and <= 60, got 60.5"),
        (["--seconds", "nan"], "got nan"),
        (["--temperature", "0"], "--temperature must be > 0 and <= 10, got 0"),
        (["--key-bias", "0.5", "--continue", "x.wav", "-o", "o.wav"], "--key-bias goes with texts or --story"),
        (["--prompt-blend", "0.5"], "--prompt-blend and --prompt-continuity go with --continue"),
        (["--prompt-continuity", "4"], "--prompt-blend and --prompt-continuity go with --continue"),
    ],
)
def test_generate_bounds_are_one_line_naming_the_bound(tmp_path, capsys, flags, message):
    # checked before the model folder is even looked at: a folder that does not exist is not reported
    argv = ["generate", "calm piano", "--model-dir", str(tmp_path / "nowhere"), *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("musiclm generate: error: ") and message in err and err.count("\n") == 1, err
    assert "nowhere" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["calm piano", "--story", "a:5"], "give texts or --story, not both"),
        (["--story", "a:40", "b:30"], "--story lasts 70 s in all; at most 60"),
        (["--story", "a:5", "-o", "out_dir"], "--story makes one piece: give -o a .wav file"),
        ([], "give at least one text"),
        (["--continue", "missing.wav", "-o", "x.wav"], "--continue 'missing.wav': no such audio file"),
        (["a", "b", "--continue", "x.wav", "-o", "x.wav"], "--continue takes at most one text"),
        (["--continue", "x.wav", "-o", "folder"], "--continue makes one piece"),
        (["a", "--melody", "missing.wav"], "--melody 'missing.wav': no such audio file"),
        (["--story", "a:5", "--melody", "x.wav", "-o", "x.wav"], "--melody goes with texts"),
    ],
)
def test_story_bounds_are_one_line(tmp_path, capsys, argv, message):
    assert main(["generate", *argv, "--model-dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "nowhere" not in err, err


@pytest.mark.parametrize("item", ["no seconds", "x:0", "x:61", ":5", "x:ten"])
def test_story_items_need_text_and_seconds(item, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--story", item])
    assert exc.value.code == 2 and "want 'text:seconds'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "a", "--cfg-scale", "nan"], "--cfg-scale: want a guidance scale from 0 to 20, got 'nan'"),
        (["generate", "a", "--cfg-scale", "3", "-1"], "got '-1'"),
        (["generate", "a", "--cfg-scale", "1e9"], "got '1e9'"),
        (["generate", "a", "--threads", "0"], "--threads: want an integer from 1 to 256, got '0'"),
        (["generate", "a", "--key-bias=-1"], "--key-bias: want a key bias from 0 to 10, got '-1'"),
        (["eval", "generate", "--prompts", "p.jsonl", "--candidates", "100000"], "from 1 to 16, got '100000'"),
        (["eval", "generate", "--prompts", "p.jsonl", "--num-prompts", "0"], "--num-prompts: want an integer from 1"),
        (["eval", "guidance", "--prompts", "p.jsonl", "--scales", "2", "inf"], "got 'inf'"),
    ],
)
def test_numeric_flags_are_bounded_at_parse_time(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_generate_bounds_are_inclusive(tmp_path, capsys):
    for flags in (["--candidates", "1"], ["--candidates", str(MAX_CANDIDATES)], ["--seconds", f"{MAX_SECONDS:g}"]):
        assert main(["generate", "calm piano", "--model-dir", str(tmp_path / "nowhere"), *flags]) == 2
        assert "does not exist" in capsys.readouterr().err  # past the bounds, to the model folder


def test_train_flags_come_from_the_config_dataclasses(capsys):
    """The train parsers add their flags on first use (the dataclasses import torch); parsing, errors and
    help see them as before."""
    args = build_parser().parse_args(["train", "stage", "--max-steps", "5", "--config", "c.json"])
    assert args.max_steps == 5 and args.config == "c.json" and args.batch_size is None  # the dataclass default
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "codec", "--help"])
    assert "--preset" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "mulan", "--max-steps", "many"])
    assert "--max-steps: invalid int value: 'many'" in capsys.readouterr().err


def test_data_synth_check_and_judge(tmp_path, capsys):
    import pytest

    pytest.importorskip("fluidsynth", reason="needs pyfluidsynth + apt fluidsynth (installed by .ci/run)")
    corpus = tmp_path / "corpus"
    argv = ["data", "synth", str(corpus), "--num-clips", "4", "--seconds", "4", "--workers", "1", "--quiet",
            "--soundfont", "TimGM6mb.sf2", "--val-fraction", "0", "--bach-fraction", "0"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == {"train": 4, "val": 0}
    assert main(["data", "check", str(corpus / "train.jsonl")]) == 0
    assert json.loads(capsys.readouterr().out)["usable"] == 4
    # the manifest doubles as a prompts file: intended attributes = the rendered tags
    out = tmp_path / "report"
    assert main(["eval", "judge", "--prompts", str(corpus / "train.jsonl"), "--out", str(out), "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clips"] == 4 and {"drums", "family", "key", "tempo"} <= set(report["accuracy"])
    assert (out / "judge_accuracy.png").stat().st_size > 1000 and (out / "judge_report.json").is_file()


def test_eval_mulan_and_train_conditioning_cli(tiny_corpus, tmp_path, capsys):
    from musiclm_pytorch import build_mulan, save

    ckpt = save(build_mulan("tiny"), tmp_path / "mulan.safetensors")
    out = tmp_path / "eval"
    argv = ["eval", "mulan", "--checkpoint", str(ckpt), "--data", str(tiny_corpus / "val.jsonl"), "--out", str(out),
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clips"] == 6 and "R@1" in report["text_to_audio"] and "family" in report["zero_shot"]
    assert (out / "similarity.png").stat().st_size > 1000
    argv = ["train", "conditioning", "--mulan", str(ckpt), "--data", str(tiny_corpus), "--out",
            str(tmp_path / "cond.safetensors"), "--num-quantizers", "2", "--codebook-size", "4", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert len(json.loads(capsys.readouterr().out)["val_text_audio_agreement"]["per_level"]) == 2


def test_stage_pipeline_cli(tiny_corpus, tmp_path, capsys):
    import torch
    import torch.nn.functional as F

    from musiclm_pytorch import MuLaNEmbedQuantizer, build_mulan, save
    from musiclm_pytorch.codec import SoundStream

    sem = tmp_path / "sem.safetensors"
    argv = ["train", "semantic-tokenizer", "--data", str(tiny_corpus), "--out", str(sem), "--vocab-size", "8",
            "--max-clips", "4", "--crop-seconds", "3"]  # fmt: skip
    assert main(argv) == 0 and json.loads(capsys.readouterr().out)["clips"] == 4
    cond = MuLaNEmbedQuantizer(build_mulan("tiny"), conditioning_dims=(), namespaces=(), num_quantizers=2,
                               codebook_size=4)  # fmt: skip
    cond.fit(F.normalize(torch.randn(32, 128), dim=-1))
    codec = SoundStream(strides=(4, 8, 10), channels=4, dim=8, num_quantizers=4, codebook_size=8, kmeans_init=False)
    save(cond, tmp_path / "cond.safetensors")
    save(codec, tmp_path / "codec.safetensors")
    tokens = tmp_path / "tokens"
    argv = ["data", "tokenize", "--conditioning", str(tmp_path / "cond.safetensors"), "--semantic", str(sem),
            "--codec", str(tmp_path / "codec.safetensors"), "--data", str(tiny_corpus), "--out", str(tokens),
            "--max-clips", "6", "--quiet"]  # fmt: skip
    assert main(argv) == 0 and json.loads(capsys.readouterr().out)["splits"]["train"] == 6
    argv = ["train", "stage", "--stage", "coarse", "--tokens", str(tokens), "--out", str(tmp_path / "coarse"),
            "--dim", "32", "--depth", "1", "--heads", "2", "--batch-size", "2", "--max-steps", "3", "--crop-seconds",
            "1", "--num-coarse", "2", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert (tmp_path / "coarse" / "coarse.safetensors").is_file()


def test_eval_codec_beside_classic_codecs(tmp_path, capsys):
    import torch

    from musiclm_pytorch import save
    from musiclm_pytorch.codec import SoundStream

    folder = tmp_path / "music"
    folder.mkdir()
    t = np.arange(3 * 16000) / 16000
    for i, f0 in enumerate((220.0, 330.0, 440.0)):
        sf.write(folder / f"clip{i}.wav", (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), 16000)
    (folder / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    torch.manual_seed(0)
    codec = SoundStream(strides=(2, 4), channels=8, dim=16, num_quantizers=4, codebook_size=16, kmeans_init=False)
    ckpt = save(codec, tmp_path / "codec.safetensors")
    argv = ["eval", "codec", "--checkpoint", str(ckpt), "--data", str(folder), "--seconds", "2",
            "--classic", "opus:1.0", "mp3:0.5", "--out", str(tmp_path / "ce")]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((tmp_path / "ce" / "codec_eval.json").read_text())
    capsys.readouterr()
    assert report["clips"] == 3 and report["skipped"] == 1  # the broken file is skipped and counted
    assert [c["codec"] for c in report["classic"]] == ["opus", "mp3"]
    assert report["classic"][1]["si_snr_db"] > 10  # MP3 keeps a sine; an untrained codec does not
    assert report["codec"]["per_levels"]["4"]["si_snr_db"] < report["classic"][1]["si_snr_db"]
    assert main(["eval", "codec", "--data", str(folder), "--classic", "aac:1"]) == 2
    assert "unknown classic codec 'aac'" in capsys.readouterr().err


def test_eval_codec_fidelity_with_mulan(tmp_path, capsys, tiny_mulan):
    import torch

    from musiclm_pytorch import save
    from musiclm_pytorch.codec import MDCTCodec

    folder = tmp_path / "music"
    folder.mkdir()
    t = np.arange(2 * 16000) / 16000
    for i, (f0, caption) in enumerate(((220.0, "slow calm piano"), (330.0, "fast drums"), (440.0, "a flute"))):
        sf.write(folder / f"clip{i}.wav", (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), 16000)
        (folder / f"clip{i}.json").write_text(json.dumps({"caption": caption, "tags": {"drums": i == 1}}))
    torch.manual_seed(0)
    codec = MDCTCodec(hop=32, dim=8, width=16, depth=1, num_quantizers=3, codebook_size=16)
    argv = ["eval", "codec", "--checkpoint", str(save(codec, tmp_path / "codec.safetensors")), "--data", str(folder),
            "--seconds", "1", "--classic", "--levels", "1", "3", "--mulan", str(save(tiny_mulan, tmp_path / "m.st")),
            "--out", str(tmp_path / "ce")]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((tmp_path / "ce" / "codec_eval.json").read_text())
    assert set(report["codec"]["per_levels"]) == {"1", "3"}
    fidelity = report["fidelity"]
    assert fidelity["clips"] == 3 and set(fidelity) >= {"original", "codec_q1", "codec_q3"}
    assert fidelity["original"]["judge"]["drums"]["n"] == 3
    assert set(fidelity["paired"]) == {"codec_q1", "codec_q3"}
    assert fidelity["paired"]["codec_q3"]["drum_flips"]["n"] <= 2  # the two clips tagged drumless at most
    # the same folder as untagged real music: agreement of each round trip's readings with the original's
    assert main([*argv, "--real", str(folder)]) == 0
    real = json.loads((tmp_path / "ce" / "codec_eval.json").read_text())["real"]
    assert real["clips"] == 3 and set(real["agreement"]) == {"codec_q1", "codec_q3"}
    assert all(0 <= v <= 1 for v in real["agreement"]["codec_q3"].values())
    capsys.readouterr()
    assert main(["eval", "codec", "--data", str(folder), "--classic", "--mulan", str(tmp_path / "m.st")]) == 2
    assert "--mulan measures what survives a codec" in capsys.readouterr().err
    assert main([*argv[:-4], "--out", str(tmp_path / "ce2"), "--real", str(folder)]) == 2  # --mulan dropped
    assert "--real measures agreement" in capsys.readouterr().err


SPLIT_READERS = [
    ["eval", "generate", "--prompts"],
    ["eval", "melody", "--prompts"],
    ["eval", "continuation", "--data"],
    ["eval", "guidance", "--model", "m", "--prompts"],
    ["eval", "mulan", "--checkpoint", "x", "--data"],
]


@pytest.mark.parametrize("command", SPLIT_READERS)
def test_evaluations_read_the_sealed_test_split_only_when_told(tmp_path, capsys, command):
    rows = [{"path": "a.wav", "caption": "calm piano", "tags": {}, "split": "test", "duration": 20}] * 2
    manifest = tmp_path / "test.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "a.wav").write_bytes(b"")
    assert main([*command, str(manifest)]) == 2  # before any model is loaded
    assert "holds rows of the sealed test split: pass --split test" in capsys.readouterr().err


def test_a_finished_torchrun_worker_leaves_without_the_interpreters_teardown(monkeypatch, capsys):
    """Under torchrun (WORLD_SIZE > 1) the command line's main ends a finished worker with os._exit, its
    status kept; called as a library (argv given) or in one process it returns as usual."""
    from musiclm_pytorch import cli
    from musiclm_pytorch.pipeline import DEFAULT_MODEL

    left: list[int] = []
    monkeypatch.setattr(cli.os, "_exit", lambda code: left.append(code))
    monkeypatch.setattr("sys.argv", ["musiclm", "info", str(DEFAULT_MODEL / "semantic_tokenizer.safetensors")])
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main() == 0 and left == [0]
    assert main(["info", str(DEFAULT_MODEL / "semantic_tokenizer.safetensors")]) == 0 and left == [0]  # a library call
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert main() == 0 and left == [0]
