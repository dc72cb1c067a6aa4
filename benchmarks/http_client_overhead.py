"""How many streamed tokens/s does the harness's HTTP client sustain on one core before its own
overhead distorts ITL?

    python benchmarks/http_client_overhead.py [--itl-ms 20] [--concurrency 8 32 64 128 256 512]

The client (foundry.bench OpenAICompletionsTarget + run_benchmark) is pinned to CPU 0; a minimal
asyncio SSE server (not uvicorn: it must be cheaper than the client) is pinned to CPU 1 and emits
token k of each request at scheduled + TTFT + k·ITL exactly, anchored at the client's scheduled
time (X-Foundry-Scheduled-S), with chunked transfer encoding like uvicorn. Offered load =
concurrency × 1000/ITL tokens/s. For each level it reports the client's CPU use, its CPU cost per
token, and how far pooled ITL p50/p99 and TPOT p99 drift from the truth. The sustainable rate is
the highest offered rate whose ITL p50 and TPOT p99 stay within max(1 %, 0.5 ms) of the ITL (pooled
ITL p99 is printed too: on a shared machine OS scheduling moves single gaps by milliseconds at any
rate, which is not the client's overhead).
Also reports, for comparison, TTFT through the real uvicorn server without the anchor (that is
server queueing, not client overhead).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TTFT_MS = 50.0


async def serve(port: int, itl_ms: float) -> None:
    async def handle(reader, writer):
        try:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:  # a readiness probe that connects and closes
                return
            headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line)
            headers = {k.lower(): v for k, v in headers.items()}
            body = json.loads(await reader.readexactly(int(headers["content-length"])))
            start = float(headers.get("x-foundry-scheduled-s", time.perf_counter()))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            for k in range(body["max_tokens"]):
                delay = start + (TTFT_MS + k * itl_ms) / 1e3 - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                event = b'data: {"choices":[{"index":0,"text":"x","token_ids":[%d]}]}\n\n' % k
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            done = b"data: [DONE]\n\n"
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(port: int) -> None:
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"no server on {port}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "ITL_MS"), help=argparse.SUPPRESS)
    parser.add_argument("--itl-ms", type=float, default=20.0)
    parser.add_argument("--output-tokens", type=int, default=50)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 64, 128, 256, 512])
    parser.add_argument("--skip-uvicorn", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if args.serve:
        os.sched_setaffinity(0, {cpus[-1]})
        asyncio.run(serve(int(args.serve[0]), float(args.serve[1])))
        return 0

    import numpy as np

    from foundry.bench.http_client import OpenAICompletionsTarget
    from foundry.bench.runner import run_benchmark
    from foundry.bench.workload import Request

    os.sched_setaffinity(0, {cpus[0]})
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), str(args.itl_ms)])
    rows = []
    try:
        wait_for(port)
        target = OpenAICompletionsTarget(f"http://127.0.0.1:{port}", send_schedule=True)
        tolerance = max(0.01 * args.itl_ms, 0.5)
        print(
            f"client on CPU {cpus[0]}, server on CPU {cpus[-1]}, ITL {args.itl_ms} ms, "
            f"{args.output_tokens} tokens/request, tolerance {tolerance} ms; load average {os.getloadavg()}"
        )
        print(
            f"{'conc':>5} {'offered tok/s':>13} {'got tok/s':>10} {'client CPU %':>12} {'us CPU/token':>12} "
            f"{'ITL p50 err':>11} {'ITL p99 err':>11} {'TPOT p99 err':>12} {'TTFT p99 err':>12}"
        )
        for concurrency in args.concurrency:
            requests = [Request(i, [1, 2], args.output_tokens) for i in range(2 * concurrency)]
            cpu0, wall0 = time.process_time(), time.perf_counter()
            level = run_benchmark(target, requests, [concurrency], warmup_requests=concurrency).levels[0]
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            tokens = level.total_output_tokens
            offered = concurrency * 1000 / args.itl_ms
            row = dict(
                concurrency=concurrency,
                offered_tok_s=offered,
                output_tok_s=level.output_token_throughput_tok_s,
                client_cpu_pct=100 * cpu / wall,
                cpu_us_per_token=1e6 * cpu / (2 * tokens),
                itl_p50_err_ms=level.itl.p50_ms - args.itl_ms,
                itl_p99_err_ms=level.itl.p99_ms - args.itl_ms,
                tpot_p99_err_ms=level.tpot.p99_ms - args.itl_ms,
                ttft_p99_err_ms=level.ttft.p99_ms - TTFT_MS,
                failed=level.failed,
            )
            row["within_tolerance"] = (
                abs(row["itl_p50_err_ms"]) <= tolerance and abs(row["tpot_p99_err_ms"]) <= tolerance
            )
            rows.append(row)
            print(
                f"{concurrency:>5} {offered:>13.0f} {row['output_tok_s']:>10.0f} {row['client_cpu_pct']:>12.0f} "
                f"{row['cpu_us_per_token']:>12.1f} {row['itl_p50_err_ms']:>+11.3f} {row['itl_p99_err_ms']:>+11.3f} "
                f"{row['tpot_p99_err_ms']:>+12.3f} {row['ttft_p99_err_ms']:>+12.3f}"
                + ("" if row["within_tolerance"] else "  DISTORTED"),
                flush=True,
            )
        sustained = [r["offered_tok_s"] for r in rows if r["within_tolerance"] and not r["failed"]]
        cost = float(np.median([r["cpu_us_per_token"] for r in rows]))
        print(
            f"sustained without ITL distortion: {max(sustained) if sustained else 0:.0f} tok/s "
            f"(highest offered level within tolerance); client CPU cost ≈ {cost:.1f} µs/token "
            f"→ ≈ {1e6 / cost:.0f} tok/s would saturate one core"
        )
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "rows": rows,
                        "sustained_tok_s": max(sustained) if sustained else 0,
                        "cpu_us_per_token": cost,
                        "loadavg": os.getloadavg(),
                    },
                    indent=1,
                )
            )
    finally:
        server.terminate()
        server.wait()
    if not args.skip_uvicorn:
        uvicorn_ttft(args)
    return 0


def uvicorn_ttft(args) -> None:
    """TTFT through the project's uvicorn server, unanchored: server request handling is visible."""
    from foundry.bench.http_client import OpenAICompletionsTarget
    from foundry.bench.runner import run_benchmark
    from foundry.bench.workload import Request

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "foundry.bench.server", "--synthetic", f"{TTFT_MS},{args.itl_ms}", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(port)
        target = OpenAICompletionsTarget(f"http://127.0.0.1:{port}")
        for concurrency in (1, 16, 256):
            requests = [Request(i, [1, 2], 4) for i in range(concurrency + max(concurrency, 4))]
            level = run_benchmark(target, requests, [concurrency], warmup_requests=concurrency).levels[0]
            print(
                f"uvicorn server, unanchored, c={concurrency}: TTFT p50 +{level.ttft.p50_ms - TTFT_MS:.2f} ms, "
                f"p99 +{level.ttft.p99_ms - TTFT_MS:.2f} ms over the engine's {TTFT_MS} ms"
            )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
