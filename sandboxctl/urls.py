from django.contrib import admin
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from sandboxctl.executions import views

urlpatterns = [
    path("api/v1/executions", views.ExecutionListCreateView.as_view(), name="execution-list"),
    path("api/v1/executions/<uuid:pk>", views.ExecutionDetailView.as_view(), name="execution-detail"),
    path("api/v1/executions/<uuid:pk>/cancel", views.ExecutionCancelView.as_view(), name="execution-cancel"),
    path("run", views.RagflowRunView.as_view(), name="ragflow-run"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("admin/", admin.site.urls),
]
