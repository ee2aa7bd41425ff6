"""Where the freshness deadline's callback lived before the daily DAG's code moved to :mod:`dexcare.daily`.

Airflow 3.1+ stores the callback's import path in the deadline row of every run it creates, so a run created
before an upgrade still calls ``dexcare.paging.page_missed_deadline`` when it misses its deadline. Without this
name that call fails in the triggerer and nobody is paged. New runs store
:func:`dexcare.daily.paging.page_missed_deadline`; this module can go once no such run can still be open.
"""

from dexcare.daily.paging import page_missed_deadline

__all__ = ["page_missed_deadline"]
