"""The tools sandboxctl offers agents: one definition each (name, description, JSON Schema of the arguments),
served as MCP tools (/mcp and `sandboxctl mcp`) and as OpenAI- and Anthropic-style function definitions
(GET /api/v1/tools). What a call does is sandboxctl/agents/calls.py. No Django here: the stdio bridge imports it.
"""

from dataclasses import dataclass

LANGUAGE = {"type": "string", "enum": ["python", "nodejs"],
            "description": "python (3.11, numpy/pandas/matplotlib) or nodejs (24)"}
SESSION_ID = {"type": "string", "description": "the id open_session answered"}
FILES = {
    "type": "array",
    "description": "files to put into the working folder first (give content as text, or content_b64 for bytes)",
    "items": {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "relative to the working folder, e.g. data/sales.csv"},
            "content": {"type": "string", "description": "the file's text (UTF-8)"},
            "content_b64": {"type": "string", "description": "the file's bytes, base64"},
        },
        "required": ["path"],
        "additionalProperties": False,
    },
}
ARGUMENTS = {"type": "object", "description": "keyword arguments for main(**arguments), if the code defines main"}
TIMEOUT = {"type": "number", "exclusiveMinimum": 0, "description": "seconds (the server's maximum applies)"}
NETWORK = {"type": "object", "description": "hosts the code may reach, within the account's ceiling (none without "
                                            "this): {allow: [\"pypi\", \"files.example.com\", \"*.github.com\", "
                                            "\"203.0.113.0/24:443\"]}",
           "properties": {"allow": {"type": "array", "items": {"type": "string"}}}, "required": ["allow"],
           "additionalProperties": False}


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict  # JSON Schema of the arguments object

    def schema(self) -> dict:
        return {"type": "object", **self.parameters, "additionalProperties": False}


def properties(required: tuple[str, ...] = (), **fields: dict) -> dict:
    return {"properties": fields, "required": list(required)}


TOOLS = (
    Tool(
        "run_code",
        "Run code once in a fresh, isolated sandbox (no network unless `network` allows hosts) and get its stdout, "
        "stderr, result and files. "
        "Print what you want to see. If the code defines main(), it is called with `arguments` and its return value "
        "(JSON) is the result. Charts saved as files (e.g. plt.savefig('chart.png')) come back as images. "
        "Nothing is kept after the run: use a session to keep state.",
        properties(("language", "code"), language=LANGUAGE, code={"type": "string", "description": "the program"},
                   arguments=ARGUMENTS, files=FILES, timeout=TIMEOUT, network=NETWORK,
                   memory_mb={"type": "integer", "minimum": 32, "description": "memory limit in MB"}),
    ),
    Tool(
        "open_session",
        "Open a session: a sandbox whose interpreter state (variables, imports, loaded data) and working folder "
        "stay between cells. Returns its id for run_cell and the file tools; end it with end_session.",
        properties(("language",), language=LANGUAGE, files=FILES,
                   idle_timeout={"type": "number", "exclusiveMinimum": 0,
                                 "description": "seconds without a request before it ends"},
                   max_lifetime={"type": "number", "exclusiveMinimum": 0, "description": "seconds it may live"},
                   network=NETWORK,
                   memory_mb={"type": "integer", "minimum": 32, "description": "memory limit in MB"}),
    ),
    Tool(
        "run_cell",
        "Run code in a session, keeping what earlier cells defined. Returns stdout, stderr, the result of main() "
        "if this cell defines one, and the files it saved as artifacts.",
        properties(("session_id", "code"), session_id=SESSION_ID, code={"type": "string", "description": "the cell"},
                   arguments=ARGUMENTS, timeout=TIMEOUT),
    ),
    Tool(
        "upload_file",
        "Write a file into a session's working folder (give content as text, or content_b64 for bytes).",
        properties(("session_id", "path"), session_id=SESSION_ID,
                   path={"type": "string", "description": "relative to the working folder"},
                   content={"type": "string", "description": "the file's text (UTF-8)"},
                   content_b64={"type": "string", "description": "the file's bytes, base64"}),
    ),
    Tool(
        "download_file",
        "Read a file from a session's working folder (images come back as images).",
        properties(("session_id", "path"), session_id=SESSION_ID,
                   path={"type": "string", "description": "relative to the working folder"}),
    ),
    Tool(
        "list_files",
        "List the files of a session's working folder with their sizes.",
        properties(("session_id",), session_id=SESSION_ID),
    ),
    Tool(
        "end_session",
        "End a session: its sandbox and files are removed.",
        properties(("session_id",), session_id=SESSION_ID),
    ),
    Tool(
        "get_execution",
        "Get a run (or cell) by id: its status and, once it has ended, its output, result and files.",
        properties(("execution_id",), execution_id={"type": "string", "description": "the run's id"}),
    ),
)
BY_NAME = {tool.name: tool for tool in TOOLS}


def mcp_tools() -> list[dict]:
    return [{"name": tool.name, "description": tool.description, "inputSchema": tool.schema()} for tool in TOOLS]


def openai_tools() -> list[dict]:
    """Chat Completions `tools` (the Responses API takes the inner object with `type: function`)."""
    return [{"type": "function", "function": {"name": tool.name, "description": tool.description,
                                              "parameters": tool.schema()}} for tool in TOOLS]


def anthropic_tools() -> list[dict]:
    return [{"name": tool.name, "description": tool.description, "input_schema": tool.schema()} for tool in TOOLS]
