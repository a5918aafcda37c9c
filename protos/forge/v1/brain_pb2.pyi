from forge.v1 import jobs_pb2 as _jobs_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StudyRequest(_message.Message):
    __slots__ = ("data", "goal", "model")
    DATA_FIELD_NUMBER: _ClassVar[int]
    GOAL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    data: str
    goal: str
    model: str
    def __init__(self, data: _Optional[str] = ..., goal: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class StudyResponse(_message.Message):
    __slots__ = ("report_json", "length_histogram_png")
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    LENGTH_HISTOGRAM_PNG_FIELD_NUMBER: _ClassVar[int]
    report_json: str
    length_histogram_png: bytes
    def __init__(self, report_json: _Optional[str] = ..., length_histogram_png: _Optional[bytes] = ...) -> None: ...

class SideFile(_message.Message):
    __slots__ = ("name", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    data: str
    def __init__(self, name: _Optional[str] = ..., data: _Optional[str] = ...) -> None: ...

class PrepareRequest(_message.Message):
    __slots__ = ("data", "goal", "seed", "val_fraction", "brain", "no_upload", "script", "side_files", "max_seq_len", "model")
    DATA_FIELD_NUMBER: _ClassVar[int]
    GOAL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    VAL_FRACTION_FIELD_NUMBER: _ClassVar[int]
    BRAIN_FIELD_NUMBER: _ClassVar[int]
    NO_UPLOAD_FIELD_NUMBER: _ClassVar[int]
    SCRIPT_FIELD_NUMBER: _ClassVar[int]
    SIDE_FILES_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LEN_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    data: str
    goal: str
    seed: int
    val_fraction: float
    brain: _jobs_pb2.BrainChoice
    no_upload: bool
    script: str
    side_files: _containers.RepeatedCompositeFieldContainer[SideFile]
    max_seq_len: int
    model: str
    def __init__(self, data: _Optional[str] = ..., goal: _Optional[str] = ..., seed: _Optional[int] = ..., val_fraction: _Optional[float] = ..., brain: _Optional[_Union[_jobs_pb2.BrainChoice, _Mapping]] = ..., no_upload: _Optional[bool] = ..., script: _Optional[str] = ..., side_files: _Optional[_Iterable[_Union[SideFile, _Mapping]]] = ..., max_seq_len: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class DatasetStats(_message.Message):
    __slots__ = ("rows_in", "train_examples", "val_examples", "dropped", "dropped_reasons", "layout", "source_format", "chars_p50", "chars_p95", "chars_max", "tokens_p50", "tokens_p95", "tokens_p99", "languages", "kind")
    class DroppedReasonsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ROWS_IN_FIELD_NUMBER: _ClassVar[int]
    TRAIN_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    VAL_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_REASONS_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    CHARS_P50_FIELD_NUMBER: _ClassVar[int]
    CHARS_P95_FIELD_NUMBER: _ClassVar[int]
    CHARS_MAX_FIELD_NUMBER: _ClassVar[int]
    TOKENS_P50_FIELD_NUMBER: _ClassVar[int]
    TOKENS_P95_FIELD_NUMBER: _ClassVar[int]
    TOKENS_P99_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    rows_in: int
    train_examples: int
    val_examples: int
    dropped: int
    dropped_reasons: _containers.ScalarMap[str, int]
    layout: str
    source_format: str
    chars_p50: int
    chars_p95: int
    chars_max: int
    tokens_p50: int
    tokens_p95: int
    tokens_p99: int
    languages: _containers.RepeatedScalarFieldContainer[str]
    kind: str
    def __init__(self, rows_in: _Optional[int] = ..., train_examples: _Optional[int] = ..., val_examples: _Optional[int] = ..., dropped: _Optional[int] = ..., dropped_reasons: _Optional[_Mapping[str, int]] = ..., layout: _Optional[str] = ..., source_format: _Optional[str] = ..., chars_p50: _Optional[int] = ..., chars_p95: _Optional[int] = ..., chars_max: _Optional[int] = ..., tokens_p50: _Optional[int] = ..., tokens_p95: _Optional[int] = ..., tokens_p99: _Optional[int] = ..., languages: _Optional[_Iterable[str]] = ..., kind: _Optional[str] = ...) -> None: ...

class PrepareResponse(_message.Message):
    __slots__ = ("train_data", "val_data", "stats", "brain", "script", "mapping_json", "sent", "notes", "repairs")
    TRAIN_DATA_FIELD_NUMBER: _ClassVar[int]
    VAL_DATA_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    BRAIN_FIELD_NUMBER: _ClassVar[int]
    SCRIPT_FIELD_NUMBER: _ClassVar[int]
    MAPPING_JSON_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    REPAIRS_FIELD_NUMBER: _ClassVar[int]
    train_data: str
    val_data: str
    stats: DatasetStats
    brain: str
    script: str
    mapping_json: str
    sent: _containers.RepeatedScalarFieldContainer[str]
    notes: _containers.RepeatedScalarFieldContainer[str]
    repairs: int
    def __init__(self, train_data: _Optional[str] = ..., val_data: _Optional[str] = ..., stats: _Optional[_Union[DatasetStats, _Mapping]] = ..., brain: _Optional[str] = ..., script: _Optional[str] = ..., mapping_json: _Optional[str] = ..., sent: _Optional[_Iterable[str]] = ..., notes: _Optional[_Iterable[str]] = ..., repairs: _Optional[int] = ...) -> None: ...

class PlanRequest(_message.Message):
    __slots__ = ("goal", "stats", "overrides", "gpus", "brain")
    GOAL_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    BRAIN_FIELD_NUMBER: _ClassVar[int]
    goal: str
    stats: DatasetStats
    overrides: _jobs_pb2.TrainSpec
    gpus: int
    brain: _jobs_pb2.BrainChoice
    def __init__(self, goal: _Optional[str] = ..., stats: _Optional[_Union[DatasetStats, _Mapping]] = ..., overrides: _Optional[_Union[_jobs_pb2.TrainSpec, _Mapping]] = ..., gpus: _Optional[int] = ..., brain: _Optional[_Union[_jobs_pb2.BrainChoice, _Mapping]] = ...) -> None: ...

class PlanDecision(_message.Message):
    __slots__ = ("field", "value", "reason")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    field: str
    value: str
    reason: str
    def __init__(self, field: _Optional[str] = ..., value: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PlanResponse(_message.Message):
    __slots__ = ("spec", "decisions", "brain", "memory_bytes")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    BRAIN_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    spec: _jobs_pb2.TrainSpec
    decisions: _containers.RepeatedCompositeFieldContainer[PlanDecision]
    brain: str
    memory_bytes: int
    def __init__(self, spec: _Optional[_Union[_jobs_pb2.TrainSpec, _Mapping]] = ..., decisions: _Optional[_Iterable[_Union[PlanDecision, _Mapping]]] = ..., brain: _Optional[str] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class CheckBrainRequest(_message.Message):
    __slots__ = ("brain",)
    BRAIN_FIELD_NUMBER: _ClassVar[int]
    brain: _jobs_pb2.BrainChoice
    def __init__(self, brain: _Optional[_Union[_jobs_pb2.BrainChoice, _Mapping]] = ...) -> None: ...

class CheckBrainResponse(_message.Message):
    __slots__ = ("ok", "brain", "message")
    OK_FIELD_NUMBER: _ClassVar[int]
    BRAIN_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    brain: str
    message: str
    def __init__(self, ok: _Optional[bool] = ..., brain: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class SetBrainKeyRequest(_message.Message):
    __slots__ = ("kind", "key")
    KIND_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    kind: str
    key: str
    def __init__(self, kind: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class SetBrainKeyResponse(_message.Message):
    __slots__ = ("stored",)
    STORED_FIELD_NUMBER: _ClassVar[int]
    stored: bool
    def __init__(self, stored: _Optional[bool] = ...) -> None: ...
