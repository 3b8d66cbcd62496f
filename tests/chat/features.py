#!/usr/bin/env python3
"""The Jinja2 features chat templates use, one small template each, rendered
by `pippy-batch render --template` and by the Jinja environment transformers
builds (transformers.utils.chat_template_utils._compile_jinja_template:
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True), loop
controls, HF's tojson, raise_exception, namespace): same text byte for byte,
or both refuse. Variables come in as chat_template_kwargs."""
import json
import os
import subprocess
import sys

PB = os.environ["PIPPY_BATCH"]
TMP = os.environ.get("PB_TEST_TMP") or "/tmp"
try:
    from transformers.utils.chat_template_utils import _compile_jinja_template
except ImportError:
    sys.exit("FAIL: transformers is not installed in " + sys.executable)

MSGS = [{"role": "system", "content": "  Be brief.  "}, {"role": "user", "content": "Héllo wörld 🙂"},
        {"role": "assistant", "content": "Hi!\n"}, {"role": "user", "content": "a,b,,c"}]
V = {"s": "  Hello, World  ", "n": 7, "f": 2.5, "neg": -3, "l": [3, 1, 2], "e": [], "d": {"b": 1, "a": [1, "x", None]},
     "u": "ünï 日本 🙂", "t": True, "nul": None, "words": "the quick brown fox", "objs": [
         {"name": "b", "k": 2, "on": True}, {"name": "a", "k": 1, "on": False}, {"name": "c", "k": 3}]}

