"""The redaction rule (obskit._http.redaction) and its setting, http_query_allowlist.

The canaries through Flask and Django apps (in process and under gunicorn) are in
tests/reliability/test_redaction_canaries.py and tests/reliability/test_pii_servers.py.
"""

from __future__ import annotations

import pytest

import obskit
from obskit._config.settings import load
from obskit._http.redaction import (
    REDACTED,
    is_sensitive,
    redact_header,
    redact_path,
    redact_query,
    redact_url,
)

R = REDACTED


@pytest.mark.parametrize(
    ("query", "allow", "expected"),
    [
        ("email=a%40b.example&otp=123456", (), f"email={R}&otp={R}"),
        ("a=1;token=t", (), f"a={R};token={R}"),
        ("a=1;token=t", ("a",), f"a=1;token={R}"),
        ("a=1;b=2&c=3", ("a", "b", "c"), "a=1;b=2&c=3"),
        ("%74oken=t&page=2", ("page",), f"token={R}&page=2"),
        ("%70age=2", ("page",), "page=2"),
        ("%2574oken=t", (), f"%2574oken={R}"),
        ("page=1&page=2&page=3", ("page",), "page=1&page=2&page=3"),
        ("id=1&id=2", (), f"id={R}&id={R}"),
        ("flag&page=", (), f"{R}&page="),
        ("flag&page=", ("flag",), "flag&page="),
        ("q=red+shoes&sort=a+b", ("q",), f"q=red+shoes&sort={R}"),
        ("a+b=1", ("a b",), "a+b=1"),
        ("PAGE=4", ("page",), "PAGE=4"),
        ("=orphan&&;", (), f"={R}&&;"),
        ("ids[]=1&ids[]=2", ("ids[]",), "ids[]=1&ids[]=2"),
        ("x%1b%5b31m=1", (), f"x%1B[31m={R}"),  # no raw ESC in a name
        ("page%3D1%26token=t", ("page",), f"page%3D1%26token={R}"),
        ("", ("page",), ""),
    ],
)
def test_query_values_are_redacted_unless_their_name_is_allowlisted(
    query: str, allow: tuple[str, ...], expected: str
) -> None:
    """Names kept (decoded, re-encoded), values redacted unless allowlisted; & and ;
    separators, repeated keys, keys without values, + and percent-encoding handled."""
    assert redact_query(query, (), allow) == expected


def test_sensitive_names_stay_redacted_even_when_allowlisted() -> None:
    """The built-in sensitive names and http_redact win over an allowlist."""
    allow = ("token", "session_id", "code", "pin")
    assert redact_query("token=t&session_id=s&code=c&pin=1", ("pin",), allow) == (
        f"token={R}&session_id={R}&code={R}&pin={R}"
    )
    assert is_sensitive("Access_Token")
    assert is_sensitive("baggage")
    assert is_sensitive("pin", ["pin"])
    assert not is_sensitive("page")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://admin:hunter2@shop.example/cart?token=t&page=3",
            f"https://shop.example/cart?token={R}&page=3",
        ),
        ("https://user@shop.example:8443/", "https://shop.example:8443/"),
        ("//a:b@cdn.example/x.js", "//cdn.example/x.js"),
        ("http://a:b@c@host\\path?x=1", f"http://host\\path?x={R}"),
        ("/next?page=2&email=e", f"/next?page=2&email={R}"),
        (
            "https://app.example/cb#access_token=t&page=1",
            f"https://app.example/cb#access_token={R}&page=1",
        ),
        ("https://app.example/docs#install", f"https://app.example/docs#{R}"),
        ("https://h/cart;jsessionid=abc/items", f"https://h/cart;jsessionid={R}/items"),
        ("https://[::1]:8080/p", "https://[::1]:8080/p"),
        ("null", "null"),
    ],
)
def test_urls_lose_credentials_and_query_values(url: str, expected: str) -> None:
    """A URL keeps scheme, host, port and path; user:password@ is removed; query,
    fragment and path-parameter values follow the query rule."""
    assert redact_url(url, (), ("page",)) == expected


