"""The converter's contract beyond parity: what it refuses, what it leaves behind, what metadata it writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from forged.export import kquant
from forged.export.errors import ExportError
from forged.export.gguf_writer import convert, sanitized_name


def _copy_with_config(src: Path, dst: Path, **changes: object) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text()) | changes
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_unknown_architecture_is_refused_naming_the_supported_ones(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    hf_dir = _copy_with_config(tiny_models["smollm"], tmp_path / "gpt2", architectures=["GPT2LMHeadModel"])
    with pytest.raises(ExportError) as err:
        convert(hf_dir, tmp_path / "out.gguf")
    message = str(err.value)
    assert "GPT2LMHeadModel" in message and "LlamaForCausalLM" in message and "Qwen2ForCausalLM" in message
    assert "\n" not in message
    assert not list(tmp_path.glob("out.gguf*"))


def test_unknown_output_type_is_refused(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"unknown GGUF output type 'q3_0'.*q8_0"):
        convert(tiny_models["smollm"], tmp_path / "out.gguf", "q3_0")


@pytest.mark.skipif(
    kquant.quantizer_available() is not None, reason="a llama.cpp quantizer is installed here"
)
def test_k_quant_without_a_quantizer_says_what_to_install(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match=r"Q4_K_M needs llama\.cpp's quantizer: install llama-cpp-python"):
        convert(tiny_models["smollm"], tmp_path / "out.gguf", "q4_k_m")
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(kquant.quantizer_available() is None, reason="no llama.cpp quantizer installed here")
def test_k_quant_produces_a_file_llama_cpp_loads(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from forged.export.llamacpp import LlamaCpp

    out = convert(tiny_models["smollm"], tmp_path / "out.gguf", "q4_k_m")
    with LlamaCpp(out, n_ctx=64) as llama:
        assert llama.tokenize("hello", add_special=False)


def test_metadata_carries_the_chat_template_and_stop_tokens(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    import gguf
    from transformers import AutoTokenizer

    hf_dir = _copy_with_config(
        tiny_models["smollm"], tmp_path / "m", _name_or_path="/home/alice/runs/x/my model"
    )
    out = convert(hf_dir, tmp_path / "m.gguf", "q8_0")
    fields = gguf.GGUFReader(out).fields
    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))

    def value(key: str) -> object:
        return fields[key].contents()

    assert value(gguf.Keys.Tokenizer.CHAT_TEMPLATE) == tokenizer.chat_template
    assert value(gguf.Keys.General.NAME) == "my model"
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert value(gguf.Keys.Tokenizer.EOT_ID) == im_end
    assert value(gguf.Keys.Tokenizer.EOS_ID) == tokenizer.eos_token_id
    assert (
        len(value(gguf.Keys.Tokenizer.LIST)) == json.loads((hf_dir / "config.json").read_text())["vocab_size"]
    )
    assert value(gguf.Keys.General.FILE_TYPE) == gguf.LlamaFileType.MOSTLY_Q8_0


@pytest.mark.parametrize(
    ("name_or_path", "expected"),
    [
        ("/home/alice/runs/x/my-model", "my-model"),
        ("HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-135M"),
    ],
)
def test_general_name_holds_no_local_path(name_or_path: str, expected: str) -> None:
    assert sanitized_name(Path("/tmp/whatever"), {"_name_or_path": name_or_path}) == expected
