"""``DiffsContextMiddleware``: a request's diffs carry its user, in sync and async stacks."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import iscoroutinefunction, sync_to_async
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from django.test import RequestFactory
from django.utils.functional import SimpleLazyObject

from diffs.middleware import DiffsContextMiddleware
from diffs.settings import find_problems
from tests.conftest import diffs_settings
from tests.test_context import create_question
from tests.testapp.models import Question

pytestmark = pytest.mark.django_db(transaction=True)


def extra_values(request):
    return {"path": request.path, "user": "overridden" if "override" in request.path else None}


def only_path(request):
    return {"path": request.path}


def not_a_dict(request):
    return ["path"]


def saving_view(request):
    Question.objects.create(question_text=request.path)
    return HttpResponse("ok")


async def async_saving_view(request):
    await sync_to_async(create_question)(question_text=request.path)
    return HttpResponse("ok")


def request_as(user, path="/change"):
    request = RequestFactory().post(path)
    request.user = user
    return request


def last_context():
    question = Question.objects.order_by("-pk").first()
    return question.diffs[-1].context


def test_a_request_records_its_authenticated_users_pk():
    user = User.objects.create(username="ann")
    response = DiffsContextMiddleware(saving_view)(request_as(user))
    assert response.status_code == 200
    assert last_context() == {"user": user.pk}


def test_an_anonymous_request_records_no_user():
    DiffsContextMiddleware(saving_view)(request_as(AnonymousUser()))
    assert last_context() == {}


def test_a_request_without_auth_middleware_records_no_user():
    request = RequestFactory().post("/change")
    DiffsContextMiddleware(saving_view)(request)
    assert last_context() == {}


def test_the_user_is_loaded_once_per_request_and_only_when_a_diff_is_recorded():
    user = User.objects.create(username="ann")
    loads = []

    def load():
        loads.append(1)
        return user

    quiet = DiffsContextMiddleware(lambda request: HttpResponse("nothing saved"))
    quiet(request_as(SimpleLazyObject(load)))
    assert loads == []

    def saves_twice(request):
        Question.objects.create(question_text="a")
        Question.objects.create(question_text="b")
        return HttpResponse("ok")

    DiffsContextMiddleware(saves_twice)(request_as(SimpleLazyObject(load)))
    assert loads == [1]
    assert last_context() == {"user": user.pk}


def test_the_async_stack_records_the_user_too():
    user = User.objects.create(username="bob")
    middleware = DiffsContextMiddleware(async_saving_view)
    assert iscoroutinefunction(middleware)
    response = asyncio.run(middleware(request_as(user)))
    assert response.status_code == 200
    assert last_context() == {"user": user.pk}


def test_request_context_adds_values_and_they_win_over_user():
    user = User.objects.create(username="cy")
    path = f"{__name__}.extra_values"
    with diffs_settings(request_context=path):
        DiffsContextMiddleware(saving_view)(request_as(user, "/override"))
        assert last_context() == {"path": "/override", "user": "overridden"}
        DiffsContextMiddleware(saving_view)(request_as(user, "/plain"))
        assert last_context() == {"path": "/plain", "user": None}
    with diffs_settings(request_context=f"{__name__}.only_path"):
        DiffsContextMiddleware(saving_view)(request_as(user, "/p"))
        assert last_context() == {"path": "/p", "user": user.pk}


def test_request_context_that_returns_no_dict_names_the_setting():
    with diffs_settings(request_context=f"{__name__}.not_a_dict"):
        middleware = DiffsContextMiddleware(saving_view)
        with pytest.raises(TypeError, match=r"request_context'\] returned list"):
            middleware(request_as(AnonymousUser()))


@pytest.mark.parametrize("path", [f"{__name__}.no_such_function", "no_such_module.function"])
def test_a_request_context_that_cannot_be_imported_fails_at_startup_naming_it(path):
    with diffs_settings(request_context=path), pytest.raises(ImproperlyConfigured, match=path):
        DiffsContextMiddleware(saving_view)


@pytest.mark.parametrize("value", ["nodots", 5, ["a.b"]])
def test_request_context_must_be_a_dotted_path_or_none(value):
    assert [p.check_id for p in find_problems({"request_context": value})] == ["diffs.E032"]
    assert find_problems({"request_context": None}) == []
