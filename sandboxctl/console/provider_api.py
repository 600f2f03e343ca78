"""Staff-only REST API for choosing and configuring the sandbox provider (used by the admin settings page)."""

from django.core.cache import cache
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from providers import config_store, manager
from providers.registry import PROVIDERS, provider_class
from sandboxctl.api.serializers import JSONObjectField
from sandboxctl.console.models import ProviderActivation
from sandboxctl.console.probe import run_probe

HEALTH_CACHE_SECONDS = 10


class ProviderChoice(serializers.Serializer):
    provider_type = serializers.CharField()
    config = JSONObjectField(required=False, default=dict)

    def validate_provider_type(self, value: str) -> str:
        if value not in PROVIDERS:
            raise serializers.ValidationError(f"unknown provider; one of: {', '.join(PROVIDERS)}")
        return value

    def validate(self, data: dict) -> dict:
        # A secret left blank (or sent back masked) keeps the stored one, then the whole form is checked.
        data["config"], errors = config_store.merge_secrets(data["provider_type"], data["config"])
        errors = {**provider_class(data["provider_type"]).validate_config(data["config"]), **errors}
        if errors:
            raise serializers.ValidationError({"config": errors})
        return data


class SaveSettings(ProviderChoice):
    set_active = serializers.BooleanField(required=False, default=False)
    # Making a provider active runs its probe first; a failing probe blocks it unless this is true.
    activate_anyway = serializers.BooleanField(required=False, default=False)


def describe(name: str, active: str) -> dict:
    cls = provider_class(name)
    instance = manager.provider(name)
    return {
        "name": name,
        "label": cls.label,
        "description": cls.description,
        "languages": list(cls.get_supported_languages()),
        "configured": instance.is_configured(),
        **cached_health(name, instance),
        "active": active == name,
    }


def cached_health(name: str, instance) -> dict:
    """{healthy, health_reason, health_checked_at}. Health checks may touch the network: each answer is
    remembered briefly, per version of the settings."""
    key = f"provider-health:{name}:{config_store.version(name)}"
    answer = cache.get(key)
    if answer is None:
        health = instance.health_check()
        answer = {"healthy": health.healthy, "health_reason": health.reason,
                  "health_checked_at": timezone.now().isoformat()}
        cache.set(key, answer, HEALTH_CACHE_SECONDS)
    return answer


class AdminAPIView(APIView):
    permission_classes = [IsAdminUser]


class ProvidersView(AdminAPIView):
    @extend_schema(responses={200: dict})
    def get(self, request):
        active = config_store.active_name()
        return Response([describe(name, active) for name in PROVIDERS])


class ProviderSchemaView(AdminAPIView):
    @extend_schema(responses={200: dict})
    def get(self, request, name: str):
        if name not in PROVIDERS:
            return Response({"detail": f"unknown provider {name!r}"}, status=status.HTTP_404_NOT_FOUND)
        fields = [item.describe() for item in provider_class(name).get_config_schema()]
        return Response({"name": name, "label": provider_class(name).label, "fields": fields})


class SandboxConfigView(AdminAPIView):
    @extend_schema(responses={200: dict})
    def get(self, request):
        active = config_store.active_name()
        return Response({
            "provider_type": active,
            "config": config_store.masked(active),
            "providers": {name: config_store.masked(name) for name in PROVIDERS},
        })

    @extend_schema(request=SaveSettings, responses={200: dict})
    def put(self, request):
        serializer = SaveSettings(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        name, config = data["provider_type"], data["config"]
        switching = data["set_active"] and config_store.active_name() != name
        probe = run_probe(name, config, request.user) if switching else None
        if probe is not None and not probe["success"] and not data["activate_anyway"]:
            return Response({"detail": f"not activated: the probe failed: {probe['message']}",
                             "code": "probe_failed", "probe": probe}, status=status.HTTP_409_CONFLICT)
        config_store.save(name, config, activate=data["set_active"])
        if probe is not None:
            ProviderActivation.objects.create(provider=name, activated_by=request.user, probe_success=probe["success"],
                                              probe_message=probe["message"][:2000], forced=not probe["success"])
        return Response({
            "provider_type": config_store.active_name(),
            "saved": data["provider_type"],
            "config": config_store.masked(data["provider_type"]),
        })


class SandboxTestView(AdminAPIView):
    @extend_schema(request=ProviderChoice, responses={200: dict})
    def post(self, request):
        serializer = ProviderChoice(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        return Response(run_probe(data["provider_type"], data["config"], request.user))
