"""What the tests use from Airflow that moved between 3.0 and 3.3; the package's own differences are in
``dexcare.compat`` (which also gives the tests Airflow's exceptions)."""

from __future__ import annotations

from typing import Any

try:  # Airflow >= 3.2
    from airflow.sdk._shared.module_loading import import_string
    from airflow.sdk.serde import deserialize, serialize
except ImportError:  # Airflow 3.0, 3.1
    from airflow.serialization.serde import deserialize, serialize  # type: ignore[no-redef]
    from airflow.utils.module_loading import import_string  # type: ignore[no-redef]

try:  # Airflow >= 3.2 hands a resumed task its kwargs encoded with serde
    from airflow.sdk.serde import serialize as encode_next_kwargs
except ImportError:  # Airflow 3.0, 3.1: with BaseSerialization
    from airflow.serialization.serialized_objects import BaseSerialization

    encode_next_kwargs = BaseSerialization.serialize

try:  # Airflow >= 3.2
    from airflow.sdk.exceptions import ParamValidationError
except ImportError:  # Airflow 3.0, 3.1
    from airflow.exceptions import ParamValidationError  # type: ignore[no-redef]

try:  # Airflow >= 3.1
    from airflow.sdk._shared.secrets_masker import redact
except ImportError:  # Airflow 3.0
    from airflow.sdk.execution_time.secrets_masker import redact  # type: ignore[no-redef]

try:  # Airflow >= 3.2
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.0, 3.1
    from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

from airflow.serialization import serialized_objects as _serialized_objects

#: What the DAG processor stores for the scheduler: DagSerialization since Airflow 3.2, SerializedDAG before.
DagSerialization: Any = getattr(_serialized_objects, "DagSerialization", None) or _serialized_objects.SerializedDAG

__all__ = [
    "DagBag",
    "DagSerialization",
    "ParamValidationError",
    "deserialize",
    "encode_next_kwargs",
    "import_string",
    "redact",
    "serialize",
]
