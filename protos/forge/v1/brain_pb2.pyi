from forge.v1 import jobs_pb2 as _jobs_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PrepareRequest(_message.Message):
    __slots__ = ("data", "goal", "seed", "val_fraction")
    DATA_FIELD_NUMBER: _ClassVar[int]
    GOAL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    VAL_FRACTION_FIELD_NUMBER: _ClassVar[int]
    data: str
    goal: str
    seed: int
    val_fraction: float
    def __init__(self, data: _Optional[str] = ..., goal: _Optional[str] = ..., seed: _Optional[int] = ..., val_fraction: _Optional[float] = ...) -> None: ...

class DatasetStats(_message.Message):
    __slots__ = ("rows_in", "train_examples", "val_examples", "dropped", "dropped_reasons", "layout", "source_format", "chars_p50", "chars_p95", "chars_max")
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
    def __init__(self, rows_in: _Optional[int] = ..., train_examples: _Optional[int] = ..., val_examples: _Optional[int] = ..., dropped: _Optional[int] = ..., dropped_reasons: _Optional[_Mapping[str, int]] = ..., layout: _Optional[str] = ..., source_format: _Optional[str] = ..., chars_p50: _Optional[int] = ..., chars_p95: _Optional[int] = ..., chars_max: _Optional[int] = ...) -> None: ...

class PrepareResponse(_message.Message):
    __slots__ = ("train_data", "val_data", "stats", "brain")
    TRAIN_DATA_FIELD_NUMBER: _ClassVar[int]
    VAL_DATA_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    BRAIN_FIELD_NUMBER: _ClassVar[int]
    train_data: str
    val_data: str
    stats: DatasetStats
    brain: str
    def __init__(self, train_data: _Optional[str] = ..., val_data: _Optional[str] = ..., stats: _Optional[_Union[DatasetStats, _Mapping]] = ..., brain: _Optional[str] = ...) -> None: ...

class PlanRequest(_message.Message):
    __slots__ = ("goal", "stats", "overrides", "gpus")
    GOAL_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    goal: str
    stats: DatasetStats
    overrides: _jobs_pb2.TrainSpec
    gpus: int
    def __init__(self, goal: _Optional[str] = ..., stats: _Optional[_Union[DatasetStats, _Mapping]] = ..., overrides: _Optional[_Union[_jobs_pb2.TrainSpec, _Mapping]] = ..., gpus: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("spec", "decisions", "brain")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    BRAIN_FIELD_NUMBER: _ClassVar[int]
    spec: _jobs_pb2.TrainSpec
    decisions: _containers.RepeatedCompositeFieldContainer[PlanDecision]
    brain: str
    def __init__(self, spec: _Optional[_Union[_jobs_pb2.TrainSpec, _Mapping]] = ..., decisions: _Optional[_Iterable[_Union[PlanDecision, _Mapping]]] = ..., brain: _Optional[str] = ...) -> None: ...
