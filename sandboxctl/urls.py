from django.contrib import admin
from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from sandboxctl.agents.views import tools
from sandboxctl.api import events, metrics, session_views, views
from sandboxctl.console import login_throttle, provider_api
from sandboxctl.console.admin_page import sandbox_settings
from sandboxctl.console.dashboard import dashboard

urlpatterns = [
    path("api/v1/executions", views.execution_list, name="execution-list"),
    path("api/v1/executions/<uuid:pk>", views.ExecutionDetailView.as_view(), name="execution-detail"),
    path("api/v1/executions/<uuid:pk>/cancel", views.ExecutionCancelView.as_view(), name="execution-cancel"),
    path("api/v1/executions/<uuid:pk>/artifacts/<int:index>", views.ExecutionArtifactView.as_view(),
         name="execution-artifact"),
    path("api/v1/executions/<uuid:pk>/events", events.ExecutionEventsView.as_view(), name="execution-events"),
    path("api/v1/tools", tools, name="tool-list"),
    path("api/v1/sessions", session_views.session_list, name="session-list"),
    path("api/v1/sessions/<uuid:pk>", session_views.SessionDetailView.as_view(), name="session-detail"),
    path("api/v1/sessions/<uuid:pk>/executions", session_views.session_cells, name="session-cells"),
    path("api/v1/sessions/<uuid:pk>/files", session_views.session_files, name="session-files"),
    path("api/v1/sessions/<uuid:pk>/files/<path:path>", session_views.session_file, name="session-file"),
    path("run", views.ragflow_run, name="ragflow-run"),
    path("healthz", views.healthz, name="healthz"),
    path("", views.healthz, name="root-healthz"),  # RAGFlow's executor answers health on / too
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/v1/providers", provider_api.ProvidersView.as_view(), name="provider-list"),
    path("api/v1/providers/<str:name>/schema", provider_api.ProviderSchemaView.as_view(), name="provider-schema"),
    path("api/v1/sandbox/config", provider_api.SandboxConfigView.as_view(), name="sandbox-config"),
    path("api/v1/sandbox/test", provider_api.SandboxTestView.as_view(), name="sandbox-test"),
    path("admin/sandbox-settings/", admin.site.admin_view(sandbox_settings), name="sandbox-settings"),
    path("admin/dashboard/", admin.site.admin_view(dashboard), name="dashboard"),
    path("favicon.ico", RedirectView.as_view(url=static("console/favicon.svg"), permanent=True)),
    path("admin/login/", login_throttle.login, name="admin-login"),
    path("admin/", admin.site.urls),
]
