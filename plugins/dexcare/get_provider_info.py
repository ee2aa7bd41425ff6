"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point.

Declarative ``conn-fields`` / ``ui-field-behaviour`` let the Airflow UI render the DexCare connection form
without importing the hook (Airflow 3.2+).
"""

from __future__ import annotations

from typing import Any

from dexcare import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-dexcare",
        "name": "DexCare",
        "description": (
            "DexCare All Visits Reports: start, wait for, download and dedupe-load into PostgreSQL or SQL Server."
        ),
        "versions": [__version__],
        "integrations": [{"integration-name": "DexCare", "tags": ["service"]}],
        "hooks": [{"integration-name": "DexCare", "python-modules": ["dexcare.hooks.dexcare"]}],
        "operators": [
            {
                "integration-name": "DexCare",
                "python-modules": [
                    "dexcare.operators.start_report",
                    "dexcare.operators.report_status",
                    "dexcare.operators.download_report",
                    "dexcare.operators.load_reports",
                    "dexcare.operators.base",
                ],
            }
        ],
        "sensors": [{"integration-name": "DexCare", "python-modules": ["dexcare.sensors.report"]}],
        "triggers": [{"integration-name": "DexCare", "python-modules": ["dexcare.triggers.report_status"]}],
        # Airflow reads provider options from here: `airflow config list` shows them, and
        # conf.get("dexcare", "report_storage") sees the default and AIRFLOW__DEXCARE__REPORT_STORAGE.
        "config": {
            "dexcare": {
                "description": "Settings of the DexCare provider (airflow-provider-dexcare).\n",
                "options": {
                    "report_storage": {
                        "description": "Where downloaded reports go, as a directory URI every worker reaches: "
                        "s3://<aws conn id>@<bucket>/<prefix>/, gs://, abfs://, or file:///<path>/ on a volume "
                        "every worker mounts. Each run gets <dag_id>/<run_id>/ below it; the DAG's storage param "
                        "overrides it for one run. Empty: a private directory under $AIRFLOW_HOME on the "
                        "worker, which the daily DAG refuses when the executor runs tasks on several machines "
                        "(Celery, Kubernetes, Edge).\n",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "s3://aws_default@my-bucket/dexcare/",
                        "default": "",
                    },
                    "volume_min_share": {
                        "description": "The volume guard warns when a report has fewer rows than this share of "
                        "the median of its report type's last 14 loads of the same window length (load_audit): "
                        "a number for every report type, or a JSON object per type with \"*\" for the rest, "
                        "e.g. {\"virtual\": 0.3, \"*\": 0.5}. 0 never warns. An empty report against a "
                        "non-empty baseline fails the load whatever this says. The load operator's "
                        "volume_min_share argument (the daily DAG's param) overrides it per report type.\n",
                        "version_added": "0.2.0",
                        "type": "string",
                        "example": '{"virtual": 0.3, "*": 0.5}',
                        "default": "0.5",
                    },
                    "page_warehouse_conn_id": {
                        "description": "The warehouse connection the DexCare page (/dexcare/ on the api-server) "
                        "reads load_audit through: the daily DAG's warehouse_conn_id.\n",
                        "version_added": "0.2.0",
                        "type": "string",
                        "example": "dexcare_warehouse",
                        "default": "dexcare_warehouse",
                    },
                    "page_schema": {
                        "description": "The schema whose load_audit the DexCare page shows: the daily DAG's "
                        "schema param.\n",
                        "version_added": "0.2.0",
                        "type": "string",
                        "example": "dexcare",
                        "default": "dexcare",
                    },
                },
            }
        },
        "connection-types": [
            {
                "hook-class-name": "dexcare.hooks.dexcare.DexCareHook",
                "hook-name": "DexCare",
                "connection-type": "dexcare",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"host": "REST endpoint", "password": "Reporting service key"},
                    "placeholders": {
                        "host": "https://ecvapi.care.<customer-domain>.com",
                        "password": "DexCare reporting service key (sent as 'dc-token')",
                        "extra": '{"timeout": 60}',
                    },
                },
                "conn-fields": {
                    "timeout": {
                        "label": "Read timeout (seconds)",
                        "description": "Seconds to wait for DexCare to answer one request. Default 60.",
                        "schema": {"type": ["number", "null"], "minimum": 1},
                    },
                    "verify": {
                        "label": "Verify TLS certificate",
                        "description": "The path of a CA bundle to trust (file or directory), or false only for "
                        "a test endpoint with a self-signed certificate.",
                        "schema": {"type": ["boolean", "string", "null"]},
                    },
                },
            }
        ],
    }
