"""What the daily DAG needs that is code rather than wiring, kept out of the DAG file so the file stays a readable
picture of the pipeline, and so each piece can be tested without parsing a DAG.

:mod:`~dexcare.daily.plan` decides each run's reports (window, storage, connections, checked before DexCare is
asked); :mod:`~dexcare.daily.queues` routes tasks to the deployment's queues; :mod:`~dexcare.daily.paging` builds
and sends the one page on-call gets, and :mod:`~dexcare.daily.callbacks` hooks it into the tasks;
:mod:`~dexcare.daily.freshness` pages when the tables are not fresh by the deadline; :mod:`~dexcare.daily.runbook`
is the runbook the DAG's Docs show and the pages quote.
"""
