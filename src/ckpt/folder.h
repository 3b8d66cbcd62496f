/* The model folder: which one (--model, $PIPPY_BATCH_MODEL, the demo
 * model), and whether it is one, checked before anything is read from it. */
#ifndef PB_CKPT_FOLDER_H
#define PB_CKPT_FOLDER_H

#include <stdbool.h>

#include "common/status.h"

/* given (--model) when set, else $PIPPY_BATCH_MODEL, else the demo model:
 * the installed one (PB_DATADIR/demo) or, for a binary run from its build
 * tree before installing, the source tree's data/demo. *dir is malloc'd.
 * PB_ERR_USAGE, saying to pass --model, when there is no demo model. */
pb_status pb_model_dir_resolve(const char *given, char **dir);

/* What a command needs from the folder. */
#define PB_MODEL_NEED_CONFIG 1u    /* config.json */
#define PB_MODEL_NEED_TOKENIZER 2u /* tokenizer.json or tokenizer.json.zst */

/* dir exists, is a folder, and holds what `need` says; else PB_ERR_CONFIG
 * with one line saying which. */
pb_status pb_model_dir_check(const char *dir, unsigned need);

/* The folder's tokenizer file: tokenizer.json, else tokenizer.json.zst when
 * only that exists (*path malloc'd). */
pb_status pb_model_tokenizer_path(const char *dir, char **path);

#endif
