"""The prompt registry as a library: files, hashes, the lock file, labels, resolving and rendering."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from bastion.config.model import PromptsConfig
from bastion.prompts import (
    PromptLabelError,
    PromptNotFound,
    PromptRegistry,
    PromptRenderError,
    PromptSpecError,
    PromptVersion,
    Rendered,
)
from bastion.prompts.errors import PromptTemplateError
from bastion.prompts.lock import read_lock, write_lock
from bastion.prompts.spec import canonical_json, spec_hash

SUPPORT = """\
description: Reply to a customer support ticket
model: sim-small
params: {temperature: 0.2, max_tokens: 300}
response_format: {type: json_object}
variables:
  customer: {type: string}
  question: {type: string}
  order_id: {type: integer, required: false}
  tone: {type: string, default: friendly, enum: [friendly, formal]}
messages:
  - role: system
    content: "You are a support agent. Be {{ tone }}."
  - role: user
    content: "Customer {{ customer }}{% if order_id %} (order {{ order_id }}){% endif %} asks: {{ question }}"
"""

# the same content: other layout, quoting, key order, comments
SUPPORT_REFORMATTED = """\
# the support prompt
messages:
- content: You are a support agent. Be {{ tone }}.   # system
  role: system
- {role: user, content: 'Customer {{ customer }}{% if order_id %} (order {{ order_id }}){% endif %} asks: {{ question }}'}
variables:
  tone:
    enum: [friendly, formal]
    default: "friendly"
    type: string
  order_id: {required: false, type: integer}
  question: {type: string}
  customer: {type: "string"}
params:
  max_tokens: 300
  temperature: 0.2
model: 'sim-small'
description: >-
  Reply to a customer support ticket
response_format:
  type: json_object
"""

GOOD_VARS = {"customer": "Ann", "question": "Where is my parcel?"}


def write(directory: Path, name: str, text: str) -> Path:
    """Write a prompt file and make sure its stat stamp changes, without waiting for the clock."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    old = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    st = path.stat()
    if st.st_mtime_ns <= old:
        os.utime(path, ns=(st.st_atime_ns, old + 1_000_000))
    return path


@pytest.fixture
def pdir(tmp_path: Path) -> Path:
    d = tmp_path / "prompts"
    write(d, "support-reply", SUPPORT)
    return d


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    write(path.parent, path.stem, text.replace(old, new))


# -- hashes -------------------------------------------------------------------------------------------


def test_hash_is_a_fixed_function_of_the_content() -> None:
    spec = {"description": "Say hello", "params": {"temperature": 0.2, "max_tokens": 50},
            "variables": {"who": {"type": "string", "default": "wörld"}},
            "messages": [{"role": "user", "content": "Hello {{ who }}!\n"}]}
    assert canonical_json(spec) == ('{"description":"Say hello","messages":[{"content":"Hello {{ who }}!\\n",'
                                    '"role":"user"}],"params":{"max_tokens":50,"temperature":0.2},'
                                    '"variables":{"who":{"default":"wörld","type":"string"}}}').encode()
    assert spec_hash(spec) == "c188370324322a130a0bd3fd6311808d4ee6671577990d2e7824ca0020eec2b5"


def test_hash_ignores_formatting_and_comments_but_not_content(tmp_path: Path) -> None:
    a = PromptRegistry(tmp_path / "a")
    write(tmp_path / "a", "p", SUPPORT)
    write(tmp_path / "b", "p", SUPPORT_REFORMATTED)
    write(tmp_path / "c", "p", SUPPORT.replace("Be {{ tone }}.", "Be {{ tone }}!"))
    write(tmp_path / "d", "p", SUPPORT.replace("temperature: 0.2", "temperature: 0.3"))
    a.reload_if_changed()
    ha = a.resolve("p").hash
    assert re.fullmatch(r"[0-9a-f]{12}", ha)
    assert PromptRegistry(tmp_path / "b").resolve("p").hash == ha
    assert PromptRegistry(tmp_path / "c").resolve("p").hash != ha
    assert PromptRegistry(tmp_path / "d").resolve("p").hash != ha


