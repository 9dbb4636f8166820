"""URLs of the test project: DRF viewsets serving diffs."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path
from rest_framework.routers import DefaultRouter

from tests.testapp import views

router = DefaultRouter()
router.register("questions", views.QuestionViewSet, basename="question")
router.register("voted-questions", views.VotedQuestionViewSet, basename="voted-question")
router.register("per-action", views.PerActionQuestionViewSet, basename="per-action")
router.register("unaliased", views.UnaliasedQuestionViewSet, basename="unaliased")
router.register("switched", views.SwitchedQuestionViewSet, basename="switched")
router.register("older-aliases", views.OlderAliasesQuestionViewSet, basename="older-aliases")
router.register("uuid-items", views.UUIDItemViewSet, basename="uuid-item")
router.register("secretive", views.SecretiveViewSet, basename="secretive")
router.register("ledgers", views.LedgerViewSet, basename="ledger")

urlpatterns = [
    path("admin/", admin.site.urls),
    path("changes/", views.ChangesView.as_view()),
    path("signed-in-changes/", views.SignedInChangesView.as_view()),
    path("mixed-auth-changes/", views.MixedAuthChangesView.as_view()),
    *router.urls,
]
