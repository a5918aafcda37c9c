import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState

class TrainSpec(_message.Message):
    __slots__ = ("model", "train_data", "val_data", "epochs", "max_steps", "micro_batch_size", "grad_accum", "learning_rate", "lora_rank", "lora_alpha", "lora_dropout", "max_seq_len", "seed", "checkpoint_every", "eval_every", "warmup_ratio", "goal", "export", "gradient_checkpointing", "method", "seq_cap_percentile", "no_fp16")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TRAIN_DATA_FIELD_NUMBER: _ClassVar[int]
    VAL_DATA_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GRAD_ACCUM_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    LORA_RANK_FIELD_NUMBER: _ClassVar[int]
    LORA_ALPHA_FIELD_NUMBER: _ClassVar[int]
    LORA_DROPOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LEN_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_EVERY_FIELD_NUMBER: _ClassVar[int]
    EVAL_EVERY_FIELD_NUMBER: _ClassVar[int]
    WARMUP_RATIO_FIELD_NUMBER: _ClassVar[int]
    GOAL_FIELD_NUMBER: _ClassVar[int]
    EXPORT_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CHECKPOINTING_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SEQ_CAP_PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    NO_FP16_FIELD_NUMBER: _ClassVar[int]
    model: str
    train_data: str
    val_data: str
    epochs: int
    max_steps: int
    micro_batch_size: int
    grad_accum: int
    learning_rate: float
    lora_rank: int
    lora_alpha: int
    lora_dropout: float
    max_seq_len: int
    seed: int
    checkpoint_every: int
    eval_every: int
    warmup_ratio: float
    goal: str
    export: bool
    gradient_checkpointing: bool
    method: str
    seq_cap_percentile: float
    no_fp16: bool
    def __init__(self, model: _Optional[str] = ..., train_data: _Optional[str] = ..., val_data: _Optional[str] = ..., epochs: _Optional[int] = ..., max_steps: _Optional[int] = ..., micro_batch_size: _Optional[int] = ..., grad_accum: _Optional[int] = ..., learning_rate: _Optional[float] = ..., lora_rank: _Optional[int] = ..., lora_alpha: _Optional[int] = ..., lora_dropout: _Optional[float] = ..., max_seq_len: _Optional[int] = ..., seed: _Optional[int] = ..., checkpoint_every: _Optional[int] = ..., eval_every: _Optional[int] = ..., warmup_ratio: _Optional[float] = ..., goal: _Optional[str] = ..., export: _Optional[bool] = ..., gradient_checkpointing: _Optional[bool] = ..., method: _Optional[str] = ..., seq_cap_percentile: _Optional[float] = ..., no_fp16: _Optional[bool] = ...) -> None: ...

class ExportSpec(_message.Message):
    __slots__ = ("source_job", "quant", "ollama_name", "no_ollama", "register_only", "skip_verify")
    SOURCE_JOB_FIELD_NUMBER: _ClassVar[int]
    QUANT_FIELD_NUMBER: _ClassVar[int]
    OLLAMA_NAME_FIELD_NUMBER: _ClassVar[int]
    NO_OLLAMA_FIELD_NUMBER: _ClassVar[int]
    REGISTER_ONLY_FIELD_NUMBER: _ClassVar[int]
    SKIP_VERIFY_FIELD_NUMBER: _ClassVar[int]
    source_job: str
    quant: str
    ollama_name: str
    no_ollama: bool
    register_only: bool
    skip_verify: bool
    def __init__(self, source_job: _Optional[str] = ..., quant: _Optional[str] = ..., ollama_name: _Optional[str] = ..., no_ollama: _Optional[bool] = ..., register_only: _Optional[bool] = ..., skip_verify: _Optional[bool] = ...) -> None: ...

