"""API token authentication: `Authorization: Bearer <key>`, DRF's `Token <key>`, or `X-Sandbox-Token: <key>`."""

from django.utils import timezone
from rest_framework import authentication, exceptions

from sandboxctl.executions.models import ApiToken, hash_token

KEYWORDS = ("bearer", "token")


class BearerTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        key = self._key_from(request)
        if key is None:
            return None
        token = token_for(key)
        if token is None:
            raise exceptions.AuthenticationFailed("invalid token")
        return token.user, token

    def _key_from(self, request) -> str | None:
        return key_from(authentication.get_authorization_header(request).decode("latin-1"),
                        request.headers.get("X-Sandbox-Token"))

    def authenticate_header(self, request) -> str:
        return "Bearer"


def key_from(authorization: str, sandbox_token: str | None) -> str | None:
    """The key a request presents (`Authorization: Bearer|Token <key>`, else `X-Sandbox-Token`), None without one."""
    header = authorization.split()
    if header and header[0].lower() in KEYWORDS:
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("malformed Authorization header")
        return header[1]
    return sandbox_token or None


def token_for(key: str) -> ApiToken | None:
    """The active token with this key (its use noted, at most once a minute), or None. The one check behind the
    REST API and /mcp."""
    token = ApiToken.objects.select_related("user").filter(key_hash=hash_token(key)).first()
    if token is None or not token.user.is_active:
        return None
    if token.last_used_at is None or (timezone.now() - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token
