"""marshmallow schemas: what the API accepts and what it returns (and so its OpenAPI spec).

The spec states every rule ``load()`` enforces (``describe_rules``), so a body the spec
calls valid is one the server takes: Schemathesis checks both ways
(tests/web/test_fuzz_openapi.py). The two it cannot state, argv and env byte totals,
are in the fields' descriptions.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from apispec.ext.marshmallow.field_converter import FieldConverterMixin
from flask_smorest import Api
from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from overlay import arrays
from overlay.dependencies import Kind
from overlay.gang import MAX_NODES
from overlay.launch import RESERVED_ENV
from overlay.policies import SUPPORTED
from overlay.states import JobState
from web.efficiency_schemas import EfficiencySchema, StrictBool

JOB_ID = r"^[A-Za-z0-9._-]{1,128}$"
# The same, not only dots, in a form a generator can draw from (the length is maxLength's).
JOB_ID_NOT_ONLY_DOTS = r"^\.*[A-Za-z0-9_-][A-Za-z0-9._-]*$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
MAX_ARGV_ITEMS = 4096
MAX_ARGV_BYTES = 128 * 1024
MAX_ENV_ITEMS = 256
MAX_ENV_BYTES = 64 * 1024
# Offsets (list pages, log bytes) past this are refused: beyond it Postgres' bigint and
# the file system's lseek fail (a 500, found by tests/web/test_fuzz_openapi.py).
MAX_OFFSET = 2**40
REDACTED = "***"
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
NAME_ERROR = "must match [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}"
# JSON Schema patterns (searched, as ECMA-262 and Python's re.search do): no NUL anywhere;
# and, for the program, at least one character that is not whitespace (str.strip's set).
NO_NUL = r"^[^\u0000]*$"
PROGRAM = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"


class StrictInt(fields.Integer):
    """An integer that refuses strings, fractions and booleans rather than coercing them.

    ``2.0`` is the integer 2, as JSON Schema counts it (the spec cannot tell them apart).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _validated(self, value: Any) -> Any:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return super()._validated(value)


class Text(fields.String):
    """A string without NUL characters: no argv, environment or Postgres text can hold one
    (before this, a NUL in a submit was a 500 from Postgres)."""

    default_error_messages = {"nul": "must not contain a NUL character"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:
            raise self.make_error("nul")
        return text


class Argv(fields.List):
    """argv: 1 to MAX_ARGV_ITEMS strings without NUL, the first (the program) not blank,
    MAX_ARGV_BYTES in all."""

    default_error_messages = {"program": "the program (first item) must not be empty",
                              "bytes": f"argv is over {MAX_ARGV_BYTES} bytes"}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            Text(), validate=validate.Length(min=1, max=MAX_ARGV_ITEMS),
            metadata={"description": f"argv, executed without a shell; at most {MAX_ARGV_BYTES} bytes in all",
                      "json_schema": {"prefixItems": [{"type": "string", "pattern": PROGRAM}]}},
            **kwargs,
        )

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any | None]:
        argv = super()._deserialize(value, attr, data, **kwargs)  # strings: Text allows no None
        if argv and not str(argv[0]).strip():
            raise self.make_error("program")
        if sum(len(str(a).encode()) for a in argv) > MAX_ARGV_BYTES:
            raise self.make_error("bytes")
        return argv


MAX_DEPENDENCIES = 100


def _targets(kind: Kind, meaning: str) -> fields.List:
    return fields.List(
        Text(validate=validate.Regexp(JOB_ID, error="must match [A-Za-z0-9._-]{{1,128}}"),
             metadata={"pattern": JOB_ID_NOT_ONLY_DOTS, "minLength": 1, "maxLength": 128}),
        load_default=list, validate=validate.Length(max=MAX_DEPENDENCIES),
        metadata={"description": f"{kind}: start once each of these {meaning}. Ids of jobs or arrays "
                                 "(all of an array's tasks) that exist: any other id, or one that would "
                                 "close a cycle, is refused (422)"})


class DependsOnSchema(Schema):
    """What a job waits for, as Slurm's --dependency (afterok:..., afterany:..., afternotok:...)."""

    afterok = _targets(Kind.AFTEROK, "has ended DONE (if one ends otherwise, the job is cancelled)")
    afterany = _targets(Kind.AFTERANY, "has ended, however")
    afternotok = _targets(Kind.AFTERNOTOK, "has ended FAILED or CANCELLED (if all end DONE, the job is "
                                           "cancelled)")


