"""The web demo (``musiclm serve``): limits, handlers, the HTTP API through gradio_client, and a real
browser (Debian's chromium driven by Playwright) that types a prompt, clicks Generate and gets audio."""

from __future__ import annotations

import os
import shutil
import socket

import numpy as np
import pytest
import torch

gr = pytest.importorskip("gradio", reason="the [demo] extra (gradio) is not installed")

from musiclm_pytorch.pipeline import MusicLM  # noqa: E402
from musiclm_pytorch.serve import Demo, Limits, build_app, spectrogram_image  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def shipped():
    torch.set_num_threads(1)
    return MusicLM.from_pretrained()


@pytest.fixture(scope="module")
def server(shipped):
    """The demo on 127.0.0.1 at a free port, small limits."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(shipped, Limits(max_seconds=4.0, max_candidates=2))
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, ssr_mode=False, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda lim: lim.check_text("   "), "the prompt is empty"),
        (lambda lim: lim.check_text("x" * 301), "the prompt has 301 characters; the limit is 300"),
        (lambda lim: lim.check_seconds(31), "seconds must be > 0 and at most 30, got 31"),
        (lambda lim: lim.check_seconds(float("nan")), "got nan"),
        (lambda lim: lim.check_candidates(5), "candidates must be between 1 and 4, got 5"),
        (lambda lim: lim.parse_story("piano"), "story line 1 'piano': write 'text: seconds'"),
        (lambda lim: lim.parse_story("a: 20\nb: 20"), "the story's total seconds must be > 0 and at most 30, got 40"),
        (lambda lim: lim.parse_story("\n".join(["a: 1"] * 7)), "the story has 7 segments; the limit is 6"),
        (lambda lim: lim.parse_story(""), "the story is empty"),
    ],
)
def test_limits_name_what_is_over(call, message):
    with pytest.raises(ValueError, match=None) as exc:
        call(Limits())
    assert message in str(exc.value)


def test_limits_parse_a_story():
    assert Limits().parse_story("calm piano: 8\n\nfast rock: drums: 4.5") == [
        ("calm piano", 8.0),
        ("fast rock: drums", 4.5),
    ]
    with pytest.raises(ValueError, match="concurrency and queue_size must be >= 1"):
        Limits(concurrency=0)


def test_spectrogram_image_puts_a_tone_at_its_frequency():
    sr = 16000
    t = np.arange(sr) / sr
    img = spectrogram_image(np.sin(2 * np.pi * 2000 * t), sr, height=128)
    assert img.shape[0] == 128 and img.shape[2] == 3 and img.dtype == np.uint8
    brightest = int(img.sum(axis=(1, 2)).argmax())  # row 0 is the top (8 kHz); 2 kHz is 3/4 of the way down
    assert abs(brightest - 96) <= 2, brightest


def test_demo_handlers_make_candidates_with_scores_and_spectrograms(shipped):
    demo = Demo(shipped, Limits(max_seconds=4.0, max_candidates=2))
    made, summary = demo.generate("a calm piano piece in C major", 1.0, 2, 0, 1.0, 3.0)
    assert len(made) == 2 and sum(c["chosen"] for c in made) == 1
    best = max(made, key=lambda c: c["score"])
    assert best["chosen"] and f"({best['score']:.3f})" in summary
    sr, pcm = made[0]["audio"]
    assert sr == 16000 and pcm.dtype == np.int16 and len(pcm) == 16000 and np.abs(pcm).max() > 1000
    assert made[0]["spectrogram"].ndim == 3
    with pytest.raises(ValueError, match="one window is at most 10 s: use the Story tab"):
        Demo(shipped, Limits(max_seconds=20.0)).generate("piano", 12.0, 1, 0, 1.0, 3.0)
    (sr, story), _ = demo.story("calm piano: 1\nfast drums: 1", 0)
    assert len(story) == 2 * sr
    (sr, cont), _ = demo.continuation((sr, story), 1.0, "", 0)
    assert len(cont) == sr
    with pytest.raises(ValueError, match="upload or record an audio prompt first"):
        demo.continuation(None, 1.0, "", 0)


def test_http_api_through_gradio_client(server):
    from gradio_client import Client

    client = Client(server, verbose=False)
    result = client.predict("a fast rock song with drums", 1.0, 1, 0, 1.0, 3.0, api_name="/generate")
    summary, first_row, first_audio = result[0], result[1], result[2]
    assert "MuLaN picks candidate 1" in summary and first_audio is not None
    with pytest.raises(Exception, match="the prompt has 301 characters; the limit is 300"):  # our limit, by name
        client.predict("x" * 301, 1.0, 1, 0, 1.0, 3.0, api_name="/generate")
    with pytest.raises(Exception, match="Value 3 is greater than maximum value 2"):  # gradio's own slider bound
        client.predict("piano", 1.0, 3, 0, 1.0, 3.0, api_name="/generate")
    del first_row


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (apt install chromium)")
def test_a_real_browser_types_a_prompt_and_gets_audio(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="the [demo] extra (playwright) is not installed")
    shot = tmp_path / "demo.png"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 1100})
        page.goto(server)
        page.locator("#prompt textarea").fill("a slow sad piano piece in D minor")
        page.locator("#generate").click()
        page.wait_for_selector("#summary:has-text('MuLaN picks candidate')", timeout=120_000)
        # the player holds the generated audio: its element loads a file the server made, of the asked length
        player = page.locator("#candidate-1 audio[data-testid^='audio-player']")
        assert player.count() == 1 and "MuLaN" in (player.get_attribute("data-testid") or "")
        link = page.locator("#candidate-1 [data-testid='download-link']")
        wav = page.request.get(link.get_attribute("href") or "").body()  # what the player plays
        import io

        import soundfile as sf

        y, sr = sf.read(io.BytesIO(wav))
        assert sr == 16000 and abs(len(y) / sr - 4.0) < 0.01 and np.abs(y).max() > 0.01  # 4 s: the server's limit
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("MUSICLM_DEMO_SCREENSHOT")  # docs/demo.png is made this way
    if keep:
        shutil.copy(shot, keep)
