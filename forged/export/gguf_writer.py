"""Forge's HF -> GGUF converter: `convert(hf_dir, out, out_type)`.

Memory stays flat whatever the model size: the tensor table is planned from the safetensors
headers alone, the GGUF header and table are written first, then each tensor is read in blocks of rows,
fixed up and encoded by a worker thread one block ahead of the writer. The output appears only complete: it
is written to `<out>.partial`, fsynced and renamed.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

import numpy as np

from forged.export import gguf_arch, gguf_types
from forged.export.errors import ExportError

Progress = Callable[[str], None]


@dataclass(frozen=True)
class _Source:
    hf_name: str
    gguf_name: str
    file: Path | None  # None: computed from the config (rope factors)
    shape: tuple[int, ...]
    type: gguf_types.TensorType
    dtype: str = "F32"  # as stored: a key of _READERS
    offset: int = 0  # of the data in `file`
    size: int = 0  # bytes in `file`

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def row_bytes(self) -> int:
        return self.size // max(1, self.rows)


def convert(hf_dir: Path, out: Path, out_type: str = "f16", progress: Progress | None = None) -> Path:
    """Write `out` as a GGUF of the merged model in `hf_dir`; returns `out`.

    Raises ExportError (one line: what is wrong and what to do) for an unsupported architecture, tokenizer
    or output type; nothing is left at `out` or `out.partial` when it fails.
    """
    hf_dir, out = Path(hf_dir), Path(out)
    out_type = out_type.lower()
    say = progress or (lambda _msg: None)
    if out_type in gguf_types.K_QUANTS:
        from forged.export.kquant import convert_k_quant

        return convert_k_quant(hf_dir, out, out_type, say)
    if out_type not in gguf_types.NATIVE:
        known = ", ".join(gguf_types.NATIVE + gguf_types.K_QUANTS)
        raise ExportError(f"unknown GGUF output type {out_type!r}; choose one of: {known}")
    config = _read_config(hf_dir)
    plan = gguf_arch.plan(config)
    partial = out.with_name(out.name + ".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        _write(hf_dir, partial, plan, out_type, say)
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    say(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {out_type})")
    return out


def sanitized_name(hf_dir: Path, config: dict[str, Any]) -> str:
    """general.name: a display name without paths, user names or control characters."""
    raw = str(config.get("_name_or_path") or hf_dir.name).rstrip("/")
    raw = raw.split("/")[-1] if raw.startswith(("/", ".", "~")) else raw
    clean = re.sub(r"[^A-Za-z0-9._+/ -]+", "-", raw).strip(" -")[:96] or "forge-model"
    if config.get("model_type") == "phi3" and not re.search(r"phi-?3", clean, re.IGNORECASE):
        # llama.cpp gives Phi-3's special tokens their rstrip behaviour only when general.name says phi3
        clean += "-phi3"
    return clean


def _read_config(hf_dir: Path) -> dict[str, Any]:
    path = hf_dir / "config.json"
    if not path.is_file():
        raise ExportError(f"{hf_dir} is not a Hugging Face model directory (no config.json)")
    config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return config


def _weight_files(hf_dir: Path) -> list[Path]:
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [hf_dir / n for n in names]
    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        raise ExportError(
            f"{hf_dir} has no .safetensors weights; save the merged model with safe_serialization=True"
        )
    return files


def _plan_tensors(hf_dir: Path, plan: gguf_arch.ArchPlan, out_type: str) -> list[_Source]:
    import gguf
    from gguf.utility import SafetensorsLocal

    arch_enum = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == plan.arch)
    names = gguf.get_tensor_name_map(arch_enum, int(plan.config["num_hidden_layers"]))
    sources: list[_Source] = []
    for file in _weight_files(hf_dir):
        for hf_name, info in SafetensorsLocal(file).tensors.items():
            if plan.skips(hf_name):
                continue
            if info.dtype not in _READERS:
                raise ExportError(
                    f"tensor {hf_name} is {info.dtype}; Forge exports F32, F16 and BF16 weights"
                )
            gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise ExportError(
                    f"tensor {hf_name} has no GGUF name for {plan.arch}; the checkpoint is not a plain "
                    f"{plan.arch} model (merge LoRA adapters before exporting)"
                )
            shape = tuple(info.shape)
            t = gguf_types.choose(gguf_name, shape, out_type)
            r = info.data_range
            sources.append(_Source(hf_name, gguf_name, file, shape, t, info.dtype, r.offset, r.size))
    for gguf_name, data in plan.extra_tensors.items():
        shape = tuple(data.shape)
        sources.append(
            _Source(gguf_name, gguf_name, None, shape, gguf_types.choose(gguf_name, shape, out_type))
        )
    return sources


def _write(hf_dir: Path, path: Path, plan: gguf_arch.ArchPlan, out_type: str, say: Progress) -> None:
    import gguf

    from forged.export.gguf_vocab import add_tokenizer

    sources = _plan_tensors(hf_dir, plan, out_type)
    n_vocab = int(plan.config["vocab_size"])
    writer = gguf.GGUFWriter(path, plan.arch)
    try:
        writer.add_name(sanitized_name(hf_dir, plan.config))
        writer.add_file_type(gguf_types.file_type(out_type))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        plan.add_hparams(writer)
        add_tokenizer(writer, hf_dir, n_vocab)
        for s in sources:
            # the table is written before any data, so every tensor's size must be known from headers alone
            writer.add_tensor_info(
                s.gguf_name, s.shape, np.dtype(np.float32), s.type.nbytes, raw_dtype=s.type.ggml
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        total = sum(s.type.nbytes for s in sources)
        say(f"writing {len(sources)} tensors ({total / 2**20:.0f} MiB)")
        assert writer.fout is not None
        fout = writer.fout[0]
        fout.flush()
        _write_data(fout.fileno(), fout.tell(), writer.data_alignment, sources, plan, say)
        os.fsync(fout.fileno())
    finally:
        writer.close()


def _write_data(
    fd: int, pos: int, align: int, sources: list[_Source], plan: gguf_arch.ArchPlan, say: Progress
) -> None:
    """The data section from byte `pos` of `fd` on. A worker thread reads and encodes the next block while
    this one writes the current (file I/O and numpy's casts release the GIL), so the slower of the two sets
    the pace, not their sum. Writes go by explicit offset (pwrite) so the Python file object's buffer and
    position never matter."""
    import gguf

    pos = _pad(fd, pos, align)
    written = 0
    for i, piece in _ahead(_pieces(sources, plan)):
        s = sources[i]
        if piece is None:  # end of tensor i
            if written != s.type.nbytes:
                raise ExportError(f"tensor {s.hf_name}: wrote {written} bytes, expected {s.type.nbytes}")
            pos = _pad(fd, pos, align)
            written = 0
            say(f"[{i + 1}/{len(sources)}] {s.gguf_name} {gguf.GGMLQuantizationType(s.type.ggml).name}")
            continue
        n = _copy_range(piece, fd, pos) if isinstance(piece, _Span) else _pwrite_all(fd, piece, pos)
        pos += n
        written += n


@dataclass(frozen=True)
class _Span:
    """Bytes of a source file that go to the output unchanged."""

    file: Path
    offset: int
    size: int


_Piece = np.ndarray | _Span | None  # None ends a tensor


def _pieces(sources: list[_Source], plan: gguf_arch.ArchPlan) -> Iterator[tuple[int, _Piece]]:
    for i, s in enumerate(sources):
        for piece in _tensor_pieces(s, plan):
            yield i, piece
        yield i, None


def _tensor_pieces(s: _Source, plan: gguf_arch.ArchPlan) -> Iterator[np.ndarray | _Span]:
    """The tensor's GGUF bytes: blocks of rows read with plain reads rather than a memory map, so neither
    the heap nor the resident file pages grow beyond a block or two, whatever the model size.

    Each block is encoded in cache-sized chunks of rows (gguf's quantizers run several times faster on
    chunks that stay in cache). A 16-bit source to a 16-bit type goes through a lookup table built with the
    reference encoder (exact, and several times faster than the float32 round trip); where that table is
    the identity the bytes are copied by the kernel. Tensors whose fix-up changes values (Gemma's norms:
    vectors) are fixed whole in float32; llama's q/k permutation only reorders rows, so it is applied to
    the encoded rows."""
    if s.file is None:
        yield gguf_types.encode(plan.extra_tensors[s.hf_name], s.type).view(np.uint8).reshape(-1)
        return
    table = _table16(s.dtype, s.type.ggml) if s.dtype in _TABLE_DTYPES else None
    order = _row_order(plan, s) if plan.changes(s.hf_name) else None
    if plan.changes(s.hf_name) and order is None:
        with open(s.file, "rb") as f:
            whole = _read(f, s, 0, s.rows, np.empty(s.size, dtype=np.uint8))
        yield _encode(plan.fix(s.hf_name, _decode(whole, s)), s.type)
        return
    if order is None and _is_copy(s, table):
        yield _Span(s.file, s.offset, s.size)
        return
    step = s.rows if order is not None else max(1, _BLOCK_BYTES // s.row_bytes)
    out_row = s.type.nbytes // s.rows
    chunk = max(1, _CHUNK_BYTES // s.row_bytes)
    # read a chunk at a time into one buffer, so the source bytes are still in cache when encoded
    buf = np.empty(chunk * s.row_bytes, dtype=np.uint8)
    with open(s.file, "rb") as f:
        for r0 in range(0, s.rows, step):
            n = min(step, s.rows - r0)
            out = np.empty(n * out_row, dtype=np.uint8)
            for c0 in range(0, n, chunk):
                c1 = min(n, c0 + chunk)
                src = _read(f, s, r0 + c0, c1 - c0, buf)
                dst = out[c0 * out_row : c1 * out_row]
                if table is not None:
                    np.take(table, src.view(np.uint16), out=dst.view(np.uint16), mode="clip")
                else:
                    dst[:] = _encode(_decode(src, s), s.type)
            yield out if order is None else out.reshape(n, out_row)[order].reshape(-1)


def _read(f: BinaryIO, s: _Source, r0: int, n: int, buf: np.ndarray) -> np.ndarray:
    """Rows r0 .. r0+n of the tensor's stored bytes, read into the front of `buf`."""
    raw = buf[: n * s.row_bytes]
    view, offset = memoryview(raw), s.offset + r0 * s.row_bytes
    while view:
        got = os.preadv(f.fileno(), [view], offset)
        if got == 0:
            raise ExportError(f"{s.file} ends inside tensor {s.hf_name}; the checkpoint is truncated")
        view, offset = view[got:], offset + got
    return raw


def _decode(raw: np.ndarray, s: _Source) -> np.ndarray:
    """Whole rows of stored bytes -> float32 in the tensor's shape."""
    data = _READERS[s.dtype](raw)
    return data.reshape((-1, *s.shape[1:]) if len(s.shape) > 1 else (-1,))


def _encode(data: np.ndarray, t: gguf_types.TensorType) -> np.ndarray:
    return gguf_types.encode(data, t).view(np.uint8).reshape(-1)


def _row_order(plan: gguf_arch.ArchPlan, s: _Source) -> np.ndarray | None:
    """The row order plan.fix() gives this tensor when all it does is move whole rows, found by fixing the
    row numbers themselves; None when it changes values. Reordering rows commutes with any row-wise
    encoding, so such a tensor is encoded from its stored bytes and its encoded rows are reordered."""
    if len(s.shape) != 2:
        return None
    rows = np.arange(s.rows, dtype=np.float32).reshape(s.rows, 1)
    fixed = plan.fix(s.hf_name, rows.copy())
    if fixed.shape != rows.shape or not np.array_equal(np.sort(fixed, axis=0), rows):
        return None
    return fixed[:, 0].astype(np.intp)


def _pad(fd: int, pos: int, align: int) -> int:
    pad = -pos % align
    return pos + (_pwrite_all(fd, np.zeros(pad, dtype=np.uint8), pos) if pad else 0)


def _pwrite_all(fd: int, data: np.ndarray, pos: int) -> int:
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view, pos)
        view, pos = view[n:], pos + n
    return data.nbytes


