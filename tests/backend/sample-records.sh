# Sourced by tests/backend/cli-emu.sh and contrib/gpu/check.sh: the records
# whose tokens the device's sampler and the host's must draw alike.
# pb_sample_records COUNT MAX_TOKENS prints COUNT records, each with its own
# seed: temperature with top-p, with top-k and min-p, with a repetition
# penalty and min_tokens (EOS masked), greedy; two of every eight with n = 2
# (each completion its own stream), two with frequency and presence penalties,
# one with log probabilities (of the most likely ids, or of given ones:
# logprob_token_ids), one with logit biases and stop token ids, one with
# allowed token ids, one constrained by a pattern or (of sixteen) a grammar, one a beam search of two beams.
pb_sample_records() {
    _i=1
    while [ $_i -le "$1" ]; do
        case $((_i % 4)) in
        0) _s="\"temperature\": 0.8, \"top_p\": 0.9" ;;
        1) _s="\"temperature\": 1.1, \"top_k\": 40, \"min_p\": 0.05" ;;
        2) _s="\"temperature\": 0.4, \"repetition_penalty\": 1.4, \"min_tokens\": 12" ;;
        *) _s="\"temperature\": 0" ;;
        esac
        [ $((_i % 8)) -ge 1 ] && [ $((_i % 8)) -le 2 ] && _s="$_s, \"n\": 2"
        [ $((_i % 8)) -ge 3 ] && [ $((_i % 8)) -le 4 ] && _s="$_s, \"frequency_penalty\": 0.6, \"presence_penalty\": 0.4"
        [ $((_i % 16)) -eq 5 ] && _s="$_s, \"logprobs\": 1, \"logprob_token_ids\": [13, 264, 29]" # on the device:
        [ $((_i % 16)) -eq 13 ] && _s="$_s, \"logprobs\": 4" # the logits come to the host (likewise below)
        [ $((_i % 8)) -eq 6 ] && _s="$_s, \"logit_bias\": {\"29\": 2.5}, \"stop_token_ids\": [13, 30]" # likewise
        [ $((_i % 8)) -eq 7 ] && _s="$_s, \"allowed_token_ids\": [13, 29, 30, 264, 1000]" # likewise
        [ $((_i % 16)) -eq 0 ] && _s="$_s, \"guided_regex\": \"( [a-z]+){2,6}[.!]\"" # constrained: likewise
        [ $((_i % 16)) -eq 8 ] && _s="$_s, \"guided_grammar\": \"root ::= (\\\" \\\" [a-z]+){2,6} [.!]\"" # a grammar
        [ $((_i % 16)) -eq 9 ] && _s="$_s, \"use_beam_search\": true" # n = 2 beams: the most likely ids, forks
        echo "{\"prompt\": \"Record $_i: once upon a time\", \"max_tokens\": $2, \"seed\": $_i, $_s}"
        _i=$((_i + 1))
    done
}