class BrainChoice(_message.Message):
    __slots__ = ("kind", "model", "endpoint")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    model: str
    endpoint: str
    def __init__(self, kind: _Optional[str] = ..., model: _Optional[str] = ..., endpoint: _Optional[str] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("name", "priority", "gpus", "project", "brain", "memory_bytes", "train", "export")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    BRAIN_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    EXPORT_FIELD_NUMBER: _ClassVar[int]
    name: str
    priority: int
    gpus: int
    project: str
    brain: BrainChoice
    memory_bytes: int
    train: TrainSpec
    export: ExportSpec
    def __init__(self, name: _Optional[str] = ..., priority: _Optional[int] = ..., gpus: _Optional[int] = ..., project: _Optional[str] = ..., brain: _Optional[_Union[BrainChoice, _Mapping]] = ..., memory_bytes: _Optional[int] = ..., train: _Optional[_Union[TrainSpec, _Mapping]] = ..., export: _Optional[_Union[ExportSpec, _Mapping]] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("number", "started_at", "ended_at", "outcome", "reason", "resumed_from_step")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    number: int
    started_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    outcome: str
    reason: str
    resumed_from_step: int
    def __init__(self, number: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., outcome: _Optional[str] = ..., reason: _Optional[str] = ..., resumed_from_step: _Optional[int] = ...) -> None: ...

class Metrics(_message.Message):
    __slots__ = ("first_loss", "final_loss", "steps", "total_steps", "first_val_loss", "final_val_loss", "tokens_per_second")
    FIRST_LOSS_FIELD_NUMBER: _ClassVar[int]
    FINAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    FIRST_VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    FINAL_VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    first_loss: float
    final_loss: float
    steps: int
    total_steps: int
    first_val_loss: float
    final_val_loss: float
    tokens_per_second: float
    def __init__(self, first_loss: _Optional[float] = ..., final_loss: _Optional[float] = ..., steps: _Optional[int] = ..., total_steps: _Optional[int] = ..., first_val_loss: _Optional[float] = ..., final_val_loss: _Optional[float] = ..., tokens_per_second: _Optional[float] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "owner", "name", "state", "spec", "request_id", "created_at", "started_at", "finished_at", "attempts", "metrics", "artifacts", "error", "last_seq", "queue_position", "workspace", "wait_reason", "diagnosis", "diagnosis_brain", "gpu_indices", "host")
    class ArtifactsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    WAIT_REASON_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSIS_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSIS_BRAIN_FIELD_NUMBER: _ClassVar[int]
    GPU_INDICES_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    id: str
    owner: str
    name: str
    state: JobState
    spec: JobSpec
    request_id: str
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    metrics: Metrics
    artifacts: _containers.ScalarMap[str, str]
    error: str
    last_seq: int
    queue_position: int
    workspace: str
    wait_reason: str
    diagnosis: str
    diagnosis_brain: str
    gpu_indices: _containers.RepeatedScalarFieldContainer[int]
    host: str
    def __init__(self, id: _Optional[str] = ..., owner: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., request_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., metrics: _Optional[_Union[Metrics, _Mapping]] = ..., artifacts: _Optional[_Mapping[str, str]] = ..., error: _Optional[str] = ..., last_seq: _Optional[int] = ..., queue_position: _Optional[int] = ..., workspace: _Optional[str] = ..., wait_reason: _Optional[str] = ..., diagnosis: _Optional[str] = ..., diagnosis_brain: _Optional[str] = ..., gpu_indices: _Optional[_Iterable[int]] = ..., host: _Optional[str] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("request_id", "spec")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    spec: JobSpec
    def __init__(self, request_id: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("states", "all_users", "limit", "project")
    STATES_FIELD_NUMBER: _ClassVar[int]
    ALL_USERS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[JobState]
    all_users: bool
    limit: int
    project: str
    def __init__(self, states: _Optional[_Iterable[_Union[JobState, str]]] = ..., all_users: _Optional[bool] = ..., limit: _Optional[int] = ..., project: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("id", "after_seq", "follow")
    ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    id: str
    after_seq: int
    follow: bool
    def __init__(self, id: _Optional[str] = ..., after_seq: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class LogEvent(_message.Message):
    __slots__ = ("level", "message", "source")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    level: str
    message: str
    source: str
    def __init__(self, level: _Optional[str] = ..., message: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class StepEvent(_message.Message):
    __slots__ = ("step", "total_steps", "loss", "learning_rate", "tokens_per_second", "eta_seconds", "epoch", "grad_norm")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    loss: float
    learning_rate: float
    tokens_per_second: float
    eta_seconds: float
    epoch: float
    grad_norm: float
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., loss: _Optional[float] = ..., learning_rate: _Optional[float] = ..., tokens_per_second: _Optional[float] = ..., eta_seconds: _Optional[float] = ..., epoch: _Optional[float] = ..., grad_norm: _Optional[float] = ...) -> None: ...

class EvalEvent(_message.Message):
    __slots__ = ("step", "val_loss")
    STEP_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    step: int
    val_loss: float
    def __init__(self, step: _Optional[int] = ..., val_loss: _Optional[float] = ...) -> None: ...

class CheckpointEvent(_message.Message):
    __slots__ = ("step", "path")
    STEP_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    step: int
    path: str
    def __init__(self, step: _Optional[int] = ..., path: _Optional[str] = ...) -> None: ...

class ArtifactEvent(_message.Message):
    __slots__ = ("name", "path")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class ErrorEvent(_message.Message):
    __slots__ = ("code", "message", "hint")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    hint: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., hint: _Optional[str] = ...) -> None: ...

class StateEvent(_message.Message):
    __slots__ = ("state", "reason", "attempt")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    state: JobState
    reason: str
    attempt: int
    def __init__(self, state: _Optional[_Union[JobState, str]] = ..., reason: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "seq", "time", "log", "step", "eval", "checkpoint", "artifact", "error", "state")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    EVAL_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    seq: int
    time: _timestamp_pb2.Timestamp
    log: LogEvent
    step: StepEvent
    eval: EvalEvent
    checkpoint: CheckpointEvent
    artifact: ArtifactEvent
    error: ErrorEvent
    state: StateEvent
    def __init__(self, job_id: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., log: _Optional[_Union[LogEvent, _Mapping]] = ..., step: _Optional[_Union[StepEvent, _Mapping]] = ..., eval: _Optional[_Union[EvalEvent, _Mapping]] = ..., checkpoint: _Optional[_Union[CheckpointEvent, _Mapping]] = ..., artifact: _Optional[_Union[ArtifactEvent, _Mapping]] = ..., error: _Optional[_Union[ErrorEvent, _Mapping]] = ..., state: _Optional[_Union[StateEvent, _Mapping]] = ...) -> None: ...
