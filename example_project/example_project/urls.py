"""URLs: the admin at /admin/ (and / redirects there), the REST API at /api/, the live
page at /live/."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from polls.api import QuestionViewSet
from polls.views import live
from rest_framework.routers import DefaultRouter

router = DefaultRouter()
router.register("questions", QuestionViewSet)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include(router.urls)),
    path("live/", live, name="live"),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