def test_headers_are_redacted_by_name_and_urls_in_them_by_the_url_rule() -> None:
    """Sensitive headers become [REDACTED]; Referer, Location, Origin and any value with
    ``://`` keep the URL without credentials or query values; others are unchanged."""
    allow = ("page",)
    assert redact_header("authorization", "Bearer x", (), allow) == R
    assert redact_header("baggage", "user.email=e", (), allow) == R
    assert redact_header("x-pin", "1234", ("x-pin",), allow) == R
    assert redact_header("referer", "https://u:p@h/?t=1&page=2", (), allow) == (
        f"https://h/?t={R}&page=2"
    )
    assert redact_header("location", "/login?next=%2Fcart", (), allow) == f"/login?next={R}"
    assert redact_header("origin", "https://u:p@h:8443", (), allow) == "https://h:8443"
    assert (
        redact_header("x-callback", "https://h/hook?sig=1", (), allow) == f"https://h/hook?sig={R}"
    )
    assert redact_header("x-team", "payments", (), allow) == "payments"


def test_path_parameters_follow_the_query_rule() -> None:
    """``;name=value`` in a path segment has its value redacted; a plain path is
    returned as the same object (no work per request)."""
    assert (
        redact_path("/cart;jsessionid=abc;v=2/items;x") == f"/cart;jsessionid={R};v={R}/items;{R}"
    )
    assert redact_path("/cart;v=2", (), ("v",)) == "/cart;v=2"
    plain = "/users/7"
    assert redact_path(plain) is plain


def test_allowlist_is_read_from_argument_and_variable_in_lower_case() -> None:
    """http_query_allowlist takes a list or OBSKIT_HTTP_QUERY_ALLOWLIST, empty by default."""
    assert load({}, {}).http_query_allowlist == ()
    assert load({}, {"http_query_allowlist": ["Page", "sort"]}).http_query_allowlist == (
        "page",
        "sort",
    )
    settings = load({"OBSKIT_HTTP_QUERY_ALLOWLIST": "page, q"}, {})
    assert settings.http_query_allowlist == ("page", "q")
    assert settings.sources["http_query_allowlist"] == "env OBSKIT_HTTP_QUERY_ALLOWLIST"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (["token"], "sensitive"),
        (["access_token"], "sensitive"),
        (["code"], "sensitive"),
        (["page", "x-api-key"], "sensitive"),
        (["page=1"], "decoded"),
        (["a&b"], "decoded"),
        (["a;b"], "decoded"),
        (["%74oken"], "decoded"),
        (["a b"], "decoded"),
        (["a+b"], "decoded"),
        (["x\x1b"], "decoded"),
        ("page,,q", "empty entry"),
        ([1], "got list"),
        (7, "got int"),
    ],
)
def test_bad_allowlists_fail_init_with_config_error(value: object, why: str) -> None:
    """A name that can never match, or that is always redacted, fails init() with one
    ConfigError naming the setting, its source and what is allowed."""
    with pytest.raises(obskit.ConfigError) as caught:
        obskit.init(http_query_allowlist=value)
    error = caught.value
    assert error.setting == "http_query_allowlist"
    assert error.source == "argument"
    assert why in error.allowed


def test_an_allowlisted_name_also_in_http_redact_fails_init(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Allowlisting a name that http_redact redacts is a contradiction: ConfigError,
    naming the variable it came from."""
    monkeypatch.setenv("OBSKIT_HTTP_QUERY_ALLOWLIST", "page,pin")
    with pytest.raises(obskit.ConfigError, match="always redacted") as caught:
        obskit.init(http_redact=["pin"])
    assert caught.value.source == "env OBSKIT_HTTP_QUERY_ALLOWLIST"
    assert "'pin' cannot be allowlisted" in str(caught.value)
