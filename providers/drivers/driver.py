# The program a SaaS interpreter runs: fixed text, with only base64 data and a hex marker filled in below.
def _sandboxctl_driver(code_b64, arguments_b64, marker):
    import ast, base64, json, sys, traceback
    code = base64.b64decode(code_b64).decode("utf-8")
    arguments = json.loads(base64.b64decode(arguments_b64).decode("utf-8"))

    def report(outcome):
        sys.stdout.flush()
        sys.stderr.flush()
        payload = base64.b64encode(json.dumps(outcome).encode()).decode()
        print("\n" + marker + payload + marker, flush=True)

    def convert(value):
        for method in ("tolist", "item"):
            if callable(getattr(value, method, None)):
                return getattr(value, method)()
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    try:
        tree = ast.parse(code, filename="main.py")
        has_main = any(getattr(node, "name", None) == "main" or any(
            getattr(target, "id", None) == "main" for target in getattr(node, "targets", [])) for node in tree.body)
        if not has_main and arguments:
            return report({"ok": False, "error": {"type": "MissingMain",
                                                  "message": "code must define main() when arguments are given"}})
        namespace = {"__name__": "__sandbox__" if has_main else "__main__"}
        exec(compile(tree, "main.py", "exec"), namespace)
        if not has_main:
            return report({"ok": True, "script": True})
        main = namespace.get("main")
        if not callable(main):
            return report({"ok": False, "error": {"type": "MainNotCallable", "message": "main is not callable"}})
        value = main(**arguments)
        if hasattr(value, "__await__"):
            import asyncio
            value = asyncio.run(value)
    except BaseException as exc:
        traceback.print_exc()
        return report({"ok": False, "error": {"type": type(exc).__name__, "message": str(exc)[:2000]}})
    try:
        value_json = json.dumps(value, default=convert, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        return report({"ok": False, "error": {"type": "ResultNotSerializable", "message": str(exc)}})
    report({"ok": True, "value_json": value_json})

_sandboxctl_driver("{code}", "{arguments}", "{marker}")
