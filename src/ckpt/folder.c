/* The model folder (see folder.h). */
#include "config.h"
#include "ckpt/folder.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"

static bool has_config(const char *dir)
{
    char *cfg = pb_path_join(dir, "config.json");
    bool ok = cfg && pb_file_exists(cfg);
    free(cfg);
    return ok;
}

/* The running binary is the one built in PB_BUILDDIR (not installed). */
static bool in_build_tree(void)
{
#if defined(PB_BUILDDIR) && defined(PB_SRCDIR)
    char exe[PATH_MAX], bdir[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return false;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash || !realpath(PB_BUILDDIR, bdir))
        return false;
    *slash = '\0';
    return strcmp(exe, bdir) == 0;
#else
    return false;
#endif
}

pb_status pb_model_dir_resolve(const char *given, char **dir)
{
    const char *pick = given;
    if (!pick) {
        const char *env = getenv("PIPPY_BATCH_MODEL");
        if (env && *env)
            pick = env;
    }
#if defined(PB_SRCDIR)
    /* a binary in its build tree goes with its own source tree's demo */
    if (!pick && in_build_tree() && has_config(PB_SRCDIR "/data/demo"))
        pick = PB_SRCDIR "/data/demo";
#endif
    if (!pick && has_config(PB_DATADIR "/demo"))
        pick = PB_DATADIR "/demo";
    if (!pick)
        return pb_error(PB_ERR_USAGE, "no model: pass --model DIR (a HuggingFace model folder) "
                        "or set PIPPY_BATCH_MODEL; the demo model is not installed in %s/demo",
                        PB_DATADIR);
    *dir = pb_strdup(pick);
    return *dir ? PB_OK : pb_error(PB_ERR_NOMEM, "out of memory");
}

/* path starts with GGUF's magic */
static bool is_gguf(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    char m[4];
    const bool yes = fread(m, 1, 4, f) == 4 && memcmp(m, "GGUF", 4) == 0;
    fclose(f);
    return yes;
}

pb_status pb_model_dir_check(const char *dir, unsigned need)
{
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        if (errno == ENOENT)
            return pb_error(PB_ERR_CONFIG, "model folder %s does not exist", dir);
        return pb_error(PB_ERR_CONFIG, "model folder %s: %s", dir, strerror(errno));
    }
    if (!S_ISDIR(sb.st_mode)) {
        if (is_gguf(dir))
            return pb_error(PB_ERR_CONFIG, "--model %s is a GGUF file (llama.cpp's format), which pippy-batch "
                            "does not read: give a HuggingFace model folder (config.json, tokenizer.json and "
                            "*.safetensors or pytorch_model*.bin)", dir);
        return pb_error(PB_ERR_CONFIG, "--model %s is a file, not a model folder (give the folder "
                        "that holds it)", dir);
    }
    if ((need & PB_MODEL_NEED_CONFIG) && !has_config(dir))
        return pb_error(PB_ERR_CONFIG, "model folder %s has no config.json", dir);
    if (need & PB_MODEL_NEED_TOKENIZER) {
        char *tok = NULL;
        PB_CHECK(pb_model_tokenizer_path(dir, &tok));
        bool ok = pb_file_exists(tok);
        free(tok);
        if (!ok)
            return pb_error(PB_ERR_CONFIG, "model folder %s has no tokenizer.json", dir);
    }
    return PB_OK;
}

pb_status pb_model_tokenizer_path(const char *dir, char **path)
{
    *path = pb_path_join(dir, "tokenizer.json");
    if (!*path)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    if (!pb_file_exists(*path)) {
        char *zst = pb_path_join(dir, "tokenizer.json.zst");
        if (zst && pb_file_exists(zst)) {
            free(*path);
            *path = zst;
        } else {
            free(zst);
        }
    }
    return PB_OK;
}
