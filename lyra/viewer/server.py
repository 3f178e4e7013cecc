"""``lyra view``: a viser web viewer for static scenes and dynamic (4D) scene folders.

The browser does the rendering (viser's bundled WebGL splat renderer, served from this process,
no network needed). The Python side loads the scene, turns each ``Gaussians`` into what viser
draws (centres, 3x3 covariances, RGB, opacity: viser has no SH, so SH scenes show their DC
colour), swaps whole Gaussian sets for the time slider, and turns viewer cameras into the
project's ``CameraPath`` JSON, which ``lyra render --camera-path`` plays back.

Protection (docs/viewer.md): requests whose ``Host`` / ``Origin`` are not the viewer's own page are
refused with HTTP 403 (``lyra.viewer.guard``); the file name typed in the page is confined to one
folder (``save_dir``) and an existing file is replaced only when "Overwrite" is ticked; binding
anything but loopback needs ``allow_remote``.

Camera conversions (checked in tests/test_viewer.py against ``lyra render``): lyra.viewer.convert.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import viser
from torch import Tensor

from lyra.render.camera_path import CameraPath
from lyra.render.formats import load_dynamic_scene, load_scene
from lyra.render.framing import frame_scene
from lyra.render.gaussians import Gaussians
from lyra.utils.errors import LyraUsageError
from lyra.utils.paths import resolve_inside
from lyra.viewer.convert import splat_arrays, viewer_camera_to_c2w, viewer_intrinsics
from lyra.viewer.guard import is_loopback, protect_viser

WORLD_UP = (0.0, -1.0, 0.0)  # lyra.render.cameras: world up is -y
DEFAULT_FOV_Y_DEG = 50.0


def load_viewable(path: str | os.PathLike) -> tuple[list[Gaussians], list[float] | None]:
    """A scene file (one set, no times) or a dynamic folder (one set per time, and the times)."""
    path = Path(path)
    if path.is_dir():
        return load_dynamic_scene(path)
    if not path.exists():
        raise FileNotFoundError(
            f"scene {str(path)!r} does not exist; pass a .ply/.splat/.spz file or a dynamic scene folder "
            f"(make one with `lyra demo-scene --out scene.ply`)"
        )
    return [load_scene(path)], None


def check_address(host: str, port: int, allow_remote: bool) -> None:
    """Refuse a port outside 1..65535, and a non-loopback ``host`` unless ``allow_remote``."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise LyraUsageError(f"port {port!r} is not a TCP port; pass --port in 1..65535")
    if not is_loopback(str(host)) and not allow_remote:
        raise LyraUsageError(f"--host {host} serves the viewer beyond this machine: anyone who can reach it could "
                             "see the scene and save camera paths here. Pass --allow-remote to mean it, or keep the "
                             "default 127.0.0.1 and tunnel (ssh -L 8080:127.0.0.1:8080 host)")


# ---- the viewer ---------------------------------------------------------------------------------------------