class JobSubmitSchema(Schema):
    """A job to run. Unknown fields are an error."""

    job_id = Text(validate=validate.Regexp(JOB_ID, error="must match [A-Za-z0-9._-]{{1,128}}"),
                  metadata={"pattern": JOB_ID_NOT_ONLY_DOTS, "minLength": 1, "maxLength": 128})
    cmd = Argv(required=True)
    image = Text(
        load_default="", validate=validate.Length(max=1024),
        metadata={"description": "Apptainer image: .sif, sandbox folder, or registry name"},
    )
    env = fields.Dict(
        keys=Text(validate=validate.Regexp(ENV_NAME, error="not a valid variable name"),
                  metadata={"not": {"enum": sorted(RESERVED_ENV)}}),
        values=Text(), load_default=dict,
        validate=validate.Length(max=MAX_ENV_ITEMS, error=f"at most {MAX_ENV_ITEMS} variables"),
        metadata={"description": f"at most {MAX_ENV_BYTES} bytes of names and values in all; "
                                 "overlay's own variables cannot be set"},
    )
    gpus = StrictInt(load_default=0, validate=validate.Range(min=0, max=64))
    gpu_memory_mb = StrictInt(load_default=0, validate=validate.Range(min=0, max=10_000_000),
                              metadata={"description": "minimum memory per GPU, MiB"})
    gpu_model = Text(load_default="", validate=validate.Length(max=128),
                              metadata={"description": "case-insensitive part of the GPU name"})
    node_selector = fields.Dict(
        keys=Text(validate=validate.Length(min=1, max=128)),
        values=Text(validate=validate.Length(max=256)),
        load_default=dict, validate=validate.Length(max=32),
    )
    priority = StrictInt(load_default=0, validate=validate.Range(min=-1000, max=1000))
    timeout_s = StrictInt(load_default=None, allow_none=True,
                          validate=validate.Range(min=1, max=30 * 24 * 3600))
    max_retries = StrictInt(load_default=0, validate=validate.Range(min=0, max=100))
    nodes = StrictInt(load_default=1, validate=validate.Range(min=1, max=MAX_NODES), metadata={
        "description": f"a gang job: this many parts (1..{MAX_NODES}), each on a node of its own with "
                       "`gpus` GPUs there, placed all or nothing and ended as one; each part runs `cmd` "
                       "with MASTER_ADDR, MASTER_PORT, WORLD_SIZE and NNODES (the node count), NODE_RANK "
                       "and GPUS_PER_NODE set. Not with `array` (422)"})
    memory_mb = StrictInt(load_default=0, validate=validate.Range(min=0, max=100_000_000),
                          metadata={"description": "memory limit of the job's processes, MiB "
                                                   "(0: none); past it the job fails, out of memory"})
    idle_ok = StrictBool(load_default=False,
                         metadata={"description": "exempt from the idle policy's cancel (an interactive "
                                                  "session); still marked idle"})
    preemptible = StrictBool(load_default=True,
                             metadata={"description": "false: never preempted (PREEMPTION=on), and so never "
                                                      "placed on GPUs borrowed beyond its account's quota"})
    account = Text(validate=validate.Regexp(NAME, error=NAME_ERROR),
                   metadata={"description": "the account the job runs under (one of the user's; "
                                            "default: the user's default account)"})

    array = Text(
        validate=[validate.Length(max=arrays.MAX_EXPRESSION),
                  validate.Regexp(arrays.PATTERN, error="not an array expression like 0-99, 1,3,5-9:2 or "
                                                        f"0-999%50 (indices 0..{arrays.MAX_INDEX})")],
        metadata={"description": "a job array, in Slurm's --array syntax: indices (0.."
                                 f"{arrays.MAX_INDEX}, so at most {arrays.MAX_TASKS} tasks) as N, A-B or "
                                 "A-B:STEP, comma-separated, and %N: at most N tasks at once. A range must "
                                 "not end before it starts (422). Each task is a job <job_id>_<index>; "
                                 "job_id is the array's id"})
    depends_on = fields.Nested(DependsOnSchema, metadata={"description": "jobs or arrays this job waits for"})

    @validates("job_id")
    def _not_only_dots(self, value: str, **_: Any) -> None:
        if set(value) == {"."}:
            raise ValidationError("must not be only dots")

    @validates("env")
    def _env(self, value: dict[str, str], **_: Any) -> None:
        if sum(len(k) + len(v) for k, v in value.items()) > MAX_ENV_BYTES:
            raise ValidationError(f"env is over {MAX_ENV_BYTES} bytes")
        reserved = sorted(RESERVED_ENV & value.keys())
        if reserved:
            raise ValidationError(f"{', '.join(reserved)} is set by overlay, not by the job")

    @validates_schema
    def _memory_needs_gpus(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("gpus", 0) == 0 and (data.get("gpu_memory_mb") or data.get("gpu_model")):
            raise ValidationError("gpu_memory_mb and gpu_model need gpus >= 1", "gpus")

    @validates_schema
    def _gang_is_no_array(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("nodes", 1) > 1 and "array" in data:
            raise ValidationError("a gang job (nodes > 1) cannot be a job array", "nodes")

    @validates_schema
    def _array_id_fits(self, data: dict[str, Any], **_: Any) -> None:
        if "array" in data and len(data.get("job_id", "")) > arrays.MAX_ARRAY_ID:
            raise ValidationError(f"an array's id is at most {arrays.MAX_ARRAY_ID} characters "
                                  "(its tasks' ids are <job_id>_<index>)", "job_id")


class TimestampsSchema(Schema):
    enqueued = fields.DateTime()
    placed = fields.DateTime(allow_none=True)
    started = fields.DateTime(allow_none=True)
    finished = fields.DateTime(allow_none=True)


class JobRequestSchema(Schema):
    cmd = fields.List(fields.String())
    image = fields.String()
    env = fields.Dict(keys=fields.String(), values=fields.String(),
                      metadata={"description": f"values are shown as {REDACTED!r}"})
    gpus = fields.Integer()
    gpu_memory_mb = fields.Integer()
    gpu_model = fields.String()
    node_selector = fields.Dict(keys=fields.String(), values=fields.String())
    priority = fields.Integer()
    timeout_s = fields.Integer(allow_none=True)
    max_retries = fields.Integer()
    memory_mb = fields.Integer()
    preemptible = fields.Boolean()
    nodes = fields.Integer()


class JobEventSchema(Schema):
    at = fields.DateTime()
    from_state = fields.String(allow_none=True, metadata={"description": "null for the submit"})
    to_state = fields.String(metadata={"description": "equal to from_state for a note (the jobs "
                                                       "preempted for it, idleness)"})
    attempt = fields.Integer()
    node = fields.String(allow_none=True)
    gpus = fields.List(fields.Integer())
    reason = fields.String(allow_none=True)


class JobPartSchema(Schema):
    """One part (rank) of a gang job's current attempt."""

    part = fields.Integer(metadata={"description": "its rank: NODE_RANK"})
    node = fields.String()
    gpus = fields.List(fields.Integer(), metadata={"description": "GPU indices on its node"})
    state = fields.String(metadata={"enum": ["PLACED", "RUNNING", "DONE", "FAILED", "CANCELLED"]})
    exit_code = fields.Integer(allow_none=True)
    reason = fields.String(allow_none=True)
    started = fields.DateTime(allow_none=True)
    finished = fields.DateTime(allow_none=True)


class PrioritySchema(Schema):
    """A waiting job's multifactor priority now (docs/architecture.md): ``value`` is the sum
    of the weighted parts; the factors (0..1) are what the parts were weighed from."""

    value = fields.Float()
    priority = fields.Float()
    age = fields.Float()
    fairshare = fields.Float()
    user = fields.Float()
    age_factor = fields.Float()
    fairshare_factor = fields.Float()
    user_factor = fields.Float()


class JobSchema(Schema):
    job_id = fields.String()
    user = fields.String()
    account = fields.String()
    borrowed = fields.Boolean(metadata={"description": "placed on idle GPUs beyond its account's quota"})
    preemptions = fields.Integer(metadata={"description": "attempts preempted (counted in attempt, not "
                                                          "against max_retries)"})
    preempted_by = fields.String(allow_none=True, metadata={
        "description": "while QUEUED after a preemption: the job it was preempted for"})
    priority = fields.Nested(PrioritySchema, allow_none=True,
                             metadata={"description": "while QUEUED: its multifactor priority now"})
    state = fields.String(metadata={"enum": [s.value for s in JobState]})
    attempt = fields.Integer()
    node = fields.String(allow_none=True)
    gpus = fields.List(fields.Integer(), metadata={"description": "GPU indices on the node"})
    exit_code = fields.Integer(allow_none=True)
    reason = fields.String(allow_none=True)
    timestamps = fields.Nested(TimestampsSchema)
    efficiency = fields.Nested(EfficiencySchema, allow_none=True,
                               metadata={"description": "GPU efficiency so far (GET /api/jobs/<id> only)"})
    idle_since = fields.DateTime(allow_none=True, metadata={
        "description": "since when all its GPUs have been idle, once marked (GET /api/jobs/<id> only)"})
    request = fields.Nested(JobRequestSchema)
    array_id = fields.String(allow_none=True, metadata={"description": "the array this job is a task of"})
    array_index = fields.Integer(allow_none=True, metadata={"description": "its index in that array"})
    nodes = fields.Integer(metadata={"description": "how many nodes its parts run on (1: not a gang job)"})
    master_addr = fields.String(allow_none=True, metadata={
        "description": "a gang job's rendezvous: rank 0's node address, as its agent reports it"})
    master_port = fields.Integer(allow_none=True, metadata={"description": "a gang job's MASTER_PORT"})
    parts = fields.List(fields.Nested(JobPartSchema), allow_none=True, metadata={
        "description": "a gang job's parts once placed, by rank (GET /api/jobs/<id> only; node and "
                       "gpus above are rank 0's)"})


class ArraySchema(Schema):
    """A job array: its tasks' counts per state and, when asked for, a page of them."""

    array_id = fields.String()
    expression = fields.String(metadata={"description": "the array as submitted (Slurm syntax)"})
    size = fields.Integer(metadata={"description": "how many tasks"})
    max_running = fields.Integer(allow_none=True, metadata={"description": "the %N limit: tasks at once"})
    user = fields.String()
    account = fields.String()
    submitted_at = fields.DateTime()
    counts = fields.Dict(keys=fields.String(metadata={"enum": [s.value for s in JobState]}),
                         values=fields.Integer(), metadata={"description": "tasks per state"})
    tasks = fields.List(fields.Nested(JobSchema), metadata={"description": "a page of tasks, by index"})
    limit = fields.Integer(metadata={"description": "the page's size"})
    offset = fields.Integer()


class ArrayQuerySchema(Schema):
    state = fields.String(validate=validate.OneOf([s.value for s in JobState]))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=0, max=500))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_OFFSET))


