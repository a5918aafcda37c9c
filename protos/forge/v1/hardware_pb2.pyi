from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BuildImageRequest(_message.Message):
    __slots__ = ("arch", "dry_run", "base", "wheelhouse")
    ARCH_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    WHEELHOUSE_FIELD_NUMBER: _ClassVar[int]
    arch: str
    dry_run: bool
    base: str
    wheelhouse: str
    def __init__(self, arch: _Optional[str] = ..., dry_run: _Optional[bool] = ..., base: _Optional[str] = ..., wheelhouse: _Optional[str] = ...) -> None: ...

class BuildImageEvent(_message.Message):
    __slots__ = ("line", "done", "exit_code", "image")
    LINE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    line: str
    done: bool
    exit_code: int
    image: str
    def __init__(self, line: _Optional[str] = ..., done: _Optional[bool] = ..., exit_code: _Optional[int] = ..., image: _Optional[str] = ...) -> None: ...

class ProbeImageRequest(_message.Message):
    __slots__ = ("arch",)
    ARCH_FIELD_NUMBER: _ClassVar[int]
    arch: str
    def __init__(self, arch: _Optional[str] = ...) -> None: ...

class ProbeImageResponse(_message.Message):
    __slots__ = ("image", "arch", "ok", "reason", "report_json", "note")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    image: str
    arch: str
    ok: bool
    reason: str
    report_json: str
    note: str
    def __init__(self, image: _Optional[str] = ..., arch: _Optional[str] = ..., ok: _Optional[bool] = ..., reason: _Optional[str] = ..., report_json: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Gpu(_message.Message):
    __slots__ = ("index", "name", "uuid", "compute_capability", "architecture", "memory_total_bytes", "memory_free_bytes", "utilization_percent", "mig_enabled")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MIG_ENABLED_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    uuid: str
    compute_capability: str
    architecture: str
    memory_total_bytes: int
    memory_free_bytes: int
    utilization_percent: int
    mig_enabled: bool
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., uuid: _Optional[str] = ..., compute_capability: _Optional[str] = ..., architecture: _Optional[str] = ..., memory_total_bytes: _Optional[int] = ..., memory_free_bytes: _Optional[int] = ..., utilization_percent: _Optional[int] = ..., mig_enabled: _Optional[bool] = ...) -> None: ...

class ProbeResponse(_message.Message):
    __slots__ = ("gpus", "driver_version", "cuda_driver_version", "message", "cpu_count", "memory_total_bytes")
    GPUS_FIELD_NUMBER: _ClassVar[int]
    DRIVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    CUDA_DRIVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    gpus: _containers.RepeatedCompositeFieldContainer[Gpu]
    driver_version: str
    cuda_driver_version: str
    message: str
    cpu_count: int
    memory_total_bytes: int
    def __init__(self, gpus: _Optional[_Iterable[_Union[Gpu, _Mapping]]] = ..., driver_version: _Optional[str] = ..., cuda_driver_version: _Optional[str] = ..., message: _Optional[str] = ..., cpu_count: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ...) -> None: ...
