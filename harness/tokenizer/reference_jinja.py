#!/usr/bin/env python3
"""The oracle of jinja_test.cpp: renders Jinja templates with python3-jinja2 configured as
transformers' apply_chat_template configures it (transformers/utils/chat_template_utils.py,
_compile_jinja_template): an ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks, the
loopcontrols extension and the {% generation %} tag, the globals raise_exception and
strftime_now, and a tojson filter that is json.dumps with ensure_ascii=False.

Usage: reference_jinja.py CASES.json RESULTS.json
CASES.json is a list of {"name", "template", "context"}; the context's keys are passed as the
template's keyword arguments, as apply_chat_template passes messages, add_generation_prompt,
the special tokens and the template kwargs. RESULTS.json gets one {"name", "ok", "output"} or
{"name", "ok": false, "error"} per case (a jinja2 TemplateError, raise_exception's included).
Exit status 4 when jinja2 is missing.
"""
import json
import sys
from datetime import datetime

try:
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    print("reference_jinja.py: python3-jinja2 is not installed", file=sys.stderr)
    sys.exit(4)


class AssistantTracker(Extension):
    """transformers' {% generation %} block, without the assistant-mask bookkeeping: renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

    def _generation_support(self, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format):
    return datetime.now().strftime(format)


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    env = environment()
    compiled = {}  # many cases share a template; compiling is the slow part
    results = []
    for case in cases:
        try:
            if case["template"] not in compiled:
                compiled[case["template"]] = env.from_string(case["template"])
            output = compiled[case["template"]].render(**case["context"])
            results.append({"name": case["name"], "ok": True, "output": output})
        except jinja2.exceptions.TemplateError as e:
            results.append({"name": case["name"], "ok": False, "error": f"{type(e).__name__}: {e}"})
        except (TypeError, ValueError, ArithmeticError, LookupError) as e:
            results.append({"name": case["name"], "ok": False, "error": f"{type(e).__name__}: {e}"})
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(results, f, ensure_ascii=True)


if __name__ == "__main__":
    main()
