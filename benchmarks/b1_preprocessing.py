"""B1: gateway preprocessing, image bytes to a serialized PredictRequest, ours against the seed's.

Both run in this process over the same photos, interleaved photo by photo so drift hits both.
Ours is what the gateway runs per image: `gateway.images.load_model_input` (format and pixel
checks, JPEG draft decoding when the model was trained with it, the model's own resize filter,
uint8) and `gateway.messages.predict_request`, the function the gateway's client sends.
The seed's is keras-image-helper's xception preprocessor (Pillow NEAREST resize, float32,
`x/127.5-1`) and `tf.make_tensor_proto`.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks.config import SEED_SIZE, Model
from benchmarks.photos import Photo
from benchmarks.report import Section, Target

WARMUP_PHOTOS = 10


@dataclass(frozen=True)
class Case:
    """One comparison: our resize spec against the seed's helper at the same size."""

    title: str
    size: int
    interpolation: str
    jpeg_draft: bool
    targeted: bool


@dataclass(frozen=True)
class Timings:
    """Per-photo wall-clock and thread CPU seconds of one path, and its request size."""

    wall: np.ndarray
    cpu: np.ndarray
    request_bytes: int
    pixel_bytes: int  # the input tensor's raw content, without the request's envelope


def cases(model: Model) -> list[Case]:
    """The demo model's input and the seed's 299x299 Xception (trained through NEAREST)."""
    draft = " + JPEG draft" if model.jpeg_draft else ""
    demo = f"{model.height}x{model.width} {model.interpolation}{draft} (demo model)"
    seed = f"{SEED_SIZE}x{SEED_SIZE}"
    return [
        Case(demo, model.height, model.interpolation, model.jpeg_draft, targeted=True),
        Case(f"{seed} nearest (seed's Xception)", SEED_SIZE, "nearest", False, targeted=True),
        Case(f"{seed} bilinear + JPEG draft (reference)", SEED_SIZE, "bilinear", True, False),
    ]


def our_path(case: Case, model_name: str) -> Callable[[bytes], bytes]:
    """bytes -> serialized PredictRequest the way our gateway builds it."""
    from gateway.contract import ResizeSpec
    from gateway.images import load_model_input
    from gateway.messages import predict_request
    from gateway.predictor import ModelInfo
    from gateway.settings import Settings

    spec = ResizeSpec(case.size, case.size, case.interpolation, case.jpeg_draft)
    info = ModelInfo(name=model_name, version=1, labels=(), resize=spec)
    limits = Settings()

    def run(data: bytes) -> bytes:
        image = load_model_input(
            data, spec, max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels
        )
        return bytes(predict_request(info, image[np.newaxis]).SerializeToString())

    return run


def seed_path(size: int, model_name: str) -> Callable[[bytes], bytes]:
    """bytes -> serialized PredictRequest the way the seed's gateway built it."""
    import tensorflow as tf
    from gateway.contract import SERVING_SIGNATURE
    from keras_image_helper import create_preprocessor
    from PIL import Image
    from tensorflow_serving.apis import predict_pb2

    preprocessor = create_preprocessor("xception", target_size=(size, size))

    def run(data: bytes) -> bytes:
        # what preprocessor.from_url does once the bytes are downloaded
        x = preprocessor.convert_to_tensor(Image.open(io.BytesIO(data)))
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = SERVING_SIGNATURE
        request.inputs["input_8"].CopyFrom(tf.make_tensor_proto(x, shape=x.shape))
        return bytes(request.SerializeToString())

    return run


