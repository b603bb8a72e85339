#!/usr/bin/env python3
"""After manual-check.sh: every request the traced client sent after gotel attached arrived with
exactly one traceparent naming one of gotel's CLIENT spans (the preset one: only its own),
bodies and headers intact, no client request failed. Exit 1 otherwise."""
import json, os, sys
d = sys.argv[1] if len(sys.argv) > 1 else "/tmp/gotel-propagation"
PRESET = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
client_spans = {}
for line in open(f"{d}/spans.jsonl"):
    line = line.strip()
    if not line.startswith("{"):
        continue
    req = json.loads(line)
    for rs in req.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                kind = s.get("kind")
                if kind in (3, "SPAN_KIND_CLIENT"):
                    client_spans[s["spanId"].lower()] = (s["traceId"].lower(), s)
server = [json.loads(l) for l in open(f"{d}/server.jsonl") if l.strip()]
client = [json.loads(l) for l in open(f"{d}/client.jsonl") if l.strip()]
bad = 0
before = [r for r in server if r.get("round") == "0"]
server = [r for r in server if r.get("round") != "0"]
for r in before:
    if (r["traceparent"] or []) not in ([], [PRESET]):
        bad += 1
        print("BAD (before attach)", r)
for r in server:
    tps = r["traceparent"] or []
    if r["path"] == "/preset":
        ok = tps == [PRESET]
    else:
        ok = len(tps) == 1 and tps[0].split("-")[2] in client_spans and client_spans[tps[0].split("-")[2]][0] == tps[0].split("-")[1]
    ok = ok and (r["path"] != "/post" or (r["body_len"] == 20480 and r["content_length"] == 20480))
    ok = ok and (r["path"] != "/big" or r["big_header_len"] == 6144)
    if not ok:
        bad += 1
        print("BAD", r)
if os.path.exists(f"{d}/untraced-server.jsonl"):
    for r in (json.loads(l) for l in open(f"{d}/untraced-server.jsonl") if l.strip()):
        if (r["traceparent"] or []) not in ([], [PRESET]):
            bad += 1
            print("BAD (untraced process changed)", r)
failed = [c for c in client if c["status"] != 200 or c.get("error") or not c["body_intact"]]
print(f"before attach: {len(before)}, server requests: {len(server)}, client spans: {len(client_spans)}, bad: {bad}, failed client requests: {len(failed)}, reused: {sum(c['reused'] for c in client)}")
sys.exit(1 if bad or failed or not server else 0)
