"""`python -m benchmarks` (`make bench`): run B1-B5, print the table, rewrite docs/benchmarks.md.

    python -m benchmarks [--only B1,B3] [--quick] [--no-doc] [--model-base DIR] [--photos N]
                         [--duration S] [--work-dir DIR]

`--quick` shrinks every measurement to check the suite runs (its figures mean nothing); with
`--only` or `--quick` the document is not rewritten unless `--output` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import NoReturn, TypeVar

from benchmarks import b1_preprocessing, b2_footprint, b3_end_to_end, b4_batching, b5_ceiling
from benchmarks.config import REPO, BenchError, BenchSettings, Model
from benchmarks.context import SEED_MODEL_NAME, Stack
from benchmarks.load import LoadResult, bodies_file, run_wrk
from benchmarks.photos import load_photos, photo_server
from benchmarks.profiling import profile_under_load
from benchmarks.report import Section, machine, markdown, text_table, write_atomically
from benchmarks.stack import model_server, our_gateway, seed_gateway
from benchmarks.stages import kept_section, with_section
from benchmarks.twins import export_seed_twin

PROG = "benchmarks"
ALL = ("B1", "B2", "B3", "B4", "B5")
T = TypeVar("T")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message}\n")


def parse_settings(argv: Sequence[str] | None) -> BenchSettings:
    """Settings from the command line."""
    parser = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    defaults = BenchSettings()
    parser.add_argument("--only", default=",".join(ALL), help="comma-separated, e.g. B1,B3")
    parser.add_argument("--quick", action="store_true", help="tiny smoke-test settings")
    parser.add_argument("--no-doc", action="store_true", help="do not write the document")
    parser.add_argument("--output", type=Path, help=f"default {defaults.output}")
    parser.add_argument("--model-base", type=Path, default=defaults.model_base)
    parser.add_argument("--dataset", type=Path, default=defaults.dataset)
    parser.add_argument("--photos", type=int, help=f"default {defaults.photos}")
    parser.add_argument(
        "--duration", type=float, help=f"seconds per load point ({defaults.duration:g})"
    )
    parser.add_argument("--work-dir", type=Path, help="keep logs and profiles here")
    args = parser.parse_args(argv)
    only = tuple(x.strip().upper() for x in args.only.split(",") if x.strip())
    if not only or any(x not in ALL for x in only):
        parser.error(f"--only takes some of {','.join(ALL)}, got {args.only!r}")
    settings = replace(defaults, model_base=args.model_base, dataset=args.dataset, only=only)
    if args.quick:
        settings = settings.quick()
    if args.photos is not None:
        if args.photos < 20:
            parser.error("--photos must be at least 20")
        settings = replace(settings, photos=args.photos)
    if args.duration is not None:
        if not 1 <= args.duration <= 120:
            parser.error("--duration must be between 1 and 120 seconds")
        settings = replace(settings, duration=args.duration)
    partial = args.quick or only != ALL
    output = args.output or (None if partial else defaults.output)
    settings = replace(settings, output=None if args.no_doc else output, work_dir=args.work_dir)
    return settings


def attempt(sections: list[Section], bench: str, title: str, call: Callable[[], T]) -> T | None:
    """Run one benchmark; a failure becomes a FAILED row instead of ending the run."""
    try:
        return call()
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        sections.append(Section(bench, title, "", error=f"{type(exc).__name__}: {exc}"))
        return None


def run(settings: BenchSettings, work: Path) -> tuple[list[Section], str, Model]:
    """Every selected benchmark, in order; returns the sections and the profile appendix."""
    model = Model.load(settings.model_base)
    photos = load_photos(settings.dataset, settings.photos)
    sections: list[Section] = []
    appendix: list[str] = []
    only = settings.only
    if "B1" in only:
        print(f"{PROG}: B1 preprocessing over {len(photos)} photos ...", flush=True)
        result = attempt(
            sections, "B1", "gateway preprocessing", lambda: b1_preprocessing.run(model, photos)
        )
        if result:
            sections.append(result[0])
            appendix += [
                "### B1: pyinstrument, our preprocessing at the demo model's size",
                "",
                "```text",
                result[1].strip(),
                "```",
                "",
            ]
    if not any(b in only for b in ("B2", "B3", "B4", "B5")):
        return sections, "\n".join(appendix), model
    print(f"{PROG}: exporting the seed twin of {model.name} (benchmarks/twins.py) ...", flush=True)
    seed_base = work / "models" / SEED_MODEL_NAME
    if not seed_base.is_dir():
        export_seed_twin(model.version_dir, seed_base, model.height, model.width)
    with contextlib.ExitStack() as running:
        print(f"{PROG}: starting the photo server and the model server ...", flush=True)
        photo = running.enter_context(photo_server(settings.dataset, work / "logs" / "photos.log"))
        server = running.enter_context(
            model_server(
                [(model.name, model.base_path), (SEED_MODEL_NAME, seed_base)],
                batching=True,
                work=work,
                log=work / "logs" / "model-server.log",
            )
        )
        bodies = [{"url": f"{photo.url}/{p.relative}"} for p in photos]
        stack = Stack(
            settings, model, work, server, photo, photos, bodies_file(work / "bodies.jsonl", bodies)
        )
        earlier: list[LoadResult] = []
        workers, threads = settings.gateway_workers, settings.gateway_threads
        print(f"{PROG}: starting both gateways ...", flush=True)
        ours = running.enter_context(
            our_gateway(server, workers=workers, threads=threads, log=stack.log("gateway"))
        )
        seed = running.enter_context(
            seed_gateway(
                server,
                model_name=SEED_MODEL_NAME,
                size=model.height,
                workers=workers,
                threads=threads,
                log=stack.log("seed-gateway"),
            )
        )
        if "B2" in only:
            print(f"{PROG}: B2 footprint ...", flush=True)
            section = attempt(
                sections, "B2", "gateway footprint", lambda: b2_footprint.run(stack, ours, seed)
            )
            sections += [section] if section else []
        if "B3" in only:
            print(f"{PROG}: B3 end to end ...", flush=True)
            b3 = attempt(sections, "B3", "end to end", lambda: b3_end_to_end.run(stack, ours, seed))
            if b3:
                sections.append(b3[0])
                earlier += b3[1]
        if "B4" in only:
            print(f"{PROG}: B4 batching ...", flush=True)
            b4 = attempt(sections, "B4", "batching", lambda: b4_batching.run(stack, ours))
            if b4:
                sections.append(b4[0])
                earlier += b4[1]
        if "B5" in only:
            print(f"{PROG}: B5 ceiling ...", flush=True)
            section = attempt(sections, "B5", "the ceiling", lambda: b5_ceiling.run(stack, earlier))
            sections += [section] if section else []
        if "B3" in only or "B5" in only:
            top = max(settings.concurrency)
            print(f"{PROG}: profiling the gateways and the model server under load ...", flush=True)
            for gateway in (ours, seed):
                appendix += [
                    f"### py-spy, {top} clients through the {gateway.label} gateway "
                    f"({workers} workers): the gateway and the model server, "
                    f"{settings.profile_seconds:g} s",
                    "",
                    profile_under_load(
                        gateway.pid,
                        server.process.pid,
                        functools.partial(run_wrk, f"{gateway.url}/predict", stack.bodies, top),
                        settings.profile_seconds,
                        work / "profiles" / gateway.label,
                    ),
                ]
    order = {bench: i for i, bench in enumerate(ALL)}
    sections.sort(key=lambda s: order[s.bench])
    return sections, "\n".join(appendix), model


def setup_facts(settings: BenchSettings, model: Model) -> dict[str, str]:
    """The setup lines of the document."""
    wrk = shutil.which("wrk")
    wrk_version = ""
    if wrk:
        done = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        wrk_version = (done.stdout or done.stderr or "\n").splitlines()[0]
    model_server = (
        "tensorflow_model_server"
        if shutil.which("tensorflow_model_server")
        else ("the development server (services/devserver)")
    )
    return {
        "model": f"{model.name} ({_shown(model.version_dir)}), input {model.height}x"
        f"{model.width}, resize {model.interpolation}{' + JPEG draft' if model.jpeg_draft else ''}"
        f", {len(model.labels)} labels",
        "model server": model_server,
        "photos": f"{settings.photos} from {settings.dataset.name} (validation, then train)",
        "load": f"{wrk_version or 'wrk'}; {settings.duration:g} s per point after "
        f"{settings.warmup:g} s warm-up",
        "gateways": f"gunicorn, {settings.gateway_workers} gthread workers x "
        f"{settings.gateway_threads} threads, unless a row says otherwise",
    }


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print, write."""
    settings = parse_settings(argv)
    started = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    host = machine()
    work = settings.work_dir or Path(tempfile.mkdtemp(prefix="bench-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    try:
        sections, appendix, model = run(settings, work)
    except BenchError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - clock
    print()
    print(text_table(sections))
    print(f"\n{PROG}: {seconds / 60:.1f} minutes; logs and profiles in {work}")
    if settings.output is not None:
        command = (
            "make bench"
            if os.environ.get("MAKELEVEL")
            else " ".join(
                ["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)]
            ).strip()
        )
        profiles = "## Profiles\n\n" + appendix if appendix else ""
        document = markdown(
            sections,
            started=started,
            seconds=seconds,
            command=command,
            host=host,
            setup=setup_facts(settings, model),
            appendix=profiles,
        )
        # The stage-by-stage CPU section comes from its own, longer run (benchmarks.stages).
        previous = settings.output.read_text("utf-8") if settings.output.exists() else ""
        if kept := kept_section(previous):
            document = with_section(document, kept)
        write_atomically(settings.output, document)
        print(f"{PROG}: wrote {settings.output}")
    return 1 if any(section.error for section in sections) else 0