CASES = [
    # output and literals
    "{{ 'a' }}{{ \"b\" }}{{ 1 }}{{ 1.5 }}{{ -2 }}{{ true }}{{ none }}{{ [1, 'x', none, false] }}{{ {'k': 'v', 'n': 1} }}",
    "{{ 'esc\\n\\t\\\\ \\'q\\' \\u00e9 \\x41' }}", "{{ 'adjacent' 'strings' }}", "{{ 1e3 }} {{ 0.1 + 0.2 }} {{ 1/3 }} {{ 2.0 }} {{ 1e-7 }} {{ 123456789012345678.0 }}",
    "{{ n }} {{ f }} {{ nul }} {{ t }} {{ undefined_var }}|", "{{ l }} {{ d }} {{ e }}",
    # whitespace control, trim_blocks, lstrip_blocks, comments
    "a  \n  {% if true %}\n  b\n  {% endif %}\n  c\n",
    "a  {%- if true -%}  b  {%- endif -%}  c", "x {{- ' y ' -}} z", "{# c #}\n  {# d #}\nq\n  {#- e -#}  r",
    "line\n    {% for i in l %}\n    {{ i }}\n    {% endfor %}\nend", "{%+ if true %}keep{% endif +%}\n!",
    "  {{ 'var keeps indent' }}\n", "a\r\nb\rc\n\n", "{% raw %}x{% endraw %}",
    # operators
    "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 7 / 2 }} {{ 3 * 'ab' }} {{ 1 + 2 * 3 - 4 }}",
    "{{ 'a' ~ 1 ~ none ~ true }} {{ 'x' + 'y' }} {{ [1] + [2, 3] }}", "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }}",
    "{{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' != 'b' }} {{ none == none }} {{ d == {'b': 1, 'a': [1, 'x', none]} }}",
    "{{ 'ell' in 'hello' }} {{ 2 in l }} {{ 'a' in d }} {{ 'z' not in d }} {{ not 0 }} {{ not not 'x' }}",
    "{{ 0 or 'x' }} {{ '' and 'y' }} {{ 1 and 2 }} {{ none or [] or 'z' }}",
    "{{ 'yes' if t else 'no' }} {{ 'yes' if nul else 'no' }} [{{ 'only' if false }}]",
    "{{ -n }} {{ +f }} {{ -(1 + 2) }} {{ (1, 2) }} {{ () }}",
    # subscripts and slices
    "{{ l[0] }} {{ l[-1] }} {{ l[5] }}| {{ d['b'] }} {{ d.b }} {{ d['zz'] }}| {{ s[2] }} {{ u[-1] }}",
    "{{ l[1:] }} {{ l[:-1] }} {{ l[::-1] }} {{ l[::2] }} {{ l[5:] }} {{ l[-10:2] }} {{ l[2:0:-1] }}",
    "{{ u[::-1] }} {{ u[1:4] }} {{ s[:5] }} {{ s[-4:] }} {{ 'abcdef'[::-2] }} {{ 'abc'[10:] }}|",
    "{{ messages[0].role }} {{ messages[-1]['content'] }} {{ messages[1:] | length }}",
    # filters
    "{{ s | trim }}|{{ '\\u00a0 x \\n' | trim }}|{{ 'xxaxx' | trim('x') }}", "{{ s | length }} {{ u | length }} {{ l | length }} {{ d | length }} {{ l | count }}",
    "{{ s | upper }} {{ s | lower }} {{ u | upper }} {{ 'hello world' | title }} {{ 'hELLO wORLD' | capitalize }} {{ \"it's o'neil\" | title }}",
    "{{ s | replace('l', 'L') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ 'ab' | replace('', '-') }}",
    "{{ undefined_var | default('dflt') }} {{ nul | default('dflt') }} {{ '' | default('dflt', true) }} {{ n | d(5) }}",
    "{{ l | first }} {{ l | last }} {{ s | first }} {{ e | first }}|", "{{ l | join(', ') }} {{ objs | join('-', attribute='name') }} {{ 'abc' | join('.') }}",
    "{% for k, v in d | items %}{{ k }}={{ v }};{% endfor %}{% for k, v in d.items() %}{{ k }}:{{ v }};{% endfor %}",
    "{{ n | string }} {{ nul | string }} {{ '42' | int }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ 3.9 | int }} {{ '2.5' | float }} {{ n | float }}",
    "{{ 'ab' | list }} {{ d | list }} {{ objs | map(attribute='name') | list }} {{ ['a', 'b'] | map('upper') | list }}",
    "{{ l | select('odd') | list }} {{ l | reject('odd') | list }} {{ objs | selectattr('on') | map(attribute='name') | list }} {{ objs | rejectattr('on') | list | length }}",
    "{{ objs | selectattr('k', 'equalto', 2) | first }} {{ objs | selectattr('name', 'in', ['a', 'c']) | map(attribute='k') | list }} {{ nul | selectattr('x') | list }}",
    "{{ l | sort }} {{ l | sort(reverse=true) }} {{ objs | sort(attribute='name') | map(attribute='k') | list }} {{ ['b', 'A', 'c'] | sort }}",
    "{{ l | unique | list }} {{ l | reverse | list }} {{ 'abc' | reverse }} {{ l | sum }} {{ l | min }} {{ l | max }} {{ neg | abs }}",
    "{{ d | tojson }} {{ l | tojson }} {{ u | tojson }} {{ nul | tojson }} {{ f | tojson }} {{ 'q\"\\\\\\n\\u0001' | tojson }}",
    "{{ d | tojson(indent=2) }}\n{{ objs | tojson(indent=4) }}\n{{ e | tojson(indent=2) }}{{ {} | tojson(indent=2) }}",
    "{{ {'z': 1, 'a': 2} | tojson(sort_keys=true) }} {{ messages | tojson }}", "{{ d | dictsort }} {{ 3.14159 | round(2) }} {{ 'a\\nb' | indent(2) }} {{ 'a\\nb' | indent(2, true) }}",
    # tests
    "{{ n is defined }} {{ zz is defined }} {{ zz is undefined }} {{ nul is none }} {{ s is string }} {{ d is mapping }} {{ l is iterable }}",
    "{{ n is number }} {{ f is float }} {{ n is integer }} {{ t is boolean }} {{ t is true }} {{ t is false }} {{ l is sequence }} {{ s is not string }}",
    "{{ n is odd }} {{ n is even }} {{ 9 is divisibleby 3 }} {{ 'x' is equalto 'x' }} {{ n is eq 7 }} {{ 2 is in l }} {{ 'a' is in 'cat' }} {{ n is gt 3 }}",
    "{{ 'abc' is lower }} {{ 'ABC' is upper }} {{ nul is sameas none }} {{ messages is iterable }} {{ messages[0] is mapping }}",
    # loops
    "{% for m in messages %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.length }} {{ loop.first }} {{ loop.last }};{% endfor %}",
    "{% for i in l %}{{ loop.previtem }}<{{ i }}>{{ loop.nextitem }}|{% endfor %}", "{% for i in e %}x{% else %}empty{% endfor %}",
    "{% for i in l if i > 1 %}{{ i }}:{{ loop.index }}:{{ loop.length }} {% endfor %}", "{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}",
    "{% for c in 'ab🙂' %}[{{ c }}]{% endfor %}{% for k in d %}{{ k }}{% endfor %}", "{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}",
    "{% for i in l %}{% for j in l %}{{ loop.index }}{% endfor %}/{{ loop.index }} {% endfor %}", "{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ range(5, 0, -2) | list }}",
    "{% for i in l %}{{ loop.cycle('odd', 'even') }}{% endfor %}",
    # set, scope, namespace
    "{% set x = 1 %}{% for i in l %}{% set x = i %}{% endfor %}{{ x }}", "{% set ns = namespace(x=0, s='') %}{% for i in l %}{% set ns.x = ns.x + i %}{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.x }} {{ ns.s }}",
    "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set c = [3, 4] %}{% set p, q = c %}{{ p }}{{ q }}", "{% set blk %}inner {{ n }}{% endset %}[{{ blk }}]",
    "{% for i in l %}{% if loop.first %}{% set y = 1 %}{% endif %}[{{ y }}]{% endfor %}", "{% set d2 = dict(a=1, b='x') %}{{ d2 }} {{ d2.a }}",
    # macros
    "{% macro m(a, b=2, c='z') %}{{ a }}-{{ b }}-{{ c }}-{{ n }}{% endmacro %}{{ m(1) }} {{ m(1, 3) }} {{ m(1, c='q') }}",
    "{% macro rec(k) %}{% if k > 0 %}{{ k }}{{ rec(k - 1) }}{% endif %}{% endmacro %}{{ rec(4) }}",
    "{%- macro render(msg) -%}\n<{{ msg.role }}>{{ msg.content | trim }}</{{ msg.role }}>\n{%- endmacro -%}\n{% for m in messages %}{{ render(m) }}\n{% endfor %}",
    # string methods
    "{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ 'xxhixx'.strip('x') }}|{{ s.upper() }}|{{ s.lower() }}|{{ 'a-b'.title() }}|{{ 'hi there'.capitalize() }}",
    "{{ s.startswith('  He') }} {{ s.endswith('  ') }} {{ 'abc'.startswith(('x', 'a')) }} {{ 'a,b,,c'.split(',') }} {{ words.split() }} {{ ' a  b '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'a.b.c'.rsplit('.', 1) }}",
    "{{ s.replace('l', '') }} {{ 'abab'.find('b') }} {{ 'abab'.count('ab') }} {{ '{} and {}'.format('x', 2) }} {{ '-'.join(['a', 'b']) }} {{ 'a\\nb\\n'.splitlines() }}",
    "{{ messages[-1].content.split(',')[-1] }} {{ '<think>r</think>ans'.split('</think>')[-1].lstrip('\\n') }} {{ 'x</think>'.split('</think>')[0].rstrip('\\n') }}",
    # dict methods
    "{{ d.get('b') }} {{ d.get('zz') }} {{ d.get('zz', 'dflt') }} {{ d.keys() | list }} {{ d.values() | list }} {{ d.items() | list }}",
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] | trim }}{% set rest = messages[1:] %}{% else %}{% set rest = messages %}{% endif %}|{{ rest | length }}",
    "{% if n > 5 %}big{% elif n > 2 %}mid{% else %}small{% endif %} {% if nul %}a{% elif nul is none %}b{% endif %}",
    # errors HF raises too
    "{{ raise_exception('Custom failure: roles must alternate') }}", "{{ undefined_var.attr }}", "{{ 1 / 0 }}", "{{ undefined_var['k'] }}",
    "{{ 'a' + 1 }}", "{{ nul.attr }}|{{ n.attr }}|", "{% for x in n %}{% endfor %}", "{{ 'a' < 1 }}",
    "{{ l | nosuchfilter }}", "{% if true %}unclosed", "{% endif %}", "{{ 1 + }}", "{% for %}", "{{ 'unterminated }}",
    "{% include 'x' %}", "{% set ns = namespace(a=1) %}{% set n.x = 1 %}",
]