class JobListQuerySchema(Schema):
    # Query values arrive as strings: "20" is an integer here (StrictInt is for JSON bodies).
    state = fields.String(validate=validate.OneOf([s.value for s in JobState]))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_OFFSET))


class JobLogsQuerySchema(Schema):
    part = fields.Integer(
        validate=validate.Range(min=0, max=MAX_NODES - 1),
        metadata={"description": "a gang job's part (rank) whose output to read (default 0); one the "
                                 "job does not have is a 422"},
    )
    offset = fields.Integer(
        validate=validate.Range(min=0, max=MAX_OFFSET),
        metadata={"description": "only the output from this byte on (for following a running job)"},
    )
    limit = fields.Integer(
        validate=validate.Range(min=1, max=MAX_OFFSET),
        metadata={"description": "at most this many bytes (with offset, 4 MiB unless given)"},
    )


class JobWaitQuerySchema(Schema):
    wait = fields.Float(
        validate=validate.Range(min=0, max=120),
        metadata={"description": "seconds to hold the request until the job has ended"},
    )


class JobListSchema(Schema):
    jobs = fields.List(fields.Nested(JobSchema))
    total = fields.Integer()
    limit = fields.Integer()
    offset = fields.Integer()


class StateChangeSchema(Schema):
    state = fields.String(required=True, validate=validate.OneOf([s.value for s in JobState]))
    reason = Text(validate=validate.Length(max=1000))


