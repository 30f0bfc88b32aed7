"""The web app (``pullbacks app``): through Gradio's Python client and in a real browser."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio", reason="the app extra is not installed (pip install -e '.[app]')")
from gradio_client import Client, handle_file  # noqa: E402

from pullbacks.apps import service, web  # noqa: E402
from pullbacks.models import imagenet_classes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = list(web.FAMILY_TEMPERATURES.values())  # the per-family temperature boxes, in order
NOT_GIVEN = [getattr(web.DEFAULTS, n) if web.FIELDS[n].kind == "flag" else "" for n in web.MORE]  # "more options"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    app = web.build_app("efficientnet_lite0", device="cpu")
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def ask(
    client, upload=None, example="builtin:chelsea", target="ostrich", steps=5, temperature=1.0, recipe="excitation"
):
    return client.predict(
        upload,
        example,
        "efficientnet_lite0",
        target,
        recipe,
        steps,
        20.0,
        100.0,
        temperature,
        *FAMILIES,
        *NOT_GIVEN,
        api_name="/explain",
    )


def test_every_option_is_on_the_page_and_reaches_the_options(monkeypatch):
    """A field added to AscentOptions shows up under "more options" by itself; what the boxes
    hold (text, a choice, a checkbox; empty: not given) reaches the ascent's options."""
    import torch.nn.functional as F

    import pullbacks
    from pullbacks.apps.cli import build_parser
    from pullbacks.core.options import FIELDS

    assert sorted(web.SHOWN + web.SERVER + web.APP_OMITS + web.MORE) == sorted(FIELDS)
    app_flags = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["app"]._actions}
    assert set(web.SERVER) <= app_flags  # pullbacks app --rules MODULE:NAME
    seen = {}

    def comparing(loaded, x, t, o, **kw):
        seen["o"] = o
        return iter(())

    monkeypatch.setattr(service, "comparing", comparing)
    elu = pullbacks.GateRule("elu", (F.elu,), lambda z, t: z.sigmoid(), 1.0)
    more = {
        "pool_temperature": "2",
        "gate": "normal_cdf",
        "pool": "detached",
        "variants": "sdpa=held",
        "strict": True,
        "replay": False,
        "clip": "none",
    }
    list(web.explaining(None, "builtin:chelsea", "efficientnet_lite0", "ostrich", more=more, rules=(elu,)))
    o = seen["o"]
    assert (o.pool_temperature, o.gate, o.pool, o.variants["sdpa"], o.strict, o.replay, o.clip, o.rules) == (
        2.0,
        "normal_cdf",
        "detached",
        "held",
        True,
        False,
        None,
        (elu,),
    )
    list(web.explaining(None, "builtin:chelsea", "efficientnet_lite0", "ostrich", more={"gate": "", "clip": ""}))
    assert seen["o"].gate == "sigmoid" and seen["o"].clip == (-1.0, 1.0)  # empty: the recipe's
    with pytest.raises(ValueError, match="clip must be LOW,HIGH"):
        list(web.explaining(None, "builtin:chelsea", "efficientnet_lite0", "ostrich", more={"clip": "3,1"}))


def test_target_by_name_index_or_label():
    classes = imagenet_classes()
    assert service.parse_target("ostrich", classes) == 9
    assert (
        service.parse_target("9", classes)
        == service.parse_target(9, classes)
        == service.parse_target("ostrich (9)", classes)
        == 9
    )
    assert web.class_choices(classes)[9] == "ostrich (9)"
    with pytest.raises(ValueError, match="did you mean 'ostrich'"):
        service.parse_target("ostrch", classes)


@pytest.mark.slow
def test_explain_returns_both_ascents_and_does_not_share_results(tmp_path):
    a = web.explain(
        None, "builtin:chelsea", "efficientnet_lite0", "ostrich", steps=5, temperature=1.0, out_dir=tmp_path / "a"
    )
    b = web.explain(
        None, "builtin:coffee", "efficientnet_lite0", "tabby", steps=5, temperature=1.0, out_dir=tmp_path / "b"
    )
    assert "ostrich" in a.top5_pullback and "tabby" in b.top5_pullback
    assert not np.array_equal(a.pullback_diff, a.vanilla_diff)  # the contrast the page shows
    assert not np.array_equal(a.source, b.source) and a.png != b.png
    saved = np.asarray(Image.open(a.png))
    assert saved.shape == (224, 5 * 224, 3)
    assert np.array_equal(saved[:, :224], a.source) and np.array_equal(saved[:, 224:448], a.pullback)


