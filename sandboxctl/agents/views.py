"""GET /api/v1/tools: the agent tools as function definitions for model APIs that call functions, from the same
definitions the MCP server lists (tools.py)."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from sandboxctl.agents.mcp_server import PATH
from sandboxctl.agents.tools import anthropic_tools, mcp_tools, openai_tools


class ToolsView(APIView):
    @extend_schema(responses={200: OpenApiResponse(description="{openai: [...], anthropic: [...], mcp: {url, tools}}")})
    def get(self, request):
        return Response({"openai": openai_tools(), "anthropic": anthropic_tools(),
                         "mcp": {"url": request.build_absolute_uri(PATH), "tools": mcp_tools()}})


tools = ToolsView.as_view()
