#!/bin/sh
# render: where the template comes from (tokenizer_config.json string or named
# list, chat_template.jinja / .json beside it), and clear errors, never a
# crash, for bad templates, runaway templates and bad records.
set -u
PB=${PIPPY_BATCH:?}
T=${PB_TEST_TMP:-$(mktemp -d)}
fail=0
ok() { printf 'ok   %s\n' "$1"; }
bad() { printf 'FAIL %s\n' "$1"; fail=1; }
REC='{"messages": [{"role": "user", "content": "Hi"}]}'

# expect_err DESC PATTERN TEMPLATE [RECORD]: render fails (exit 1 or 2), one stderr line matching PATTERN
expect_err() {
    desc=$1 pat=$2 tmpl=$3 rec=${4:-$REC}
    printf '%s' "$tmpl" >"$T/t.jinja"
    printf '%s\n' "$rec" | "$PB" render --template "$T/t.jinja" >"$T/out" 2>"$T/err"
    rc=$?
    if { [ $rc -eq 1 ] || [ $rc -eq 2 ]; } && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q -- "$pat" "$T/err"; then
        ok "$desc: $(cat "$T/err")"
    else
        bad "$desc (rc=$rc): $(cat "$T/err")"
    fi
}
# expect_out DESC EXPECTED-PROMPT-JSON ARGS...: stdout is exactly {"prompt": EXPECTED}
expect_out() {
    desc=$1 want=$2; shift 2
    printf '%s\n' "$REC" | "$PB" render "$@" >"$T/out" 2>"$T/err"
    if [ $? -eq 0 ] && [ "$(cat "$T/out")" = "{\"prompt\": $want}" ]; then
        ok "$desc"
    else
        bad "$desc: $(cat "$T/out" "$T/err")"
    fi
}

# where the template comes from
M=$T/model; mkdir -p "$M"
printf '{"bos_token": "<s>", "eos_token": {"content": "</s>"}, "chat_template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"}' >"$M/tokenizer_config.json"
expect_out "tokenizer_config.json string" '"<s>Hi</s>"' --model "$M"
printf '{"bos_token": "<s>", "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ bos_token }}"}]}' >"$M/tokenizer_config.json"
expect_out "named list: default" '"D<s>"' --model "$M"
printf '{"bos_token": "<b>"}' >"$M/tokenizer_config.json"
printf '{{ bos_token }}jinja{%% if add_generation_prompt %%}!{%% endif %%}\n' >"$M/chat_template.jinja"
expect_out "chat_template.jinja beside it" '"<b>jinja!"' --model "$M"
rm "$M/chat_template.jinja"
printf '{"chat_template": "json{{ bos_token }}"}' >"$M/chat_template.json"
expect_out "chat_template.json beside it" '"json<b>"' --model "$M"
expect_out "--tokenizer-config" '"json<b>"' --template "$M/chat_template.json" --tokenizer-config "$M/tokenizer_config.json"
rm "$M/chat_template.json"
printf '%s\n' "$REC" | "$PB" render --model "$M" >"$T/out" 2>"$T/err"
[ $? -eq 2 ] && grep -q "no chat template" "$T/err" && ok "model without a template: $(cat "$T/err")" || bad "no template: $(cat "$T/err")"

# both record shapes, chat_template_kwargs, blank lines
printf '{%% if enable_thinking is defined and not enable_thinking %%}[nothink]{%% endif %%}{%% for m in messages %%}{{ m.role }}:{{ m.content }};{%% endfor %%}' >"$T/k.jinja"
printf '%s\n\n%s\n' '{"messages": [{"role": "user", "content": "a"}], "chat_template_kwargs": {"enable_thinking": false}}' \
    '{"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "messages": [{"role": "user", "content": "b"}]}}' \
    | "$PB" render --template "$T/k.jinja" >"$T/out" 2>"$T/err"
if [ "$(cat "$T/out")" = '{"prompt": "[nothink]user:a;"}
{"prompt": "user:b;"}' ]; then ok "both record shapes and chat_template_kwargs"; else bad "record shapes: $(cat "$T/out" "$T/err")"; fi

# bad templates: the construct and its line
expect_err "syntax error" "t.jinja: chat template line 3: unexpected end of template, expected 'endif'" 'a
{% if true %}
b'
expect_err "unknown tag" "line 1: unknown tag 'frobnicate'" '{% frobnicate %}'
expect_err "unsupported statement" "line 2: unsupported statement 'include'" '
{% include "x.jinja" %}'
expect_err "unsupported filter, when reached" "line 1: unsupported filter 'wordwrap'" '{{ messages[0].content | wordwrap(3) }}'
expect_err "unsupported method" "line 1: unsupported method 'zfill' of a string" "{{ 'a'.zfill(3) }}"
expect_err "raise_exception" "raise_exception: Only user and assistant roles are supported!" "{{ raise_exception('Only user and assistant roles are supported!') }}"
expect_err "undefined attribute" "line 1: 'x' of an undefined value 'nothing'" '{{ nothing.x }}'
expect_err "unterminated comment" "missing end of comment tag" '{# never closed'
# runaway templates stop at the limits
expect_err "loop iterations" "more than 200000 loop iterations" '{% for i in range(1000000) %}{% for j in range(1000000) %}{% endfor %}{% endfor %}'
expect_err "macro recursion" "macro calls nested more than 64 deep" '{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}'
expect_err "output size" "rendered text longer than" "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}"
deep=$(awk 'BEGIN { for (i = 0; i < 3000; i++) printf "("; printf "1"; for (i = 0; i < 3000; i++) printf ")" }')
expect_err "deep nesting" "nested too deeply" "{{ $deep }}"
expect_err "long chain" "nested too deeply" "{{ $(awk 'BEGIN { for (i = 0; i < 5000; i++) printf "1 + "; printf "1" }') }}"
# bad records
expect_err "no messages" "stdin line 1: \"messages\" is missing" 'x' '{"prompt": "not chat"}'
expect_err "role missing" "stdin line 1: messages\[0\]: \"role\"" 'x' '{"messages": [{"content": "a"}]}'
expect_err "other url" "stdin line 1: \"url\" is not \"/v1/chat/completions\"" 'x' '{"url": "/v1/completions", "body": {"messages": []}}'
expect_err "kwargs not an object" "chat_template_kwargs" 'x' '{"messages": [], "chat_template_kwargs": [1]}'
expect_err "tools not a list" "stdin line 1: \"tools\" is not a list" 'x' '{"messages": [], "tools": {"a": 1}}'
expect_err "a tool not an object" "stdin line 1: tools\[1\] is not an object" 'x' '{"messages": [], "tools": [{}, 2]}'
expect_err "documents not a list" "stdin line 1: \"documents\" is not a list" 'x' '{"messages": [], "documents": "d"}'
expect_err "not JSON" "stdin line 1: not a JSON object" 'x' '{"messages": '
exit $fail
