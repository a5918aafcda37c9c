"""The daemon-side key store and the choice of brain."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from fakes import gemini as G
from fakes.gemini import GeminiFake
from forge.v1 import jobs_pb2

from forged.brain.llm import BrainDefaults, BrainSelector, BrainUnavailable
from forged.brain.llm.keys import KeyStore, KeyStoreError
from forged.brain.llm.retry import RetryPolicy
from forged.brain.llm.select import BrainChoiceError


def test_a_stored_key_is_private_and_replaces_the_old_one_atomically(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys", environ={})
    assert keys.set("ana", "gemini", "  AIza-first ")
    assert keys.set("ana", "gemini", "AIza-second")

    assert keys.get("ana", "gemini") == ("AIza-second", "the key stored with `forgectl login`")
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    files = list((tmp_path / "keys").iterdir())
    assert [f.name for f in files] == ["ana.json"]  # no temp file left behind
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert keys.get("bob", "gemini") is None  # per user


def test_an_empty_key_forgets_and_the_environment_is_the_fallback(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys", environ={"GOOGLE_API_KEY": "from-env"})
    keys.set("ana", "gemini", "stored")
    assert not keys.set("ana", "gemini", "")
    assert keys.get("ana", "gemini") == ("from-env", "GOOGLE_API_KEY in forged's environment")
    assert not (tmp_path / "keys" / "ana.json").exists()


def test_a_user_name_cannot_escape_the_key_directory(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys", environ={})
    keys.set("../../etc/evil", "gemini", "k")
    assert keys.get("../../etc/evil", "gemini") is not None
    assert [p.parent for p in tmp_path.rglob("*.json")] == [tmp_path / "keys"]


@pytest.mark.parametrize(("kind", "key", "says"), [("openai", "k", "no brain"), ("gemini", "a b", "paste")])
def test_bad_keys_are_refused_with_one_line(tmp_path: Path, kind: str, key: str, says: str) -> None:
    with pytest.raises(KeyStoreError, match=says):
        KeyStore(tmp_path, environ={}).set("ana", kind, key)


def test_selection_honours_the_choice_then_the_daemon_default(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path, environ={})
    defaults = BrainDefaults(kind="local", model="llama3.2:3b", endpoint="http://127.0.0.1:9/v1")
    selector = BrainSelector(keys, defaults)

    default = selector.brain_for(None, "ana")
    assert default is not None and (default.name, default.model, default.address) == (
        "local", "llama3.2:3b", "http://127.0.0.1:9/v1"
    )  # fmt: skip
    assert selector.brain_for(jobs_pb2.BrainChoice(kind="offline"), "ana") is None
    with pytest.raises(BrainUnavailable, match="forgectl login"):
        selector.brain_for(jobs_pb2.BrainChoice(kind="gemini"), "ana")
    keys.set("ana", "gemini", "AIza-ana")
    chosen = selector.brain_for(jobs_pb2.BrainChoice(kind="gemini", model="gemini-2.5-pro"), "ana")
    assert chosen is not None and (chosen.name, chosen.model) == ("gemini", "gemini-2.5-pro")


def test_a_chosen_endpoint_must_be_forgeds_own_or_allowed(tmp_path: Path) -> None:
    def local(endpoint: str) -> jobs_pb2.BrainChoice:
        return jobs_pb2.BrainChoice(kind="local", model="m", endpoint=endpoint)

    keys = KeyStore(tmp_path, environ={})
    plain = BrainSelector(keys, BrainDefaults())
    ollama = plain.brain_for(local("http://127.0.0.1:11434/v1/"), "ana")  # forged's default: Ollama's
    assert ollama is not None and ollama.address == "http://127.0.0.1:11434/v1"
    with pytest.raises(BrainChoiceError, match="forged --allow-brain-endpoint URL"):
        plain.brain_for(local("http://169.254.169.254/latest"), "ana")

    listed = BrainSelector(keys, BrainDefaults(allowed_endpoints=frozenset({"http://gpu-box:8000/v1"})))
    assert listed.brain_for(local("http://gpu-box:8000/v1"), "ana") is not None
    with pytest.raises(BrainChoiceError):
        listed.brain_for(local("http://gpu-box:8001/v1"), "ana")
    anything = BrainSelector(keys, BrainDefaults(allowed_endpoints=frozenset({"*"})))
    assert anything.brain_for(local("http://127.0.0.1:9/v1"), "ana") is not None


def test_check_makes_one_real_request_and_reports_in_one_line(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path, environ={})
    keys.set("ana", "gemini", "AIza-ana")
    with GeminiFake() as fake:
        selector = BrainSelector(keys, BrainDefaults(gemini_url=fake.url, policy=RetryPolicy(attempts=1)))
        fake.answer(G.text('{"ok": true}'))
        ok, brain, message = selector.check(jobs_pb2.BrainChoice(kind="gemini"), "ana")
        assert (ok, brain) == (True, "gemini") and "gemini-2.5-flash" in message
        assert fake.received[0].headers["x-goog-api-key"] == "AIza-ana"

        fake.answer(G.bad_key())
        ok, brain, message = selector.check(jobs_pb2.BrainChoice(kind="gemini"), "ana")
        assert (ok, brain) == (False, "gemini") and "forgectl login" in message and "\n" not in message

    assert selector.check(None, "ana") == (True, "offline", "the offline rules: no network and no key needed")
