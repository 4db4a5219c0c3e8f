"""The ``musiclm`` command line.

Subcommands:
    generate    music from text with the model shipped in the package (or any model folder); --story, --continue
    serve       web demo (gradio): generate, story and continuation tabs with limits
    demo        train a tiny MuLaN on synthetic captioned tones and report retrieval (no data, no download)
    data synth  render a synthetic captioned music corpus (FluidSynth + General MIDI soundfonts)
    data merge  join corpora for training; the base's validation split and its compositions stay held out
    data check  decode every row of a manifest or folder and report what a trainer would skip
    train mulan train MuLaN on a corpus (Accelerate; resumes from its output folder)
    train mulan-text  fit MuLaN's text side (or a new text tower) to its frozen audio side
    train semantic-tokenizer  fit k-means semantic tokens over 25 Hz musical features
    data tokenize  MuLaN cond ids + semantic ids + codec codes for every clip, once
    train stage  train the semantic / coarse / fine / acoustic / latent / flow stage on tokenized data (resumable)
    train spectral-codec  fit the log-magnitude codec (PCA + residual k-means)
    train retrieval-prior  the text -> nearest training clips bridge of the stages
    bundle      gather trained components into one model folder, checked as generate loads it
    train codec train a codec: MDCT (default) or SoundStream (mel + SNR + adversarial; resumable)
    train conditioning  fit the conditioning RVQ on a trained MuLaN; text/audio token agreement
    eval mulan  retrieval R@k and zero-shot tagging of a MuLaN checkpoint
    eval codec  SI-SNR / log-mel distance / bitrate of a codec beside Opus, Vorbis and MP3
    eval judge  judge audio against intended tempo, key, drums and instrument family (no MuLaN)
    eval judge-fit  calibrate the judge on rendered clips and report its own accuracy
    similarity  MuLaN cosine similarity between audio files and captions, from a checkpoint
    info        print a checkpoint's component and config

Start-up: this module imports nothing heavy (no torch, numpy, safetensors); each command imports what
it uses, and the ``train`` flags come from their config dataclasses only when a ``train`` command is
parsed, so ``musiclm --help`` and ``musiclm info`` stay fast. Add new imports inside the handlers.

``--debug`` (before the command) shows the full traceback of an error that otherwise prints one line.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import struct
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# ``generate`` limits: the candidates of every text are sampled as one batch and all reranked by MuLaN;
# longer music is pipeline.generate_long's job (windows with an overlap), not one longer sample.
MAX_CANDIDATES = 16
MAX_SECONDS = 60.0
MAX_CFG_SCALE = 20.0  # guidance scales measured up to 10 (benchmarks/RESULTS.md); beyond 20 only noise
MAX_THREADS = 256
TEXTS_PER_PASS = 8  # texts generated together: memory grows with texts x candidates, so more go in several passes


def _number_in(cast: Callable[[str], Any], lo: float, hi: float, what: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``cast(value)`` from ``lo`` to ``hi``, else an error naming ``what`` and the
    bounds (an unparsable value, and nan, are out of bounds)."""

    def parse(value: str) -> Any:
        try:
            number = cast(value)
        except ValueError:
            number = float("nan")
        if not lo <= number <= hi:
            raise argparse.ArgumentTypeError(f"want {what} from {lo:g} to {hi:g}, got {value!r}")
        return number

    return parse


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    return _number_in(int, lo, hi, "an integer")


# --cfg-scale: 1 is no guidance, 0 unconditional
_cfg_scale = _number_in(float, 0, MAX_CFG_SCALE, "a guidance scale")
_threads = _int_in(1, MAX_THREADS)
_unit_float = _number_in(float, 0, 1, "a share")
_nonneg_float = _number_in(float, 0, 1e9, "a cost")


def _cmd_demo(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import save
    from .demo import CLASSES, run_demo

    torch.set_num_threads(args.threads)
    print(
        "musiclm demo: trains a tiny MuLaN (audio-text joint embedding) from scratch for\n"
        f"{args.steps} steps on synthetic tones and measures text->audio retrieval.\n"
    )
    mulan, result = run_demo(steps=args.steps, seed=args.seed, progress=not args.quiet)
    report: dict[str, object] = {
        "steps": result.steps,
        "train_seconds": round(result.seconds, 1),
        "loss_first_10pct": round(result.first_loss, 3),
        "loss_last_10pct": round(result.last_loss, 3),
        "retrieval_top1_before": result.accuracy_before,
        "retrieval_top1_after": result.accuracy_after,
        "chance": round(1 / len(CLASSES), 3),
    }
    if args.out:
        report["checkpoint"] = str(save(mulan, args.out))
    print(json.dumps(report, indent=2))
    return 0


def _story_segment(value: str) -> tuple[str, float]:
    """``--story`` item: ``"text:seconds"`` (the last colon splits)."""
    text, sep, seconds = value.rpartition(":")
    try:
        sec = float(seconds)
    except ValueError:
        sec = float("nan")
    if not sep or not text.strip() or not 0 < sec <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"want 'text:seconds' with 0 < seconds <= {MAX_SECONDS:g}, got {value!r}")
    return text, sec


def _check_generate_bounds(args: argparse.Namespace) -> None:
    """Refuse ``--candidates`` outside ``1..MAX_CANDIDATES``, ``--seconds`` outside ``(0, MAX_SECONDS]``,
    a story longer than ``MAX_SECONDS`` and texts beside ``--story``, before any model loads."""
    if args.melody is not None:
        if args.story or args.continue_from is not None:
            raise ValueError("--melody goes with texts, not with --story or --continue")
        if not Path(args.melody).is_file():
            raise ValueError(f"--melody {args.melody!r}: no such audio file")
    if args.continue_from is None and (args.prompt_blend is not None or args.prompt_continuity is not None):
        raise ValueError("--prompt-blend and --prompt-continuity go with --continue (they pick the prompt's frames)")
    if args.continue_from is not None:
        if args.key_bias is not None:
            raise ValueError("--key-bias goes with texts or --story: a continuation keeps its prompt's own key")
        if args.story or len(args.texts) > 1:
            raise ValueError("--continue takes at most one text (its style) and no --story")
        if Path(args.out).suffix.lower() != ".wav":
            raise ValueError(f"--continue makes one piece: give -o a .wav file, got {args.out!r}")
        if not Path(args.continue_from).is_file():
            raise ValueError(f"--continue {args.continue_from!r}: no such audio file")
    elif args.story:
        if args.texts:
            raise ValueError(f"give texts or --story, not both (texts {args.texts})")
        total = sum(sec for _, sec in args.story)
        if total > MAX_SECONDS:
            raise ValueError(f"--story lasts {total:g} s in all; at most {MAX_SECONDS:g}")
        if Path(args.out).suffix.lower() != ".wav":
            raise ValueError(f"--story makes one piece: give -o a .wav file, got {args.out!r}")
    elif not args.texts:
        raise ValueError("give at least one text (or --story 'text:seconds' ...)")
    if not 1 <= args.candidates <= MAX_CANDIDATES:
        raise ValueError(f"--candidates must be between 1 and {MAX_CANDIDATES}, got {args.candidates}")
    if not 0 < args.seconds <= MAX_SECONDS:  # also refuses nan
        raise ValueError(f"--seconds must be > 0 and <= {MAX_SECONDS:g}, got {args.seconds:g}")
    if args.temperature is not None and not 0 < args.temperature <= 10:  # also refuses nan
        raise ValueError(f"--temperature must be > 0 and <= 10, got {args.temperature:g}")


def _level_dbfs(value: str) -> float | None:
    """``--level-dbfs``: a level in dBFS (at most 0), or ``none``."""
    if value.lower() == "none":
        return None
    level = float(value)
    if not level <= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be <= 0 dBFS or 'none', got {value}")
    return level


def _cmd_generate(args: argparse.Namespace) -> int:
    _check_generate_bounds(args)

    import torch

    from .audio import load_audio, normalize_level, save_audio
    from .pipeline import DEFAULT_MODEL, load_musiclm

    torch.set_num_threads(args.threads)
    mlm = load_musiclm(args.model_dir or DEFAULT_MODEL, lm_precision=args.lm_precision).to(args.device)
    gen = torch.Generator(mlm.device).manual_seed(args.seed)
    out = Path(args.out)
    temps = None if args.temperature is None else (args.temperature, *mlm.default_temperatures[1:])
    if args.continue_from is not None:  # continue an audio prompt; the file is the prompt + its continuation
        prompt, sr = load_audio(args.continue_from, sample_rate=mlm.sample_rate)
        cont = mlm.generate_continuation(prompt, sr, seconds=args.seconds, text=args.texts[0] if args.texts else None,
                                         cfg_scale=_cfg_pair(args.cfg_scale), generator=gen,
                                         frame_blend=args.frame_blend, temperatures=temps,
                                         beat_source=args.beat_source,
                                         prompt_blend=args.prompt_blend,
                                         prompt_continuity=args.prompt_continuity).cpu()  # fmt: skip
        level = float(prompt.pow(2).mean().sqrt()) if args.level_dbfs is None else 10 ** (args.level_dbfs / 20)
        if args.level_dbfs is not None:
            prompt = normalize_level(prompt, target_rms=level)
        piece = torch.cat([prompt, normalize_level(cont, target_rms=max(level, 1e-4))])
        path = str(save_audio(out, piece, mlm.sample_rate))
        print(json.dumps({"files": [path], "prompt_seconds": round(len(prompt) / mlm.sample_rate, 3),
                          "continuation_seconds": round(len(cont) / mlm.sample_rate, 3)}, indent=2))  # fmt: skip
        return 0
    if args.story:  # the paper's story mode: one piece, each segment's text for its own seconds
        story = [(t, s) for t, s in args.story]
        wav = mlm.generate_long(story, cfg_scale=_cfg_pair(args.cfg_scale), generator=gen,
                                frame_blend=args.frame_blend, temperatures=temps,
                                key_bias=args.key_bias, beat_source=args.beat_source).cpu()  # fmt: skip
        if args.level_dbfs is not None:
            wav = normalize_level(wav, target_rms=10 ** (args.level_dbfs / 20))
        path = str(save_audio(out, wav, mlm.sample_rate))
        print(json.dumps({"files": [path], "story": [{"text": t, "seconds": s} for t, s in story]}, indent=2))
        return 0
    single_file = out.suffix.lower() == ".wav"
    if single_file and len(args.texts) != 1:
        raise ValueError(f"--out {args.out!r} names one WAV file: give one text, or a folder for {len(args.texts)}")
    scale = _cfg_pair(args.cfg_scale)
    melody = None
    if args.melody is not None:  # the melody's semantic ids replace the semantic stage's (semantic-id transfer)
        wav, sr = load_audio(args.melody, sample_rate=mlm.sample_rate)
        seconds = min(args.seconds, len(wav) / sr, mlm.max_seconds())
        melody = (wav, sr)
        args.seconds = seconds
    if args.seconds <= mlm.max_seconds():
        wavs, scores = [], []
        for i in range(0, len(args.texts), TEXTS_PER_PASS):
            made = mlm.generate(args.texts[i : i + TEXTS_PER_PASS], seconds=args.seconds,
                                num_candidates=args.candidates, cfg_scale=scale, generator=gen,
                                prior_mix=args.prior_mix, frame_blend=args.frame_blend, melody=melody,
                                temperatures=temps, key_bias=args.key_bias, beat_source=args.beat_source)  # fmt: skip
            wavs += list(made.wavs.cpu())
            scores += made.scores.tolist()
    else:  # longer than one window: the paper's long generation, windows with an overlap (no reranking)
        wavs = [mlm.generate_long([(t, args.seconds)], cfg_scale=scale, generator=gen, frame_blend=args.frame_blend,
                                  temperatures=temps, key_bias=args.key_bias, beat_source=args.beat_source)
                for t in args.texts]  # fmt: skip
        scores = mlm.rerank_scores(torch.stack(wavs), args.texts, 1).tolist()
        wavs = [w.cpu() for w in wavs]
    if args.level_dbfs is not None:  # the magnitude codec's output is some 20 dB quieter than its training audio
        wavs = [normalize_level(w, target_rms=10 ** (args.level_dbfs / 20)) for w in wavs]
    paths = [out] if single_file else [out / f"{i:02d}.wav" for i in range(len(wavs))]
    files = [str(save_audio(p, w, mlm.sample_rate)) for p, w in zip(paths, wavs)]
    print(json.dumps({"files": files, "texts": args.texts, "mulan_scores": scores}, indent=2))
    return 0


