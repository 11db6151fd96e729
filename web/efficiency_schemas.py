"""Marshmallow schemas of GPU efficiency: a job's ``efficiency``, the idle jobs, the report.

No other web module imported here, so web/schemas.py can use these in the job's schema.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

GROUPS = ("user", "account")


class StrictBool(fields.Boolean):
    """true or false only: not 1, "yes" or "true" (the spec says boolean; the server agrees)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class EfficiencySchema(Schema):
    """What the agent sampled of the job's GPUs (every GPU_SAMPLE_S while it ran)."""

    samples = fields.Integer()
    util_mean_pct = fields.Float(metadata={"description": "mean GPU utilization over every sample, %"})
    util_max_pct = fields.Integer()
    memory_peak_mb = fields.Dict(keys=fields.String(), values=fields.Integer(),
                                 metadata={"description": "peak memory used, MiB, by GPU index"})
    memory_peak_max_mb = fields.Integer()
    memory_total_mb = fields.Integer(metadata={"description": "the GPU's memory, MiB"})
    gpu_memory_mb_asked = fields.Integer(allow_none=True)
    energy_j = fields.Float()
    energy_kwh = fields.Float()
    gpu_seconds = fields.Float()
    idle_gpu_seconds = fields.Float(metadata={"description": "GPU-seconds below IDLE_UTIL_PCT"})
    line = fields.String(metadata={"description": "the summary as `overlay status` prints it"})


class IdleJobSchema(Schema):
    job_id = fields.String()
    user = fields.String()
    account = fields.String()
    node = fields.String(allow_none=True)
    gpus = fields.List(fields.Integer())
    idle_since = fields.DateTime()
    idle_seconds = fields.Float()


class IdleJobListSchema(Schema):
    jobs = fields.List(fields.Nested(IdleJobSchema))


# Postgres cannot hold or compare a NUL (before this, ?account=%00 was a 500).
NO_NUL = validate.Regexp(r"^[^\x00]*$", error="must not contain a NUL character")


class ReportQuerySchema(Schema):
    # Query values arrive as strings: "86400" is an integer here.
    since_s = fields.Integer(load_default=7 * 86400,
                             validate=validate.Range(min=1, max=10 * 365 * 86400),
                             metadata={"description": "jobs sampled within this many seconds"})
    by = fields.String(load_default="user", validate=validate.OneOf(GROUPS))
    user = fields.String(validate=[validate.Length(min=1, max=128), NO_NUL])
    account = fields.String(validate=[validate.Length(min=1, max=128), NO_NUL])


class GroupEfficiencySchema(Schema):
    group = fields.String()
    jobs = fields.Integer()
    gpu_hours = fields.Float()
    idle_gpu_hours = fields.Float()
    util_mean_pct = fields.Float()
    energy_kwh = fields.Float()


class OverAskedSchema(Schema):
    job_id = fields.String()
    user = fields.String()
    account = fields.String()
    gpu_memory_mb = fields.Integer()
    memory_peak_mb = fields.Integer()
    suggested_mb = fields.Integer()


class ReportSchema(Schema):
    by = fields.String(metadata={"enum": list(GROUPS)})
    since = fields.DateTime()
    groups = fields.List(fields.Nested(GroupEfficiencySchema))
    over_asked = fields.List(fields.Nested(OverAskedSchema),
                             metadata={"description": "jobs that asked for far more GPU memory than they "
                                                      "used, with a suggested gpu_memory_mb"})
