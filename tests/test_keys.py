"""Key names come from a KeyLayout (prefix, Redis Cluster or not) built from the settings
in one place: every key shape, exactly, and parse() reading each one back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import diffs.keys
from diffs import get_connection
from diffs.keys import KeyLayout, KeyShape, ModelKeys, ObjectKeys
from diffs.layout import current_layout
from diffs.settings import build_settings, get_settings
from diffs.sortedset import DiffSortedSet
from tests.conftest import diffs_settings
from tests.testapp.models import CodeItem, Question, QuestionProxy, Restaurant

PLAIN = KeyLayout("diffs:", cluster=False)
TAGGED = KeyLayout("diffs:", cluster=True)


@pytest.mark.parametrize(
    ("layout", "part"), [(PLAIN, "testapp.question"), (TAGGED, "{testapp.question}")]
)
def test_each_key_shape_is_built_exactly(layout, part):
    assert layout.object_key(Question, 42) == f"diffs:{part}:42"
    assert layout.object_key(Question, "42") == f"diffs:{part}:42"  # the pk field's form
    assert layout.object_key_base(Question) == f"diffs:{part}:"
    assert layout.feed_key(Question) == f"diffs:feed:{part}"
    assert layout.horizon_key(Question) == f"diffs:horizon:{part}"
    assert layout.birth_key_base(Question) == f"diffs:born:{part}:"
    assert layout.birth_key(Question, 42) == f"diffs:born:{part}:42"
    assert layout.birth_key_for(f"diffs:{part}:42") == f"diffs:born:{part}:42"
    assert layout.pattern() == "diffs:*"
    assert layout.object_keys(Question, 42) == ObjectKeys(
        key=f"diffs:{part}:42",
        feed=f"diffs:feed:{part}",
        horizon=f"diffs:horizon:{part}",
        birth=f"diffs:born:{part}:42",
        index=f"diffs:ix:{part}:42",
        log=f"diffs:log:{part}",
        pk_text="42",
    )
    assert layout.index_key(Question, 42) == f"diffs:ix:{part}:42"
    assert layout.log_key(Question) == f"diffs:log:{part}"
    assert layout.lane_keys_for(f"diffs:{part}:42") == (f"diffs:ix:{part}:42", f"diffs:log:{part}")
    assert layout.model_keys(Question) == ModelKeys(
        feed=f"diffs:feed:{part}",
        horizon=f"diffs:horizon:{part}",
        key_base=f"diffs:{part}:",
        birth_base=f"diffs:born:{part}:",
        log=f"diffs:log:{part}",
    )


def test_a_proxy_shares_its_concrete_models_keys_and_a_child_has_its_own():
    for layout in (PLAIN, TAGGED):
        assert layout.object_key(QuestionProxy, 1) == layout.object_key(Question, 1)
        assert layout.feed_key(QuestionProxy) == layout.feed_key(Question)
    assert PLAIN.object_key(Restaurant, 1) == "diffs:testapp.restaurant:1"


def test_the_prefix_is_taken_as_it_is_and_escaped_only_in_the_scan_pattern():
    layout = KeyLayout("site*[1]:", cluster=True)
    assert layout.feed_key(Question) == "site*[1]:feed:{testapp.question}"
    assert layout.pattern() == "site\\*\\[1\\]:*"


HOSTILE_PKS = ["1", "a:b", "x}{y", "{z}", "feed:q", "é ✓\n", "*?[]\\"]


@pytest.mark.parametrize("layout", [PLAIN, TAGGED], ids=["plain", "cluster"])
@pytest.mark.parametrize("pk", HOSTILE_PKS)
def test_parse_reads_back_every_key_it_builds(layout, pk):
    label = "testapp.codeitem"
    built = {
        layout.object_key(CodeItem, pk): KeyShape("object", label, pk),
        layout.birth_key(CodeItem, pk): KeyShape("born", label, pk),
        layout.feed_key(CodeItem): KeyShape("feed", label),
        layout.horizon_key(CodeItem): KeyShape("horizon", label),
    }
    for key, shape in built.items():
        assert layout.parse(key) == shape
        assert layout.parse(key.encode()) == shape  # as Redis returns it


def test_parse_knows_both_layouts_and_nothing_else():
    # A site that moved to (or from) Redis Cluster still holds keys of the other layout.
    assert PLAIN.parse(TAGGED.object_key(Question, 7)) == KeyShape(
        "object", "testapp.question", "7"
    )
    assert TAGGED.parse(PLAIN.feed_key(Question)) == KeyShape("feed", "testapp.question")
    for foreign in (
        "other:testapp.question:7",  # another prefix
        "diffs:testapp.question",  # no pk
        "diffs:testapp.question:",  # empty pk
        "diffs:feed:testapp.question:7",  # a feed has no pk
        "diffs:nolabel:7",
        "diffs:{testapp.question:7",
        b"diffs:\xff:1",  # not UTF-8
    ):
        assert PLAIN.parse(foreign) is None, foreign


def test_a_layout_is_built_from_the_settings():
    assert KeyLayout.from_settings(build_settings({"prefix": "p:"})) == KeyLayout("p:", False)
    cluster = build_settings({"url": "redis+cluster://127.0.0.1:7000", "prefix": "c:"})
    assert KeyLayout.from_settings(cluster) == KeyLayout("c:", True)


def test_current_layout_follows_the_settings_in_use():
    assert current_layout() == KeyLayout.from_settings(get_settings())
    assert current_layout() is current_layout()  # built once per settings
    with diffs_settings(prefix="other:"):
        assert current_layout().prefix == "other:"
        assert Question.diffs.get_key(3) == current_layout().object_key(Question, 3)
    assert current_layout().prefix == get_settings().prefix


def test_the_key_module_reads_no_settings():
    source = Path(diffs.keys.__file__).read_text(encoding="utf-8")
    names = {
        node.id if isinstance(node, ast.Name) else node.attr
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Name, ast.Attribute))
    }
    assert "get_settings" not in names
    assert "get_settings" not in source


def test_a_sorted_set_opened_by_its_key_alone_finds_its_birth_key():
    layout = current_layout()
    key = layout.object_key(Question, 5)
    assert DiffSortedSet(key, get_connection()).birth_key == layout.birth_key(Question, 5)
    assert DiffSortedSet("elsewhere:1", get_connection()).birth_key == "elsewhere:1:born"
