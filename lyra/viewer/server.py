"""``lyra view``: a viser web viewer for static scenes and dynamic (4D) scene folders.

The browser does the rendering (viser's bundled WebGL splat renderer, served from this process,
no network needed). The Python side loads the scene, turns each ``Gaussians`` into what viser
draws (centres, 3x3 covariances, RGB, opacity: viser has no SH, so SH scenes show their DC
colour), swaps whole Gaussian sets for the time slider, and turns viewer cameras into the
project's ``CameraPath`` JSON, which ``lyra render --camera-path`` plays back.

Camera facts this relies on (checked in tests/test_viewer.py against ``lyra render``): viser
cameras are OpenCV-axed like lyra's (x right, y down, looking along +z), given as the wxyz
rotation and position of camera-to-world, with a *vertical* field of view in radians. So a
viewer camera is a lyra ``c2w`` with no axis change, and its intrinsics for an image of
``width x height`` are square pixels with ``fy = height / (2 tan(fov / 2))`` and the principal
point at the centre.
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
from lyra.render.cameras import make_intrinsics
from lyra.render.formats import gaussians_rgb, load_dynamic_scene, load_scene
from lyra.render.framing import frame_scene
from lyra.render.gaussians import Gaussians
from lyra.render.projection import quat_scale_to_covar
from lyra.render.rotations import quat_to_rotmat, rotmat_to_quat

WORLD_UP = (0.0, -1.0, 0.0)  # lyra.render.cameras: world up is -y
DEFAULT_FOV_Y_DEG = 50.0


# ---- conversions -------------------------------------------------------------------------------------------


def viewer_camera_to_c2w(
    wxyz: Sequence[float] | np.ndarray,  # [4] rotation of camera-to-world
    position: Sequence[float] | np.ndarray,  # [3] camera centre in the world
) -> Tensor:  # [4, 4] float64 camera-to-world, OpenCV axes
    """A viser camera as lyra's ``c2w``: both are OpenCV-axed, so no axis flip is involved."""
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, :3] = quat_to_rotmat(torch.as_tensor(np.asarray(wxyz, dtype=np.float64)))
    c2w[:3, 3] = torch.as_tensor(np.asarray(position, dtype=np.float64))
    return c2w


def c2w_to_viewer_camera(c2w: Tensor) -> tuple[np.ndarray, np.ndarray]:  # [4, 4] -> wxyz [4], position [3]
    c2w = torch.as_tensor(c2w, dtype=torch.float64)
    return rotmat_to_quat(c2w[:3, :3]).numpy(), c2w[:3, 3].numpy().copy()


def viewer_intrinsics(fov_y: float, width: int, height: int) -> Tensor:  # [3, 3]
    """Pixel intrinsics of a viewer camera with vertical field of view ``fov_y`` (radians)."""
    if not 0.0 < fov_y < math.pi:
        raise ValueError(f"fov_y must lie in (0, pi) radians, got {fov_y}")
    f = 0.5 * height / math.tan(fov_y / 2)
    return make_intrinsics(f, f, width / 2.0, height / 2.0)


def intrinsics_fov_y(K: Tensor, height: int) -> float:  # K [3, 3] -> radians
    """The vertical field of view viser needs to show what ``K`` sees (square pixels, centred)."""
    return 2.0 * math.atan(0.5 * height / float(K[1, 1]))


def splat_arrays(gaussians: Gaussians) -> dict[str, np.ndarray]:
    """What viser's ``add_gaussian_splats`` / ``set_gaussians`` take, for one unbatched scene."""
    if gaussians.batch_shape:
        raise ValueError(f"the viewer shows one scene at a time, got batch_shape {tuple(gaussians.batch_shape)}")
    g = gaussians.detach().to("cpu", torch.float32)
    return {
        "centers": g.means.numpy(),
        "covariances": quat_scale_to_covar(g.quats, g.scales).numpy(),
        "rgbs": gaussians_rgb(g).numpy(),
        "opacities": g.opacities[:, None].numpy(),
    }


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


# ---- the viewer ---------------------------------------------------------------------------------------------


class SceneViewer:
    """A running viser server showing one scene, or a dynamic scene with a time slider.

    Args:
        frames: one unbatched ``Gaussians`` per time step (one for a static scene).
        times: scene time in [0, 1] of each frame (``None`` for a static scene).
        host: address to bind; the default serves this machine only (``0.0.0.0`` exposes the
            scene to the network, which also lets anyone there write camera-path files here).
        port: port to bind; viser moves to the next free one if it is taken (see ``url``).
        path_out: file the "Save path" button writes (editable in the GUI).
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
    ) -> None:
        frames = list(frames)
        if not frames:
            raise ValueError("SceneViewer needs at least one Gaussians")
        if times is not None and len(times) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(times)} times; pass one time per frame")
        if path_size is not None and (path_size[0] < 2 or path_size[1] < 2):
            raise ValueError(f"path_size must be (width, height) of at least 2 pixels, got {path_size}")
        self.times = None if times is None else [float(t) for t in times]
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
            self.path_text = gui.add_text("Path file", initial_value=path_out)
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

    def save_path(self, path: str | os.PathLike | None = None) -> Path:
        """Write the keyframes as camera-path JSON (atomically) to ``path`` or the GUI's path file."""
        out = Path(path if path is not None else self.path_text.value)
        self.camera_path().save(out)
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
) -> SceneViewer:
    """Serve a scene file (.ply/.splat/.spz) or a dynamic scene folder (docs/viewer.md).

    With ``block`` (the ``lyra view`` command) this serves until Ctrl-C; otherwise it returns the
    running ``SceneViewer`` (call ``stop()`` when done).
    """
    frames, times = load_viewable(path)
    viewer = SceneViewer(frames, times, host=host, port=port, path_out=path_out, path_size=path_size, verbose=verbose)
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