@pytest.mark.slow
def test_app_through_the_python_client(server, tmp_path):
    client = Client(server, verbose=False)
    out = ask(client)
    p_diff, p_src, v_diff, v_src, before, after_p, after_v, note, download = out
    images = [np.asarray(Image.open(f)) for f in (*p_diff, *v_diff)]
    assert all(im.size > 0 for im in images)
    assert not np.array_equal(images[1], images[3])  # pullback and vanilla differences differ
    assert "ostrich" in [c["label"] for c in after_p["confidences"]]  # top-5 after 5 steps holds the target
    assert before["label"] != "ostrich"
    assert note == "" and Path(download).name == "chelsea_to_ostrich.png"

    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.raises(Exception, match="cannot load image .*corrupt") as e:
        ask(client, upload=handle_file(str(corrupt)))
    assert "Traceback" not in str(e.value)
    for bad, message in (
        ({"target": "not a class at all"}, "unknown class name"),
        ({"steps": 0}, "steps must be"),
        ({"temperature": 0}, "temperature must be"),
    ):
        with pytest.raises(Exception, match=message):
            ask(client, **bad)
    out = ask(client, target="9")  # the app still serves, and takes an index
    assert "ostrich" in [c["label"] for c in out[5]["confidences"]]


@pytest.mark.slow
def test_gradios_own_validation_is_a_message_without_a_server_traceback(server, capfd):
    client = Client(server, verbose=False)
    with pytest.raises(Exception, match=r"steps \(at most 50\): a number, got 'abc'"):
        ask(client, steps="abc")
    with pytest.raises(Exception, match="example image: .*not in the list of choices"):
        ask(client, example="builtin:nothing")
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.slow
def test_steps_are_capped_and_a_cancelled_request_stops(server, monkeypatch):
    client = Client(server, verbose=False)
    with pytest.raises(Exception, match="steps must be at most 50 in this app.*--max-steps"):
        ask(client, steps=500)
    with pytest.raises(Exception, match="at most"):
        ask(client, steps=1e20)
    with pytest.raises(Exception, match="names two classes"):
        ask(client, target="espresso (9)")
    done = []  # steps the server computed, per request
    real = service.comparing

    def counting(*args, **kwargs):
        done.append(0)
        for item in real(*args, **kwargs):
            if isinstance(item, service.Progress):
                done[-1] += 1
            yield item

    monkeypatch.setattr(service, "comparing", counting)
    job = client.submit(
        None,
        "builtin:chelsea",
        "efficientnet_lite0",
        "ostrich",
        "excitation",
        50,
        20.0,
        100.0,
        1.0,
        *FAMILIES,
        *NOT_GIVEN,
        api_name="/explain",
    )
    import time

    deadline = time.monotonic() + 120  # a hang fails the test instead of holding it
    while (not done or done[0] < 2) and time.monotonic() < deadline:  # running
        time.sleep(0.05)
    assert job.cancel()
    ask(client, steps=1)  # served next: the queue takes one request at a time
    assert done[1] == 2 and done[0] < 100  # the cancelled one stopped before its 2 x 50 steps