class PoliciesSchema(Schema):
    active = fields.String()
    supported = fields.List(fields.String())
    descriptions = fields.Dict(keys=fields.String(), values=fields.String())


class PolicyChangeSchema(Schema):
    policy = Text(required=True, validate=validate.OneOf(
        SUPPORTED, error="unknown policy {input!r}; supported: {choices}"))


class GpuSchema(Schema):
    index = fields.Integer()
    uuid = fields.String()
    name = fields.String()
    memory_total_mb = fields.Integer()
    memory_used_mb = fields.Integer()
    memory_free_mb = fields.Integer()
    utilization_gpu_pct = fields.Integer()
    utilization_memory_pct = fields.Integer()
    temperature_c = fields.Integer(allow_none=True)
    power_draw_w = fields.Float(allow_none=True)
    power_limit_w = fields.Float(allow_none=True)
    compute_capability = fields.String(allow_none=True)
    mig_mode = fields.String(allow_none=True)
    job_id = fields.String(allow_none=True, metadata={"description": "the job holding it"})
    user = fields.String(allow_none=True, metadata={"description": "the user of the job holding it"})
    account = fields.String(allow_none=True, metadata={"description": "the account of the job holding it"})


class NodeSchema(Schema):
    name = fields.String()
    hostname = fields.String()
    state = fields.String(metadata={"enum": ["online", "draining", "offline"]})
    labels = fields.Dict(keys=fields.String(), values=fields.String())
    gpus = fields.List(fields.Nested(GpuSchema))
    agent_health = fields.Dict()
    last_seen = fields.DateTime()
    last_seen_age_s = fields.Float()