def test_name_inside_the_file_must_match_and_does_not_change_the_hash(tmp_path: Path) -> None:
    write(tmp_path / "a", "p", SUPPORT)
    write(tmp_path / "b", "p", "name: p\n" + SUPPORT)
    assert PromptRegistry(tmp_path / "a").resolve("p").hash == PromptRegistry(tmp_path / "b").resolve("p").hash
    write(tmp_path / "c", "p", "name: q\n" + SUPPORT)
    reg = PromptRegistry(tmp_path / "c")
    [(file, message)] = reg.errors.items()
    assert file.endswith("p.yaml") and "p.yaml:1" in message and "'q'" in message


# -- the lock file ------------------------------------------------------------------------------------


def test_lock_numbers_versions_monotonically_and_keeps_old_specs(pdir: Path) -> None:
    reg = PromptRegistry(pdir)
    assert reg.resolve("support-reply").number is None  # not recorded yet
    [v1] = reg.lock()
    assert (v1.name, v1.number) == ("support-reply", 1)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", v1.created_at or "")
    assert reg.lock() == []  # nothing new

    f = pdir / "support-reply.yaml"
    edit(f, "Be {{ tone }}.", "Be {{ tone }} and brief.")
    [v2] = reg.lock()
    assert v2.number == 2 and v2.hash != v1.hash
    edit(f, "Be {{ tone }} and brief.", "Be {{ tone }}.")  # back to version 1's content
    assert reg.lock() == []
    assert reg.resolve("support-reply@current").number == 1
    edit(f, "Be {{ tone }}.", "Be {{ tone }}, always.")
    [v3] = reg.lock()
    assert v3.number == 3
    assert [v.number for v in reg.versions("support-reply")] == [1, 2, 3]

    # old versions stay renderable from the lock file although the file changed
    assert "Be friendly and brief." in reg.render("support-reply@2", GOOD_VARS).messages[0]["content"]
    # and a fresh reader (the gateway) sees the same
    again = PromptRegistry(pdir)
    assert [(v.number, v.hash) for v in again.versions("support-reply")] == [(1, v1.hash), (2, v2.hash), (3, v3.hash)]


def test_lock_file_is_deterministic_readable_and_written_atomically(pdir: Path) -> None:
    write(pdir, "a-first", "messages: [{role: user, content: 'hi'}]\n")
    reg = PromptRegistry(pdir)
    reg.lock()
    lock = pdir / "prompts.lock.yaml"
    text = lock.read_text()
    assert text.index("a-first:") < text.index("support-reply:")
    data = yaml.safe_load(text)
    entry = data["prompts"]["support-reply"]
    assert entry["versions"][0]["number"] == 1
    assert len(entry["versions"][0]["hash"]) == 64
    assert entry["versions"][0]["spec"]["model"] == "sim-small"
    # reading and rewriting gives the same bytes; the temporary file is gone
    write_lock(lock, read_lock(lock))
    assert lock.read_text() == text
    reg.promote("support-reply", 1, "staging")
    assert sorted(p.name for p in pdir.iterdir()) == ["a-first.yaml", "prompts.lock.yaml", "support-reply.yaml"]


def test_multiline_templates_are_block_text_in_the_lock_file(pdir: Path) -> None:
    write(pdir, "multi", "messages:\n- role: system\n  content: |\n    line one\n    line two\n")
    reg = PromptRegistry(pdir)
    reg.lock()
    text = (pdir / "prompts.lock.yaml").read_text()
    assert "content: |\n" in text and "        line one\n" in text
    assert reg.render("multi@1", {}).messages[0]["content"] == "line one\nline two\n"


def test_reading_never_writes(pdir: Path) -> None:
    before = sorted(p.name for p in pdir.iterdir())
    reg = PromptRegistry(pdir)
    reg.resolve("support-reply")
    reg.render("support-reply", GOOD_VARS)
    reg.reload_if_changed()
    reg.versions("support-reply")
    assert sorted(p.name for p in pdir.iterdir()) == before


def test_a_hand_edited_lock_file_is_refused(pdir: Path) -> None:
    reg = PromptRegistry(pdir)
    reg.lock()
    lock = pdir / "prompts.lock.yaml"
    lock.write_text(lock.read_text().replace("model: sim-small", "model: sim-large"))
    fresh = PromptRegistry(pdir)
    assert "does not match its hash" in fresh.errors[str(lock)]
    with pytest.raises(PromptSpecError, match="does not match its hash"):
        fresh.lock()