@pytest.mark.slow
def test_ctrl_c_stops_the_server_mid_request(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    port = free_port()
    # the app as a user starts it from a shell: Ctrl-C not ignored, no library paths that the
    # test session's imports (OpenCV through Quantus) exported
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LD_LIBRARY_PATH", "QT_", "KMP_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pullbacks", "app", "--port", str(port), "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert "serving on" in proc.stdout.readline()
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        job = client.submit(
            None,
            "builtin:chelsea",
            "efficientnet_lite0",
            "ostrich",
            "excitation",
            50,
            20.0,
            100.0,
            1.0,
            *FAMILIES,
            *NOT_GIVEN,
            api_name="/explain",
        )
        while job.status().code.name not in ("ITERATING", "PROCESSING"):
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        # read both pipes while waiting (a child that fills an unread pipe would block, not hang);
        # a hang would fail here, not a slow machine
        _, err = proc.communicate(timeout=60)
        code = proc.returncode
    finally:
        proc.kill()
    assert code == 130 and "terminate called" not in err and "Traceback" not in err, err


def test_a_host_that_cannot_be_served_is_one_line(capsys):
    from pullbacks.apps.cli import main

    assert main(["app", "--host", "999.1.1.1", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "cannot serve on 999.1.1.1" in err and "--host" in err and "Traceback" not in err


def test_unavailable_weights_are_a_message(monkeypatch):
    from helpers import offline_weights

    from pullbacks import models

    offline_weights(monkeypatch, "resnet50")
    with pytest.raises(models.WeightsUnavailableError) as e:
        web.explain(None, "builtin:chelsea", "resnet50", "ostrich", steps=1)
    assert "choose efficientnet_lite0" in service.message(e.value, "app")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install chromium)")
def test_app_in_a_real_browser(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(server, wait_until="networkidle")
            box = page.locator("#target input")
            box.click()
            box.press_sequentially("ostri")  # part of the name: the list filters as one types
            page.get_by_role("option", name="ostrich (9)").click()
            steps = page.get_by_label("steps")
            steps.fill("5")
            page.locator("#explain").click()
            page.locator("#pullback-diff img").first.wait_for(timeout=180_000)
            page.locator("#vanilla-diff img").first.wait_for(timeout=60_000)
            page.wait_for_load_state("networkidle")
            shots = {}
            for name in ("pullback-diff", "vanilla-diff"):
                img = page.locator(f"#{name} img").first
                page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=img.element_handle())
                shots[name] = img.screenshot()
            assert all(len(s) > 1000 for s in shots.values())
            assert shots["pullback-diff"] != shots["vanilla-diff"]
            assert "ostrich" in page.locator("body").inner_text()
            path = tmp_path / "app.png"
            page.screenshot(path=str(path), full_page=True)
            assert path.stat().st_size > 10_000
            keep = os.environ.get("PULLBACKS_APP_SCREENSHOT")  # the README's picture: media/app.png
            if keep:
                shutil.copy(path, ROOT / keep)
        finally:
            browser.close()


def test_a_long_target_is_refused_in_linear_time():
    import time

    classes = imagenet_classes()
    start = time.perf_counter()
    for text in (" " * 80_000 + "x", "(" * 80_000 + ")", "a" * 80_000 + " (9)"):
        with pytest.raises(ValueError, match="at most 200 characters, got 8000"):
            service.parse_target(text, classes)
    assert time.perf_counter() - start < 1.0  # a generous bound: the quadratic regex took 20 s on one of these
    assert service.parse_target("  ostrich  ( 9)".replace("( ", "("), classes) == 9
    with pytest.raises(ValueError, match="unknown class"):
        service.parse_target("tabby (9", classes)


def test_app_messages_name_no_server_path_and_oversized_images_get_a_fix_the_user_can_make(tmp_path, monkeypatch):
    import tempfile

    from pullbacks.images import ImageLoadError

    upload = Path(tempfile.gettempdir()) / "gradio" / "0123abcd" / "holiday.png"
    text = web._without_server_paths(f"cannot load image {str(upload)!r}: not an image", str(upload))
    assert text == "cannot load image 'holiday.png': not an image" and tempfile.gettempdir() not in text
    big = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageLoadError) as e:
        service.resolve_image(str(big))
    assert "MAX_IMAGE_PIXELS" in str(e.value)  # Python: the setting a Python user can raise
    for interface in ("app", "cli"):
        shown = service.message(e.value, interface)
        assert "MAX_IMAGE_PIXELS" not in shown and "too large" in shown and "Downscale it first" in shown


@pytest.mark.slow
def test_the_app_contacts_nobody_and_leaves_no_files(monkeypatch, tmp_path):
    import tempfile

    attempts, client_side = [], False  # the test's own Gradio client asks the Hub for its user agent: not the app
    real_connect = socket.socket.connect

    def local_only(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "localhost", "::1") and not client_side:
            attempts.append(address)
            raise OSError("the network is blocked in this test")
        return real_connect(self, address)

    real_getaddrinfo = socket.getaddrinfo

    def resolve_local_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1", None) and not client_side:
            attempts.append(host)
            raise OSError("no name resolution in this test")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", local_only)
    monkeypatch.setattr(socket, "getaddrinfo", resolve_local_only)
    monkeypatch.setattr(Client, "_telemetry_thread", lambda self: None)  # the test's client's, not the app's
    before = set(Path(tempfile.gettempdir()).glob("pullbacks-*"))
    app = web.build_app("efficientnet_lite0", device="cpu")
    assert app.analytics_enabled is False
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=True)
    try:
        client_side = True
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        client_side = False
        out = ask(client, steps=1)
        assert Path(out[-1]).name == "chelsea_to_ostrich.png"
    finally:
        app.close()
    import time

    time.sleep(1.0)  # threads gradio may have started at launch
    assert attempts == []
    assert set(Path(tempfile.gettempdir()).glob("pullbacks-*")) == before  # the request's folder is gone