def _cfg_pair(values: list[float] | None) -> float | tuple[float, float] | None:
    if values is None:  # the model's defaults (MusicLM.default_cfg_scale)
        return None
    if len(values) > 2:
        raise ValueError(f"--cfg-scale takes one scale or two (semantic, acoustic), got {values}")
    return values[0] if len(values) == 1 else (values[0], values[1])


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError as e:
        raise ValueError("the web demo needs gradio: pip install -e '.[demo]'") from e
    import torch

    from .pipeline import DEFAULT_MODEL, load_musiclm
    from .serve import Limits, serve

    limits = Limits(max_seconds=args.max_seconds, max_candidates=args.max_candidates, concurrency=args.concurrency,
                    queue_size=args.queue_size, max_prompt_chars=args.max_prompt_chars)  # fmt: skip
    torch.set_num_threads(args.threads)
    model = load_musiclm(args.model_dir or DEFAULT_MODEL, lm_precision=args.lm_precision).to(args.device)
    print(f"musiclm serve: http://{args.host}:{args.port} (Ctrl+C stops)", file=sys.stderr)
    serve(model, limits=limits, host=args.host, port=args.port)
    return 0


def _cmd_bundle(args: argparse.Namespace) -> int:
    import shutil

    import torch

    from .checkpoint import load, read_header, save
    from .pipeline import BUNDLE_FILES, load_musiclm

    sources = {"conditioner": args.conditioning, "semantic_tokenizer": args.semantic_tokenizer, "codec": args.codec,
               "semantic_lm": args.semantic_lm, "acoustic_lm": args.acoustic_lm, "coarse_lm": args.coarse_lm,
               "fine_lm": args.fine_lm, "prior": args.prior}  # fmt: skip
    defaults = {"semantic_lm": args.semantic_cfg_scale,
                "acoustic_lm" if args.acoustic_lm else "coarse_lm": args.acoustic_cfg_scale}  # fmt: skip
    if args.acoustic_movement_gain is not None and (args.acoustic_lm is None or args.movement_gain_tokens is None):
        raise ValueError("--acoustic-movement-gain needs --acoustic-lm (a latent stage) and --movement-gain-tokens "
                         "(the tokens folder it was trained on: the gains are fitted on its train.pt)")  # fmt: skip
    gain_flags = (args.movement_gain_tokens, args.movement_gain_bands, args.movement_gain_cap_above)
    if args.acoustic_movement_gain is None and any(f is not None for f in gain_flags):
        raise ValueError("--movement-gain-tokens, --movement-gain-bands and --movement-gain-cap-above go with "
                         "--acoustic-movement-gain")  # fmt: skip
    if args.acoustic_movement_gain is not None:  # before any file is written
        if not (args.acoustic_movement_gain >= 0 and math.isfinite(args.acoustic_movement_gain)):
            raise ValueError(
                f"--acoustic-movement-gain must be a finite number >= 0, got {args.acoustic_movement_gain}"
            )
        if args.movement_gain_cap_above is not None and not args.movement_gain_bands:
            raise ValueError("--movement-gain-cap-above caps the faster bands: it needs --movement-gain-bands")
        if not (Path(args.movement_gain_tokens) / "train.pt").is_file():
            raise FileNotFoundError(f"--movement-gain-tokens: no {str(Path(args.movement_gain_tokens) / 'train.pt')!r} "
                                    "(run `musiclm data tokenize` first)")  # fmt: skip
    wants_labels = args.semantic_control_source is not None or args.semantic_key_bias is not None
    if wants_labels and args.semantic_lm is not None:  # before any file is written
        if not read_header(args.semantic_lm)["config"].get("control_classes"):
            raise ValueError(f"--semantic-control-source / --semantic-key-bias: {args.semantic_lm!r} reads no key "
                             "and drums labels (train it with --controls-from)")  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for key, src in sources.items():
        if src is None:
            continue
        dst = out / BUNDLE_FILES[key]
        scale = defaults.get(key)
        envelope = args.acoustic_guidance_envelope if key == "acoustic_lm" else None
        temperature = args.semantic_temperature if key == "semantic_lm" else None
        control_source = args.semantic_control_source if key == "semantic_lm" else None
        key_bias = args.semantic_key_bias if key == "semantic_lm" else None
        beat_source = args.acoustic_beat_source if key == "acoustic_lm" else None
        if (scale is not None or envelope is not None or temperature is not None or control_source is not None
                or key_bias is not None or beat_source is not None
                or (args.half and key in ("semantic_lm", "acoustic_lm", "coarse_lm", "fine_lm"))):  # fmt: skip
            # stage weights in float16 (half the download); they load back into float32 models. The
            # tokenizers stay float32: the stages check their identity (a hash of the exact weights).
            model: Any = load(src)
            if scale is not None:
                _store_guidance(model, scale, src)
            if envelope is not None:
                _store_guidance_envelope(model, envelope, src, args.codec)
            if temperature is not None:
                model.set_default_temperature(temperature)
            if control_source is not None:
                model.set_control_source(control_source)
            if key_bias is not None:
                model.set_key_bias(key_bias)
            if beat_source is not None:
                if not hasattr(model, "set_beat_source"):
                    raise ValueError(f"--acoustic-beat-source: {src!r} holds a {model.component_name!r}, which reads "
                                     "no beat grid (a latent stage trained with --beat-from does)")  # fmt: skip
                model.set_beat_source(beat_source)
            save(model.to(torch.float16) if args.half else model, dst, extra=read_header(src)["extra"])
        elif Path(src).resolve() != dst.resolve():  # a file already in the folder stays as it is
            shutil.copyfile(src, dst)
        written[BUNDLE_FILES[key]] = dst.stat().st_size
    mlm = load_musiclm(out)  # every contract and identity checked, as `generate` will
    if args.acoustic_movement_gain is not None:
        _store_movement_gain(mlm, args, out / BUNDLE_FILES["acoustic_lm"])
        written[BUNDLE_FILES["acoustic_lm"]] = (out / BUNDLE_FILES["acoustic_lm"]).stat().st_size
        mlm = load_musiclm(out)
    report = {"out": str(out), "files": written, "megabytes": round(sum(written.values()) / 2**20, 1),
              "max_seconds": mlm.max_seconds()}  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0


def _store_guidance(model: Any, scale: float, src: str) -> None:
    """Make ``scale`` the guidance a stage's file gives the pipeline when its caller gives none."""
    if hasattr(model, "set_default_cfg_scale"):  # token LMs and the flow stage
        model.set_default_cfg_scale(scale)
    else:
        raise ValueError(f"{src!r} holds a {model.component_name!r}, which stores no guidance default (a token LM "
                         "or the flow stage does): drop the --*-cfg-scale flag for it")  # fmt: skip


def _store_movement_gain(mlm: Any, args: argparse.Namespace, dst: Path) -> None:
    """Fit the bundle's latent stage's movement gain on the first ``--movement-gain-clips`` training clips of
    ``--movement-gain-tokens`` (``MusicLM.fit_movement_gain``) and write the stage file again."""
    import torch

    from .checkpoint import check_identity, read_header, save

    path = Path(args.movement_gain_tokens) / "train.pt"
    if not path.is_file():
        raise FileNotFoundError(f"--movement-gain-tokens: no {str(path)!r} (run `musiclm data tokenize` first)")
    tokens = torch.load(path, weights_only=False)
    # the gains compare the stage's prediction with the codec's latents of clips tokenized by these components
    check_identity(tokens.get("identity") or {}, semantic=mlm.semantic_tokenizer, codec=mlm.codec,
                   mulan=mlm.conditioner.mulan)  # fmt: skip
    items = tokens["items"][: args.movement_gain_clips]
    report = mlm.fit_movement_gain(items, alpha=args.acoustic_movement_gain, bands_hz=args.movement_gain_bands,
                                   cap_above_hz=args.movement_gain_cap_above)  # fmt: skip
    print(json.dumps({"movement_gain": report}), file=sys.stderr)
    stage = mlm.acoustic_lm
    save(stage.to(torch.float16) if args.half else stage, dst, extra=read_header(dst)["extra"])


