"""Choosing a brain and giving it a key (`forgectl init`, `forgectl login`): the key goes to the daemon, which
stores it 0600; this machine keeps no copy."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import click
import grpc
from forge.v1 import brain_pb2, jobs_pb2

from forgectl.client import Client, ForgeError, rpc_code
from forgectl.project import BRAIN_KINDS, OLLAMA_ENDPOINT, BrainSettings

# Where a key may already be, in the order the vendors' own tools read them.
KEY_ENV: dict[str, tuple[str, ...]] = {
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "local": ("OPENAI_API_KEY",),
}


def settings(kind: str, model: str | None, endpoint: str | None) -> BrainSettings:
    """The brain a user named on the command line, checked before anything is created."""
    if kind not in BRAIN_KINDS:
        raise ForgeError(f"unknown brain {kind!r}: use {', '.join(BRAIN_KINDS)}")
    if endpoint and kind != "local":
        raise ForgeError(f"--endpoint is for --brain local (an OpenAI-compatible URL), not {kind}")
    if kind == "offline" and model:
        raise ForgeError(
            "--brain-model needs --brain gemini or local: the offline brain is rules, not a model"
        )
    url = (endpoint or (OLLAMA_ENDPOINT if kind == "local" else "")).strip()
    if url and not url.startswith(("http://", "https://")):
        raise ForgeError(f"--endpoint {url!r} is not a URL: give one like {OLLAMA_ENDPOINT}")
    return BrainSettings(kind=kind, model=(model or "").strip(), endpoint=url)  # type: ignore[arg-type]


def choice(brain: BrainSettings) -> jobs_pb2.BrainChoice:
    return jobs_pb2.BrainChoice(kind=brain.kind, model=brain.model, endpoint=brain.endpoint)


def read_key(kind: str, env: Mapping[str, str] | None = None) -> str:
    """The key from the environment, else typed at a hidden prompt (never echoed, never in shell history)."""
    env = os.environ if env is None else env
    names = KEY_ENV.get(kind, ())
    for name in names:
        if env.get(name, "").strip():
            return env[name].strip()
    if not sys.stdin.isatty():
        raise ForgeError(
            f"no {kind} API key: set {' or '.join(names)}, or run this in a terminal to type it (hidden)"
        )
    key = str(click.prompt(f"{kind} API key (hidden)", hide_input=True, default="", show_default=False))
    if not key.strip():
        raise ForgeError(f"no {kind} API key given: nothing was stored")
    return key.strip()


@dataclass(frozen=True)
class Outcome:
    """What the daemon said; ok None means it could not say (an older forged without the RPC)."""

    ok: bool | None
    message: str


def _unimplemented(exc: grpc.RpcError) -> bool:
    return rpc_code(exc) == grpc.StatusCode.UNIMPLEMENTED


def store_key(client: Client, kind: str, key: str) -> Outcome:
    try:
        reply = client.brain.SetBrainKey(brain_pb2.SetBrainKeyRequest(kind=kind, key=key), timeout=30)
    except grpc.RpcError as exc:
        if not _unimplemented(exc):
            raise
        return Outcome(
            None, "this forged cannot store brain keys yet (no Brain.SetBrainKey): the key was not saved"
        )
    if not reply.stored:
        return Outcome(False, f"forged did not store the {kind} key")
    return Outcome(True, f"stored the {kind} key with forged (mode 0600 on its side; none kept here)")


def check(client: Client, brain: BrainSettings) -> Outcome:
    try:
        reply = client.brain.CheckBrain(brain_pb2.CheckBrainRequest(brain=choice(brain)), timeout=60)
    except grpc.RpcError as exc:
        if not _unimplemented(exc):
            raise
        return Outcome(None, "cannot check: this forged does not answer Brain.CheckBrain yet")
    label = reply.brain or brain.kind
    return Outcome(reply.ok, f"{label}: {reply.message}" if reply.message else label)
