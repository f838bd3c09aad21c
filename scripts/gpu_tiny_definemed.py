#!/usr/bin/env python3
"""Part (d) of the device check (scripts/gpu_check.sh): the tiny DeFineMed
pipeline run whole with --device cuda and with --device cpu, side by side.

    python3 scripts/gpu_tiny_definemed.py FLOW_BINARY TINY_PROJECT_DIR

TINY_PROJECT_DIR is written on the build machine by
`FLOW_TINY_PROJECT=DIR cargo test --test e2e_definemed -- --ignored tiny_project`
(tests/e2e_definemed.rs): the shipped pipelines, the demo data and a tiny
random Qwen2, annotated through an OpenAI-compatible endpoint on
127.0.0.1:18080. This script serves that endpoint (labelling by medical
keywords, as tests/cli_common/definemed.rs's keyword annotator does: a
random model would give every document one label), runs both devices into
caches of their own, and compares what the model ops computed. bf16 on the
GPU against f32 on the CPU: losses agree to about 1e-2, not to the bit.

Exit status: 0 both runs finished and the numbers agree within tolerance,
1 otherwise.
"""
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The keyword annotator's words (a copy of tests/cli_common/definemed.rs's).
MEDICAL = ["Patient", "Therapie", "Diagnose", "Medikament", "Symptom",
           "Krankheit", "Klinik", "Behandlung", "Dosis", "Fieber"]
TARGETS = ["demo.summary", "demo.gain", "demo.agree"]


class Annotator(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            user = json.loads(body)["messages"][-1]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            user = ""
        parts = user.split('"""')
        doc = parts[1] if len(parts) > 1 else ""
        label = "medizinisch" if any(w in doc for w in MEDICAL) else "allgemein"
        answer = {"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop",
                  "message": {"role": "assistant", "content": json.dumps({"label": label})}}]}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def run(flow, project, device, cache):
    cmd = [flow, "run", "p.flow", *TARGETS, "--json", "--device", device, "--cache", cache]
    p = subprocess.run(cmd, cwd=project, capture_output=True, text=True)
    fallback = ["the engine"] if "running on the CPU" in p.stderr else []
    for root, _, files in os.walk(os.path.join(cache, "artifacts")):
        if "log.txt" in files:
            text = open(os.path.join(root, "log.txt"), errors="replace").read()
            if "did not open" in text:
                fallback.append(root)
    return p.returncode, p.stderr, fallback


def artifact(flow, project, cache, node):
    p = subprocess.run([flow, "show", "p.flow", node, "--path", "--cache", cache],
                       cwd=project, capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else None


def numbers(flow, project, cache):
    """The figures the model ops computed, by name."""
    out = {}
    def read(node, file, pick):
        path = artifact(flow, project, cache, node)
        if path:
            try:
                out[node + ":" + file] = pick(os.path.join(path, file))
            except (OSError, ValueError, KeyError) as e:
                out[node + ":" + file] = f"unreadable: {e}"
    read("demo.heldout_source", "heldout_loss.json", lambda f: json.load(open(f))["loss"])
    read("demo.mmlux_source", "mcqa.json", lambda f: json.load(open(f))["acc"])
    read("demo.cpt", "losses.jsonl",
         lambda f: [json.loads(l)["loss"] for l in open(f) if l.strip()][-1])
    for i in range(2):
        read(f"demo.heldout_merged[{i}]", "heldout_loss.json", lambda f: json.load(open(f))["loss"])
    return out


def main():
    flow, project = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    server = ThreadingHTTPServer(("127.0.0.1", 18080), Annotator)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    status = 0
    results = {}
    for device in ["cuda", "cpu"]:
        cache = os.path.join(project, f".flow-{device}")
        rc, stderr, fallback = run(flow, project, device, cache)
        print(f"--device {device}: exit {rc}; {stderr.strip().splitlines()[-1] if stderr.strip() else ''}")
        if rc != 0:
            print("\n".join(stderr.splitlines()[-30:]))
            status = 1
        if device == "cuda" and fallback:
            print(f"--device cuda fell back to the CPU in: {', '.join(fallback[:5])}")
            status = 1
        results[device] = numbers(flow, project, cache)
    print("| figure | cuda | cpu | relative difference |\n|---|---|---|---|")
    for key in results["cpu"]:
        a, b = results["cuda"].get(key), results["cpu"][key]
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            rel = abs(a - b) / max(abs(b), 1e-12)
            print(f"| {key} | {a:.6g} | {b:.6g} | {rel:.2e} |")
            # accuracies of a few items may move by one item; losses must agree
            if "loss" in key and rel > 2e-2:
                status = 1
        else:
            print(f"| {key} | {a} | {b} | - |")
            status = 1
    server.shutdown()
    sys.exit(status)


if __name__ == "__main__":
    main()
