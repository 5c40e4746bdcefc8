"""Render docs/reliability.md from the figures the reliability suite wrote to build/reliability/.

python -m tests.reliability.report      (run by `make soak` and `make fuzz`)
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FIGURES = REPO / "build" / "reliability"
TARGET = REPO / "docs" / "reliability.md"

GROUPS = {
    "test_ssrf.py::test_loopback_forms_are_refused_without_connecting":
        "SSRF: loopback forms to the real gateway (production policy), canaries see 0 connections",
    "test_ssrf.py::test_a_batch_of_loopback_forms_connects_nowhere":
        "SSRF: every loopback form in one batch",
    "test_ssrf.py::test_redirects_cannot_leave_the_policy":
        "SSRF: redirects to 0.0.0.0, [::], credentials, file:, gopher:, bad hosts; loops, chains",
    "test_ssrf.py::test_other_ranges_are_refused_before_any_connection":
        "SSRF: metadata, pod identity, CGNAT, private, transition forms, chosen DNS answers "
        "(in-process, injected resolver, connect guard)",
    "test_ssrf.py::test_redirects_to_metadata_are_refused_even_with_private_urls_allowed":
        "SSRF: redirects to metadata with private URLs allowed (in-process)",
    "test_ssrf.py::test_a_dns_answer_that_changes_cannot_move_the_connection":
        "SSRF: DNS answer changing between requests (rebinding)",
    "test_ssrf.py::test_the_canaries_do_see_connections":
        "control: an allowed URL does reach the canaries",
    "test_image_hosts.py::test_hostile_hosts_and_images_fail_cleanly":
        "image hosts: drip, hang, huge, endless, lying length, gzip, bombs, truncated, non-images",
    "test_image_hosts.py::test_a_host_that_never_accepts_times_out":
        "image hosts: a listener that never accepts",
    "test_image_hosts.py::test_exotic_but_valid_images_are_classified":
        "images: animations (1000-3000 frames), every mode, EXIF 1-8, 1x1, 1x10000, 20000x3",
    "test_image_hosts.py::test_slow_hosts_do_not_starve_good_requests":
        "image hosts: 8 hung downloads beside good requests",
    "test_image_hosts.py::test_a_batch_of_hostile_urls_answers_each_in_order":
        "image hosts: a batch of hostile URLs",
    "test_requests.py::test_hostile_bodies_get_their_error":
        "requests: oversized, invalid JSON, wrong types, wrong media types",
    "test_requests.py::test_deeply_nested_json_is_invalid_json": "requests: deeply nested JSON",
    "test_requests.py::test_an_overlong_integer_is_invalid_json": "requests: 5000-digit integer",
    "test_requests.py::test_a_chunked_body_over_the_limit_is_refused":
        "requests: chunked body over the limit",
    "test_requests.py::test_unknown_methods_and_paths_are_json": "requests: wrong method, path",
    "test_requests.py::test_hostile_request_ids_are_replaced": "requests: hostile X-Request-ID",
    "test_schema_fuzz.py::test_no_server_error_and_every_response_documented":
        "schemathesis: every operation of /openapi.json",
    "test_faults.py::test_model_server_killed_then_back": "fault: model server SIGKILL and back",
    "test_faults.py::test_a_killed_worker_loses_at_most_its_requests_in_flight":
        "fault: gunicorn worker SIGKILL",
    "test_faults.py::test_sigterm_drains_requests_in_flight": "fault: gateway SIGTERM drain",
    "test_soak.py::test_sustained_load_has_no_errors_and_flat_memory": "load: soak",
    "test_memory.py::test_the_declared_workers_at_full_decode_budget_fit_the_declared_memory_limit":
        "memory: declared workers x (baseline + decode budget) fit the declared pod limit",
    "test_memory.py::test_each_reservation_covers_the_measured_peak_of_the_worst_image_of_its_format":
        "memory: each format's worst image costs no more than it reserves",
    "test_memory.py::test_decompression_bombs_under_the_pods_memory_limit_get_answers_and_photos_get_200":
        "memory: bombs of every format in a memory cgroup with the pod's limit",
    "test_memory.py::test_the_memory_cgroup_really_kills_past_its_limit":
        "control: the memory cgroup does OOM-kill past its limit",
}  # fmt: skip


def load(name: str) -> dict[str, Any] | None:
    path = FIGURES / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def cases_section(cases: list[dict[str, Any]]) -> list[str]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for case in cases:
        function = case["test"].removeprefix("tests/reliability/").split("[", 1)[0]
        groups[function].append(case)
    lines = [
        "| what | cases | passed | known gateway bugs (strict xfail) | failed | slowest case (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    total: dict[str, int] = defaultdict(int)
    for function, members in sorted(groups.items(), key=lambda kv: list(GROUPS).index(kv[0])
                                    if kv[0] in GROUPS else 999):  # fmt: skip
        counts = {o: sum(c["outcome"] == o for c in members) for o in ("passed", "xfailed")}
        failed = len(members) - counts["passed"] - counts["xfailed"]
        for key, value in (("cases", len(members)), ("failed", failed), *counts.items()):
            total[key] += value
        slowest = max(c["seconds"] for c in members)
        lines.append(
            f"| {GROUPS.get(function, function)} | {len(members)} | {counts['passed']} | "
            f"{counts['xfailed']} | {failed} | {slowest:.1f} |"
        )
    lines.append(
        f"| **total** | **{total['cases']}** | **{total['passed']}** | **{total['xfailed']}** | "
        f"**{total['failed']}** | |"
    )
    bugs = [c for c in cases if c["outcome"] in ("xfailed", "xpassed")]
    if bugs:
        lines += ["", "Gateway bugs found (tests marked `xfail(strict=True)` until fixed):", ""]
        lines += [f"- `{c['test'].split('::', 1)[1]}`: {c.get('reason', '')}" for c in bugs]
    return lines


def fuzz_row(name: str, fuzz: dict[str, Any]) -> str:
    answers = ", ".join(f"{k}: {v}" for k, v in sorted(fuzz["statuses"].items()))
    server_errors = sum(v for k, v in fuzz["statuses"].items() if k.startswith("5"))
    return (
        f"| {name} | {fuzz['examples_per_operation_and_mode']} | {fuzz['calls']} | {answers} | "
        f"{server_errors} | {fuzz['guarded']} |"
    )


def faults_section(faults: dict[str, Any]) -> list[str]:
    lines = ["| fault | expected | observed |", "| --- | --- | --- |"]
    killed = faults.get("model_server_killed")
    if killed:
        answers = ", ".join(f"{k}: {v}" for k, v in killed["outage_answers"].items())
        lines.append(
            "| model server SIGKILL under load (3 clients), restarted on the same port | 503 "
            "`model_unavailable` with Retry-After or 504 within the deadline, never 500; "
            "recovers alone | "
            f"{killed['requests_during_outage']} requests while down ({answers}), slowest "
            f"{killed['slowest_outage_answer_s']} s, 500s: {killed['server_errors_500']}; model "
            f"server down {killed['model_server_down_s']} s (restart took "
            f"{killed['model_server_restart_s']} s); first 200 "
            f"{killed['first_200_after_model_back_s']} s and only 200s "
            f"{killed['all_200_after_model_back_s']} s after it was back |"
        )
    worker = faults.get("worker_killed")
    if worker:
        lines.append(
            "| one of 2 gunicorn workers SIGKILLed under load (6 clients) | at most its requests "
            f"in flight fail | {worker['failed']} of {worker['requests']} failed "
            f"({', '.join(worker['failed_how']) or 'none'}), all started before the kill; "
            f"worker replaced in {worker['worker_replaced_s']} s; p99 after the kill "
            f"{worker['latency_after_kill'].get('p99_ms')} ms |"
        )
    drain = faults.get("sigterm_drain")
    if drain:
        lines.append(
            "| gateway SIGTERM with 1.2-s downloads in flight | in-flight requests finish | "
            f"{drain['completed']} of {drain['in_flight']} answered 200 (drained in "
            f"{drain['drain_s']} s); exit code {drain['exit_code']} after {drain['exit_s']} s |"
        )
    return lines


def soak_row(name: str, soak: dict[str, Any]) -> str:
    latency = soak["latency_after_warm_up"]
    return (
        f"| {name} | {soak['seconds']:.0f} s ({soak['warm_up_s']:.0f} s warm-up) | "
        f"{soak['client_threads']} | {soak['requests']} | {soak['requests_per_s']} | "
        f"{soak['errors']} | {latency.get('p50_ms')} / {latency.get('p99_ms')} / "
        f"{latency.get('max_ms')} | {soak['rss_mib_after_warm_up']} → {soak['rss_mib_at_end']} "
        f"({soak['rss_growth_pct']:+.2f} %) | {soak['workers_replaced']} |"
    )


ATTACK_RUNS = (
    ("memory-baseline-issue", "before (main at 25f72c9): the issue's 16 PNG uploads"),
    ("memory-baseline", "before (main at 25f72c9): every attack, one round"),
    ("memory-fixed-issue", "with the budget: the issue's 16 PNG uploads"),
    ("memory-short", "with the budget: every attack, one round (`make test`)"),
    ("memory-long", "with the budget: every attack repeated (`make soak`)"),
    ("memory-threads32", "with the budget, 32 threads per worker: every attack, one round"),
    ("memory-threads64", "with the budget, 64 threads per worker: every attack, one round"),
)


def memory_section() -> list[str]:
    """Memory and CPU per request: the budget, the caps, measured costs, the cgroup runs."""
    from gateway.budget import HEAVY_SHARE, MASTER_BYTES, PIXEL_CAPS

    sizing, cost = load("memory-sizing"), load("decode-cost")
    caps = ", ".join(f"{fmt} {cap / 1e6:g} Mpx" for fmt, cap in PIXEL_CAPS.items())
    lines = [
        "## Memory and CPU per request",
        "",
        "Before decoding, the gateway reads the image's header and works out the decode's peak "
        "memory (`gateway.budget.decode_cost`: pixels x Pillow's bytes per pixel for each stage "
        "— decoding, EXIF rotation, conversion to RGB, resizing — plus libwebp's buffers and a "
        "progressive JPEG's coefficients, at the JPEG draft size when the model allows draft "
        "decoding), refuses images over their format's pixel cap (413 `image_too_many_pixels`) "
        "and reserves the rest from its worker's decode budget, waiting at most "
        "`GATEWAY_DECODE_WAIT_SECONDS` (5 s) for room, else 503 `decode_busy` with Retry-After. "
        "Downloads reserve their body as it arrives (the declared Content-Length at once, else "
        "1 MiB at a time: `fetch_image`'s `hold`), uploads their size before they are read, so "
        "batches and uploads go through the same budget whatever the "
        f"thread count. Costly decodes (over 16 MiB) may hold {HEAVY_SHARE:.0%} of the budget; "
        "the rest is kept for ordinary photos. The budget per worker is (container memory "
        f"limit - {MASTER_BYTES >> 20} MiB for the gunicorn master) / workers - "
        "`GATEWAY_WORKER_BASELINE_BYTES`; the limit is `GATEWAY_MEMORY_LIMIT_BYTES` (set by "
        "the Pulumi program from the pod's limit), else the cgroup's, else 768 MiB. Workers "
        "set glibc's mmap threshold to 1 MiB so a freed image goes back to the OS at once. "
        "JSON bodies are limited to the largest real one (a full batch of the longest URLs, "
        "about 400 KB): parsing JSON costs about 20 times its size (an 11 MiB body of empty "
        "lists took 246 MiB and 0.7 s), so larger ones get 413 `payload_too_large` unparsed.",
        "",
        f"Pixel caps: {caps}; JPEGs that are progressive or decoded in full (a model without "
        "draft decoding) have the 16 Mpx cap too. Every format also has the global "
        "`GATEWAY_MAX_IMAGE_PIXELS` (40 M) and `GATEWAY_MAX_IMAGE_BYTES` (10 MiB).",
        "",
    ]
    if sizing:
        lines += [
            f"Declared by the Pulumi program (run under mocks by `tests/reliability/sizing.py`): "
            f"memory limit {sizing['memory_limit_mib']:.0f} MiB, {sizing['workers']} workers x "
            f"{sizing['threads']} threads; worker baseline {sizing['worker_baseline_mib']:.0f} "
            f"MiB, so each worker's decode budget is {sizing['worker_budget_mib']:.0f} MiB and "
            f"the worst case, every budget full, is {sizing['worst_case_mib']:.0f} MiB "
            f"(`test_memory.py` fails past the limit). The largest reservation any accepted "
            f"image can need is {sizing['largest_reservation_mib']} MiB.",
            "",
        ]
    lines += [
        "### Worst valid image per format",
        "",
        "Measured by `python -m tests.reliability.decode_cost` (each case decoded by the "
        "gateway's `load_model_input` for the demo model, 112x112 bilinear with JPEG draft, in "
        "a fresh `.venv-gateway` process; peak RSS growth and CPU time of that process).",
        "",
    ]
    if cost:
        lines += [
            "| image | bytes | answer | peak memory (MiB) | reserved (MiB) | CPU (s) |",
            "| --- | ---: | --- | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {r['case']} | {r['bytes']:,} | {r['outcome']} | {r['peak_rss_growth_mib']} | "
            f"{r['reserved_mib'] if r['outcome'] == 'decoded' else '-'} | {r['cpu_s']} |"
            for r in cost["rows"]
        ]
        load_avg = cost.get("load")
        if load_avg:
            lines += ["", f"(load average {load_avg[0]:.1f} when measured)"]
    else:
        lines += ["(no figures yet: run `make soak`)"]
    lines += [
        "",
        "So the worst accepted image costs about 140 MiB and 0.3 s of CPU (a photo: a few MiB "
        "and a few ms), and at most one or two such decodes run per worker at a time.",
        "",
        "**Large photos.** JPEG photos up to 40 Mpx and 10 MiB are fine: they are decoded at "
        "1/2 to 1/8 scale. Progressive JPEGs, PNG, GIF and BMP up to 16 Mpx (4000 x 4000) and "
        "WebP up to 8 Mpx (about 2800 x 2800) are decoded in full; larger ones get 413 "
        "`image_too_many_pixels` with the cap in the message: scale them down (the model "
        "sees 112-299 px anyway) or send a baseline JPEG. When many large images arrive at "
        "once, some get 503 `decode_busy` with Retry-After: retry after that many seconds.",
        "",
        "### Under the pod's memory limit",
        "",
        "`tests/reliability/test_memory.py` runs gunicorn with the declared sizing inside a "
        "cgroup v1 memory cgroup limited to the declared container memory (the kernel OOM-kills "
        "past it, as for a pod), with the model server and a loopback image host; at once: 24 "
        "concurrent uploads of the issue's 40 Mpx PNG, a 32-URL batch of it, a 32-URL batch of "
        "16 Mpx palette+transparency PNGs, 2 uploads each of the worst image of every format "
        "at its cap and at 40 Mpx, huge-dimension headers, while 4 clients upload real photos "
        "from the dataset. `make soak` repeats every attack for 2 minutes. Re-run with "
        "`.venv/bin/python -m tests.reliability.memory_attack --seconds 120` (as root, for "
        "the cgroup; `--gateway-dir` runs another checkout's gateway, `--threads` another "
        'thread count). The "before" rows are that command with `--gateway-dir` on '
        "`git archive 25f72c9 services/gateway`.",
        "",
        "| run | workers x threads | hostile requests | answered acceptably | photos 200 | no "
        "answer | OOM kills | worker SIGKILLs | cgroup peak (MiB) | largest process RSS "
        "(MiB) | slowest photo (s) | load |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    latest = None
    for name, title in ATTACK_RUNS:
        run = load(name)
        if not run:
            continue
        if name in ("memory-short", "memory-long"):
            latest = run
        acceptable = run["hostile_requests"] + run["photo_requests"] - run["unacceptable"]
        lines.append(
            f"| {title} | {run['workers']} x {run['threads']} | {run['hostile_requests']} | "
            f"{acceptable - run['photos_ok']} | {run['photos_ok']} of {run['photo_requests']} | "
            f"{run['no_answer']} | {run['oom_kills']} | {run['worker_sigkill_lines']} | "
            f"{run['max_usage_mib']} of {run['limit_mib']:.0f} | {run['process_rss_mib']} | "
            f"{run['kinds'].get('real photo upload', {}).get('max_s', '-')} | "
            f"{run['load'][0]:.1f} |"
        )
    if latest:
        lines += [
            "",
            f"Answers in the last run with the budget ({latest['label']}):",
            "",
            "| request | sent | answers | batch items |",
            "| --- | ---: | --- | --- |",
        ]
        for kind, entry in sorted(latest["kinds"].items()):
            answers = ", ".join(f"{k}: {v}" for k, v in sorted(entry["answers"].items()))
            items = ", ".join(f"{k}: {v}" for k, v in sorted(entry["items"].items()))
            lines.append(f"| {kind} | {entry['requests']} | {answers} | {items} |")
    return lines


def render() -> str:
    """The whole document."""
    cases, faults = load("cases"), load("faults")
    fuzzes = [
        (n, load(f)) for n, f in (("`make fuzz`", "fuzz-long"), ("`make test`", "fuzz-short"))
    ]
    soaks = [(n, load(f)) for n, f in (("`make soak`", "soak-long"), ("`make test`", "soak-short"))]
    lines = [
        "# Reliability",
        "",
        "What the gateway was put through and what it held, measured on the development machine "
        "(2 cores shared with other jobs) against the real gateway under gunicorn (2 gthread "
        "workers x 4 threads, from `.venv-gateway`) and the development model server, on "
        "loopback. Regenerated by `make soak` (the whole suite with a 10-minute soak) and "
        "`make fuzz` (a long schemathesis run); `make test` runs the same suite with a 30-s "
        "soak and a short fuzz. The figures come from `build/reliability/*.json`, rendered by "
        "`python -m tests.reliability.report`; the tests are in `tests/reliability/`.",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "## Only loopback is ever contacted",
        "",
        "- Loopback forms (`127.0.0.1`, `localhost`, `[::1]`, `0.0.0.0` and `[::]`, which Linux "
        "routes to loopback, IPv4-mapped, decimal/octal/hex/short IPv4, credentials, backslash "
        "and fragment tricks) go to the real gateway with the production policy "
        "(`GATEWAY_ALLOW_PRIVATE_URLS=false`); each names a canary listener on 127.0.0.1 or ::1, "
        "and the test asserts the exact error and zero connections on the canaries.",
        "- Every other range (cloud metadata, ECS and EKS Pod Identity credentials, CGNAT, "
        "private, link-local, NAT64, 6to4, IPv4-compatible) and every host name with chosen DNS "
        "answers (public and private mixed, answers that change between requests) go to the "
        "gateway app in the test process (`create_app(fetcher=...)` with `fetch_image` and an "
        "injected resolver), served on loopback, with `socket.connect` patched: a non-loopback "
        "destination is recorded and refused before a packet is sent, and the tests assert "
        "nothing was recorded.",
        "- Image-host cases (slow, hung, lying, bombs) use the real gateway with private URLs "
        "allowed and a hostile HTTP server on 127.0.0.1.",
        "- Schemathesis generates arbitrary image URLs, so it runs against the in-process app "
        "with the production policy ON, a resolver that refuses every name, and the same "
        "connect guard: a generated private, loopback or special address is refused by the "
        "address check; a generated *public* IP literal passes the policy and its connection is "
        "refused by the guard (counted below as guarded connects); the test asserts that every "
        "guarded address was public. Checks: no 5xx, status codes, content types, headers and "
        "bodies as documented (`negative_data_rejection` is off: an invalid optional "
        "`X-Request-ID` is replaced, by design, not refused).",
        "",
        "## Cases",
        "",
    ]
    lines += cases_section(cases["cases"]) if cases else ["(no figures yet: run `make soak`)"]
    lines += ["", "## Schemathesis", ""]
    lines += [
        "| run | examples per operation and mode | requests | answers | 5xx | guarded connects |",
        "| --- | ---: | ---: | --- | ---: | ---: |",
    ]
    lines += [fuzz_row(name, fuzz) for name, fuzz in fuzzes if fuzz]
    lines += ["", "## Faults survived", ""]
    lines += faults_section(faults) if faults else ["(no figures yet: run `make soak`)"]
    lines += [
        "",
        "## Load held",
        "",
        "Mixed requests back to back (by URL, upload, a batch of 4 URLs, EXIF-rotated) from "
        "closed-loop client threads; RSS is the gunicorn master plus its workers; growth is the "
        "mean of the last tenth of the run against the first tenth after warm-up.",
        "",
        "| run | duration | clients | requests | req/s | errors | latency p50 / p99 / max "
        "(ms) | RSS MiB after warm-up → end (growth) | workers replaced |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    lines += [soak_row(name, soak) for name, soak in soaks if soak]
    lines += ["", *memory_section()]
    return "\n".join(lines) + "\n"


def main() -> int:
    if not FIGURES.is_dir():
        print(f"report: {FIGURES} is missing; run `make soak` first", file=sys.stderr)
        return 2
    partial = TARGET.with_suffix(".md.part")
    partial.write_text(render())
    os.replace(partial, TARGET)
    print(f"report: wrote {TARGET.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