def pixel_bytes(serialized: bytes) -> int:
    """Bytes of raw tensor content in a serialized PredictRequest (the pixels themselves)."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest.FromString(serialized)
    return sum(len(tensor.tensor_content) for tensor in request.inputs.values())


def measure(
    ours: Callable[[bytes], bytes], seed: Callable[[bytes], bytes], photos: Sequence[Photo]
) -> tuple[Timings, Timings]:
    """Per-photo times of each path (alternating which goes first) and request sizes."""
    for photo in photos[:WARMUP_PHOTOS]:
        ours(photo.data), seed(photo.data)
    samples: dict[str, tuple[list[float], list[float], list[int]]] = {
        "ours": ([], [], []),
        "seed": ([], [], []),
    }
    for i, photo in enumerate(photos):
        order = [("ours", ours), ("seed", seed)]
        for name, path in order if i % 2 == 0 else order[::-1]:
            wall, cpu, sizes = samples[name]
            started, started_cpu = time.perf_counter(), time.thread_time()
            size = len(path(photo.data))
            cpu.append(time.thread_time() - started_cpu)
            wall.append(time.perf_counter() - started)
            sizes.append(size)
    pixels = {
        name: pixel_bytes(path(photos[0].data)) for name, path in (("ours", ours), ("seed", seed))
    }
    timings = {
        name: Timings(np.asarray(wall), np.asarray(cpu), int(np.mean(sizes)), pixels[name])
        for name, (wall, cpu, sizes) in samples.items()
    }
    return timings["ours"], timings["seed"]


def variant_path(
    size: int, draft_scale: int, reducing_gap: float | None
) -> Callable[[bytes], bytes]:
    """Our path with other resizes the demo model was not trained on (so would need
    retraining): JPEG draft to `draft_scale` x the target (0: none), Pillow's `reducing_gap`.
    For the notes only."""
    from gateway.contract import INPUT_NAME, SCORES_OUTPUT, ResizeSpec
    from gateway.images import open_checked
    from gateway.messages import uint8_tensor
    from gateway.preprocessing import to_rgb
    from PIL import Image
    from tensorflow_serving.apis import predict_pb2

    spec = ResizeSpec(size, size, "bilinear", jpeg_draft=False)

    def run(data: bytes) -> bytes:
        image = open_checked(data, 40_000_000)
        if draft_scale and image.format == "JPEG":
            image.draft("RGB", (size * draft_scale, size * draft_scale))
        rgb = to_rgb(image, spec)
        resized = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=reducing_gap)
        request = predict_pb2.PredictRequest(output_filter=[SCORES_OUTPUT])
        request.inputs[INPUT_NAME].CopyFrom(uint8_tensor(np.asarray(resized)[np.newaxis]))
        return bytes(request.SerializeToString())

    return run


def run(model: Model, photos: Sequence[Photo]) -> tuple[Section, str]:
    """The B1 rows, and a pyinstrument profile of our path at the demo model's size."""
    section = Section(
        "B1",
        "gateway preprocessing",
        f"Image bytes → serialized PredictRequest, per photo, over {len(photos)} real photos of "
        "the dataset, in one process. Baseline: the seed's path (keras-image-helper's xception "
        "preprocessor: Pillow NEAREST resize, float32, `x/127.5-1`, then "
        "`tf.make_tensor_proto`). Ours: `load_model_input` (checks, the model's own resize "
        "filter, uint8) and `uint8_tensor` (raw bytes in `tensor_content`). The two paths "
        "alternate photo by photo.",
    )
    for case in cases(model):
        ours, seed = measure(our_path(case, model.name), seed_path(case.size, model.name), photos)
        faster = Target("<=", 1.0) if case.targeted else None
        for label, q in (("median", 50), ("p95", 95)):
            section.add(
                f"{case.title}: {label} ms per image",
                float(np.percentile(ours.wall, q) * 1000),
                "ms",
                float(np.percentile(seed.wall, q) * 1000),
                faster,
            )
        section.add(
            f"{case.title}: median CPU ms per image",
            float(np.median(ours.cpu) * 1000),
            "ms",
            float(np.median(seed.cpu) * 1000),
        )
        section.add(
            f"{case.title}: bytes per request",
            ours.request_bytes,
            "B",
            seed.request_bytes,
            Target("<=", 0.25) if case.targeted else None,
            0,
        )
        section.add(
            f"{case.title}: of which pixel bytes", ours.pixel_bytes, "B", seed.pixel_bytes, None, 0
        )
        if case.targeted:
            envelope = ours.request_bytes - ours.pixel_bytes
            seed_envelope = seed.request_bytes - seed.pixel_bytes
            section.notes.append(
                f"{case.title}: the pixels are exactly 1/4 (uint8 against float32); the rest "
                f"of the request (model name, signature, input name, dtype, shape, "
                f"output_filter) is {envelope} B against the seed's {seed_envelope} B, and a "
                f"total of 1/4 would need it to fit in {seed_envelope // 4} B"
            )
    size = model.height
    for title, variant in (
        ("JPEG draft to 2x the target (model version 1)", variant_path(size, 2, None)),
        ("Pillow reducing_gap=1.0, no draft", variant_path(size, 0, 1.0)),
    ):
        ours, seed = measure(variant, seed_path(size, model.name), photos)
        section.add(
            f"tried: {size}x{size} bilinear, {title}: median CPU ms",
            float(np.median(ours.cpu) * 1000),
            "ms",
            float(np.median(seed.cpu) * 1000),
        )
    return section, profile(our_path(cases(model)[0], model.name), photos)


def profile(path: Callable[[bytes], bytes], photos: Sequence[Photo]) -> str:
    """pyinstrument's call tree of our path over every photo."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    profiler.start()
    for photo in photos:
        path(photo.data)
    profiler.stop()
    return str(profiler.output_text(unicode=False, color=False, show_all=False, short_mode=False))