class NodeListQuerySchema(Schema):
    include = fields.String(validate=validate.OneOf(["offline"]))


class NodeListSchema(Schema):
    nodes = fields.List(fields.Nested(NodeSchema))


class HealthSchema(Schema):
    status = fields.String(metadata={"enum": ["ok"]})


class StoreCheckSchema(Schema):
    ok = fields.Boolean()
    error = fields.String(metadata={"description": "why the store did not answer"})


class ReadySchema(Schema):
    postgres = fields.Nested(StoreCheckSchema)
    redis = fields.Nested(StoreCheckSchema)


# -- accounts, users, tokens, usage ----------------------------------------------------------------

MAX_GPUS_QUOTA = 1_000_000


def name_field(**kwargs: Any) -> Text:
    """A user or account name: letters, digits, ``.``, ``_``, ``-``; a letter or digit first."""
    return Text(validate=validate.Regexp(NAME, error=NAME_ERROR), **kwargs)


class AccountCreateSchema(Schema):
    name = name_field(required=True)
    share = fields.Float(load_default=1.0, validate=validate.Range(min=0, max=1_000_000),
                         metadata={"description": "fair-share target, relative to the other accounts'"})
    quota = StrictInt(load_default=None, allow_none=True, validate=validate.Range(min=0, max=MAX_GPUS_QUOTA),
                      metadata={"description": "GPUs the account's jobs may hold at once (null: no quota)"})
    quota_models = fields.Dict(
        keys=Text(validate=validate.Length(min=1, max=128)),
        values=StrictInt(validate=validate.Range(min=0, max=MAX_GPUS_QUOTA)),
        load_default=dict, validate=validate.Length(max=32),
        metadata={"description": "GPUs at once per GPU model (a case-insensitive part of its name)"})


class AccountUpdateSchema(Schema):
    share = fields.Float(validate=validate.Range(min=0, max=1_000_000))
    quota = StrictInt(allow_none=True, validate=validate.Range(min=0, max=MAX_GPUS_QUOTA))
    quota_models = fields.Dict(keys=Text(validate=validate.Length(min=1, max=128)),
                               values=StrictInt(validate=validate.Range(min=0, max=MAX_GPUS_QUOTA)),
                               validate=validate.Length(max=32))


class AccountSchema(Schema):
    name = fields.String()
    share = fields.Float()
    quota = fields.Integer(allow_none=True)
    quota_models = fields.Dict(keys=fields.String(), values=fields.Integer())
    users = fields.List(fields.String())
    coordinators = fields.List(fields.String())


class AccountListSchema(Schema):
    accounts = fields.List(fields.Nested(AccountSchema))


class UserCreateSchema(Schema):
    name = name_field(required=True)
    accounts = fields.List(name_field(), required=True, validate=validate.Length(min=1, max=64))
    default_account = name_field(metadata={"description": "default: the first of accounts"})
    coordinator_of = fields.List(name_field(), load_default=list, validate=validate.Length(max=64),
                                 metadata={"description": "accounts whose jobs this user sees (joined too)"})


class MembershipSchema(Schema):
    account = name_field(required=True)
    coordinator = fields.Boolean(load_default=False)


class UserSchema(Schema):
    name = fields.String()
    default_account = fields.String()
    accounts = fields.List(fields.String())
    coordinator_of = fields.List(fields.String())


class UserListSchema(Schema):
    users = fields.List(fields.Nested(UserSchema))


class TokenCreateSchema(Schema):
    user = name_field(required=True)


class TokenSchema(Schema):
    key = fields.String(metadata={"description": "the token's public part, to revoke it by"})
    user = fields.String()
    created_at = fields.DateTime()
    revoked_at = fields.DateTime(allow_none=True)


class TokenCreatedSchema(TokenSchema):
    token = fields.String(metadata={"description": "the token: shown this once, stored only as a hash"})