class SceneViewer:
    """A running viser server showing one scene, or a dynamic scene with a time slider.

    Args:
        frames: one unbatched ``Gaussians`` per time step (one for a static scene).
        times: scene time in [0, 1] of each frame (``None`` for a static scene).
        host: address to bind; the default serves this machine only. Anything else (``0.0.0.0``
            exposes the scene to the network, and lets anyone there save camera paths into
            ``save_dir``) needs ``allow_remote``.
        port: port to bind, 1..65535; viser moves to the next free one if it is taken (see ``url``).
        path_out: file name, inside ``save_dir``, the "Save path" button writes (editable in the GUI).
        save_dir: the only folder "Save path" writes to (default: the working directory).
        allow_remote: allow a ``host`` other than loopback (a warning is printed).
        path_size: ``(width, height)`` of the saved camera path; ``None`` uses the browser's view
            size at the first keyframe (rounded down to even, as ``lyra render`` needs).
        fps: playback speed of the play button, in frames per second.
    """

    def __init__(
        self,
        frames: Sequence[Gaussians],
        times: Sequence[float] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        path_out: str | os.PathLike = "camera_path.json",
        path_size: tuple[int, int] | None = None,
        fps: float = 8.0,
        verbose: bool = True,
        save_dir: str | os.PathLike | None = None,
        allow_remote: bool = False,
    ) -> None:
        check_address(host, port, allow_remote)
        frames = list(frames)
        if not frames:
            raise ValueError("SceneViewer needs at least one Gaussians")
        if times is not None and len(times) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(times)} times; pass one time per frame")
        if path_size is not None and (path_size[0] < 2 or path_size[1] < 2):
            raise ValueError(f"path_size must be (width, height) of at least 2 pixels, got {path_size}")
        self.times = None if times is None else [float(t) for t in times]
        self.save_dir = Path(save_dir if save_dir is not None else ".").resolve()
        if not self.save_dir.is_dir():
            raise LyraUsageError(f"save_dir {self.save_dir} is not a folder; create it or pass another --save-dir")
        resolve_inside(self.save_dir, str(path_out), "--path-out")  # refuse a bad default before serving
        self.path_size = path_size
        self._arrays = [splat_arrays(g) for g in frames]
        self._keyframes: list[tuple[Tensor, float, float | None]] = []  # (c2w [4, 4], fov_y, time)
        self._size: tuple[int, int] | None = path_size
        self._lock = threading.Lock()
        self._frustums: list = []
        self._stop = threading.Event()
        self._playing = False
        self.frame = 0

        self._player: threading.Thread | None = None
        protect_viser([host])  # before the server starts: foreign Host / Origin get HTTP 403
        self.server = viser.ViserServer(host=host, port=port, verbose=verbose)
        try:  # the server threads run from here on: a Ctrl-C (or error) during setup must stop them
            self.server.scene.set_up_direction(WORLD_UP)
            self._splats = self.server.scene.add_gaussian_splats("/scene", **self._arrays[0])
            self._place_initial_camera(frames[0])
            self._radius = self._scene_radius(frames[0])
            self._build_gui(str(path_out), fps)
        except BaseException:
            self.server.stop()
            raise
        if len(self._arrays) > 1:
            self._player = threading.Thread(target=self._play_loop, name="lyra-view-player", daemon=True)
            self._player.start()

    # ---- setup ---------------------------------------------------------------------------------------------

    @staticmethod
    def _scene_radius(g: Gaussians) -> float:
        if g.num_gaussians == 0:
            return 1.0
        _, distance = frame_scene(g.means.float(), 60.0, 1, 1)
        return distance

    def _place_initial_camera(self, g: Gaussians) -> None:
        """Start where ``lyra render`` starts: the scene's median from 20 degrees above, 95 % in view."""
        if g.num_gaussians == 0:
            return
        fov_y = math.radians(DEFAULT_FOV_Y_DEG)
        center, distance = frame_scene(g.means.float(), DEFAULT_FOV_Y_DEG, 1, 1)
        el = math.radians(20.0)
        eye = center.double() + distance * torch.tensor([0.0, -math.sin(el), -math.cos(el)], dtype=torch.float64)
        cam = self.server.initial_camera
        cam.fov = fov_y
        cam.position = tuple(eye.tolist())
        cam.look_at = tuple(center.double().tolist())
        cam.up = WORLD_UP

    def _build_gui(self, path_out: str, fps: float) -> None:
        gui = self.server.gui
        self.time_slider = self.play_button = self.fps_input = self.time_readout = None
        if len(self._arrays) > 1:
            with gui.add_folder("Time"):
                self.time_slider = gui.add_slider("Frame", min=0, max=len(self._arrays) - 1, step=1, initial_value=0)
                self.time_readout = gui.add_number("Scene time", initial_value=self._time(0) or 0.0, disabled=True)
                self.play_button = gui.add_button("Play")
                self.fps_input = gui.add_number("Frames per second", initial_value=float(fps), min=0.5, max=60.0, step=0.5)
            self.time_slider.on_update(lambda _: self.show_frame(int(self.time_slider.value)))
            self.play_button.on_click(lambda _: self.set_playing(not self._playing))
        with gui.add_folder("Camera path"):
            self.keyframe_button = gui.add_button("Add keyframe")
            self.clear_button = gui.add_button("Clear keyframes")
            self.path_text = gui.add_text("Path file", initial_value=path_out,
                                          hint=f"a file name inside {self.save_dir}")
            self.overwrite_box = gui.add_checkbox("Overwrite", initial_value=False,
                                                  hint="replace the file if it exists")
            self.save_button = gui.add_button("Save path")
            self.status = gui.add_markdown("No keyframes yet.")
        self.keyframe_button.on_click(lambda event: self._on_keyframe(event.client))
        self.clear_button.on_click(lambda _: self.clear_keyframes())
        self.save_button.on_click(lambda _: self._on_save())

    # ---- time ----------------------------------------------------------------------------------------------

    def _time(self, i: int) -> float | None:
        return None if self.times is None else self.times[i]

    def show_frame(self, i: int) -> None:
        """Swap in the Gaussians of time step ``i`` (what the slider and the play button do)."""
        if not 0 <= i < len(self._arrays):
            raise IndexError(f"frame {i} is outside 0..{len(self._arrays) - 1}")
        if self.time_slider is not None and int(self.time_slider.value) != i:
            self.time_slider.value = i  # moves the browser's slider; its update callback lands below
            return
        with self._lock:
            self.frame = i
            self._splats.set_gaussians(**self._arrays[i])
            if self.time_readout is not None:
                self.time_readout.value = float(self._time(i) or 0.0)

    def set_playing(self, playing: bool) -> None:
        self._playing = bool(playing) and len(self._arrays) > 1
        if self.play_button is not None:
            self.play_button.label = "Pause" if self._playing else "Play"

    def _play_loop(self) -> None:
        while not self._stop.is_set():
            fps = float(self.fps_input.value) if self.fps_input is not None else 8.0
            if self._stop.wait(1.0 / max(fps, 0.5)):
                return
            if self._playing:
                self.show_frame((self.frame + 1) % len(self._arrays))

    # ---- keyframes -----------------------------------------------------------------------------------------

    @property
    def keyframes(self) -> int:
        return len(self._keyframes)

    def add_keyframe(
        self,
        wxyz: Sequence[float] | np.ndarray,  # [4] viewer camera rotation (camera-to-world)
        position: Sequence[float] | np.ndarray,  # [3]
        fov_y: float,
        view_size: tuple[int, int] | None = None,
    ) -> None:
        """Append a camera (at the current scene time for dynamic scenes) to the path being recorded.

        ``view_size`` is the browser's (width, height); it fixes the path's image size when no
        ``path_size`` was given, at the first keyframe (every frame of a path shares one size).
        """
        if self._size is None:
            if view_size is None:
                raise ValueError("the first keyframe needs the browser's view size, or pass path_size")
            self._size = (max(2, int(view_size[0]) // 2 * 2), max(2, int(view_size[1]) // 2 * 2))
        c2w = viewer_camera_to_c2w(wxyz, position)
        self._keyframes.append((c2w, float(fov_y), self._time(self.frame)))
        w, h = self._size
        self._frustums.append(self.server.scene.add_camera_frustum(
            f"/keyframes/{len(self._keyframes) - 1:03d}", fov=float(fov_y), aspect=w / h,
            scale=0.05 * self._radius, wxyz=np.asarray(wxyz, dtype=np.float64), position=np.asarray(position, dtype=np.float64),
            color=(230, 120, 20)))
        self._set_status(f"{len(self._keyframes)} keyframe(s), {w}x{h}; 'Save path' writes them.")

    def _on_keyframe(self, client: viser.ClientHandle | None) -> None:
        if client is None:  # a click set from Python rather than a browser: use the newest client
            clients = list(self.server.get_clients().values())
            if not clients:
                self._set_status("No browser is connected; nothing to take a camera from.")
                return
            client = clients[-1]
        cam = client.camera
        self.add_keyframe(cam.wxyz, cam.position, cam.fov, (cam.image_width, cam.image_height))

    def clear_keyframes(self) -> None:
        for frustum in self._frustums:
            frustum.remove()
        self._frustums.clear()
        self._keyframes.clear()
        self._size = self.path_size
        self._set_status("No keyframes yet.")

    def camera_path(self) -> CameraPath:
        """The recorded keyframes as the project's ``CameraPath`` (times for dynamic scenes)."""
        if not self._keyframes:
            raise ValueError("no keyframes yet: move the view and press 'Add keyframe' first")
        assert self._size is not None
        w, h = self._size
        c2w = torch.stack([k[0] for k in self._keyframes]).float()
        K = torch.stack([viewer_intrinsics(k[1], w, h) for k in self._keyframes])
        time = None if self.times is None else torch.tensor([k[2] for k in self._keyframes])
        return CameraPath(c2w, K, w, h, time)

    def save_path(self, name: str | None = None, overwrite: bool | None = None) -> Path:
        """Write the keyframes as camera-path JSON (atomically) to ``save_dir / name``.

        Args:
            name: file name inside ``save_dir`` (default: the GUI's "Path file"); absolute names, ``..``
                and symlinks leading out of ``save_dir`` are refused.
            overwrite: replace an existing file (default: the GUI's "Overwrite" box).
        """
        name = str(name if name is not None else self.path_text.value)
        out = resolve_inside(self.save_dir, name, "Path file")
        if overwrite is None:
            overwrite = bool(self.overwrite_box.value)
        if out.exists() and not overwrite:
            raise LyraUsageError(f"{out} exists; tick 'Overwrite' to replace it, or type another file name")
        if not out.suffix.lower() == ".json":
            raise LyraUsageError(f"{name!r}: a camera path is a .json file; type a name ending in .json")
        path = self.camera_path()
        path.save(out)
        self._set_status(f"Wrote {len(self._keyframes)} keyframe(s) to `{out}`.")
        return out

    def _on_save(self) -> None:
        try:
            self.save_path()
        except (ValueError, OSError) as err:
            self._set_status(f"Not saved: {err}")

    def _set_status(self, text: str) -> None:
        self.status.content = text

    # ---- serving -------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.server.get_host()}:{self.server.get_port()}"

    def serve_forever(self) -> None:
        """Block until Ctrl-C, then stop."""
        try:
            while not self._stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._player is not None:
            self._player.join(timeout=5)
        self.server.stop()


def view_scene(
    path: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    path_out: str | os.PathLike = "camera_path.json",
    path_size: tuple[int, int] | None = None,
    block: bool = True,
    verbose: bool = True,
    save_dir: str | os.PathLike | None = None,
    allow_remote: bool = False,
) -> SceneViewer:
    """Serve a scene file (.ply/.splat/.spz) or a dynamic scene folder (docs/viewer.md).

    With ``block`` (the ``lyra view`` command) this serves until Ctrl-C; otherwise it returns the
    running ``SceneViewer`` (call ``stop()`` when done). "Save path" writes into ``save_dir``,
    by default the scene's folder (a dynamic scene folder itself, or a scene file's folder).
    """
    check_address(host, port, allow_remote)  # before the scene is read: a bad port fails fast
    frames, times = load_viewable(path)
    if save_dir is None:
        save_dir = path if Path(path).is_dir() else Path(path).parent
    if not is_loopback(host):
        print(f"lyra view: warning: serving on {host}, not loopback: anyone who can reach this machine on port "
              f"{port} can see the scene and save camera paths into {Path(save_dir).resolve()}", flush=True)
    viewer = SceneViewer(frames, times, host=host, port=port, path_out=path_out, path_size=path_size, verbose=verbose,
                         save_dir=save_dir, allow_remote=allow_remote)
    try:
        if verbose:
            kind = f"{len(frames)} time steps" if times is not None else f"{frames[0].num_gaussians} Gaussians"
            print(f"lyra view: {path} ({kind}) at {viewer.url} ; Ctrl-C to stop", flush=True)
        if block:
            viewer.serve_forever()
    except BaseException:  # e.g. Ctrl-C before serve_forever: never leave the server threads running
        viewer.stop()
        raise  # lyra view treats a KeyboardInterrupt as a normal stop
    return viewer