def test_deleting_a_file_keeps_its_recorded_versions(pdir: Path) -> None:
    reg = PromptRegistry(pdir)
    reg.lock()
    reg.promote("support-reply", 1, "production")
    (pdir / "support-reply.yaml").unlink()
    reg.reload_if_changed()
    assert reg.resolve("support-reply").number == 1
    with pytest.raises(PromptNotFound, match="no valid file"):
        reg.resolve("support-reply@current")


# -- labels -------------------------------------------------------------------------------------------


def _three_versions(pdir: Path) -> PromptRegistry:
    reg = PromptRegistry(pdir)
    for suffix in ("", " Be brief.", " Be very brief."):
        if suffix:
            edit(pdir / "support-reply.yaml", "Be {{ tone }}.", "Be {{ tone }}." + suffix)
        reg.lock()
        if suffix:
            edit(pdir / "support-reply.yaml", "Be {{ tone }}." + suffix, "Be {{ tone }}.")
    reg.reload_if_changed()
    return reg


def test_promote_points_labels_at_recorded_versions(pdir: Path) -> None:
    reg = _three_versions(pdir)
    reg.promote("support-reply", 2, "production")
    reg.promote("support-reply", "3", "staging")
    assert reg.labels("support-reply") == {"production": 2, "staging": 3}
    assert reg.resolve("support-reply@production").labels == ("production",)
    reg.promote("support-reply", "staging", "production")  # a label names a version too
    assert reg.labels("support-reply") == {"production": 3, "staging": 3}
    assert PromptRegistry(pdir).labels("support-reply") == {"production": 3, "staging": 3}

    with pytest.raises(PromptNotFound, match="versions: 1, 2, 3"):
        reg.promote("support-reply", 9, "production")
    with pytest.raises(PromptLabelError) as e:
        reg.promote("support-reply", 1, "current")
    assert e.value.status == 400


def test_promote_current_records_the_file_first(pdir: Path) -> None:
    reg = PromptRegistry(pdir)
    reg.promote("support-reply", "current", "staging")
    assert reg.labels("support-reply") == {"staging": 1}
    assert reg.versions("support-reply")[0].number == 1


def _promote_many(directory: str, labels: list[str]) -> None:
    reg = PromptRegistry(directory)
    for label in labels:
        reg.promote("support-reply", 1, label)


def test_concurrent_writers_in_other_processes_lose_no_label(pdir: Path) -> None:
    """Every promote is a read-modify-write of the lock file: writers in several processes (parallel CI
    jobs) are serialised by a lock on the folder, so no label written by one is lost by another."""
    import multiprocessing

    PromptRegistry(pdir).lock()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_promote_many, args=(str(pdir), [f"p{i}-{k}" for k in range(15)]))
             for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    labels = PromptRegistry(pdir).labels("support-reply")
    assert len(labels) == 90 and set(labels.values()) == {1}
    assert not [f for f in pdir.iterdir() if f.name.endswith(".tmp")]  # no stray temporary files


def test_rollback_walks_back_the_label_history(pdir: Path) -> None:
    reg = _three_versions(pdir)
    reg.promote("support-reply", 1, "production")
    reg.promote("support-reply", 2, "production")
    reg.promote("support-reply", 3, "production")
    assert reg.rollback("support-reply", "production") == 2
    assert PromptRegistry(pdir).labels("support-reply")["production"] == 2  # recorded in the lock file
    assert reg.rollback("support-reply", "production") == 1
    with pytest.raises(PromptLabelError, match="no earlier version to roll back to") as e:
        reg.rollback("support-reply", "production")
    assert e.value.status == 409
    with pytest.raises(PromptLabelError, match="no label 'staging'"):
        reg.rollback("support-reply", "staging")


# -- resolving ----------------------------------------------------------------------------------------


