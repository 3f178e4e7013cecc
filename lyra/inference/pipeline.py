"""``lyra generate``: one scene from an image, a prompt, a video with cameras, or a procedural seed.

Stages (each timed, with its peak memory, in meta.json):

1. checks: every input file, weights folder, size and option is read and checked first; errors
   name the file and the fix, and nothing is written;
2. ``teacher``: the teacher makes the clip (latents + its own RGB decoding) along the cameras;
3. ``decode``: ``StudentModule.predict_step`` turns latents + cameras into Gaussians (dynamic
   decoders: one set per requested time, ``decode_chunk`` times per pass);
4. ``export``: ``scene.ply`` (or the dynamic ``scene/`` folder); 5. ``render``: videos, sheets, paths.

The output is written to a hidden sibling folder (``.NAME.partial-PID``) and renamed to NAME at the
very end, so a failed or interrupted run never leaves a folder that looks complete. The output never
overlaps an input (``--out`` equal to, inside or around the decoder, an image, a camera file ... is
refused before anything runs), and ``--overwrite`` replaces only a folder lyra wrote (it holds the
``OUTPUT_MARKER`` file).

Memory: the teacher is freed before the decoder runs; with ``offload`` the decoder waits on the CPU
until then and goes back after decoding, so teacher and decoder are never on the GPU together.
``decode_chunk`` (target times per decoder pass), ``teacher_chunk`` (trajectories per codec and
transformer call) and ``render_chunk`` (cameras per rasterizer call) bound the peaks further.
"""

from __future__ import annotations

import gc
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lyra.data.codecs import DCTCodec, DiffusersVideoVAE
from lyra.data.codecs.frames import check_clip_size
from lyra.data.generators.depth import check_model_dir
from lyra.data.generators.gen3c import Gen3CGenerator
from lyra.inference.checks import check_numbers, check_out, inputs_of, num_views
from lyra.inference.clips import check_times, clip_batch, default_times, make_clip
from lyra.inference.images import read_image
from lyra.inference.outputs import staged_folder, write_meta, write_scene, write_views
from lyra.inference.progress import StageLog, set_progress
from lyra.inference.teachers import ImageTeacher, ProceduralTeacher, TextToImage
from lyra.inference.trained_on import training_facts
from lyra.inference.video import DEFAULT_SCENE_DEPTH, VideoTeacher
from lyra.models.checkpoints import load_decoder
from lyra.models.student import StudentModule
from lyra.models.teacher import TeacherModule
from lyra.render.gaussians import Gaussians
from lyra.render.renderer import BACKGROUNDS
from lyra.utils.errors import LyraUsageError
from lyra.utils.limits import check_render_budget
from lyra.utils.paths import check_outputs_apart

FORMAT = "lyra.generate/1"


@dataclass
class GenerateOptions:
    """Everything ``lyra generate`` takes (docs/generate.md); exactly one of procedural / image /
    prompt / video is the source."""

    decoder: str
    out: str | None = None  # default outputs/generate/<source>
    procedural: int | None = None
    image: str | None = None
    prompt: str | None = None
    video: str | None = None
    cameras: str | None = None  # the video's camera file (.npz)
    # teacher weights (image / prompt sources): local folders, nothing is downloaded
    teacher: str | None = None  # WanTransformer3DModel folder or a pipeline folder with transformer/
    vae: str | None = None  # VAE folder, "dct", or None: <teacher>/vae when it exists
    depth_model: str | None = None
    t2i: str | None = None  # diffusers text-to-image pipeline folder (prompt source)
    steps: int = 30
    guidance: float = 5.0
    t2i_steps: int = 30
    t2i_guidance: float = 7.5
    # cameras
    trajectories: list[str] | None = None
    camera_paths: list[str] = field(default_factory=list)
    anchor: bool = False
    path_scale: float = 1.0
    magnitude: str | None = None
    fov: float | None = None  # horizontal degrees; default: the decoder's training teacher (60)
    frames: int | None = None
    size: tuple[int, int] | None = None  # (width, height)
    # dynamic scenes
    times: list[float] | None = None
    num_times: int | None = None
    scene_depth: float | None = DEFAULT_SCENE_DEPTH
    world_scale: float | None = None
    # outputs
    orbit_frames: int = 48
    orbit_degrees: float = 60.0
    fps: float = 24.0
    background: str = "white"
    overwrite: bool = False
    # device and memory
    device: str | None = None
    dtype: str = "float32"
    offload: bool = False
    decode_chunk: int | None = None
    render_chunk: int = 8
    teacher_chunk: int | None = None
    seed: int = 0
    progress: bool = True
    force: bool = False  # accept camera-file intrinsics / depth that look wrong for the video