class TokenListQuerySchema(Schema):
    user = name_field()


class TokenListSchema(Schema):
    tokens = fields.List(fields.Nested(TokenSchema))


class UsageQuerySchema(Schema):
    group_by = fields.String(load_default="account",
                             validate=validate.OneOf(["account", "user", "gpu_model"]))
    since = fields.AwareDateTime(default_timezone=UTC,
                                 metadata={"description": "only usage from then on (default: all)"})
    until = fields.AwareDateTime(default_timezone=UTC, metadata={"description": "only usage before then"})


class UsageRowSchema(Schema):
    group = fields.String()
    gpu_seconds = fields.Float()
    gpu_hours = fields.Float()
    attempts = fields.Integer()


class UsageSchema(Schema):
    group_by = fields.String()
    since = fields.DateTime(allow_none=True)
    until = fields.DateTime(allow_none=True)
    rows = fields.List(fields.Nested(UsageRowSchema))


class ShareUserSchema(Schema):
    user = fields.String()
    usage = fields.Float(metadata={"description": "decayed GPU-seconds"})
    user_factor = fields.Float()


class ShareAccountSchema(Schema):
    account = fields.String()
    share = fields.Float(allow_none=True, metadata={"description": "configured share (null: no account row)"})
    normalized_share = fields.Float()
    usage = fields.Float(metadata={"description": "decayed GPU-seconds"})
    normalized_usage = fields.Float()
    fairshare_factor = fields.Float()
    users = fields.List(fields.Nested(ShareUserSchema))


class ShareSchema(Schema):
    at = fields.DateTime()
    half_life_s = fields.Float()
    accounts = fields.List(fields.Nested(ShareAccountSchema))


# -- the spec states the rules -------------------------------------------------------------------

# The submit body's one rule across fields: GPUs, or no GPU details. (As an anyOf, not an
# if/then, so a generator builds valid bodies instead of filtering them.)
GPU_DETAILS_NEED_GPUS = {
    "anyOf": [
        {"required": ["gpus"], "properties": {"gpus": {"minimum": 1}}},
        {"properties": {"gpu_memory_mb": {"maximum": 0}, "gpu_model": {"maxLength": 0}}},
    ],
}


# An array's id leaves room in a job id for its tasks' "_<index>".
ARRAY_ID_FITS = {
    "anyOf": [
        {"not": {"required": ["array"]}},
        {"properties": {"job_id": {"maxLength": arrays.MAX_ARRAY_ID}}},
    ],
}


# A gang job is not a job array.
GANG_IS_NO_ARRAY = {
    "anyOf": [
        {"not": {"required": ["array"]}},
        {"properties": {"nodes": {"maximum": 1}}},
    ],
}


def field_rules(
    self: FieldConverterMixin, field: fields.Field, ret: dict[str, Any], **_: Any
) -> dict[str, Any]:
    """The JSON Schema keywords apispec leaves out or gets wrong: a Text's ban on NUL, a
    Dict's size (``maxProperties``, not ``maxLength``) and key rules (``propertyNames``),
    and the prefix items a List states in ``metadata["json_schema"]``."""
    rules: dict[str, Any] = {}
    if isinstance(field, Text) and "pattern" not in ret and "enum" not in ret:
        rules["pattern"] = NO_NUL
    if isinstance(field, fields.Dict):
        # apispec writes a Length validator as string lengths; an object counts properties.
        for length, count in (("minLength", "minProperties"), ("maxLength", "maxProperties")):
            if length in ret:
                rules[count] = ret.pop(length)
        if field.key_field is not None:
            rules["propertyNames"] = self.field2property(field.key_field)
    prefix = field.metadata.get("json_schema", {}).get("prefixItems")
    if prefix and isinstance(field, fields.List):
        # Each prefix item also keeps the rules every item has (no NUL).
        rules["prefixItems"] = [{**self.field2property(field.inner), **p} for p in prefix]
    return rules


def describe_rules(api: Api) -> None:
    """Make ``api``'s OpenAPI spec state every rule these schemas enforce. Call before
    registering blueprints."""
    api.ma_plugin.converter.add_attribute_function(field_rules)
    # The array rules go in an allOf, so the GPU rule's anyOf stays where clients read it.
    api.spec.components.schema("JobSubmit",
                               {**GPU_DETAILS_NEED_GPUS, "allOf": [ARRAY_ID_FITS, GANG_IS_NO_ARRAY]},
                               schema=JobSubmitSchema)