def _copy_range(span: _Span, fd: int, pos: int) -> int:
    """Copies the span inside the kernel (copy_file_range: no trip through this process's memory), or by
    bounded blocks where the kernel or filesystem cannot."""
    with open(span.file, "rb") as f:
        done = 0
        copy = getattr(os, "copy_file_range", None)
        while copy is not None and done < span.size:
            try:
                n = copy(f.fileno(), fd, span.size - done, span.offset + done, pos + done)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                break
            if n == 0:
                raise ExportError(f"{span.file} ends inside a tensor; the checkpoint is truncated")
            done += n
        while done < span.size:
            block = os.pread(f.fileno(), min(_BLOCK_BYTES, span.size - done), span.offset + done)
            if not block:
                raise ExportError(f"{span.file} ends inside a tensor; the checkpoint is truncated")
            done += _pwrite_all(fd, np.frombuffer(block, dtype=np.uint8), pos + done)
    return span.size


_T = TypeVar("_T")


def _ahead(items: Iterator[_T]) -> Iterator[_T]:
    """Yields `items` while a worker thread produces the next one: one block of look-ahead, so memory stays
    at two blocks. An exception in the worker is raised here, in order."""
    done = object()
    with ThreadPoolExecutor(1, thread_name_prefix="gguf-encode") as worker:
        future = worker.submit(next, items, done)
        while (item := future.result()) is not done:
            future = worker.submit(next, items, done)
            yield cast(_T, item)


