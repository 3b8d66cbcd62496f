/* libFuzzer target: one JSONL input line -> pb_record (native and OpenAI batch shape). */
#include "config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "gen/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* a good record has a prompt (text or token ids), or for a chat record the object holding its messages; a
 * list of several prompts (n_prompts > 1) each a text or ids, taken into a record of its own as one; an
 * embeddings record (the run's) is never a chat */
static void check_parsed(const char *line, size_t size, const pb_gen_settings *base)
{
    pb_record rec;
    const bool good = pb_record_parse(line, size, 1, base, &rec) == PB_OK && !rec.error;
    if (good && (rec.gs.embed != base->embed || (rec.gs.embed && (rec.chat || rec.gs.dimensions < 0))))
        __builtin_trap();
    if (good && rec.n_prompts > 1) {
        if (!rec.prompts || rec.prompt || rec.prompt_ids || rec.chat || rec.n_prompts > PB_GEN_MAX_PROMPTS)
            __builtin_trap();
        for (int i = 0; i < rec.n_prompts; i++) {
            pb_record one;
            if (pb_record_take_prompt(&one, &rec, i) != PB_OK)
                break;
            if (one.prompts || one.prompt_index != i ||
                (one.prompt_ids ? one.n_prompt_ids < 1 || one.prompt
                                : !one.prompt || strlen(one.prompt) != one.prompt_len))
                __builtin_trap();
            pb_record_clear(&one);
        }
    } else if (good && (!rec.id_json || (rec.chat ? !rec.chat_json || rec.prompt || rec.prompt_ids
                                         : rec.prompt_ids ? rec.n_prompt_ids < 1 || rec.prompt
                                                          : !rec.prompt || strlen(rec.prompt) != rec.prompt_len))) {
        __builtin_trap();
    }
    pb_record_clear(&rec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const stops[] = {"\n\n"};
    pb_gen_cli cli;
    memset(&cli, 0, sizeof cli);
    cli.n_stops = 1;
    cli.stops = stops;
    pb_gen_cli emb;
    memset(&emb, 0, sizeof emb);
    emb.embed = true;
    pb_gen_settings base, eb;
    if (pb_gen_settings_base(&cli, NULL, &base) != PB_OK)
        return 0;
    if (pb_gen_settings_base(&emb, NULL, &eb) != PB_OK) {
        pb_gen_settings_clear(&base);
        return 0;
    }
    const char *line = size ? (const char *)data : "";
    (void)pb_line_is_blank(line, size);
    check_parsed(line, size, &base); /* a run that generates */
    check_parsed(line, size, &eb);   /* and one that embeds */
    pb_gen_settings_clear(&base);
    pb_gen_settings_clear(&eb);
    return 0;
}