def test_resolve_every_ref_form(pdir: Path) -> None:
    reg = PromptRegistry(pdir)
    current = reg.resolve("support-reply")
    assert current.number is None and reg.resolve("support-reply@current") == current
    assert reg.resolve(f"support-reply@{current.hash[:6]}") == current  # unrecorded, by hash

    reg = _three_versions(pdir)
    v = {n: reg.resolve(f"support-reply@{n}") for n in (1, 2, 3)}
    assert isinstance(v[1], PromptVersion) and v[1].number == 1
    assert reg.resolve("support-reply").number == 3  # no production label: the latest recorded
    assert reg.resolve("support-reply@latest").number == 3
    assert reg.resolve("support-reply@current").number == 1  # the file is back at version 1's content
    reg.promote("support-reply", 2, "production")
    reg.promote("support-reply", 1, "staging")
    assert reg.resolve("support-reply").number == 2  # production wins
    assert reg.resolve("support-reply@staging").number == 1
    assert reg.resolve(f"support-reply@{v[3].hash[:6]}").number == 3
    assert reg.resolve(f"support-reply@{v[3].hash.upper()}").number == 3

    with pytest.raises(PromptNotFound, match="at least 6"):
        reg.resolve(f"support-reply@{v[3].hash[:4]}")
    with pytest.raises(PromptNotFound) as e:
        reg.resolve("support-reply@canary")
    assert e.value.status == 404 and e.value.code == "prompt_not_found"
    assert "production=2" in e.value.message and "staging=1" in e.value.message and "1, 2, 3" in e.value.message
    with pytest.raises(PromptNotFound, match="say which version"):
        reg.resolve("support-reply@")


def test_unknown_prompt_lists_the_known_ones(pdir: Path) -> None:
    write(pdir, "summarize", "messages: [{role: user, content: hi}]\n")
    reg = PromptRegistry(pdir)
    with pytest.raises(PromptNotFound) as e:
        reg.render("suport-reply", GOOD_VARS)
    assert "'suport-reply'" in e.value.message and "summarize, support-reply" in e.value.message
    empty = PromptRegistry(pdir.parent / "nowhere")
    with pytest.raises(PromptNotFound, match="no prompt files in"):
        empty.resolve("x")


def test_from_config(tmp_path: Path, pdir: Path) -> None:
    reg = PromptRegistry.from_config(PromptsConfig(dir=str(pdir), lock=str(tmp_path / "elsewhere.lock.yaml")))
    reg.lock()
    assert (tmp_path / "elsewhere.lock.yaml").exists() and not (pdir / "prompts.lock.yaml").exists()
    assert reg.resolve("support-reply").number == 1


# -- rendering ----------------------------------------------------------------------------------------


def test_render_fills_templates_defaults_and_settings(pdir: Path) -> None:
    reg = PromptRegistry(pdir)
    reg.lock()
    r = reg.render("support-reply", {**GOOD_VARS, "order_id": 42})
    assert isinstance(r, Rendered)
    assert (r.name, r.version, r.ref) == ("support-reply", 1, "support-reply@1")
    assert r.messages == [
        {"role": "system", "content": "You are a support agent. Be friendly."},
        {"role": "user", "content": "Customer Ann (order 42) asks: Where is my parcel?"},
    ]
    assert (r.model, r.params, r.response_format) == ("sim-small", {"temperature": 0.2, "max_tokens": 300},
                                                     {"type": "json_object"})
    r = reg.render("support-reply", {**GOOD_VARS, "tone": "formal"})  # optional variable left out: no order
    assert r.messages[1]["content"] == "Customer Ann asks: Where is my parcel?"
    assert r.messages[0]["content"].endswith("Be formal.")
    edit(pdir / "support-reply.yaml", "Be {{ tone }}.", "Be {{ tone }}!")
    reg.reload_if_changed()
    r = reg.render("support-reply@current", GOOD_VARS)
    assert r.version is None and r.ref == f"support-reply@{r.hash}"


@pytest.mark.parametrize(("variables", "expected"), [
    ({"question": "q"}, ["missing variable 'customer' (string)"]),
    ({**GOOD_VARS, "shoe_size": 44}, ["unknown variable 'shoe_size'", "declared: customer, question"]),
    ({**GOOD_VARS, "order_id": "42"}, ["variable 'order_id' must be an integer, got a string ('42')"]),
    ({**GOOD_VARS, "order_id": True}, ["variable 'order_id' must be an integer, got a boolean"]),
    ({**GOOD_VARS, "tone": "rude"}, ["variable 'tone' must be one of 'friendly', 'formal'; got 'rude'"]),
    ({"customer": ["Ann"], "nope": 1}, ["'customer' must be a string, got an array", "missing variable 'question'",
                                         "unknown variable 'nope'"]),
])
def test_render_rejects_bad_variables_clearly(pdir: Path, variables: dict, expected: list[str]) -> None:
    reg = PromptRegistry(pdir)
    with pytest.raises(PromptRenderError) as e:
        reg.render("support-reply", variables)
    assert (e.value.status, e.value.code) == (400, "prompt_variables_invalid")
    assert e.value.message.startswith("prompt support-reply (support-reply@")
    for part in expected:
        assert part in e.value.message