@functools.cache
def _table16(dtype: str, ggml: int) -> np.ndarray | None:
    """The GGUF code of every 16-bit source code when the output type is 16-bit too, made by the reference
    path itself (decode to float32, gguf's encoder), so a lookup in it is bit-identical to that path."""
    import gguf

    if gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml)] != (1, 2):
        return None
    codes = np.arange(2**16, dtype=np.uint16).view(np.uint8)
    with np.errstate(over="ignore"):  # bf16 beyond f16's range becomes inf, as in the reference path
        table = gguf_types.encode(_READERS[dtype](codes), gguf_types.TensorType(ggml, (2**16,), 2**17))
    return table.view(np.uint16).reshape(-1)


def _is_copy(s: _Source, table: np.ndarray | None) -> bool:
    """Whether the reference path would reproduce the stored bytes (f32 -> F32, f16 -> F16)."""
    import gguf

    if table is not None:
        return bool(np.array_equal(table, np.arange(table.size, dtype=table.dtype)))
    return s.dtype == "F32" and s.type.ggml == gguf.GGMLQuantizationType.F32


# source bytes read per block: large enough for few syscalls, small enough to be invisible in RSS
_BLOCK_BYTES = 16 * 2**20
# source bytes encoded at a time: numpy's passes over a chunk then stay in L2
_CHUNK_BYTES = 2**19


def _bf16(raw: np.ndarray) -> np.ndarray:
    # bfloat16 is the top half of a float32; numpy has no bf16 dtype
    out = raw.view(np.uint16).astype(np.uint32)
    out <<= 16
    return out.view(np.float32)


_READERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "F32": lambda raw: raw.view(np.float32),
    "F16": lambda raw: raw.view(np.float16).astype(np.float32),
    "BF16": _bf16,
}
_TABLE_DTYPES = ("F16", "BF16")
