"""A hostile processing script sent to a real forged: contained, reported in one line, daemon healthy."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from forge.v1 import brain_pb2
from harness import EXAMPLE_CSV, Forged

from forged.brain import sandbox

pytestmark = pytest.mark.skipif(sandbox.bwrap() is None, reason=sandbox.INSTALL_HINT)


def hostile(state_dir: Path) -> str:
    # If the state directory were readable the script would succeed and hand its database back as data.
    return f"""
import json, os, socket
try:
    socket.create_connection(("127.0.0.1", 22), timeout=2)
except OSError:
    pass
leaked = []
for root, _, files in os.walk({str(state_dir)!r}):
    for f in files:
        try:
            leaked.append(open(os.path.join(root, f), "rb").read(200).hex())
        except OSError:
            pass
if leaked:
    with open("/out/prepared.jsonl", "w") as out:
        for item in leaked:
            out.write(json.dumps({{"text": item}}) + "\\n")
    raise SystemExit(0)
while True:
    os.fork()
"""


def test_hostile_script_is_contained_and_the_daemon_serves_on(forged: Forged) -> None:
    digest = forged.upload(EXAMPLE_CSV)
    with pytest.raises(grpc.RpcError) as info:
        forged.brain.Prepare(
            brain_pb2.PrepareRequest(data=digest, goal="support bot", script=hostile(forged.state_dir)),
            timeout=120,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    message = info.value.details()
    assert message.startswith("your processing script failed: too many processes"), message
    assert "\n" not in message

    assert forged.healthy()
    prep = forged.brain.Prepare(brain_pb2.PrepareRequest(data=digest, goal="support bot", seed=1), timeout=60)
    assert prep.brain == "offline" and prep.train_data and list(prep.sent) == [] and prep.repairs == 0
    assert prep.script.startswith("#!/usr/bin/env python3") and '"layout": "flat"' in prep.mapping_json
    assert prep.stats.kind == "chat" and prep.stats.train_examples > 0
    assert prep.stats.tokens_p50 > 0  # counted with the default (tiny) model's tokenizer
    # The request's model chooses the tokenizer: one that is not on this machine leaves the counts unmeasured.
    unknown = forged.brain.Prepare(
        brain_pb2.PrepareRequest(data=digest, goal="support bot", seed=1, model="nobody/not-cached"),
        timeout=60,
    )
    assert unknown.stats.tokens_p50 == 0 and unknown.stats.train_examples == prep.stats.train_examples