def _source(o: GenerateOptions) -> str:
    given = [k for k in ("procedural", "image", "prompt", "video") if getattr(o, k) is not None]
    if len(given) != 1:
        raise ValueError(f"pass exactly one source: --procedural SEED, --image FILE, --prompt TEXT or --video FILE "
                         f"(with --cameras FILE); got {', '.join('--' + g for g in given) or 'none'}")
    return given[0]


def default_out(o: GenerateOptions) -> Path:
    kind = _source(o)
    name = {"procedural": lambda: f"procedural_{o.procedural}", "image": lambda: Path(o.image).stem,
            "video": lambda: Path(o.video).stem, "prompt": lambda: "prompt"}[kind]()
    return Path("outputs") / "generate" / name


def _pipeline_part(folder: Path, name: str) -> Path:
    """``folder`` or, for a diffusers pipeline folder, ``folder/name``."""
    return folder / name if not (folder / "config.json").is_file() and (folder / name / "config.json").is_file() else folder


def _codec_facts(decoder) -> dict[str, Any]:
    cfg = decoder.config
    return {k: cfg[k] for k in ("latent_channels", "time_factor", "space_factor", "causal_first_frame")}


def _check_codec_matches(spec: dict, want: dict, what: str) -> None:
    diff = {k: (spec.get(k), v) for k, v in want.items() if spec.get(k) != v}
    if diff:
        raise ValueError(f"{what} does not fit the decoder: (codec, decoder) {diff}; the decoder reads latents of the "
                         "codec it was trained with, so pass that codec (--vae) or a decoder trained on this one")


def _check_transformer(folder: Path, channels: int) -> None:
    folder = _pipeline_part(folder, "transformer")
    check_model_dir(folder, "video transformer")
    cfg = json.loads((folder / "config.json").read_text())
    cin, cout = cfg.get("in_channels"), cfg.get("out_channels")
    if cin != 2 * channels + 1 or cout != channels:
        raise ValueError(f"{folder}: in_channels={cin}, out_channels={cout}, but the codec makes {channels}-channel "
                         f"latents: the teacher needs in_channels = 2*{channels}+1 = {2 * channels + 1} and out_channels = "
                         f"{channels} (docs/gen3c.md); pass the transformer trained with this codec")


