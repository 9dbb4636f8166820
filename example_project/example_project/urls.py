"""URLs: the admin at /admin/ (and / redirects there), the REST API at /api/."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from polls.api import QuestionViewSet
from rest_framework.routers import DefaultRouter

router = DefaultRouter()
router.register("questions", QuestionViewSet)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include(router.urls)),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
