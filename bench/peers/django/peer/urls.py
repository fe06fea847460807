"""The two refresh endpoints the benchmark drives."""

from django.urls import include, path
from rest_framework_simplejwt.views import TokenRefreshView

urlpatterns = [
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("api/token/refresh/", TokenRefreshView.as_view(), name="token_refresh"),
]
