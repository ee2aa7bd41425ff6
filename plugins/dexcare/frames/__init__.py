"""DexCare reports as pandas DataFrames: for the analyst's notebook and for tasks that want a DataFrame.

The load never uses pandas (COPY is many times faster than ``to_sql``); this package is for reading. pandas is
an optional dependency (the ``airflow-provider-dexcare[pandas]`` extra), imported only when a frame is built,
so a deployment without it loses nothing but these calls, and those say which extra to install.

Where it sits, and why there: a frame is read the way the load reads a file (the load's CSV rules, header
normalisation and messages, from :mod:`dexcare.load.csv_stream`, :mod:`dexcare.load.records` and
:mod:`dexcare.load.identifiers`), so this package imports the load's reading side, never the other way round.
The hook's ``get_df`` and ``get_df_by_chunks`` import :mod:`dexcare.frames.report` inside the call, which
receives the hook as an argument and never imports it: hooks -> frames -> load (reading) and wait
(:mod:`dexcare.wait.blocking`, the wait for a report it requests), with no cycle and no pandas at import time
(:func:`~dexcare.load.records.records` imports the load's shared diagnostics, which import no dialect).
:mod:`dexcare.frames.warehouse` reads a table through the warehouse connection and the load's dialects; the
hook never imports it. Column typing (:mod:`dexcare.frames.columns`) is shared by both, so a file and the table
it was loaded into come out with the same dtypes and can be compared directly.
"""

from __future__ import annotations

from types import ModuleType

EXTRA = "airflow-provider-dexcare[pandas]"


def require_pandas(what: str) -> ModuleType:
    """pandas, or the error that says how to get it (before anything is requested or read)."""
    try:
        import pandas
    except ImportError:
        from airflow.exceptions import AirflowOptionalProviderFeatureException

        raise AirflowOptionalProviderFeatureException(
            f"{what} needs pandas, which is not installed. Install the provider's pandas extra: "
            f"pip install '{EXTRA}'."
        ) from None
    return pandas
