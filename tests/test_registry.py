"""@diffs.register: what registering a model connects, and what it refuses."""

from __future__ import annotations

import pytest
from django.db import models
from django.db.models.signals import post_delete, post_init, post_save, pre_save

import diffs
from diffs import RegistrationError
from diffs.managers import DiffModelDescriptor
from tests.testapp.models import AbstractThing, Question, Untracked


def receivers_for(signal, model):
    return [r for r in signal.receivers if r[0][1] == id(model)]


def test_register_returns_the_class():
    assert diffs.register(Question) is Question


def test_import_time_registration_connected_everything():
    from tests.testapp import models as testapp_models

    assert testapp_models.APPS_READY_AT_IMPORT is False
    assert diffs.is_registered(Question)
    assert Question in diffs.registered_models()
    assert isinstance(vars(Question)["diffs"], DiffModelDescriptor)
    for signal in (pre_save, post_save, post_delete):
        assert receivers_for(signal, Question), signal
    # Loading an instance costs no signal: the snapshot is taken in from_db().
    assert not receivers_for(post_init, Question)
    assert getattr(Question.from_db, "_diffs_snapshot_from_db", False)


def test_registering_twice_is_harmless():
    counts = {
        s: len(receivers_for(s, Question)) for s in (pre_save, post_save, post_delete, post_init)
    }
    from_db = Question.from_db
    diffs.register(Question)
    diffs.register(Question)
    assert counts == {s: len(receivers_for(s, Question)) for s in counts}
    assert Question.from_db == from_db  # wrapped once, not twice
    assert diffs.registered_models().count(Question) == 1


def test_receivers_carry_a_dispatch_uid():
    keys = [r[0][0] for r in pre_save.receivers if r[0][1] == id(Question)]
    assert "diffs.pre_save.testapp.question" in keys


@pytest.mark.django_db(transaction=True)
def test_register_after_apps_are_ready_and_unregister():
    assert not diffs.is_registered(Untracked)
    try:
        assert diffs.register(Untracked) is Untracked
        thing = Untracked.objects.create(name="a")
        thing.name = "b"
        thing.save()
        assert [d.data[0]["fields"] for d in thing.diffs] == [{"name": "a"}, {"name": "b"}]
        assert thing.is_dirty() is False
    finally:
        diffs.unregister(Untracked)
    assert not diffs.is_registered(Untracked)
    assert "diffs" not in vars(Untracked)
    Untracked.objects.create(name="quiet")  # no receivers left: nothing recorded, no error
    assert not receivers_for(pre_save, Untracked)
    diffs.unregister(Untracked)  # unknown: ignored


@pytest.mark.django_db(transaction=True)
def test_instances_loaded_before_registration_report_every_field():
    thing = Untracked.objects.create(name="early")
    try:
        diffs.register(Untracked)
        thing.save()
        assert thing.diffs[-1].data[0]["fields"] == {"name": "early"}
    finally:
        diffs.unregister(Untracked)


@pytest.mark.parametrize("target", [object, 42, "Question", models.Model, type("Plain", (), {})])
def test_non_models_are_refused(target):
    with pytest.raises(TypeError, match="expects a Django model class"):
        diffs.register(target)


def test_abstract_models_are_refused():
    with pytest.raises(RegistrationError, match="abstract model AbstractThing"):
        diffs.register(AbstractThing)


def test_a_diffs_attribute_of_another_kind_is_refused():
    class HasDiffs(models.Model):
        diffs = models.IntegerField(default=0)

        class Meta:
            app_label = "testapp"

    with pytest.raises(RegistrationError, match="HasDiffs already has an attribute 'diffs'"):
        diffs.register(HasDiffs)


def test_register_call_form():
    assert diffs.register() is diffs.register
    assert diffs.register()(Question) is Question
