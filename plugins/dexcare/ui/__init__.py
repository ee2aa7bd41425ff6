"""The DexCare page in the Airflow UI: per table, what became of each of the last 30 days, and the reports being
waited on now. Served by the api-server as a plugin's FastAPI app (:mod:`dexcare.ui.plugin`), read-only.

Layers: :mod:`~dexcare.ui.audit` (the warehouse), :mod:`~dexcare.ui.runs` and :mod:`~dexcare.ui.waiting` (Airflow's
metadata database), :mod:`~dexcare.ui.calendar` (the cells, no I/O), :mod:`~dexcare.ui.data` (one page's reads),
:mod:`~dexcare.ui.view` (HTML), :mod:`~dexcare.ui.auth` and :mod:`~dexcare.ui.app` (the route).
"""
