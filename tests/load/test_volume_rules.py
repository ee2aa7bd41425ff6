"""The volume guard's rule and settings, without a warehouse (the loads themselves: tests/load/test_volume.py)."""

from __future__ import annotations

import pytest
from dexcare.exceptions import DexCareSchemaError
from dexcare.load.volume import configured_min_shares, judge, worst


def test_the_verdicts() -> None:
    normal = [20, 19, 21, 20, 22, 18]
    assert judge(0, normal[:4], min_share=0.5, accepted=False).verdict == "no_baseline"
    assert judge(0, normal, min_share=0.5, accepted=False).as_dict() == {
        "verdict": "empty", "rows": 0, "baseline_median": 20.0, "baseline_loads": 6, "ratio": 0.0, "min_share": 0.5}
    assert judge(10, normal, min_share=0.5, accepted=False).verdict == "ok"  # exactly the share is not below it
    assert judge(9, normal, min_share=0.5, accepted=False).verdict == "warn"
    assert judge(9, normal, min_share=0.0, accepted=False).verdict == "ok"  # 0 never warns
    assert judge(0, [0] * 6, min_share=0.5, accepted=False).as_dict()["verdict"] == "ok"  # always empty: no news
    assert judge(0, normal, min_share=0.5, accepted=True).verdict == "accepted"
    assert judge(30, normal, min_share=0.5, accepted=True).verdict == "ok"  # acceptance changes only a refusal


def test_a_table_carries_its_worst_report() -> None:
    ok, warn, none = ({"verdict": v} for v in ("ok", "warn", "no_baseline"))
    assert worst([ok, none, warn]) == warn and worst([ok, none]) == none


def test_the_deployment_setting_is_a_number_or_a_json_object(monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW__DEXCARE__VOLUME_MIN_SHARE", "0.3")
    assert configured_min_shares() == {"*": 0.3}
    monkeypatch.setenv("AIRFLOW__DEXCARE__VOLUME_MIN_SHARE", '{"retail": 0.2, "*": 0.6}')
    assert configured_min_shares() == {"retail": 0.2, "*": 0.6}
    monkeypatch.setenv("AIRFLOW__DEXCARE__VOLUME_MIN_SHARE", '{"retail": 0.2,')
    with pytest.raises(DexCareSchemaError, match=r"\[dexcare\] volume_min_share: not a JSON object"):
        configured_min_shares()
    monkeypatch.setenv("AIRFLOW__DEXCARE__VOLUME_MIN_SHARE", "half")
    with pytest.raises(DexCareSchemaError, match=r"\[dexcare\] volume_min_share: 'half' is not a share"):
        configured_min_shares()
