"""Shared tiny settings and builders for the CPU test suite.

Anything two test files need lives here: the tiny decoder body, synthetic clips and batches,
the path of the repository's configs, and the headless Chromium that the viewer tests drive.
Fixtures are at the bottom.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from lyra.data.captures import (
    write_colmap,
    write_llff,
    write_realestate10k,
    write_transforms_json,
)
from lyra.data.captures.synthetic import film_procedural
from lyra.data.clip import ClipBatch
from lyra.losses.rendering import RenderingLoss
from lyra.models.blocks import BodyConfig
from lyra.models.decoders import DynamicGaussianDecoder, StaticGaussianDecoder
from lyra.models.student import StudentModule
from lyra.render.cameras import look_at, make_intrinsics
from lyra.render.renderer import GaussianRenderer
from lyra.tools import main as lyra_main

pytest_plugins = ["generate_fixtures"]  # the lyra generate tests' models and trained run

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

TINY_BODY = BodyConfig(width=32, num_layers=2, pattern="MA", d_state=8, headdim=16, attn_headdim=16, chunk_size=8)
TINY_DECODER = dict(latent_channels=8, body=TINY_BODY, far=20.0)


TINY_CLI = ["--model.init_args.decoder.init_args.body.width", "32", "--model.init_args.decoder.init_args.body.num_layers",
            "2", "--model.init_args.decoder.init_args.body.pattern", "MA"]


def cli_args(out: Path, config: str = "static.yaml", *extra: str) -> list[str]:
    """`lightning` arguments of a shipped config made tiny (stages/cpu_tiny.yaml, a 2-block body), in ``out``."""
    return ["--config", str(CONFIGS / config), "--config", str(CONFIGS / "stages/cpu_tiny.yaml"), *TINY_CLI,
            "--trainer.default_root_dir", str(out), "--trainer.max_time", "null", "--test_after_fit", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "0",
            "--data.init_args.num_workers", "0", *extra]


def tiny_decoder(dynamic: bool = False, seed: int = 0, **overrides) -> StaticGaussianDecoder:
    torch.manual_seed(seed)
    return (DynamicGaussianDecoder if dynamic else StaticGaussianDecoder)(**{**TINY_DECODER, **overrides})


def decoder_inputs(B=1, V=2, T=5, h=4, w=4, C=8, seed=0):
    """Random latents [B, V, C, T', h, w] with cameras around the origin looking at it."""
    g = torch.Generator().manual_seed(seed)
    Tl = 1 + (T - 1) // 4
    lat = torch.randn(B, V, C, Tl, h, w, generator=g)
    eye = torch.randn(B, V, T, 3, generator=g) * 0.3 + torch.tensor([0, 0, -3.0])
    c2w = look_at(eye, torch.zeros(B, V, T, 3))
    K = make_intrinsics(40.0, 40.0, 16.0, 16.0).expand(B, V, T, 3, 3)
    return lat, c2w, K


def synthetic_batch(seed=0, B=1, V=2, T=5, H=32, W=32, dynamic=False) -> ClipBatch:
    """A two-colour plane seen from V short trajectories, with metric depth and ground truth."""
    g = torch.Generator().manual_seed(seed)
    h, w = H // 8, W // 8
    eye = torch.randn(B, V, T, 3, generator=g) * 0.2 + torch.tensor([0, 0, -3.0])
    c2w = look_at(eye, torch.zeros(B, V, T, 3))
    K = make_intrinsics(30.0, 30.0, W / 2, H / 2).expand(B, V, T, 3, 3).clone()
    rgb = torch.ones(B, V, T, H, W, 3) * torch.tensor([0.9, 0.3, 0.2])
    rgb[..., : W // 2, :] = torch.tensor([0.1, 0.4, 0.8])
    time = torch.linspace(0, 1, T).expand(B, V, T).clone() if dynamic else torch.zeros(B, V, T)
    F = [0, 2, 4]
    return ClipBatch(latents=torch.randn(B, V, 8, 2, h, w, generator=g), src_c2w=c2w, src_K=K, src_time=time,
                     rgb=rgb[:, :, F], c2w=c2w[:, :, F], K=K[:, :, F], time=time[:, :, F],
                     depth=torch.full((B, V, 3, H, W), 3.0), gt_rgb=rgb[:, :, F], depth_is_metric=True,
                     input_rgb=rgb[:, 0], captions=["plane"] * B)


def tiny_student(dynamic: bool = False, lpips: bool = True, decoder=None, **kwargs) -> StudentModule:
    loss = RenderingLoss(lpips_weight=0.5 if lpips else 0.0, lpips_net="alex", depth_weight=0.05)
    kwargs.setdefault("lr", 3e-3)
    kwargs.setdefault("warmup_steps", 2)
    return StudentModule(decoder or tiny_decoder(dynamic), GaussianRenderer(backend="torch"), loss, **kwargs)


@pytest.fixture
def no_long_work(monkeypatch):
    """Fail the test if `lyra generate`'s teacher starts: every bad input must be refused before that."""
    from lyra.inference import pipeline

    def refuse(*a, **k):
        raise AssertionError("the teacher started before the inputs were checked")
    monkeypatch.setattr(pipeline, "make_clip", refuse)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty working directory (configs write outputs/ relative to it)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---- a headless browser for the viewer tests (test_viewer.py, test_hostile_viewer.py) ----------------

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
VIEW = 600  # browser viewport, square: see test_viewer.render_in_viewer
LOOPBACK_HEX = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp* write them) of sockets listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            addr, hex_port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.append(addr)
    return found


class Browser:
    """Headless Chromium on about:blank, driven over the DevTools protocol."""

    def __init__(self) -> None:
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="lyra-chromium-")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
             "--use-angle=swiftshader", f"--user-data-dir={self.profile}", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-port=0", "--window-size=800,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        active = Path(self.profile) / "DevToolsActivePort"
        deadline = time.time() + 60
        while not (active.is_file() and active.read_text().strip()):
            if self.proc.poll() is not None or time.time() > deadline:
                self.close()
                raise RuntimeError("chromium did not start its DevTools endpoint within 60 s")
            time.sleep(0.1)
        port = int(active.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        # Events (network requests, WebSocket frames) queue up between calls; a bounded queue would stop
        # the reader thread and with it the keepalive pongs, so the connection would close mid-test. The
        # DevTools endpoint is a child process on loopback: no queue limit, no keepalive.
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, max_queue=None, ping_interval=None,
                          open_timeout=30)
        self.next_id = 0
        self.events: list[dict] = []
        self.call("Network.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=VIEW, height=VIEW, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"DevTools {method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def evaluate(self, js: str):
        return self.call("Runtime.evaluate", expression=js, returnByValue=True)["result"].get("value")

    def click(self, label: str) -> None:
        found = self.evaluate(
            "(() => { const b = [...document.querySelectorAll('button')].find(b => b.textContent.trim() === "
            f"{json.dumps(label)}); if (!b) return false; b.click(); return true; }})()")
        assert found, f"no button {label!r} in the viewer page"

    def requested_urls(self) -> list[str]:
        self.call("Runtime.evaluate", expression="1")  # drain events queued so far
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"] + \
               [e["params"]["url"] for e in self.events if e.get("method") == "Network.webSocketCreated"]

    def open(self, viewer):
        """Open ``viewer`` (a lyra.viewer.SceneViewer); return its viser client once the page has connected."""
        before = set(viewer.server.get_clients())
        self.call("Page.navigate", url=viewer.url)
        deadline = time.time() + 60
        while time.time() < deadline:
            new = [c for cid, c in viewer.server.get_clients().items() if cid not in before]
            if new:
                try:
                    new[0].camera.wxyz  # set once the browser has reported its camera
                    return new[0]
                except AssertionError:
                    pass
            time.sleep(0.1)
        raise AssertionError(f"the browser did not connect to {viewer.url} within 60 s")

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    yield b
    b.close()


# ---- real-capture fixtures (test_captures.py, test_capture_source.py, test_capture_protocol.py) ------

CAPTURE_WRITERS = {
    "colmap_text": lambda folder, capture: write_colmap(folder, capture),
    "colmap_binary": lambda folder, capture: write_colmap(folder, capture, binary=True),
    "llff": write_llff,
    "realestate10k": lambda folder, capture: write_realestate10k(folder / "clip.txt", capture),
    "transforms_json": write_transforms_json,
}


@pytest.fixture(scope="session")
def filmed_capture(tmp_path_factory):
    """A procedural world filmed along a spiral: 30 frames of 64 x 96 with sparse points, exact depth
    and a marker blob at a known world point (lyra.data.captures.synthetic)."""
    return film_procedural(tmp_path_factory.mktemp("filmed") / "frames", num_frames=30, height=64, width=96,
                           marker=True)


@pytest.fixture(scope="session")
def capture_folders(filmed_capture, tmp_path_factory):
    """The filmed capture written in every format lyra reads: {format: folder}."""
    root = tmp_path_factory.mktemp("captures")
    for name, write in CAPTURE_WRITERS.items():
        write(root / name, filmed_capture.capture)
    return {name: root / name for name in CAPTURE_WRITERS}


def lyra_error(capsys, argv: list[str]) -> str:
    """Run ``lyra ARGV`` expecting a usage failure: exit 2 and exactly one ``lyra ...: error:`` line,
    no traceback; returns that line."""
    with pytest.raises(SystemExit) as exc:
        lyra_main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("lyra ")]  # torch may log a warning first
    assert len(lines) == 1 and ": error: " in lines[0] and "Traceback" not in err, err  # one line
    return lines[0]