def test_variable_types(tmp_path: Path) -> None:
    write(tmp_path, "t", """\
variables:
  s: {type: string}
  i: {type: integer}
  n: {type: number}
  b: {type: boolean}
  a: {type: array}
  o: {type: object}
messages:
- role: user
  content: "{{ s }} {{ i }} {{ n }} {{ b }} {{ a|join(',') }} {{ o.k }}"
""")
    reg = PromptRegistry(tmp_path)
    ok = {"s": "x", "i": 1, "n": 1.5, "b": False, "a": [1, 2], "o": {"k": "v"}}
    assert reg.render("t", ok).messages[0]["content"] == "x 1 1.5 False 1,2 v"
    assert reg.render("t", {**ok, "n": 2}).messages[0]["content"].startswith("x 1 2 ")  # an integer is a number
    for var, bad, kind in (("n", "1.5", "number"), ("b", 0, "boolean"), ("a", "1,2", "array"), ("o", [], "object"),
                           ("s", 3, "string"), ("i", 1.5, "integer")):
        with pytest.raises(PromptRenderError, match=f"variable '{var}' must be an? {kind}"):
            reg.render("t", {**ok, var: bad})
    with pytest.raises(PromptRenderError, match="variables must be an object"):
        reg.render("t", ["x"])  # type: ignore[arg-type]


# -- load errors --------------------------------------------------------------------------------------


def _error(tmp_path: Path, text: str) -> str:
    write(tmp_path, "p", text)
    reg = PromptRegistry(tmp_path)
    errors = reg.errors
    assert list(errors) == [str(tmp_path / "p.yaml")]
    with pytest.raises(PromptNotFound, match="its file is invalid"):
        reg.resolve("p")
    return errors[str(tmp_path / "p.yaml")]


def test_undeclared_template_variable_is_a_load_error(tmp_path: Path) -> None:
    msg = _error(tmp_path, "variables: {customer: {type: string}}\nmessages:\n- role: system\n  content: hi\n"
                           "- role: user\n  content: '{{ customer }} asks {{ question }}'\n")
    assert f"{tmp_path / 'p.yaml'}:6: messages.1.content: message 1" in msg
    assert "undeclared variable 'question'" in msg and "declared: customer" in msg


def test_unknown_keys_yaml_errors_and_bad_declarations_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    msg = _error(tmp_path, "messages: [{role: user, content: hi}]\ntemprature: 0.2\n")
    assert f"{path}:2: temprature: unknown key" in msg
    msg = _error(tmp_path, "messages:\n- role: user\n  content: 'hi\n")
    assert msg.startswith(f"{path}:") and "not valid YAML" in msg
    msg = _error(tmp_path, "variables:\n  n: {type: int}\nmessages: [{role: user, content: '{{ n }}'}]\n")
    assert f"{path}:2: variables.n.type: required, one of string, integer" in msg
    msg = _error(tmp_path, "variables:\n  n: {type: integer, default: x}\nmessages: [{role: user, content: '{{ n }}'}]\n")
    assert "variables.n.default: 'x' is not a integer" in msg
    msg = _error(tmp_path, "model: a\nmodel: b\nmessages: [{role: user, content: hi}]\n")
    assert f"{path}:2" in msg and "duplicate key 'model'" in msg
    msg = _error(tmp_path, "messages: [{role: robot, content: hi}]\n")
    assert "messages.0.role: must be one of system" in msg
    msg = _error(tmp_path, "description: x\n")
    assert "messages: required" in msg
    msg = _error(tmp_path, "messages: [{role: user, content: '{{ oops'}]\n")
    assert "template syntax error" in msg
    msg = _error(tmp_path, "params: {model: gpt, stream: true}\nmessages: [{role: user, content: hi}]\n")
    assert "'model' cannot be a prompt parameter" in msg and "'stream' cannot" in msg
    msg = _error(tmp_path, "params: {date: 2024-01-01}\nmessages: [{role: user, content: hi}]\n")
    assert "params.date: a date is not a JSON value; quote it" in msg


# -- the sandbox --------------------------------------------------------------------------------------