def _store_guidance_envelope(model: Any, coefficients: int, src: str, codec_path: str | None) -> None:
    """Make a latent stage guide only the spectral envelope (``LatentAcousticLM.set_guidance_envelope``),
    through the basis of the bundle's codec."""
    from .checkpoint import load

    if not hasattr(model, "set_guidance_envelope"):
        raise ValueError(f"{src!r} holds a {model.component_name!r}: --acoustic-guidance-envelope is for a latent "
                         "acoustic stage (LatentAcousticLM)")  # fmt: skip
    if codec_path is None:
        raise ValueError("--acoustic-guidance-envelope needs --codec (the envelope is taken over its spectrum)")
    basis = getattr(load(codec_path), "basis", None)
    if basis is None:
        raise ValueError(f"--codec {codec_path!r} has no latent basis (a SpectralCodec has): no envelope to guide")
    model.set_guidance_envelope(basis, coefficients)


def _cmd_similarity(args: argparse.Namespace) -> int:
    import torch

    from .audio import load_audio
    from .checkpoint import load
    from .mulan.model import MuLaN

    mulan = load(args.checkpoint, expected=MuLaN).eval()
    wavs = [load_audio(p, sample_rate=mulan.sample_rate)[0] for p in args.audio]
    with torch.inference_mode():
        audio = torch.cat([mulan.get_audio_latents(w[None], windowed=True) for w in wavs])
        text = mulan.get_text_latents(raw_texts=args.text)
    sims = (audio @ text.t()).tolist()
    print(json.dumps({"audio": args.audio, "text": args.text, "cosine": sims}, indent=2))
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from .data.synth import SynthConfig, synthesize

    given = {f.name: getattr(args, f.name) for f in fields(SynthConfig) if getattr(args, f.name, None) is not None}
    summary = synthesize(SynthConfig(**given), args.out, progress=not args.quiet)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    return 0


def _cmd_data_merge(args: argparse.Namespace) -> int:
    from .data.merge import merge_corpora

    print(json.dumps(merge_corpora(args.out, args.base, args.extra), indent=2))
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    """Decode every row of a manifest or folder and report what a trainer would skip."""
    from pathlib import Path

    from .data.datasets import CaptionedAudioDataset, ClipOptions, SkipStats, folder_rows, manifest_rows

    src = Path(args.source)
    if src.is_dir() and (src / "train.jsonl").is_file():  # a corpus folder: its manifests, as the trainers read it
        parts = [manifest_rows(src / split) for split in ("train.jsonl", "val.jsonl") if (src / split).is_file()]
        rows, bad = [r for p in parts for r in p[0]], [b for p in parts for b in p[1]]
    else:
        rows, bad = folder_rows(src) if src.is_dir() else manifest_rows(src)
    stats = SkipStats()
    stats.update(bad)
    ok = 0
    if rows:
        ds = CaptionedAudioDataset(rows, ClipOptions(sample_rate=args.sample_rate, crop_seconds=None,
                                                     min_seconds=args.min_seconds))  # fmt: skip
        for i in range(len(ds)):
            item = ds[i]
            if isinstance(item, dict):
                ok += 1
            else:
                stats.add(item)
    print(json.dumps({"usable": ok, "skipped": stats.total, "by_reason": dict(stats.counts),
                      "report": stats.report()}, indent=2))  # fmt: skip
    return 0


def _cmd_eval_judge_fit(args: argparse.Namespace) -> int:
    from .evaluation.judge_fit import run_fit

    report = run_fit(num_clips=args.num_clips, seconds=args.seconds, seed=args.seed, workers=args.workers,
                     out=args.out, progress=not args.quiet)  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0


def _cmd_eval_judge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .evaluation.judge import Judge
    from .evaluation.judge_fit import judge_folder, plot_accuracy

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = judge_folder(args.prompts, audio_dir=args.audio_dir, judge=Judge(args.weights), progress=not args.quiet)
    (out / "judge_report.json").write_text(json.dumps(report, indent=2))
    if report["accuracy"]:
        plot_accuracy(report["accuracy"], out / "judge_accuracy.png", f"judge: {report['clips']} clips")
    print(json.dumps({"accuracy": report["accuracy"], "clips": report["clips"], "skipped": len(report["skipped"]),
                      "report": str(out / "judge_report.json")}, indent=2))  # fmt: skip
    return 0


