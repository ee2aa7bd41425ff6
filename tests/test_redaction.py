"""The one redaction rule for texts that leave the transport or storage layer."""

from __future__ import annotations

import pytest
from dexcare.redaction import MASK, redact, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:s3cret@proxy.example:3128", f"http://{MASK}@proxy.example:3128"),
        ("http://TOKEN@proxy.example:3128/", f"http://{MASK}@proxy.example:3128/"),
        ("http://:pw@[::1]:3128", f"http://{MASK}@[::1]:3128"),
        ("http://u%40x:p%3Aw@[2001:db8::1]/p?q=1", f"http://{MASK}@[2001:db8::1]/p?q=1"),
        ("http://proxy.example:3128", "http://proxy.example:3128"),
        ("http://[::1]:3128", "http://[::1]:3128"),
        ("s3://aws_default@bucket/dexcare/", "s3://aws_default@bucket/dexcare/"),
        ("s3://KEY:SECRET@bucket/dexcare/", f"s3://{MASK}@bucket/dexcare/"),
        ("socks5h://TOKEN@[::1]:1080", f"socks5h://{MASK}@[::1]:1080"),
        (None, None),
        ("", ""),
    ],
)
def test_a_url_keeps_its_host_and_loses_its_user_info(url, shown):
    assert redact_url(url) == shown


def test_every_url_inside_a_text_is_redacted_and_nothing_else_changes():
    text = (
        "407, message='Proxy Authentication Required', url='http://alice:hunter2@[::1]:3128' "
        "then s3://KEY:SECRET@bucket/x and mail a@b.c"
    )
    out = redact(text)
    assert "hunter2" not in out and "alice" not in out and "SECRET" not in out and "KEY" not in out
    assert f"'http://{MASK}@[::1]:3128'" in out
    assert f"s3://{MASK}@bucket/x" in out
    assert out.endswith("mail a@b.c")
    assert redact("missing: s3://aws_default@bucket/x.csv") == "missing: s3://aws_default@bucket/x.csv"
    assert redact("no url here") == "no url here"
