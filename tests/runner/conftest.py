"""Fixtures for the runner tests (helpers live in runner_testlib)."""

from __future__ import annotations

from pathlib import Path

import pytest
from runner_testlib import RunResult, run_runner, write_spec
from transformers import PreTrainedTokenizerBase

from runner_image.data import ensure_pad_token
from runner_image.tiny import load_tiny_tokenizer


@pytest.fixture(scope="session")
def raw_tiny_tokenizer() -> PreTrainedTokenizerBase:
    """The shipped tokenizer exactly as loaded (pad == eos, as SmolLM2 ships it). Do not modify."""
    return load_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerBase:
    """The tokenizer as the runner uses it: with a pad token distinct from EOS. Do not modify."""
    tokenizer = load_tiny_tokenizer()
    ensure_pad_token(tokenizer)
    return tokenizer


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunResult]:
    """One uninterrupted CLI run of the standard spec: the baseline the resume tests compare against."""
    workspace = tmp_path_factory.mktemp("reference")
    spec = write_spec(workspace)
    return workspace, run_runner("run", "--spec", str(spec), cwd=workspace)