def _cmd_eval_guidance(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from .evaluation.guidance import guidance_sweep, load_prompts, plot_sweep
    from .pipeline import load_musiclm

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = load_prompts(args.prompts, args.num_prompts, seed=args.seed, split=args.split)
    model = load_musiclm(args.model, lm_precision=args.lm_precision)
    report = guidance_sweep(model, prompts, scales=args.scales, seconds=args.seconds, seed=args.seed,
                            semantic_only=args.semantic_only, progress=not args.quiet,
                            prior_mix=args.prior_mix, acoustic_cfg_scale=args.acoustic_cfg_scale,
                            num_candidates=args.candidates, frame_blend=args.frame_blend)  # fmt: skip
    (out / "guidance_sweep.json").write_text(json.dumps(report, indent=2))
    plot_sweep(report, out / "guidance_sweep.png")
    print(json.dumps(report, indent=2))
    return 0


def _eval_model(args: argparse.Namespace) -> Any:
    """The model an ``eval`` command scores: ``--model`` or the shipped one, at ``--lm-precision`` on ``--device``
    with ``--threads``."""
    import torch

    from .pipeline import DEFAULT_MODEL, load_musiclm

    torch.set_num_threads(args.threads)
    return load_musiclm(args.model or DEFAULT_MODEL, lm_precision=args.lm_precision).to(args.device)


def _write_report(out: str, name: str, report: dict[str, Any], *, hide: tuple[str, ...] = ()) -> None:
    """``report`` as ``out/name`` (JSON), and on stdout without the ``hide`` keys."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k not in hide}, indent=2))


def _cmd_eval_generate(args: argparse.Namespace) -> int:
    import torch

    from .data.datasets import check_split
    from .evaluation.suite import evaluate_generation, plot_report, prompted_memorisation, sample_prompts

    path = Path(args.prompts)
    if not path.is_file():
        raise ValueError(f"--prompts {args.prompts!r}: no such file")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    check_split(rows, args.split, path)
    prompts = sample_prompts([r for r in rows if r.get("text") or r.get("full_caption") or r.get("caption")],
                             args.num_prompts, seed=args.seed)  # fmt: skip
    train_items = None
    if args.memorisation_clips and not args.tokens:
        raise ValueError("--memorisation-clips prompts with training clips: give their --tokens folder")
    if args.tokens:
        tokens = Path(args.tokens) / "train.pt"
        if not tokens.is_file():
            raise ValueError(f"--tokens {args.tokens!r} holds no train.pt (musiclm data tokenize)")
        train_items = torch.load(tokens, weights_only=False)["items"]
    model = _eval_model(args)
    train_semantic = None if train_items is None else [it["semantic"] for it in train_items]
    report = evaluate_generation(model, prompts, root=path.parent, seconds=args.seconds, num_candidates=args.candidates,
                                 seed=args.seed, train_semantic=train_semantic, progress=not args.quiet)  # fmt: skip
    if args.memorisation_clips:
        assert train_items is not None
        report["memorisation_prompted"] = prompted_memorisation(model, train_items[: args.memorisation_clips],
                                                                seed=args.seed, progress=not args.quiet)  # fmt: skip
    _write_report(args.out, "report.json", report)
    plot_report(report, Path(args.out) / "report.png")
    return 0


def _cmd_eval_melody(args: argparse.Namespace) -> int:
    from .evaluation.guidance import load_prompts
    from .evaluation.melody import melody_agreement

    prompts = [p["text"] for p in load_prompts(args.prompts, args.num_prompts, seed=args.seed, split=args.split)]
    report = melody_agreement(_eval_model(args), prompts, seconds=args.seconds, seed=args.seed,
                              progress=not args.quiet)  # fmt: skip
    _write_report(args.out, "melody.json", report, hide=("per_prompt",))
    return 0


def _cmd_eval_continuation(args: argparse.Namespace) -> int:
    import random

    from .data.datasets import check_split, manifest_rows
    from .evaluation.continuation import continuation_agreement

    need = args.prompt_seconds + args.seconds
    rows = manifest_rows(args.data, require_caption=False)[0]
    check_split(rows, args.split, args.data)
    rows = [r for r in rows if float(r.get("duration", need)) >= need]
    if len(rows) < 2:
        raise ValueError(f"{args.data!r}: fewer than 2 clips of at least {need:g} s")
    rows = random.Random(args.seed).sample(rows, min(args.clips, len(rows)))
    report = continuation_agreement(_eval_model(args), rows, root=Path(args.data).parent,
                                    prompt_seconds=args.prompt_seconds, seconds=args.seconds, text=args.text,
                                    seed=args.seed, progress=not args.quiet,
                                    prompt_blend=args.prompt_blend,
                                    prompt_continuity=args.prompt_continuity)  # fmt: skip
    from .pipeline import PROMPT_BLEND, PROMPT_CONTINUITY

    report["prompt_blend"] = PROMPT_BLEND if args.prompt_blend is None else args.prompt_blend
    report["prompt_continuity"] = PROMPT_CONTINUITY if args.prompt_continuity is None else args.prompt_continuity
    _write_report(args.out, "continuation.json", report)
    return 0


def _cmd_train_mulan(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from .training.mulan import MuLaNTrainConfig, main_from_args

    overrides = {f.name: getattr(args, f.name, None) for f in fields(MuLaNTrainConfig)}
    report = main_from_args(args.config, overrides)
    if report:
        print(json.dumps({k: report[k] for k in ("text_to_audio", "audio_to_text", "zero_shot")}, indent=2))
    return 0


def _cmd_train_mulan_text(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from .training.mulan_text import TextAlignConfig, main_from_args

    overrides = {f.name: getattr(args, f.name, None) for f in fields(TextAlignConfig)}
    report = main_from_args(args.config, overrides)
    if report:
        print(json.dumps({k: report[k] for k in ("text_to_audio", "audio_to_text", "zero_shot")}, indent=2))
    return 0


def _cmd_train_codec(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from .training.codec import CodecTrainConfig, main_from_args

    overrides = {f.name: getattr(args, f.name, None) for f in fields(CodecTrainConfig)}
    report = main_from_args(args.config, overrides)
    if report:
        print(json.dumps(report, indent=2))
    return 0


def _cmd_train_stage(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from .training.stages import StageTrainConfig, main_from_args

    overrides = {f.name: getattr(args, f.name, None) for f in fields(StageTrainConfig)}
    print(json.dumps(main_from_args(args.config, overrides), indent=2))
    return 0


def _cmd_eval_stage(args: argparse.Namespace) -> int:
    from .training.stages import evaluate_checkpoint

    report = evaluate_checkpoint(args.checkpoint, args.tokens, items=args.items, batch_size=args.batch_size,
                                 crop_seconds=args.crop_seconds, threads=args.threads, split=args.split,
                                 beat_from=args.beat_from, controls_from=args.controls_from)  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0


def _cmd_train_semantic(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from .checkpoint import save
    from .data.datasets import CaptionedAudioDataset, ClipOptions, manifest_rows
    from .semantic import SemanticTokenizer

    tok = SemanticTokenizer(sample_rate=args.sample_rate, vocab_size=args.vocab_size)
    rows, _ = manifest_rows(Path(args.data) / "train.jsonl", require_caption=False)
    ds = CaptionedAudioDataset(
        rows[: args.max_clips], ClipOptions(sample_rate=args.sample_rate, crop_seconds=args.crop_seconds)
    )
    wavs = [item["wav"] for item in (ds[i] for i in range(len(ds))) if isinstance(item, dict)]
    stats = tok.fit([torch.stack(wavs[i : i + 32]) for i in range(0, len(wavs), 32)])
    save(tok, args.out)
    print(json.dumps({"out": args.out, "clips": len(wavs), **stats}, indent=2))
    return 0


def _cmd_train_spectral_codec(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from .checkpoint import save
    from .codec import SpectralCodec
    from .data.datasets import CaptionedAudioDataset, ClipOptions, manifest_rows

    torch.set_num_threads(args.threads)
    rows, bad = manifest_rows(Path(args.data) / "train.jsonl", require_caption=False)
    codec = SpectralCodec(sample_rate=args.sample_rate, hop=args.hop, dim=args.dim, num_quantizers=args.num_quantizers,
                          codebook_size=args.codebook_size, gl_iters=args.gl_iters)  # fmt: skip
    ds = CaptionedAudioDataset(rows[: args.max_clips], ClipOptions(sample_rate=args.sample_rate, crop_seconds=None))
    wavs = [item["wav"] for item in (ds[i] for i in range(len(ds))) if isinstance(item, dict)]
    if not wavs:
        raise ValueError(f"no readable clips in {args.data!r} ({len(bad)} bad rows)")
    report = codec.fit(wavs, max_frames=args.max_frames, seed=args.seed, progress=not args.quiet)
    save(codec, args.out)
    print(json.dumps({"out": args.out, "clips": len(wavs), **report}, indent=2))
    return 0


def _cmd_train_retrieval_prior(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from .checkpoint import save, stage_identity
    from .lm.prior import RetrievalPrior

    path = Path(args.tokens) / "train.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no tokens at {str(path)!r}: run `musiclm data tokenize` first")
    train = torch.load(path, weights_only=False)
    class_latents = None
    if args.family_acoustic_only and not args.family_pool:
        raise ValueError("--family-acoustic-only needs --family-pool (the family's clips it gives the acoustic stage)")
    if args.family_pool:  # the zero-shot family reader of the tokens' MuLaN
        from .checkpoint import load
        from .lm.controls import family_class_latents

        if not args.conditioning:
            raise ValueError("--family-pool reads families through MuLaN: pass --conditioning (the tokens' MuLaN)")
        conditioner: Any = load(args.conditioning)
        _, class_latents = family_class_latents(getattr(conditioner, "mulan", conditioner))
    prior = RetrievalPrior.from_items(train["items"], vocab_size=train["semantic_vocab"], size=args.size, k=args.k,
                                      smoothing=args.smoothing, mix=args.mix, frames_per_clip=args.frames_per_clip,
                                      frame_k=args.frame_k, frame_blend=args.frame_blend,
                                      frame_pitch_weight=args.frame_pitch_weight,
                                      frame_semantic_weight=args.frame_semantic_weight,
                                      frame_window=args.frame_window,
                                      frame_continuity=args.frame_continuity,
                                      frame_neighbours=args.frame_neighbours, frame_envelope=args.frame_envelope,
                                      frame_envelope_skip=args.frame_envelope_skip,
                                      frame_drums_only=args.frame_drums_only,
                                      beat_periods=bool(args.beat_from or args.beat_tags),
                                      **({"family_pool": args.family_pool, "family_classes": len(class_latents),
                                          "family_acoustic_only": args.family_acoustic_only}
                                         if class_latents is not None else {}),
                                      **({"frame_levels": args.frame_levels} if args.frame_levels else {}))  # fmt: skip
    kept = train["items"][: len(prior.latents)]
    if class_latents is not None:
        prior.set_families(class_latents)
    if args.beat_tags:  # each clip's period from the tempo it was rendered at (its manifest row's tags)
        from .data.datasets import manifest_rows

        rows, _ = manifest_rows(args.beat_tags, require_caption=False)
        bpm = {str(Path(r["path"]).resolve()): (r.get("tags") or {}).get("tempo_bpm") for r in rows}
        found = [bpm.get(str(Path(it["path"]).resolve())) for it in kept]
        missing = [it["path"] for it, b in zip(kept, found) if not b or b <= 0]
        if missing:
            raise ValueError(f"--beat-tags {args.beat_tags!r}: {len(missing)} of the {len(kept)} clips have no row "
                             f"with tags.tempo_bpm there (first: {missing[0]!r})")  # fmt: skip
        prior.set_beat_periods(60.0 * float(train["semantic_rate"]) / torch.tensor(found, dtype=torch.float))
    elif args.beat_from:  # each clip's beat period from its own ids, through the tokenizer that made them
        from .semantic.beat import grid_of_ids
        from .training.stages import load_beat_tokenizer

        tok = load_beat_tokenizer(args.beat_from, train["identity"])
        prior.set_beat_periods(torch.tensor([grid_of_ids(tok, it["semantic"])[0] for it in kept]))
    ident = stage_identity("prior", train["identity"])
    if not prior.has_frames:  # without a frame bank the prior does not depend on the codec
        ident.pop("codec", None)
    save(prior, args.out, extra={"identity": ident})
    print(json.dumps({"out": args.out, "clips": len(prior.latents), **prior.config}, indent=2))
    return 0


def _cmd_data_tokenize(args: argparse.Namespace) -> int:
    from .checkpoint import load
    from .training.tokenize import tokenize_corpus

    summary = tokenize_corpus(conditioner=load(args.conditioning).eval(), semantic=load(args.semantic),
                              codec=load(args.codec).eval(), data=args.data, out=args.out, max_clips=args.max_clips,
                              max_val_clips=args.max_val_clips, test=args.test, num_workers=args.workers,
                              reuse=args.reuse, progress=not args.quiet)  # fmt: skip
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_train_conditioning(args: argparse.Namespace) -> int:
    from .training.conditioning import fit_conditioning

    report = fit_conditioning(
        mulan_path=args.mulan,
        data=args.data,
        out=args.out,
        num_quantizers=args.num_quantizers,
        codebook_size=args.codebook_size,
        max_val=args.max_val,
        latents_cache=args.latents_cache,
        progress=not args.quiet,
    )
    print(json.dumps(report, indent=2))
    return 0


def _add_split_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", choices=["val", "test"], default="val",
                        help="val (default) or test: the sealed test split (a corpus's test.jsonl, tokens' test.pt), "
                        "read only when named; its figures are reported, never used to choose")  # fmt: skip


def _cmd_eval_mulan(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .checkpoint import load
    from .data.datasets import check_split, manifest_rows
    from .evaluation.mulan_eval import evaluate_mulan, plot_similarity
    from .mulan.model import MuLaN

    rows, bad = manifest_rows(args.data)
    check_split(rows, args.split, args.data)
    mulan = load(args.checkpoint, expected=MuLaN).eval()
    report = evaluate_mulan(mulan, rows, max_clips=args.max_clips, progress=not args.quiet)
    report["manifest_rows_skipped"] = len(bad)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mulan_eval.json").write_text(json.dumps(report, indent=2))
    plot_similarity(mulan, rows, out / "similarity.png")
    print(json.dumps(report, indent=2))
    return 0


def _cmd_eval_codec(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from .data.datasets import CaptionedAudioDataset, ClipOptions, check_split, data_rows
    from .evaluation.codec_eval import evaluate_classic, evaluate_codec

    torch.set_num_threads(args.threads)
    codec: Any = None
    if args.checkpoint and args.pretrained:
        raise ValueError("pass --checkpoint (ours) or --pretrained (EnCodec/DAC folder), not both")
    if args.checkpoint:
        from .checkpoint import load

        codec = load(args.checkpoint).eval()
    elif args.pretrained:
        from .codec import PretrainedCodec

        codec = PretrainedCodec(args.pretrained)
    sample_rate = codec.sample_rate if codec is not None else args.sample_rate
    data = Path(args.data)
    rows, bad = data_rows(data, split=args.split, require_caption=False, what="codec evaluation data")
    check_split(rows, args.split, data)
    opts = ClipOptions(sample_rate=sample_rate, crop_seconds=args.seconds, crop="center", min_seconds=1.0,
                       normalize=None)  # fmt: skip
    ds = CaptionedAudioDataset(rows[: args.max_clips], opts)
    items = [ds[i] for i in range(len(ds))]
    wavs = [it["wav"] for it in items if isinstance(it, dict)]
    if not wavs:
        raise ValueError(f"no readable clips in {str(data)!r} ({len(bad)} bad rows)")
    report: dict = {"data": str(data), "clips": len(wavs), "seconds": args.seconds, "sample_rate": sample_rate,
                    "skipped": len(items) - len(wavs) + len(bad), "classic": []}  # fmt: skip
    for spec in args.classic:
        name, _, level = spec.partition(":")
        report["classic"].append(evaluate_classic(wavs, sample_rate, name, float(level or 1.0)))
    if codec is not None:
        report["codec"] = {"checkpoint": args.checkpoint or args.pretrained,
                           **evaluate_codec(codec, wavs, levels=args.levels)}  # fmt: skip
    if args.mulan:
        from .checkpoint import load
        from .evaluation.codec_eval import evaluate_fidelity
        from .mulan.model import MuLaN

        if codec is None:
            raise ValueError("--mulan measures what survives a codec: pass --checkpoint or --pretrained too")
        good = [(it, row) for it, row in zip(items, rows) if isinstance(it, dict)]
        texts = [row.get("full_caption") or (row.get("captions") or [""])[0] for _, row in good]
        if not all(texts):
            raise ValueError(f"--mulan needs captioned clips; {str(data)!r} has clips without a caption")
        mulan: Any = load(args.mulan, expected=MuLaN).eval()
        n = min(len(good), args.fidelity_clips)
        report["fidelity"] = evaluate_fidelity(codec, [it["wav"] for it, _ in good[:n]], texts[:n],
                                               [it["tags"] for it, _ in good[:n]], mulan=mulan,
                                               levels=args.levels, group=args.r1_group)  # fmt: skip
        if args.real:
            from .evaluation.codec_eval import evaluate_agreement

            real_rows, real_bad = data_rows(Path(args.real), require_caption=False,
                                            what="untagged music (--real)")  # fmt: skip
            real_ds = CaptionedAudioDataset(real_rows[: args.max_clips], opts)
            real = [it["wav"] for it in (real_ds[i] for i in range(len(real_ds))) if isinstance(it, dict)]
            skipped = len(real_rows[: args.max_clips]) - len(real) + len(real_bad)
            report["real"] = {"data": args.real, "skipped": skipped,
                              **evaluate_agreement(codec, real, mulan=mulan, levels=args.levels)}  # fmt: skip
    elif args.real:
        raise ValueError("--real measures agreement through MuLaN and the judge: pass --mulan too")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "codec_eval.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


def _cmd_eval_acoustic(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from .checkpoint import load
    from .data.datasets import check_split, manifest_rows
    from .evaluation.acoustic_oracle import acoustic_oracle
    from .mulan.model import MuLaN
    from .training.tokenize import load_split_tokens

    torch.set_num_threads(args.threads)
    items = load_split_tokens(args.tokens, args.split)["items"][: args.clips]
    rows, _ = manifest_rows(Path(args.data), require_caption=False)
    check_split(rows, args.split, args.data)
    by_path = {str(Path(r["path"]).resolve()): r for r in rows}
    missing = [it["path"] for it in items if str(Path(it["path"]).resolve()) not in by_path]
    if missing:
        raise ValueError(f"{len(missing)} token items have no row in {args.data!r} (first: {missing[0]!r}); pass the "
                         "manifest the tokens were made from")  # fmt: skip
    matched = [by_path[str(Path(it["path"]).resolve())] for it in items]
    bank = None
    if args.knn:
        train_items = torch.load(Path(args.tokens) / "train.pt", weights_only=False)["items"]
        bank = torch.stack([it["mulan"].float() for it in train_items])
    texts = [r.get("full_caption") or r["caption"] for r in matched]
    tokenizer = load(args.semantic_tokenizer) if args.semantic_tokenizer else None
    prior = None
    if args.prior:
        from .lm.prior import RetrievalPrior

        prior = load(args.prior, expected=RetrievalPrior)
    report = acoustic_oracle(stage=load(args.stage), codec=load(args.codec), mulan=load(args.mulan, expected=MuLaN),
                             items=items, texts=texts, tags=[r["tags"] for r in matched], cfg_scale=args.cfg_scale,
                             steps=tuple(args.steps), temperature=args.temperature, seed=args.seed, bank=bank,
                             knn=args.knn or 8, other_scales=tuple(args.other_scales), out_dir=Path(args.out),
                             examples=args.examples, semantic_tokenizer=tokenizer, prior=prior)  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "acoustic_oracle.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


# safetensors refuses headers larger than this (its MAX_HEADER_SIZE)
_MAX_HEADER_BYTES = 100_000_000


def read_checkpoint_header(path: str | Path) -> dict[str, Any]:
    """``checkpoint.read_header`` without torch or safetensors: what ``musiclm info`` prints.

    A safetensors file starts with the header's length (8 bytes, little-endian) and the header, JSON
    whose ``"__metadata__"`` holds our strings: ``format_version``, ``component``, ``config`` (JSON)
    and ``extra`` (JSON). ``checkpoint.read_header`` imports torch (about 2 s), too slow for a command
    that only reads a few hundred bytes. Unlike ``load``, any ``format_version`` is shown, not refused.

    Raises:
        ValueError: the file is missing, not a safetensors file, or not one of our checkpoints; the
            message names the file and the reason, as ``CheckpointError``'s does.
    """
    path = Path(path)

    def bad(reason: str) -> ValueError:
        return ValueError(f"bad checkpoint {str(path)!r}: {reason}")

    if not path.is_file():
        raise bad("no such file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise bad(f"not a readable safetensors file ({size} bytes, shorter than the 8-byte header length)")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(size - 8, _MAX_HEADER_BYTES):
            raise bad(f"not a readable safetensors file (header length {length} but the file has {size} bytes)")
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"not a readable safetensors file (header is not JSON: {e})") from e
    meta = header.get("__metadata__") or {} if isinstance(header, dict) else {}
    missing = {"format_version", "component", "config"} - set(meta)
    if missing:
        raise bad(f"metadata lacks {sorted(missing)}; not a musiclm_pytorch checkpoint")
    try:
        config = json.loads(meta["config"])
        extra = json.loads(meta.get("extra", "{}"))
    except json.JSONDecodeError as e:
        raise bad(f"config is not valid JSON ({e})") from e
    version = meta["format_version"]
    return {
        "format_version": int(version) if version.isdigit() else version,
        "component": meta["component"],
        "config": config,
        "extra": extra,
    }


def _cmd_info(args: argparse.Namespace) -> int:
    print(json.dumps(read_checkpoint_header(args.checkpoint), indent=2))
    return 0


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--flag`` per field of a config dataclass, defaulting to None so that the dataclass keeps
    the defaults (one source of truth); booleans get ``--flag / --no-flag``."""
    import dataclasses
    import types
    import typing

    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        typ = hints[field.name]
        if isinstance(typ, types.UnionType) or typing.get_origin(typ) is typing.Union:
            typ = next(t for t in typing.get_args(typ) if t is not type(None))
        flag = "--" + field.name.replace("_", "-")
        if typ is bool:
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(flag, dest=field.name, type=typ, default=None, help=f"default: {field.default!r}")


class _ConfigFlagsParser(argparse.ArgumentParser):
    """A subcommand parser whose ``--config`` and ``--flags`` come from a config dataclass, added when the
    parser is first used (parsing, usage, help): the dataclasses live in the training modules, which
    import torch, and building the whole parser for ``musiclm --help`` must not.

    Args:
        config: ``"module:ClassName"``, the module relative to this package; ``None``: a plain parser.
    """

    def __init__(self, *args: Any, config: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._config = config

    def _add_config_flags(self) -> None:
        if self._config is None:
            return
        module, _, name = self._config.partition(":")
        self._config = None
        cls = getattr(importlib.import_module(module, __package__), name)
        self.add_argument("--config", help=f"JSON file of {cls.__name__} keys (unknown keys are rejected)")
        add_config_flags(self, cls)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._add_config_flags()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._add_config_flags()
        return super().format_usage()

    def format_help(self) -> str:
        self._add_config_flags()
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musiclm", description="MusicLM (text to music) in PyTorch")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error (without it: one line)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train a tiny MuLaN on synthetic tones (about 20 s on 2 CPU threads)")
    demo.add_argument("--steps", type=int, default=400)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=_threads, default=2)
    demo.add_argument("--out", help="save the trained MuLaN checkpoint here (.safetensors)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_cmd_demo)

    gen = sub.add_parser("generate", help="music from text (the shipped model, or --model-dir)")
    gen.add_argument("texts", nargs="*", help="one WAV per text (or use --story)")
    gen.add_argument("--story", nargs="+", type=_story_segment, metavar="TEXT:SECONDS",
                     help="story mode (MusicLM §4.4): one piece whose segments follow these texts, e.g. "
                     "--story 'calm piano:10' 'fast rock with drums:10' -o story.wav")  # fmt: skip
    gen.add_argument(
        "--model-dir",
        help="model folder: conditioning, semantic_tokenizer, codec, semantic_lm and acoustic_lm (or coarse_lm + "
        "fine_lm) .safetensors, optional retrieval_prior.safetensors (default: the model shipped in the package)",
    )
    gen.add_argument(
        "--seconds", type=float, default=10.0,
        help=f"length of each sample, at most {MAX_SECONDS:g} (beyond the model's window: long generation)",
    )  # fmt: skip
    gen.add_argument(
        "--candidates", type=int, default=4, help=f"samples per text, reranked by MuLaN (1 to {MAX_CANDIDATES})"
    )
    gen.add_argument("--cfg-scale", type=_cfg_scale, nargs="+", default=None,
                     help="classifier-free guidance: one scale for every stage, or semantic then acoustic (default: "
                     "the model's: each stage's stored scale, else semantic 1 and acoustic 3)")  # fmt: skip
    gen.add_argument("--temperature", type=float, default=None,
                     help="the semantic stage's sampling temperature (default: the model's stored one, else "
                     "1.0)")  # fmt: skip
    gen.add_argument(
        "--key-bias",
        type=_number_in(float, 0, 10, "a key bias"),
        default=None,
        metavar="SCALE",
        help="for a model whose semantic LM reads key labels: how hard to hold the key the text asks for "
        "(the key's id bias; default the model's; higher keeps the key more often and the rhythm less)",
    )
    gen.add_argument("--beat-source", choices=("semantic", "ids"), default=None,
                     help="for a model whose acoustic stage reads a beat grid: give it the grid the semantic stage "
                     "was asked to follow (semantic) or the one estimated from the generated ids (ids) (default: "
                     "the model's stored choice)")  # fmt: skip
    gen.add_argument("--prompt-blend", type=_unit_float, default=None,
                     help="with --continue and a latent acoustic stage: replace each frame it predicts by the "
                     "prompt's real frames, blended by this share (default 1; 0: the prediction alone)")  # fmt: skip
    gen.add_argument("--prompt-continuity", type=_nonneg_float, default=None,
                     help="with --continue and a latent acoustic stage: choose runs of the prompt's frames, each jump "
                     "costing this much (default 10; 0: frame by frame)")  # fmt: skip
    gen.add_argument("--prior-mix", type=float, default=None,
                     help="the retrieval prior's share in the semantic stage's sampling, in [0, 1) (default: the "
                     "model's)")  # fmt: skip
    gen.add_argument("--continue", dest="continue_from", metavar="AUDIO",
                     help="continue this audio file by --seconds (an optional text sets the style; otherwise the "
                     "prompt's own MuLaN audio embedding does); -o gets the prompt and its continuation")  # fmt: skip
    gen.add_argument("--melody", metavar="AUDIO",
                     help="a hummed, whistled or played melody to render in the texts' style (its first --seconds, "
                     "at most one window)")  # fmt: skip
    gen.add_argument("--frame-blend", type=float, default=None,
                     help="share of real training frames matched into the acoustic stage's frames, in [0, 1] "
                     "(default: the model's; 0 turns matching off)")  # fmt: skip
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--threads", type=_threads, default=2)
    gen.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    gen.add_argument(
        "--lm-precision",
        choices=["float32", "bfloat16", "int8"],
        default="float32",
        help="stage LM decoding precision (int8: int8 weights, bf16 activations; fastest on CPU)",
    )
    gen.add_argument("--level-dbfs", type=_level_dbfs, default=-20.0,
                     help="write each clip at this RMS level (peak kept below -0.1 dBFS); 'none' keeps the "
                     "model's level")  # fmt: skip
    gen.add_argument("-o", "--out", default="generated", help="a folder (one WAV per text) or, for one text, a .wav")
    gen.set_defaults(func=_cmd_generate)

    srv = sub.add_parser("serve", help="web demo (gradio, the [demo] extra): generate, story, continue")
    srv.add_argument("--model-dir", help="model folder (default: the model shipped in the package)")
    srv.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every interface)")
    srv.add_argument("--port", type=int, default=7860)
    srv.add_argument("--max-seconds", type=float, default=30.0, help="longest piece one request may ask for")
    srv.add_argument("--max-candidates", type=int, default=4, help=f"at most {MAX_CANDIDATES}")
    srv.add_argument("--max-prompt-chars", type=int, default=300)
    srv.add_argument("--concurrency", type=int, default=1, help="requests generated at once")
    srv.add_argument("--queue-size", type=int, default=8, help="requests that may wait; more are refused")
    srv.add_argument("--lm-precision", choices=["float32", "bfloat16", "int8"], default="float32")
    srv.add_argument("--device", default="cpu")
    srv.add_argument("--threads", type=_threads, default=2)
    srv.set_defaults(func=_cmd_serve)

    bun = sub.add_parser(
        "bundle", help="gather trained components into one model folder (checked as generate loads it)"
    )
    bun.add_argument("--out", required=True, help="the model folder to write")
    bun.add_argument("--conditioning", required=True, help="fitted MuLaN conditioning (holds MuLaN)")
    bun.add_argument("--semantic-tokenizer", required=True)
    bun.add_argument("--codec", required=True)
    bun.add_argument("--semantic-lm", required=True, help="`train stage --stage semantic` output")
    bun.add_argument("--acoustic-lm", help="`train stage --stage latent` or `--stage acoustic` output")
    bun.add_argument("--coarse-lm", help="instead of --acoustic-lm: the paper's coarse stage")
    bun.add_argument("--fine-lm", help="with --coarse-lm: the fine stage")
    bun.add_argument("--prior", help="`train retrieval-prior` output")
    bun.add_argument("--half", action="store_true", help="store the stage LMs in float16 (half the size)")
    bun.add_argument("--semantic-cfg-scale", type=float, default=None,
                     help="the semantic LM's guidance when a caller gives none (stored in its file)")  # fmt: skip
    bun.add_argument("--acoustic-cfg-scale", type=float, default=None,
                     help="the acoustic stage's guidance when a caller gives none: a coarse LM's, or the flow "
                     "stage's mean guidance (stored in its file)")  # fmt: skip
    bun.add_argument("--semantic-temperature", type=float, default=None,
                     help="the semantic LM's sampling temperature when a caller gives none (stored in its file; "
                     "default: the paper's 1.0)")  # fmt: skip
    bun.add_argument("--semantic-control-source", choices=("prior", "text"), default=None,
                     help="for a semantic LM that reads key and drums labels: read them at generation from the "
                     "retrieval prior's latent (prior) or the text's own (text) (stored in its file)")  # fmt: skip
    bun.add_argument("--semantic-key-bias", type=float, default=None, metavar="SCALE",
                     help="for a semantic LM that reads key and drums labels: add SCALE x the key label's PMI over "
                     "the retrieval prior's clips to its logits (stored in its file; 0: none)")  # fmt: skip
    bun.add_argument("--acoustic-guidance-envelope", type=int, default=None, metavar="K",
                     help="a latent acoustic stage guides only the spectral envelope of the conditioning's effect: "
                     "its first K cepstral coefficients over the codec's spectrum (the shipped model: 20; 0: plain "
                     "guidance; stored in its file)")  # fmt: skip
    bun.add_argument("--acoustic-beat-source", choices=("semantic", "ids"), default=None,
                     help="for a latent acoustic stage that reads a beat grid: the grid it gets at generation, the "
                     "semantic LM's where its tempo is known (semantic) or the generated ids' (ids) (stored in its "
                     "file; default semantic)")  # fmt: skip
    bun.add_argument("--acoustic-movement-gain", type=float, default=None, metavar="ALPHA",
                     help="for a latent acoustic stage: scale its prediction's movement around the clip mean by "
                     "per-dimension gains fitted on training clips (real / predicted std over time, median), raised "
                     "to ALPHA (the shipped model: 0.5; 0: none; stored in its file); needs "
                     "--movement-gain-tokens")  # fmt: skip
    bun.add_argument("--movement-gain-tokens", default=None, metavar="DIR",
                     help="tokens folder (train.pt) whose first --movement-gain-clips clips fit the movement "
                     "gain")  # fmt: skip
    bun.add_argument("--movement-gain-clips", type=_int_in(2, 1_000_000), default=256,
                     help="how many training clips the movement gain is fitted on (default 256)")  # fmt: skip
    bun.add_argument("--movement-gain-bands", type=float, nargs="+", default=None, metavar="HZ",
                     help="fit the movement gain per band of modulation frequency, these the inner edges in Hz "
                     "(e.g. 0.5 1 2 4 8 12.5; default: one gain per latent dimension)")  # fmt: skip
    bun.add_argument("--movement-gain-cap-above", type=float, default=None, metavar="HZ",
                     help="with --movement-gain-bands: the bands from HZ up get gains of at most 1, so only the "
                     "slower movement is raised")  # fmt: skip
    bun.set_defaults(func=_cmd_bundle)

    sim = sub.add_parser("similarity", help="MuLaN cosine similarity between audio files and captions")
    sim.add_argument("--checkpoint", required=True)
    sim.add_argument("--audio", nargs="+", required=True)
    sim.add_argument("--text", nargs="+", required=True)
    sim.set_defaults(func=_cmd_similarity)

    data = sub.add_parser("data", help="make and check datasets").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="render a synthetic captioned music corpus with FluidSynth")
    synth.add_argument("out", help="output folder")
    # no defaults here: SynthConfig holds them (one source of truth)
    synth.add_argument("--num-clips", dest="num_clips", type=int)
    synth.add_argument("--seconds", type=float)
    synth.add_argument("--sample-rate", dest="sample_rate", type=int)
    synth.add_argument("--seed", type=int)
    synth.add_argument("--val-fraction", dest="val_fraction", type=float)
    synth.add_argument("--test-fraction", dest="test_fraction", type=float,
                       help="share of generated compositions in the sealed test split (test.jsonl; "
                       "default 0)")  # fmt: skip
    synth.add_argument("--renders-per-source", dest="renders_per_source", type=int)
    synth.add_argument("--bach-fraction", dest="bach_fraction", type=float)
    synth.add_argument("--workers", type=int)
    synth.add_argument("--format", dest="audio_format", choices=["flac", "wav", "ogg"])
    synth.add_argument("--soundfont", dest="soundfonts", action="append", help="repeatable; default: all installed")
    synth.add_argument("--shards", dest="shard_size", type=int, metavar="CLIPS_PER_SHARD",
                       help="also write WebDataset tar shards")  # fmt: skip
    synth.add_argument("--quiet", action="store_true")
    synth.set_defaults(func=_cmd_data_synth)
    tok = data.add_parser("tokenize", help="tokenize a corpus once for the stage LMs")
    tok.add_argument("--conditioning", required=True, help="fitted MuLaNEmbedQuantizer checkpoint")
    tok.add_argument("--semantic", required=True, help="fitted SemanticTokenizer checkpoint")
    tok.add_argument("--codec", required=True, help="trained codec checkpoint")
    tok.add_argument("--data", required=True, help="corpus folder with train.jsonl / val.jsonl")
    tok.add_argument("--out", required=True)
    tok.add_argument("--max-clips", type=int, help="tokenize the first N training rows")
    tok.add_argument("--max-val-clips", type=int, help="tokenize the first N validation rows")
    tok.add_argument("--test", action="store_true", help="also the sealed test split: test.jsonl into test.pt "
                     "(for eval stage / eval acoustic --split test; no trainer reads it)")  # fmt: skip
    tok.add_argument("--workers", type=int, default=1, help="processes that decode audio (0: this one)")
    tok.add_argument(
        "--reuse", help="an earlier tokens folder: copy the ids of every component whose weights are unchanged"
    )
    tok.add_argument("--quiet", action="store_true")
    tok.set_defaults(func=_cmd_data_tokenize)
    merge = data.add_parser(
        "merge", help="join corpora for training; BASE's validation split is kept and its sources never trained on"
    )
    merge.add_argument("out", help="output folder (manifests only; no audio is copied)")
    merge.add_argument("base", help="corpus whose val.jsonl stays the validation split")
    merge.add_argument("extra", nargs="+", help="corpora whose training rows are added")
    merge.set_defaults(func=_cmd_data_merge)
    check = data.add_parser("check", help="decode every row of a manifest or folder; report bad rows")
    check.add_argument("source", help="a JSONL manifest or an audio folder with sidecar captions")
    check.add_argument("--sample-rate", type=int, default=16000)
    check.add_argument("--min-seconds", type=float, default=1.0)
    check.set_defaults(func=_cmd_data_check)

    train = sub.add_parser("train", help="train a component").add_subparsers(
        dest="train_command", required=True, parser_class=_ConfigFlagsParser
    )
    for name, config, func, help_text in (
        ("mulan", ".training.mulan:MuLaNTrainConfig", _cmd_train_mulan,
         "train MuLaN contrastively (resumes from --out)"),
        ("mulan-text", ".training.mulan_text:TextAlignConfig", _cmd_train_mulan_text,
         "fit MuLaN's text side (or a new text tower) to its frozen audio side (resumes from --out)"),
        ("codec", ".training.codec:CodecTrainConfig", _cmd_train_codec,
         "train a codec, MDCT or SoundStream (resumes from --out)"),
        ("stage", ".training.stages:StageTrainConfig", _cmd_train_stage,
         "train a stage on tokenized data (semantic, coarse, fine; or acoustic, latent, flow)"),
    ):  # fmt: skip
        p = train.add_parser(name, help=help_text, config=config)
        p.set_defaults(func=func)

    tsem = train.add_parser("semantic-tokenizer", help="fit the k-means semantic tokenizer on a corpus")
    tsem.add_argument("--data", required=True, help="corpus folder with train.jsonl")
    tsem.add_argument("--out", default="semantic.safetensors")
    tsem.add_argument("--vocab-size", type=int, default=512)
    tsem.add_argument("--sample-rate", type=int, default=16000)
    tsem.add_argument("--max-clips", type=int, default=2000)
    tsem.add_argument("--crop-seconds", type=float, default=10.0)
    tsem.set_defaults(func=_cmd_train_semantic)

    tsc = train.add_parser("spectral-codec", help="fit the log-magnitude codec (PCA + residual k-means, no training)")
    tsc.add_argument("--data", required=True, help="corpus folder with train.jsonl")
    tsc.add_argument("--out", default="spectral_codec.safetensors")
    tsc.add_argument("--sample-rate", type=int, default=16000)
    tsc.add_argument("--hop", type=int, default=320)
    tsc.add_argument("--dim", type=int, default=128)
    tsc.add_argument("--num-quantizers", type=int, default=16)
    tsc.add_argument("--codebook-size", type=int, default=1024)
    tsc.add_argument("--gl-iters", type=int, default=32)
    tsc.add_argument("--max-clips", type=int, default=600)
    tsc.add_argument("--max-frames", type=int, default=200_000)
    tsc.add_argument("--seed", type=int, default=0)
    tsc.add_argument("--threads", type=_threads, default=2)
    tsc.add_argument("--quiet", action="store_true")
    tsc.set_defaults(func=_cmd_train_spectral_codec)

    trp = train.add_parser("retrieval-prior", help="the text -> training clips bridge of the stages (lm/prior.py)")
    trp.add_argument("--tokens", required=True, help="tokens folder (`musiclm data tokenize`) of the stages' training")
    trp.add_argument("--out", default="retrieval_prior.safetensors")
    trp.add_argument("--size", type=int, default=None, help="training clips kept (default all)")
    trp.add_argument("--k", type=int, default=8, help="neighbours pooled per text")
    trp.add_argument("--smoothing", type=float, default=0.1, help="pseudo-count per id and neighbour")
    trp.add_argument("--mix", type=float, default=0.25, help="default share in the semantic LM's next-id distribution")
    trp.add_argument(
        "--frames-per-clip",
        type=int,
        default=0,
        help="codec frames kept per clip for matching the latent stage's frames to real ones (0: none)",
    )
    trp.add_argument("--frame-k", type=int, default=4, help="real frames averaged per predicted frame")
    trp.add_argument("--frame-blend", type=float, default=1.0, help="share of the matched frames (1: real only)")
    trp.add_argument(
        "--frame-pitch-weight",
        type=float,
        default=0.0,
        help="weight of the chroma distance in the frame matching (keeps the predicted harmony)",
    )
    trp.add_argument("--frame-semantic-weight", type=float, default=0.0,
                     help="weight of the semantic-id (tokenizer centre) distance in the frame matching")  # fmt: skip
    trp.add_argument("--frame-window", action="store_true",
                     help="keep consecutive frames from the middle of each clip, not evenly spaced ones")  # fmt: skip
    trp.add_argument("--frame-continuity", type=float, default=0.0,
                     help="unit selection: the cost of a jump in one path through the bank frames (0: off; "
                          "needs --frame-k 1)")  # fmt: skip
    trp.add_argument("--beat-from", default="", metavar="TOKENIZER",
                     help="keep each clip's beat period, read from its ids through this semantic tokenizer (the "
                     "tokens'): the tempo a beat-reading semantic LM gets when the text names none")  # fmt: skip
    trp.add_argument("--beat-tags", default="", metavar="MANIFEST",
                     help="keep each clip's beat period from the tempo its row in this manifest states "
                     "(tags.tempo_bpm): the rendered tempo, where the ids' estimate can be an octave off")  # fmt: skip
    trp.add_argument("--frame-neighbours", type=int, default=None,
                     help="match frames among this many nearest clips (default all --k)")  # fmt: skip
    trp.add_argument("--frame-levels", type=int, default=None,
                     help="codec levels kept per bank frame (default: all the tokens have)")  # fmt: skip
    trp.add_argument("--frame-envelope", type=int, default=0,
                     help="take only the spectral envelope (this many cepstral coefficients) from the matched frames "
                     "and the prediction's harmonics (0: the whole frame)")  # fmt: skip
    trp.add_argument("--frame-envelope-skip", type=int, default=0,
                     help="with --frame-envelope: keep the prediction's first this many of those coefficients (1: "
                     "its loudness contour, where the beat is)")  # fmt: skip
    trp.add_argument("--frame-drums-only", action="store_true",
                     help="match frames only for texts that ask for drums (the prediction elsewhere)")  # fmt: skip
    trp.add_argument("--family-pool", type=int, default=0,
                     help="the conditioning latent from a text's this many nearest clips, those of its instrument "
                     "family first (MuLaN's zero-shot readings; needs --conditioning; 0: the nearest --k)")  # fmt: skip
    trp.add_argument("--family-acoustic-only", action="store_true",
                     help="with --family-pool: the family's clips condition the acoustic stage alone; the semantic "
                     "LM keeps the nearest clips' latent (its ids set the key)")  # fmt: skip
    trp.add_argument("--conditioning", default="",
                     help="the tokens' MuLaN conditioning file (for --family-pool's family reader)")  # fmt: skip
    trp.set_defaults(func=_cmd_train_retrieval_prior)

    tc = train.add_parser("conditioning", help="fit the MuLaN conditioning RVQ on all training clips")
    tc.add_argument("--mulan", required=True, help="trained MuLaN checkpoint")
    tc.add_argument("--data", required=True, help="corpus folder with train.jsonl and val.jsonl")
    tc.add_argument("--out", default="conditioning.safetensors")
    tc.add_argument("--num-quantizers", type=int, default=12)
    tc.add_argument("--codebook-size", type=int, default=1024)
    tc.add_argument("--max-val", type=int, default=1000)
    tc.add_argument("--latents-cache", help="save/reuse the MuLaN latents here (try several codebook sizes)")
    tc.add_argument("--quiet", action="store_true")
    tc.set_defaults(func=_cmd_train_conditioning)

    ev = sub.add_parser("eval", help="offline evaluation").add_subparsers(dest="eval_command", required=True)
    em = ev.add_parser("mulan", help="retrieval R@k and zero-shot tagging of a MuLaN checkpoint")
    em.add_argument("--checkpoint", required=True)
    em.add_argument("--data", required=True, help="JSONL manifest of held-out clips (e.g. corpus/val.jsonl)")
    em.add_argument("--max-clips", type=int, default=1000)
    em.add_argument("--out", default="mulan_eval")
    em.add_argument("--quiet", action="store_true")
    _add_split_flag(em)
    em.set_defaults(func=_cmd_eval_mulan)
    eo = ev.add_parser("acoustic", help="acoustic oracle: true semantic ids + caption conditioning -> audio, judged")
    eo.add_argument("--stage", required=True, help="acoustic stage checkpoint (train stage --stage acoustic)")
    eo.add_argument("--codec", required=True)
    eo.add_argument("--mulan", required=True, help="the MuLaN whose latents the stage was trained on")
    eo.add_argument("--tokens", required=True, help="tokens folder whose val.pt holds the held-out clips")
    eo.add_argument("--data", required=True, help="the manifest of those clips (captions and tags)")
    eo.add_argument("--clips", type=int, default=300)
    eo.add_argument("--cfg-scale", type=_cfg_scale, default=3.0)
    eo.add_argument("--other-scales", type=float, nargs="*", default=[], help="also generate from text at these "
                    "guidance scales (a sweep)")  # fmt: skip
    eo.add_argument("--steps", type=int, nargs="+", default=[8, 1], help="unmasking rounds per level")
    eo.add_argument("--temperature", type=float, default=1.0)
    eo.add_argument("--seed", type=int, default=0)
    eo.add_argument("--examples", type=int, default=4, help="clips written as WAVs and drawn in acoustic_oracle.png")
    eo.add_argument("--knn", type=int, default=0, help="also condition on the mean audio latent of the K training "
                    "clips nearest the caption (tokens/train.pt); 0: off")  # fmt: skip
    eo.add_argument("--prior", default="", help="a retrieval prior file (e.g. the shipped model's): also condition "
                    "on its acoustic latent of the caption, as the pipeline does; the caption swap goes through "
                    "it")  # fmt: skip
    eo.add_argument("--semantic-tokenizer", default="", metavar="TOKENIZER",
                    help="for a latent stage that reads the beat (trained with --beat-from): the semantic tokenizer "
                    "that made the tokens, whose onset features give each clip's beat grid")  # fmt: skip
    eo.add_argument("--threads", type=_threads, default=2)
    eo.add_argument("--out", default="acoustic_oracle")
    _add_split_flag(eo)
    eo.set_defaults(func=_cmd_eval_acoustic)
    ec = ev.add_parser("codec", help="SI-SNR / log-mel distance / bitrate of a codec beside Opus, Vorbis, MP3")
    ec.add_argument("--checkpoint", help="our codec checkpoint (MDCTCodec or SoundStream .safetensors)")
    ec.add_argument("--pretrained", help="a local transformers EnCodec or DAC folder")
    ec.add_argument("--data", required=True, help="corpus folder (its val.jsonl), JSONL manifest or audio folder")
    ec.add_argument("--seconds", type=float, default=10.0, help="centre crop of each clip")
    ec.add_argument("--max-clips", type=int, default=32)
    ec.add_argument("--levels", type=int, nargs="+", help="numbers of levels to decode with (default 1, Q/2, Q)")
    ec.add_argument("--sample-rate", type=int, default=16000, help="rate when no codec is given")
    ec.add_argument(
        "--classic",
        nargs="*",
        default=["opus:1.0", "opus:0.9", "vorbis:1.0", "mp3:0.5"],
        help="classic codecs as name:compression_level (0 best quality, 1 smallest)",
    )
    ec.add_argument(
        "--mulan",
        help="a MuLaN checkpoint: also measure whether captions still match the clips after the codec "
        "(MuLaN cycle consistency, caption R@1, the judge's accuracy), original vs decoded",
    )
    ec.add_argument("--fidelity-clips", type=int, default=48, help="clips for --mulan (all in one batch)")
    ec.add_argument(
        "--r1-group",
        type=int,
        default=100,
        help="with --mulan, caption R@1 among each run of this many clips (chance 1 / group)",
    )
    ec.add_argument("--real", help="with --mulan, untagged music (an audio folder or manifest): agreement of the "
                    "judge's and MuLaN's readings between original and round trip")  # fmt: skip
    ec.add_argument("--threads", type=_threads, default=2)
    ec.add_argument("--out", default="codec_eval")
    _add_split_flag(ec)
    ec.set_defaults(func=_cmd_eval_codec)
    es = ev.add_parser("stage", help="validation loss of a stage LM with true vs shuffled conditioning")
    es.add_argument("--checkpoint", required=True, help="a stage LM written by `musiclm train stage`")
    es.add_argument("--tokens", required=True, help="the tokens folder it was trained on (its val.pt)")
    es.add_argument("--items", type=int, default=256, help="validation clips (one crop each)")
    es.add_argument("--batch-size", type=int, default=16)
    es.add_argument("--crop-seconds", type=float, help="default: the crop the stage was trained with")
    es.add_argument("--beat-from", default="", metavar="TOKENIZER",
                    help="for a semantic LM that reads a beat grid: the semantic tokenizer that made the tokens "
                    "(default: the one its training run named)")  # fmt: skip
    es.add_argument("--controls-from", default="", metavar="MULAN",
                    help="for a semantic LM that reads key and drums labels: the MuLaN (or conditioning file) that "
                    "made the tokens (default: the one its training run named)")  # fmt: skip
    es.add_argument("--threads", type=_threads, default=2)
    _add_split_flag(es)
    es.set_defaults(func=_cmd_eval_stage)

    def model_eval(name: str, help_text: str, func: Any, out: str) -> argparse.ArgumentParser:
        """An ``eval`` command that scores a model folder (the shipped one by default); its own flags follow."""
        p = ev.add_parser(name, help=help_text)
        p.add_argument("--model", help="model folder (default: the shipped model)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--lm-precision", default="float32", choices=["float32", "bfloat16", "int8"])
        p.add_argument("--device", default="cpu")
        p.add_argument("--threads", type=_threads, default=2)
        p.add_argument("--out", default=out)
        p.add_argument("--quiet", action="store_true")
        _add_split_flag(p)
        p.set_defaults(func=func)
        return p

    egen = model_eval(
        "generate",
        "the offline text-to-music suite: judge adherence with ceiling and chance, MCC, "
        "Frechet distance on MuLaN, diversity, memorisation audit",
        _cmd_eval_generate,
        "generate_eval",
    )
    egen.add_argument("--prompts", required=True, help="corpus manifest (real clips give the ceiling) or {text, tags} "
                      "rows")  # fmt: skip
    egen.add_argument("--num-prompts", type=_int_in(1, 100_000), default=200)
    egen.add_argument("--seconds", type=float, default=10.0)
    egen.add_argument("--candidates", type=_int_in(1, MAX_CANDIDATES), default=1,
                      help=f"samples per prompt, reranked by MuLaN (1 to {MAX_CANDIDATES})")  # fmt: skip
    egen.add_argument("--tokens", help="tokens folder of the training set: the memorisation audit")
    egen.add_argument("--memorisation-clips", type=_int_in(0, 100_000), default=0,
                      help="also the paper's audit: this many training clips' ids as prompts (0, 2.5 and 5 s), "
                      "their 5 s continuations against what the clips hold next (needs --tokens)")  # fmt: skip

    emel = model_eval("melody", "per-40 ms pitch-class agreement of melody-conditioned generations", _cmd_eval_melody,
                      "melody_eval")  # fmt: skip
    emel.add_argument("--prompts", required=True, help="manifest of held-out rows (their captions are the prompts)")
    emel.add_argument("--num-prompts", type=_int_in(1, 100_000), default=50)
    emel.add_argument("--seconds", type=float, default=10.0)

    ec = model_eval("continuation", "judge agreement of continuations with their prompts (key, tempo, ...)",
                    _cmd_eval_continuation, "continuation_eval")  # fmt: skip
    ec.add_argument("--data", required=True, help="manifest of held-out clips (e.g. corpus/val.jsonl)")
    ec.add_argument("--clips", type=_int_in(1, 100_000), default=100)
    ec.add_argument("--prompt-seconds", type=float, default=5.0)
    ec.add_argument("--seconds", type=float, default=5.0, help="length of each continuation")
    ec.add_argument("--text", action="store_true", help="also give each clip's caption (default: audio only)")
    ec.add_argument("--prompt-blend", type=_unit_float, default=None,
                    help="a latent stage's matching to the prompt's real frames (default: the pipeline's, "
                    "1)")  # fmt: skip
    ec.add_argument("--prompt-continuity", type=_nonneg_float, default=None,
                    help="unit selection through the prompt's frames: the cost of a jump (default: the pipeline's, "
                    "10; 0: frame by frame)")  # fmt: skip

    eg = ev.add_parser("guidance", help="sweep the classifier-free guidance scale: MCC, prompt R@1, judge accuracy")
    eg.add_argument("--model", required=True, help="model folder (see `musiclm generate`)")
    eg.add_argument("--prompts", required=True, help="corpus manifest of held-out rows (e.g. corpus/val.jsonl)")
    eg.add_argument("--num-prompts", type=_int_in(1, 100_000), default=16)
    eg.add_argument("--scales", type=_cfg_scale, nargs="+", default=[0.0, 1.0, 2.0, 3.0, 5.0])
    eg.add_argument("--seconds", type=float, default=4.0)
    eg.add_argument("--seed", type=int, default=0)
    eg.add_argument("--semantic-only", action="store_true", help="sample the semantic stage alone (fast)")
    eg.add_argument(
        "--prior-mix",
        type=float,
        default=None,
        help="the retrieval prior's share in the semantic LM's next-id distribution (default: the model's)",
    )
    eg.add_argument("--candidates", type=_int_in(1, MAX_CANDIDATES), default=1,
                    help=f"samples per prompt, reranked by MuLaN (1 to {MAX_CANDIDATES})")  # fmt: skip
    eg.add_argument("--acoustic-cfg-scale", type=float, default=None,
                    help="hold the acoustic stages at this guidance and sweep the semantic stage's only")  # fmt: skip
    eg.add_argument(
        "--frame-blend",
        type=float,
        default=None,
        help="share of matched real frames (latent stage + prior frame bank; default the prior's)",
    )
    eg.add_argument("--lm-precision", default="int8", choices=["float32", "bfloat16", "int8"])
    eg.add_argument("--threads", type=_threads, default=2)
    eg.add_argument("--out", default="guidance_eval")
    eg.add_argument("--quiet", action="store_true")
    _add_split_flag(eg)
    eg.set_defaults(func=_cmd_eval_guidance)
    jfit = ev.add_parser("judge-fit", help="calibrate the independent judge on rendered clips")
    jfit.add_argument("--num-clips", type=int, default=1200)
    jfit.add_argument("--seconds", type=float, default=8.0)
    jfit.add_argument("--seed", type=int, default=1234)
    jfit.add_argument("--workers", type=int, default=2)
    jfit.add_argument("--out", default="judge_weights.json")
    jfit.add_argument("--quiet", action="store_true")
    jfit.set_defaults(func=_cmd_eval_judge_fit)
    judge = ev.add_parser("judge", help="judge generated audio against the prompts' intended attributes")
    judge.add_argument("--prompts", required=True, help="JSONL: path (or id) + tags (intended attributes)")
    judge.add_argument("--audio-dir", help="folder of the audio (default: the prompts file's folder)")
    judge.add_argument("--out", default="judge_report", help="folder for judge_report.json and judge_accuracy.png")
    judge.add_argument("--weights", help="judge weights JSON (default: the shipped calibration)")
    judge.add_argument("--quiet", action="store_true")
    judge.set_defaults(func=_cmd_eval_judge)

    info = sub.add_parser("info", help="print a checkpoint's component and config")
    info.add_argument("checkpoint")
    info.set_defaults(func=_cmd_info)
    return parser