def main():
    fails = 0
    compared = refused = 0
    for i, src in enumerate(CASES):
        path = os.path.join(TMP, f"case{i}.jinja")
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(src)
        try:
            ref = _compile_jinja_template(src).render(messages=MSGS, tools=None, documents=None,
                                                      add_generation_prompt=True, **V)
            err = None
        except Exception as e:
            ref, err = None, f"{type(e).__name__}: {e}"
        rec = json.dumps({"messages": MSGS, "chat_template_kwargs": V}) + "\n"
        p = subprocess.run([PB, "render", "--template", path], input=rec.encode(), capture_output=True)
        got = json.loads(p.stdout)["prompt"] if p.returncode == 0 and p.stdout else None
        msg = p.stderr.decode(errors="replace").strip()
        if ref is not None:
            compared += 1
            if got != ref:
                fails += 1
                print(f"FAIL case {i} {src!r}:\n  jinja2: {ref!r}\n  ours:   {got!r} {msg}")
        else:
            refused += 1
            if p.returncode == 0:
                fails += 1
                print(f"FAIL case {i} {src!r}: jinja2 raised {err}; render printed {got!r}")
            elif p.returncode not in (1, 2) or "line" not in msg:
                fails += 1
                print(f"FAIL case {i} {src!r}: exit {p.returncode}, message without a line: {msg!r}")
            else:
                print(f"ok   case {i} refused as jinja2 ({err[:60]!r}): {msg}")
    print(f"{compared} templates compared, {refused} refused as jinja2 refuses, {fails} failures")
    if fails:
        raise SystemExit(1)


main()