def generate(o: GenerateOptions) -> Path:
    """Run one generation (module doc); returns the finished output folder."""
    set_progress(o.progress)
    kind = _source(o)
    out = Path(o.out) if o.out else default_out(o)
    check_outputs_apart(out, "--out", inputs_of(o))  # before anything is read, written or deleted
    check_out(out, o.overwrite)
    check_numbers(o)
    try:
        device = torch.device(o.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise LyraUsageError(f"--device {o.device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LyraUsageError(f"--device {o.device} asks for CUDA, which this machine does not have; use --device cpu")
    if o.background not in BACKGROUNDS:
        raise ValueError(f"--background must be one of {sorted(BACKGROUNDS)}, got {o.background!r}")
    torch.manual_seed(o.seed)

    # ---- 1. checks: nothing long runs before every input is known to be usable ----
    decoder, info = load_decoder(o.decoder)
    dynamic = decoder.is_dynamic
    train = training_facts(info, dynamic)
    T = o.frames if o.frames is not None else train["num_frames"]
    W, H = o.size if o.size is not None else (train["width"], train["height"])
    fov = o.fov if o.fov is not None else train["fov_deg"]
    facts = _codec_facts(decoder)
    try:
        check_clip_size(T, H, W, facts["time_factor"], facts["space_factor"], facts["causal_first_frame"],
                        decoder.config.patch_size)
    except ValueError as err:
        raise ValueError(f"clip size {T} frames x {W}x{H} does not fit the decoder {info.path}: {err} "
                         "(pass --frames / --size that fit)") from None
    if o.times is not None and o.num_times is not None:
        raise ValueError("pass --times or --num-times, not both")
    if not dynamic and (o.times is not None or o.num_times is not None):
        raise ValueError(f"{info.path} holds a static decoder: it outputs one scene, not one per time; drop "
                         "--times / --num-times or pass a DynamicGaussianDecoder")
    times = None
    if o.times is not None:
        times = check_times(o.times)
    elif o.num_times is not None:
        if o.num_times < 1:
            raise ValueError(f"--num-times must be >= 1, got {o.num_times}")
        times = torch.linspace(0, 1, o.num_times).tolist() if o.num_times > 1 else [0.0]
    trajectories = o.trajectories
    if trajectories is None and not o.camera_paths and kind != "video":
        trajectories = _trained_trajectories(train)  # the views the decoder learnt to read together
    cam_args = dict(trajectories=trajectories, camera_paths=list(o.camera_paths), anchor=o.anchor,
                    path_scale=o.path_scale, magnitude=o.magnitude)
    build_teacher, codec_desc = _teacher_builder(o, kind, decoder, info, train, T, H, W, fov, dynamic, device, cam_args)
    views = 1 if kind == "video" else num_views(trajectories, o.camera_paths)
    check_render_budget(views * T, W, H, "lyra generate (the input-view renders)")
    check_render_budget(o.orbit_frames, W, H, "lyra generate (orbit.mp4)")

    # ---- 2-5. the work, in a hidden folder renamed at the end ----

    log = StageLog(device)
    with staged_folder(out) as tmp:
        if not o.offload:
            decoder.to(device)
        with log.stage("teacher"):
            teacher, image_of = build_teacher()

            clip = make_clip(teacher, 0, o.teacher_chunk)
            input_image = image_of()
            teacher_desc = teacher.describe()
            view_names = list(clip.meta.get("trajectories", []))
            world_scale = float(clip.meta.get("world_scale", 1.0))
            del teacher, image_of
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        with log.stage("decode"):

            if dynamic and times is None:
                times = default_times(clip)
            module = StudentModule(decoder).eval().to(device)
            batch = clip_batch(clip, times if dynamic else None, o.decode_chunk).to(device)
            pred = module.predict_step(batch, 0)
            g = pred["gaussians"][0]  # [N] or [M, N] on the CPU
            del batch
            if o.offload or device.type == "cuda":
                module.to("cpu")
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if world_scale != 1.0:  # the video was scaled to the decoder's size: back to the camera file's units
                g = _rescale(g, 1.0 / world_scale)
                clip.c2w[..., :3, 3] /= world_scale
                if clip.depth is not None:
                    clip.depth /= world_scale
        with log.stage("export"):
            scene_name = write_scene(tmp, g, times if dynamic else None)
        with log.stage("render"):
            views = write_views(tmp, clip, g, times if dynamic else None, view_names, o.orbit_frames, o.orbit_degrees,
                                o.fps, BACKGROUNDS[o.background], o.render_chunk, device, input_image)
        summary = log.summary()
        meta = {
            "format": FORMAT,
            "source": {"kind": kind, "procedural_seed": o.procedural, "image": o.image, "prompt": o.prompt,
                       "video": o.video, "cameras": o.cameras, "camera_paths": list(o.camera_paths)},
            "weights": {"decoder": {**asdict(info), "sizes_from": train["sizes_from"]}, "decoder_class": type(decoder).__name__, "teacher": o.teacher,
                        "vae": o.vae, "depth_model": o.depth_model, "text_to_image": o.t2i, "codec": codec_desc},
            "teacher": teacher_desc,
            "settings": {k: v for k, v in asdict(o).items() if k not in ("progress",)},
            "seed": o.seed,
            "clip": {"num_views": clip.num_views, "num_frames": clip.num_frames, "height": H, "width": W,
                     "fov_deg": fov, "trajectories": views["view_names"], "caption": clip.caption,
                     "world_scale": world_scale},
            "scene": scene_name,
            "times": times if dynamic else None,
            "num_gaussians": int(g.num_gaussians),
            "fidelity_psnr": views["fidelity_psnr"],
            "device": str(device),
            "timings": summary["stages"],
            "total_seconds": summary["total_seconds"],
        }
        write_meta(tmp, meta, summary)
    print(f"wrote {out}/ ({scene_name}: {g.num_gaussians} Gaussians" + (f" x {len(times)} times" if dynamic else "")
          + "; orbit.mp4, inputs.mp4, inputs.png, cameras/, meta.json)")
    print(log.report())
    view = out / scene_name
    print(f"view it: lyra view {view}    render it: lyra render --ply {view} --out {out / 'path.mp4'}")
    return out


def _trained_trajectories(train: dict) -> list[str] | None:
    """The training teacher's trajectories, when its record names them."""
    return list(train["trajectories"]) if train.get("trajectories") else None


def _rescale(g, s: float):
    return Gaussians(g.means * s, g.quats, g.scales * s, g.opacities, g.colors, check_values=False)


def _teacher_builder(o: GenerateOptions, kind: str, decoder, info, train: dict, T: int, H: int, W: int, fov: float,
                     dynamic: bool, device: torch.device, cam_args: dict):
    """Check the source's inputs now; return (a function that builds the TeacherModule, codec description)."""

    facts = _codec_facts(decoder)
    if kind == "procedural":
        if o.procedural < 0:
            raise ValueError(f"--procedural takes a non-negative scene seed, got {o.procedural}")
        trained = train.get("codec")
        if trained and not trained.endswith("DCTCodec"):
            raise ValueError(f"{info.path} was trained on {trained} latents; the procedural teacher encodes with the "
                             "DCT codec, so its latents would mean nothing to this decoder. Use --image / --video "
                             "with that codec (--vae)")
        gen = ProceduralTeacher(seed=o.procedural, dynamic=dynamic, fov_deg=fov,
                                num_objects=tuple(train.get("num_objects", (4, 16))),
                                shadows=bool(train.get("shadows", True)), **cam_args)
        codec = DCTCodec(**facts)
        return (lambda: (TeacherModule(gen, codec, T, H, W).to(device), lambda: None)), {"class": "DCTCodec", **facts}

    if kind == "video":
        if o.cameras is None:
            raise ValueError("--video needs --cameras FILE.npz (c2w [T, 4, 4], K [T, 3, 3][, depth, time]; "
                             "docs/generate.md)")
        if cam_args["trajectories"] or cam_args["camera_paths"] or cam_args["magnitude"] is not None:
            raise ValueError("--video brings its own cameras (--cameras); --trajectories, --camera-path and "
                             "--magnitude do not apply")
        codec, codec_desc = _codec(o, facts, device)
        gen = VideoTeacher(o.video, o.cameras, scene_depth=o.scene_depth, world_scale=o.world_scale, force=o.force)

        def build():
            return TeacherModule(gen, codec(), T, H, W).to(device), lambda: None

        return build, codec_desc

    # image / prompt: the GEN3C-style teacher

    if o.teacher is None:
        raise ValueError(f"--{kind} needs the video model: --teacher DIR (a WanTransformer3DModel folder, or a "
                         "pipeline folder with transformer/ and vae/; docs/gen3c.md)")
    if o.depth_model is None:
        raise ValueError(f"--{kind} needs a depth model: --depth-model DIR (a transformers depth-estimation folder, "
                         "e.g. Depth Anything saved with save_pretrained)")
    check_model_dir(o.depth_model, "depth model")
    image_data = None
    t2i = None
    if kind == "image":
        image_data = read_image(o.image, H, W)
    else:
        if o.t2i is None:
            raise ValueError("--prompt needs a text-to-image pipeline: --t2i DIR (a diffusers pipeline folder with "
                             "model_index.json, e.g. StableDiffusionPipeline.save_pretrained)")
        if not o.prompt.strip():
            raise ValueError("--prompt is empty; describe the scene to generate")
        t2i = TextToImage(o.t2i, o.t2i_steps, o.t2i_guidance, device=device, dtype=_dtype(o.dtype))
    codec, codec_desc = _codec(o, facts, device, teacher=Path(o.teacher))
    _check_transformer(Path(o.teacher), facts["latent_channels"])

    def build():
        c = codec()
        gen3c = Gen3CGenerator(o.teacher, c, depth_path=o.depth_model, num_inference_steps=o.steps,
                               guidance_scale=o.guidance, fov_x_deg=fov, views_per_batch=o.teacher_chunk,
                               seed=o.seed, device=device, dtype=o.dtype)
        teacher = ImageTeacher(gen3c, images=[image_data] if image_data is not None else [],
                               prompts=[o.prompt] if kind == "prompt" else [], text_to_image=t2i, seed=o.seed,
                               **cam_args)
        teacher.check_size(T, H, W)
        return TeacherModule(teacher, c, T, H, W).to(device), lambda: teacher.last_image

    return build, codec_desc


def _dtype(name: str) -> torch.dtype:
    value = getattr(torch, str(name).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"--dtype must be a floating torch dtype such as float32 or bfloat16, got {name!r}")
    return value


def _codec(o: GenerateOptions, facts: dict, device: torch.device, teacher: Path | None = None):
    """(a function that builds the teacher's codec, its description), checked against the decoder now."""
    vae = o.vae
    if vae is None and teacher is not None and (teacher / "vae" / "config.json").is_file():
        vae = str(teacher / "vae")
    if vae is None:
        raise ValueError("which codec made the decoder's latents? pass --vae DIR (a diffusers video VAE folder) or "
                         "--vae dct (lyra's DCT codec, what the procedural configs train on)")
    if vae == "dct":
        return (lambda: DCTCodec(**facts).to(device)), {"class": "DCTCodec", **facts}
    spec = DiffusersVideoVAE.spec_from_init_args(vae)
    _check_codec_matches(spec, facts, f"the VAE at {vae}")
    dtype = _dtype(o.dtype)
    return (lambda: DiffusersVideoVAE(vae, dtype=dtype).to(device)), {"class": "DiffusersVideoVAE", "path": vae, **spec}