def _is_user_error(error: Exception) -> bool:
    """Errors the user fixes (a bad value, a missing file, a missing synthesizer): one line, no traceback.

    A ``ValueError`` is one only where this package raised it, on purpose, about an input: one raised
    inside a library (torch, numpy, ...) or by Python itself (an unpacking that went wrong) is a bug
    here, shown in full."""
    from .data.render import SynthUnavailableError  # here, not at the top: it imports numpy

    if isinstance(error, (FileNotFoundError, SynthUnavailableError)):
        return True
    if not isinstance(error, ValueError) or error.__traceback__ is None:
        return False
    import traceback

    last = traceback.extract_tb(error.__traceback__)[-1]
    ours = Path(last.filename).resolve().is_relative_to(Path(__file__).resolve().parent)
    return ours and (last.line or "").lstrip().startswith("raise ")


def _leave_worker(code: int) -> None:
    """End a finished torchrun / accelerate worker without the interpreter's teardown. Its work is done and
    written (the process group already destroyed, checkpoints written atomically); left to the teardown, a
    library thread can still abort the process after a finished run ("terminate called without an active
    exception", SIGABRT, seen on CI for 1 run in a few), which the launcher reports as a failed run."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``musiclm`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status (2: a user error,
    reported on one line of stderr, or in full with ``--debug``)."""
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args))
        if argv is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            _leave_worker(code)
        return code
    except BrokenPipeError:  # `musiclm info x | head`: the reader left; stdout goes nowhere from here on
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what Python's docs advise
        return 1
    except Exception as e:
        if not _is_user_error(e):
            raise
        if args.debug:
            import traceback

            traceback.print_exc()
        else:
            print(f"musiclm {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
