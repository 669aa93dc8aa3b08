from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TextureFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TEXTURE_FORMAT_UNSPECIFIED: _ClassVar[TextureFormat]
    TEXTURE_FORMAT_PNG: _ClassVar[TextureFormat]
    TEXTURE_FORMAT_RGBA8: _ClassVar[TextureFormat]
    TEXTURE_FORMAT_WEBP: _ClassVar[TextureFormat]

class RowOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROW_ORDER_UNSPECIFIED: _ClassVar[RowOrder]
    ROW_ORDER_TOP_DOWN: _ClassVar[RowOrder]
    ROW_ORDER_BOTTOM_UP: _ClassVar[RowOrder]

class ResizeFilter(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESIZE_FILTER_UNSPECIFIED: _ClassVar[ResizeFilter]
    RESIZE_FILTER_NEAREST: _ClassVar[ResizeFilter]
    RESIZE_FILTER_BILINEAR: _ClassVar[ResizeFilter]
    RESIZE_FILTER_BICUBIC: _ClassVar[ResizeFilter]
    RESIZE_FILTER_LANCZOS: _ClassVar[ResizeFilter]
    RESIZE_FILTER_MODEL: _ClassVar[ResizeFilter]

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_QUEUED: _ClassVar[Stage]
    STAGE_ENCODING_TEXT: _ClassVar[Stage]
    STAGE_GENERATING: _ClassVar[Stage]
    STAGE_SCORING: _ClassVar[Stage]
    STAGE_ENCODING_TEXTURES: _ClassVar[Stage]
TEXTURE_FORMAT_UNSPECIFIED: TextureFormat
TEXTURE_FORMAT_PNG: TextureFormat
TEXTURE_FORMAT_RGBA8: TextureFormat
TEXTURE_FORMAT_WEBP: TextureFormat
ROW_ORDER_UNSPECIFIED: RowOrder
ROW_ORDER_TOP_DOWN: RowOrder
ROW_ORDER_BOTTOM_UP: RowOrder
RESIZE_FILTER_UNSPECIFIED: ResizeFilter
RESIZE_FILTER_NEAREST: ResizeFilter
RESIZE_FILTER_BILINEAR: ResizeFilter
RESIZE_FILTER_BICUBIC: ResizeFilter
RESIZE_FILTER_LANCZOS: ResizeFilter
RESIZE_FILTER_MODEL: ResizeFilter
STAGE_UNSPECIFIED: Stage
STAGE_QUEUED: Stage
STAGE_ENCODING_TEXT: Stage
STAGE_GENERATING: Stage
STAGE_SCORING: Stage
STAGE_ENCODING_TEXTURES: Stage

class OutputOptions(_message.Message):
    __slots__ = ("format", "size", "filter", "row_order")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ROW_ORDER_FIELD_NUMBER: _ClassVar[int]
    format: TextureFormat
    size: int
    filter: ResizeFilter
    row_order: RowOrder
    def __init__(self, format: _Optional[_Union[TextureFormat, str]] = ..., size: _Optional[int] = ..., filter: _Optional[_Union[ResizeFilter, str]] = ..., row_order: _Optional[_Union[RowOrder, str]] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("prompt", "count", "seed", "psi", "rerank", "output", "model", "model_version")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    count: int
    seed: int
    psi: float
    rerank: int
    output: OutputOptions
    model: str
    model_version: str
    def __init__(self, prompt: _Optional[str] = ..., count: _Optional[int] = ..., seed: _Optional[int] = ..., psi: _Optional[float] = ..., rerank: _Optional[int] = ..., output: _Optional[_Union[OutputOptions, _Mapping]] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("started", "progress", "texture", "chunk", "done", "reading")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    TEXTURE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    READING_FIELD_NUMBER: _ClassVar[int]
    started: Started
    progress: Progress
    texture: TextureHeader
    chunk: TextureChunk
    done: Done
    reading: PromptReading
    def __init__(self, started: _Optional[_Union[Started, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., texture: _Optional[_Union[TextureHeader, _Mapping]] = ..., chunk: _Optional[_Union[TextureChunk, _Mapping]] = ..., done: _Optional[_Union[Done, _Mapping]] = ..., reading: _Optional[_Union[PromptReading, _Mapping]] = ...) -> None: ...

class PromptReading(_message.Message):
    __slots__ = ("families",)
    FAMILIES_FIELD_NUMBER: _ClassVar[int]
    families: _containers.RepeatedCompositeFieldContainer[FamilyReading]
    def __init__(self, families: _Optional[_Iterable[_Union[FamilyReading, _Mapping]]] = ...) -> None: ...

class FamilyReading(_message.Message):
    __slots__ = ("family", "stated", "stated_probability", "value", "value_probability")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    STATED_FIELD_NUMBER: _ClassVar[int]
    STATED_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VALUE_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    family: str
    stated: bool
    stated_probability: float
    value: str
    value_probability: float
    def __init__(self, family: _Optional[str] = ..., stated: _Optional[bool] = ..., stated_probability: _Optional[float] = ..., value: _Optional[str] = ..., value_probability: _Optional[float] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ("request_id", "model", "model_version", "seed", "psi", "texture_count")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    TEXTURE_COUNT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: str
    model_version: str
    seed: int
    psi: float
    texture_count: int
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., seed: _Optional[int] = ..., psi: _Optional[float] = ..., texture_count: _Optional[int] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("stage", "elapsed_seconds")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    stage: Stage
    elapsed_seconds: float
    def __init__(self, stage: _Optional[_Union[Stage, str]] = ..., elapsed_seconds: _Optional[float] = ...) -> None: ...

class TextureHeader(_message.Message):
    __slots__ = ("index", "width", "height", "format", "row_order", "seed", "clip_score", "resize_filter", "total_bytes", "sha256", "t")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    ROW_ORDER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CLIP_SCORE_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FILTER_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    T_FIELD_NUMBER: _ClassVar[int]
    index: int
    width: int
    height: int
    format: TextureFormat
    row_order: RowOrder
    seed: int
    clip_score: float
    resize_filter: ResizeFilter
    total_bytes: int
    sha256: bytes
    t: float
    def __init__(self, index: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., format: _Optional[_Union[TextureFormat, str]] = ..., row_order: _Optional[_Union[RowOrder, str]] = ..., seed: _Optional[int] = ..., clip_score: _Optional[float] = ..., resize_filter: _Optional[_Union[ResizeFilter, str]] = ..., total_bytes: _Optional[int] = ..., sha256: _Optional[bytes] = ..., t: _Optional[float] = ...) -> None: ...

class TextureChunk(_message.Message):
    __slots__ = ("texture_index", "offset", "data", "last")
    TEXTURE_INDEX_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    texture_index: int
    offset: int
    data: bytes
    last: bool
    def __init__(self, texture_index: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class Done(_message.Message):
    __slots__ = ("texture_count", "elapsed_seconds")
    TEXTURE_COUNT_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    texture_count: int
    elapsed_seconds: float
    def __init__(self, texture_count: _Optional[int] = ..., elapsed_seconds: _Optional[float] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("prompt", "seed")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    seed: int
    def __init__(self, prompt: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class InterpolateRequest(_message.Message):
    __slots__ = ("start", "end", "frames", "psi", "output", "model", "model_version")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    start: Endpoint
    end: Endpoint
    frames: int
    psi: float
    output: OutputOptions
    model: str
    model_version: str
    def __init__(self, start: _Optional[_Union[Endpoint, _Mapping]] = ..., end: _Optional[_Union[Endpoint, _Mapping]] = ..., frames: _Optional[int] = ..., psi: _Optional[float] = ..., output: _Optional[_Union[OutputOptions, _Mapping]] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class EditRequest(_message.Message):
    __slots__ = ("sequence", "request")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    request: GenerateRequest
    def __init__(self, sequence: _Optional[int] = ..., request: _Optional[_Union[GenerateRequest, _Mapping]] = ...) -> None: ...

class EditResponse(_message.Message):
    __slots__ = ("sequence", "response", "error", "superseded")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDED_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    response: GenerateResponse
    error: EditError
    superseded: EditSuperseded
    def __init__(self, sequence: _Optional[int] = ..., response: _Optional[_Union[GenerateResponse, _Mapping]] = ..., error: _Optional[_Union[EditError, _Mapping]] = ..., superseded: _Optional[_Union[EditSuperseded, _Mapping]] = ...) -> None: ...

class EditSuperseded(_message.Message):
    __slots__ = ("by_sequence",)
    BY_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    by_sequence: int
    def __init__(self, by_sequence: _Optional[int] = ...) -> None: ...

class EditError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class EncodeTextRequest(_message.Message):
    __slots__ = ("prompt", "model", "model_version")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    model: str
    model_version: str
    def __init__(self, prompt: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class EncodeTextResponse(_message.Message):
    __slots__ = ("embedding", "model", "model_version", "reading")
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    READING_FIELD_NUMBER: _ClassVar[int]
    embedding: _containers.RepeatedScalarFieldContainer[float]
    model: str
    model_version: str
    reading: PromptReading
    def __init__(self, embedding: _Optional[_Iterable[float]] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., reading: _Optional[_Union[PromptReading, _Mapping]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ("model", "model_version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "default_model")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    default_model: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., default_model: _Optional[str] = ...) -> None: ...

class AttributeValues(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "resolution", "embed_dim", "z_dim", "context_length", "precision", "created", "exporter", "attributes", "is_default", "execution_provider", "manifest_json", "upscaled_resolution", "reads_prompts")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: AttributeValues
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[AttributeValues, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    EMBED_DIM_FIELD_NUMBER: _ClassVar[int]
    Z_DIM_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    EXPORTER_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    UPSCALED_RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    READS_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    resolution: int
    embed_dim: int
    z_dim: int
    context_length: int
    precision: str
    created: str
    exporter: str
    attributes: _containers.MessageMap[str, AttributeValues]
    is_default: bool
    execution_provider: str
    manifest_json: str
    upscaled_resolution: int
    reads_prompts: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., resolution: _Optional[int] = ..., embed_dim: _Optional[int] = ..., z_dim: _Optional[int] = ..., context_length: _Optional[int] = ..., precision: _Optional[str] = ..., created: _Optional[str] = ..., exporter: _Optional[str] = ..., attributes: _Optional[_Mapping[str, AttributeValues]] = ..., is_default: _Optional[bool] = ..., execution_provider: _Optional[str] = ..., manifest_json: _Optional[str] = ..., upscaled_resolution: _Optional[int] = ..., reads_prompts: _Optional[bool] = ...) -> None: ...