def test_templates_cannot_reach_python_internals(tmp_path: Path) -> None:
    msg = _error(tmp_path, "messages: [{role: user, content: \"{{ ''.__class__.__mro__ }}\"}]\n")
    assert "internal attribute '__class__'" in msg and "'__mro__'" in msg
    msg = _error(tmp_path, "messages: [{role: user, content: \"{{ cycler['__init__'] }}\"}]\n")
    assert "'__init__'" in msg

    # what only shows at render time fails as a clear 400, never a crash or a leak
    write(tmp_path, "p", """\
variables:
  x: {type: string}
  field: {type: string}
  items: {type: array, default: []}
  n: {type: integer, default: 1}
messages:
- role: user
  content: "{{ x|attr(field) }}{{ items.append(1) if items }}{{ 'ab' * n }}"
""")
    reg = PromptRegistry(tmp_path)
    assert reg.render("p", {"x": "a", "field": "upper"}).messages[0]["content"].startswith("<built-in method")
    cases = [({"x": "a", "field": "__class__"}, "access to attribute '__class__' of 'str' object is unsafe"),
             ({"x": "a", "field": "upper", "items": [1]}, "attribute 'append' of 'list' object is unsafe"),
             ({"x": "a", "field": "upper", "n": 10**8}, "more than 1000000 items")]
    for variables, expected in cases:
        with pytest.raises(PromptTemplateError) as e:
            reg.render("p", variables)
        assert isinstance(e.value, PromptRenderError) and e.value.status == 400
        assert "template sandbox forbids" in e.value.message and expected in e.value.message


# -- reloading ----------------------------------------------------------------------------------------


def test_reload_picks_up_edits_and_a_broken_edit_keeps_the_last_good_version(pdir: Path) -> None:
    reg = PromptRegistry(pdir)
    assert reg.reload_if_changed() is False  # nothing changed
    path = pdir / "support-reply.yaml"
    edit(path, "Be {{ tone }}.", "Be {{ tone }} and quick.")
    assert reg.reload_if_changed() is True
    assert reg.render("support-reply", GOOD_VARS).messages[0]["content"].endswith("and quick.")

    edit(path, "{{ question }}", "{{ questoin }}")  # broken: undeclared variable
    assert reg.reload_if_changed() is True
    assert "questoin" in reg.errors[str(path)]
    assert reg.render("support-reply", GOOD_VARS).messages[0]["content"].endswith("and quick.")
    assert reg.reload_if_changed() is False and str(path) in reg.errors  # the problem stays reported

    write(pdir, "new-one", "messages: [{role: user, content: hello}]\n")  # a new file appears
    assert reg.reload_if_changed() is True
    assert "new-one" in reg.names()

    edit(path, "{{ questoin }}", "{{ question }}")
    reg.reload_if_changed()
    assert reg.errors == {}

    # another process locks and promotes: the reader sees it
    writer = PromptRegistry(pdir)
    writer.lock()
    writer.promote("support-reply", 1, "production")
    assert reg.reload_if_changed() is True
    assert reg.resolve("support-reply").labels == ("production",)


def test_other_files_in_the_folder(pdir: Path) -> None:
    (pdir / "notes.txt").write_text("not a prompt")
    (pdir / ".support-reply.yaml.swp").write_text("editor")
    (pdir / "old.yml").write_text("messages: [{role: user, content: hi}]\n")
    reg = PromptRegistry(pdir)
    assert reg.names() == ["support-reply"]
    assert "rename it to old.yaml" in reg.errors[str(pdir / "old.yml")]


# -- diff ---------------------------------------------------------------------------------------------


def test_diff_shows_changed_template_lines(pdir: Path) -> None:
    reg = PromptRegistry(pdir)
    reg.lock()
    edit(pdir / "support-reply.yaml", "temperature: 0.2", "temperature: 0.7")
    edit(pdir / "support-reply.yaml", "Be {{ tone }}.", "Be {{ tone }}.\\nNever promise refunds.")
    reg.lock()
    out = reg.diff("support-reply@1", "support-reply@2")
    v1, v2 = reg.resolve("support-reply@1"), reg.resolve("support-reply@2")
    assert out.startswith(f"--- support-reply@1 (version 1, {v1.hash})\n+++ support-reply@2 (version 2, {v2.hash})\n")
    lines = out.splitlines()
    assert "-  temperature: 0.2" in lines and "+  temperature: 0.7" in lines
    assert "+    Never promise refunds." in lines  # a multi-line template diffs line by line
    assert reg.diff("support-reply@2", "support-reply@current") == ""
