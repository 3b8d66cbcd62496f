/* libFuzzer target: one JSONL input line -> pb_record (native and OpenAI batch shape). */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "gen/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const stops[] = {"\n\n"};
    pb_gen_cli cli;
    memset(&cli, 0, sizeof cli);
    cli.n_stops = 1;
    cli.stops = stops;
    pb_gen_settings base;
    if (pb_gen_settings_base(&cli, NULL, &base) != PB_OK)
        return 0;
    pb_record rec;
    const char *line = size ? (const char *)data : "";
    (void)pb_line_is_blank(line, size);
    /* a good record has a prompt (text or token ids), or for a chat record the object holding its messages */
    if (pb_record_parse(line, size, 1, &base, &rec) == PB_OK && !rec.error &&
        (!rec.id_json || (rec.chat ? !rec.chat_json || rec.prompt || rec.prompt_ids
                          : rec.prompt_ids ? rec.n_prompt_ids < 1 || rec.prompt
                                           : !rec.prompt || strlen(rec.prompt) != rec.prompt_len)))
        __builtin_trap();
    pb_record_clear(&rec);
    pb_gen_settings_clear(&base);
    return 0;
}
