"""The README's "Use from an agent" loops, run exactly as written (only the server's URL and token put in) against
the real ASGI server and worker. No model is reachable from the test machine, so each SDK is a stand-in that
plays the model's turns: the first asks for a tool, the second reads the tool's real answer and replies with it.
What the stand-ins check is what a model would need: the tool definitions it was given, and the tool's result
(text for OpenAI; text and the chart as an image block for Anthropic).
"""

import base64
import json
import re
import sys
import types
from pathlib import Path

import pytest
from test_web_tier import start_server, stop_server

from conftest import ROOT

PRIMES = "print(sum(p * p for p in range(2, 1000) if all(p % d for d in range(2, int(p ** 0.5) + 1))))"
EXPECTED = sum(p * p for p in range(2, 1000) if all(p % d for d in range(2, int(p ** 0.5) + 1)))
SINE = """
import math
import matplotlib.pyplot as plt
xs = [i * 2 * math.pi / 1000 for i in range(1001)]
ys = [math.sin(x) for x in xs]
plt.plot(xs, ys)
plt.savefig("artifacts/sine.png")
print(f"peak at x={xs[ys.index(max(ys))]:.3f}")
"""


@pytest.fixture(scope="module")
def web(sandbox_worker, django_db_setup, tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("agent-loop"))
    yield server
    stop_server(server)


def readme_block(after: str) -> str:
    text = Path(ROOT, "README.md").read_text()
    start = text.index("```python\n", text.index(after)) + len("```python\n")
    return text[start:text.index("```", start)]


def run_as_written(code: str, web, token: str, fake_modules: dict) -> None:
    code = code.replace('base_url="http://localhost:8000"', f'base_url="{web.url()}"')
    code = code.replace('token="my-token"', f'token="{token}"')
    saved = {name: sys.modules.get(name) for name in fake_modules}
    sys.modules.update(fake_modules)
    try:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def ns(**fields) -> types.SimpleNamespace:
    return types.SimpleNamespace(**fields)


class OpenAIStandIn:
    """openai.OpenAI(): chat.completions.create plays two turns of a model."""

    turns: list = []

    def __init__(self) -> None:
        self.chat = ns(completions=ns(create=self.create))

    def create(self, model: str, messages: list, tools: list):
        OpenAIStandIn.turns.append({"messages": list(messages), "tools": tools})
        if len(OpenAIStandIn.turns) == 1:
            assert "run_code" in {tool["function"]["name"] for tool in tools}
            call = ns(id="call_1", type="function", function=ns(
                name="run_code", arguments=json.dumps({"language": "python", "code": PRIMES})))
            return ns(choices=[ns(message=ns(role="assistant", content=None, tool_calls=[call]))])
        answer = messages[-1]
        assert answer["role"] == "tool" and answer["tool_call_id"] == "call_1"
        number = re.search(r"stdout:\n(\d+)", answer["content"]).group(1)
        return ns(choices=[ns(message=ns(role="assistant", content=f"The sum is {number}.", tool_calls=None))])


class AnthropicStandIn:
    """anthropic.Anthropic(): messages.create plays two turns of a model."""

    turns: list = []

    def __init__(self) -> None:
        self.messages = ns(create=self.create)

    def create(self, model: str, max_tokens: int, messages: list, tools: list):
        AnthropicStandIn.turns.append({"messages": list(messages), "tools": tools})
        if len(AnthropicStandIn.turns) == 1:
            assert "run_code" in {tool["name"] for tool in tools}
            use = ns(type="tool_use", id="toolu_1", name="run_code", input={"language": "python", "code": SINE})
            return ns(stop_reason="tool_use", content=[use])
        [result] = messages[-1]["content"]
        assert result["type"] == "tool_result" and result["tool_use_id"] == "toolu_1" and not result["is_error"]
        [image] = [block for block in result["content"] if block["type"] == "image"]
        assert base64.b64decode(image["source"]["data"]).startswith(b"\x89PNG")
        peak = re.search(r"peak at x=([\d.]+)", " ".join(block.get("text", "") for block in result["content"]))
        return ns(stop_reason="end_turn", content=[ns(type="text", text=f"It peaks at x = {peak.group(1)}.")])


def test_the_openai_loop_as_written(web, token, capsys):
    OpenAIStandIn.turns = []
    run_as_written(readme_block("An agent loop with OpenAI's SDK"), web, token,
                   {"openai": ns(OpenAI=OpenAIStandIn)})
    assert capsys.readouterr().out == f"The sum is {EXPECTED}.\n"
    assert len(OpenAIStandIn.turns) == 2


def test_the_anthropic_loop_as_written(web, token, capsys):
    AnthropicStandIn.turns = []
    run_as_written(readme_block("and with Anthropic's"), web, token, {"anthropic": ns(Anthropic=AnthropicStandIn)})
    assert capsys.readouterr().out == "It peaks at x = 1.571.\n"
    assert len(AnthropicStandIn.turns) == 2
