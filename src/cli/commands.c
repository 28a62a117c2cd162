/* THE command table: every subcommand, its options and its help text. The parser (args.c),
 * `pwb help` and each `pwb CMD --help` are generated from it, so a new subcommand is one entry
 * here plus its cmd_*.c. */
#include "cli/cli.h"

/* Options every command accepts (listed after its own in --help). */
const cli_opt cli_common_opts[] = {
    {"help", 'h', NULL, "show this help and exit"},
    {"verbose", 'v', NULL, "more diagnostics on stderr (repeat for debug)"},
    {"quiet", 'q', NULL, "no progress output, warnings only"},
    {0},
};

static const cli_opt run_opts[] = {
    {"db", 0, "PATH", "results database (default $PWB_DB, else results/pwb.db)"},
    {"resume", 0, NULL, "continue the suite's last run (the default when one exists); fails if there is none"},
    {"fresh", 0, NULL, "start a new run even if this suite ran before"},
    {"limit", 'n', "N", "evaluate at most N sampled examples per dataset (overrides the suite)"},
    {"concurrency", 'j', "N", "requests in flight per HTTP model (overrides the suite)"},
    {"chunk", 0, "N", "requests per backend call and per database transaction (default 256)"},
    {"dry-run", 0, NULL, "validate everything and estimate each cell (requests, tokens, cost); send nothing, "
                         "touch no database"},
    {"no-cache", 0, NULL, "neither read nor write the response cache"},
    {"max-cost", 0, "USD", "stop before the run's spending (earlier invocations included) would pass USD; exit 6"},
    {"wait", 0, NULL, "when another pwb is writing the same run, wait for it and then continue (else exit 7)"},
    {0},
};

static const cli_opt report_opts[] = {
    {"db", 0, "PATH", "results database (default $PWB_DB, else results/pwb.db)"},
    {"run", 'r', "ID", "the run to report (default: the latest)"},
    {"compare", 'c', "ID", "compare with run ID instead: per cell, accuracy in both, delta, McNemar p"},
    {"format", 'f', "FMT", "md (default), csv, json or html"},
    {"output", 'o', "FILE", "write to FILE instead of stdout (markdown: with its SVG charts beside it)"},
    {0},
};

static const cli_opt query_opts[] = {
    {"db", 0, "PATH", "results database (default $PWB_DB, else results/pwb.db)"},
    {"format", 'f', "FMT", "table (default), md, csv or json"},
    {"timeout", 0, "SECONDS", "stop a statement still running after this long (exit 6)"},
    {0},
};

static const cli_opt tpl_list_opts[] = {
    {"dir", 'd', "DIR", "templates folder searched first (then templates/, the checkout's or install's, $PWB_TEMPLATE_PATH)"},
    {0},
};

static const cli_opt tpl_show_opts[] = {
    {"dir", 'd', "DIR", "templates folder searched first (then templates/, the checkout's or install's, $PWB_TEMPLATE_PATH)"},
    {0},
};

static const cli_opt tpl_check_opts[] = {
    {"dir", 'd', "DIR", "templates folder searched first (then templates/, the checkout's or install's, $PWB_TEMPLATE_PATH)"},
    {"cards", 0, "DIR", "also search DIR for dataset cards"},
    {"dataset", 'D', "NAME", "check against this dataset card only"},
    {0},
};

static const cli_opt tpl_render_opts[] = {
    {"dir", 'd', "DIR", "templates folder searched first (then templates/, the checkout's or install's, $PWB_TEMPLATE_PATH)"},
    {"cards", 0, "DIR", "also search DIR for dataset cards"},
    {"dataset", 'D', "NAME", "dataset card (name or path) to take the example from (required)"},
    {"split", 's', "SPLIT", "split to take the example from (default: the card's eval split)"},
    {"row", 'r', "N", "0-based data row (default 0)"},
    {"shots", 0, "N", "override the template's number of shots"},
    {"seed", 0, "N", "seed for shot selection (default 1)"},
    {"flat", 0, NULL, "print exactly the text the model reads (no newline added); rank continuations on stderr"},
    {"chat-template", 0, "NAME", "with --flat: through this chat template (chatml, llama3, gemma, mistral, llama2, none)"},
    {"model", 'm', "FILE", "with --flat: through the chat template of this GGUF model"},
    {0},
};

static const cli_opt ds_list_opts[] = {
    {"cards", 0, "DIR", "also search DIR for dataset cards"},
    {0},
};

static const cli_opt ds_show_opts[] = {
    {"cards", 0, "DIR", "also search DIR for dataset cards"},
    {"rows", 'n', "N", "print the first N examples of the eval split (default 3)"},
    {0},
};

static const cli_opt ds_check_opts[] = {
    {"cards", 0, "DIR", "also search DIR for dataset cards"},
    {0},
};

static const cli_opt ds_import_opts[] = {
    {"name", 0, "NAME", "dataset name (default: the file's stem)"},
    {"format", 'f', "FMT", "jsonl, csv, tsv or text (default: from the extension and contents)"},
    {"input", 'i', "FIELD", "field holding the input text, or an input template: '{{premise}} {{hypothesis}}'"},
    {"answer", 'a', "FIELD", "field holding the label"},
    {"labels", 'l', "V1,V2,..", "label values as they appear in the file (default: the distinct values seen)"},
    {"verbalizers", 0, "W1,W2,..", "the words a model should answer, parallel to --labels"},
    {"split", 's', "NAME", "split name for this file (default dev)"},
    {"pattern", 0, "REGEX", "text: PCRE2 with named groups per line, e.g. '^(?<label>\\S+) (?<text>.*)$'"},
    {"header", 0, NULL, "csv/tsv: the first row names the columns"},
    {"no-header", 0, NULL, "csv/tsv: the first row is data"},
    {"instruction", 0, "TEXT", "instruction text for the card"},
    {"output", 'o', "FILE", "card to write (default datasets/NAME.json); '-' prints it"},
    {"force", 0, NULL, "overwrite an existing card"},
    {0},
};

/* The same engine switch on generate and serve. */
#define INT8_OPT                                                                                                   \
    {"int8", 0, NULL, "round activations to 8 bits in the weight products, as llama.cpp does by default: about "   \
                      "twice as fast decoding, ~0.1 in a log-probability from the exact default"}

static const cli_opt serve_opts[] = {
    {"model", 'm', "PATH", "a GGUF file or a Hugging Face folder (required)"},
    {"adapter", 'a', "NAME=DIR", "serve the PEFT folder DIR as model NAME (repeatable; soft prompt, LoRA or prefix)"},
    {"host", 0, "ADDR", "numeric address to listen on (default 127.0.0.1: this machine only)"},
    {"port", 'p', "N", "port (default 8080; 0: any free one, see --port-file)"},
    {"port-file", 0, "PATH", "write the port listened on to PATH once ready"},
    {"threads", 0, "N", "CPU threads for the model (default: OMP_NUM_THREADS or all)"},
    {"api-key-env", 0, "NAME", "require \"Authorization: Bearer $NAME\" (default variable PWB_SERVE_API_KEY, if set)"},
    {"chat-template", 0, "NAME", "chatml, llama3, gemma, mistral, llama2 or none instead of the model's"},
    {"max-batch", 0, "N", "sequences in the running batch (default 64)"},
    {"step-tokens", 0, "N", "tokens per forward step (default 256)"},
    {"max-body", 0, "BYTES", "largest request body (default 1048576)"},
    {"max-connections", 0, "N", "open connections at most (default 1024)"},
    {"max-inflight", 0, "N", "requests answered at once; more get 503 (default 256)"},
    {"request-timeout", 0, "S", "seconds a request may take (default 600)"},
    {"drain-timeout", 0, "S", "on SIGTERM, seconds to let running requests finish (default 30)"},
    {"no-prefix-cache", 0, NULL, "do not keep finished prompts' KV for later requests"},
    INT8_OPT,
    {0},
};

static const cli_opt generate_opts[] = {
    {"model", 'm', "PATH", "a GGUF file or a Hugging Face folder (required)"},
    {"prompt", 'p', "TEXT", "the prompt (default: standard input)"},
    {"chat", 'c', NULL, "wrap the prompt in the model's chat template as a user turn"},
    {"system", 0, "TEXT", "with --chat: a system message first"},
    {"template", 0, "NAME", "with --chat: chatml, llama3, gemma, mistral, llama2 or none instead of the model's"},
    {"max-tokens", 'n', "N", "tokens to generate at most (default 64)"},
    {"greedy", 'g', NULL, "always take the most likely token (temperature 0)"},
    {"temperature", 't', "T", "sampling temperature (default 0.8)"},
    {"top-p", 0, "P", "nucleus sampling mass (default 0.95)"},
    {"seed", 0, "N", "sampling seed (default 1)"},
    {"threads", 0, "N", "CPU threads (default: OMP_NUM_THREADS or all)"},
    {"ids", 0, NULL, "print the prompt and output token ids instead of text"},
    INT8_OPT,
    {0},
};

static const cli_opt tune_opts[] = {
    {"model", 'm', "PATH", "the frozen model: a GGUF file or a Hugging Face folder (required)"},
    {"dataset", 'D', "NAME", "dataset card, a classification task (required)"},
    {"out", 'o', "DIR", "the PEFT folder to write: adapter_config.json, adapter_model.safetensors (required)"},
    {"template", 0, "NAME", "template rendering each input (default zero-shot)"},
    {"split", 0, "SPLIT", "split to train on (default: the card's few-shot split, train)"},
    {"method", 0, "KIND", "prompt (default: prompt tuning), lora or prefix (prefix tuning)"},
    {"tokens", 0, "N", "virtual tokens of a soft prompt or prefix (default 20)"},
    {"r", 0, "N", "LoRA rank (default 8)"},
    {"alpha", 0, "X", "LoRA alpha: the update is scaled by alpha / r (default 16)"},
    {"dropout", 0, "X", "LoRA dropout on the adapted inputs while training (default 0.05)"},
    {"targets", 0, "LIST", "LoRA target modules of q,k,v,o,gate,up,down (default q,v)"},
    {"prefix-projection", 0, NULL, "prefix tuning through PEFT's reparameterization MLP (only the prefix is saved)"},
    {"encoder-hidden-size", 0, "N", "with --prefix-projection: the MLP's hidden size (default: the prefix's token_dim)"},
    {"init", 0, "KIND", "random, vocab, class (default) or text"},
    {"init-text", 0, "TEXT", "with --init text: the text whose embeddings start the prompt"},
    {"steps", 0, "N", "optimizer steps (default: one epoch)"},
    {"epochs", 0, "X", "epochs over the training examples when --steps is not given (default 1)"},
    {"batch", 'b', "N", "examples per step (default 8)"},
    {"lr", 0, "X", "learning rate (default 0.3 for adafactor, 1e-3 for adamw)"},
    {"optimizer", 0, "NAME", "adafactor (prompt tuning's default, as in Lester et al.) or adamw (LoRA's and prefix's)"},
    {"weight-decay", 0, "X", "weight decay (default 1e-5 for adafactor, 0.01 for adamw)"},
    {"clip", 0, "X", "global L2 gradient clipping (default 1; 0: off)"},
    {"warmup", 0, "N", "linear warmup steps, then linear decay (default: constant rate)"},
    {"seed", 0, "N", "seed for initialisation, sampling and shuffling (default 1)"},
    {"train-limit", 'n', "N", "train on at most N sampled examples (default: all)"},
    {"eval-n", 0, "N", "held-out examples of the training split for evaluation (default 200; 0: none)"},
    {"eval-every", 0, "K", "evaluate every K steps (default 50; 0: at the end only)"},
    {"patience", 0, "N", "stop after N evaluations without improvement (default: never)"},
    {"threads", 0, "N", "CPU threads (default: OMP_NUM_THREADS or all)"},
    {"chat-template", 0, "NAME", "chatml, llama3, gemma, mistral, llama2 or none instead of the model's"},
    {"target-delimiter", 0, "TEXT", "put before each label when the template names none (\" \" for a base model's raw prompts)"},
    {"exact", 0, NULL, "backward with F32 activations throughout, as scoring computes (faster on AVX-512 CPUs; "
                               "not the default, so that published runs reproduce)"},
    {"scale-parameter", 0, NULL, "Adafactor: --lr relative to the parameter's RMS (one rate for models of any embedding size)"},
    {"fresh", 0, NULL, "ignore the checkpoint in DIR and start over"},
    {"test-split", 0, "SPLIT", "after training, score SPLIT (e.g. dev) by rank classification"},
    {"test-limit", 0, "N", "with --test-split: at most N sampled examples"},
    {"baseline", 0, NULL, "with --test-split: also score the template without the soft prompt"},
    {"db", 0, "PATH", "record the soft prompt, each step and each evaluation (default $PWB_DB; none)"},
    {0},
};

static const cli_opt no_opts[] = {{0}};

const cli_cmd cli_commands[] = {
    {"run", "SUITE", 1, 1, "run a suite: every dataset x model x method cell, into the database",
     "Runs every cell of SUITE (dataset x model x method). Everything is validated first (suite,\n"
     "cards, data files, templates against cards, labels); bad input stops pwb before the database\n"
     "is created or touched. A run is identified by the suite's content: running the same suite again\n"
     "continues its last run, skipping the examples that already have a prediction. --fresh starts a\n"
     "new run. Ctrl-C stops cleanly: finished predictions are kept, and the next run resumes.\n"
     "Deterministic requests (temperature 0) are answered from the response cache when possible.\n"
     "Prints a summary table per cell at the end: n, accuracy, invalid, errors, cost.\n"
     "--dry-run prints, per cell, the requests, HTTP calls, prompt tokens (counted with the model's\n"
     "own tokenizer where pwb has it: local models, or a model's `tokenizer` file; else bytes/4), the\n"
     "most it may generate and the cost at the model's price, sending nothing. --max-cost USD stops\n"
     "the run before it would spend more than USD (what a resumed run spent counts): finished\n"
     "predictions are kept, exit 6, and a rerun with a higher limit continues. One pwb writes a run\n"
     "at a time: a second one on the same database and suite exits 7, or with --wait waits for the\n"
     "first and continues from where it stopped.",
     run_opts, cmd_run},
    {"optimize", "SUITE", 1, 1, "run a suite's prompt searches and print each winner's template file",
     "Runs the prompt search of every suite method with an \"optimize\" object (docs/optimize.md) and\n"
     "prints, per dataset/model/method, the template file its winner was written to; no rows are\n"
     "scored. Candidates, held-out scores and the search's cost go into the database; `pwb run` of\n"
     "the same suite later reuses the winner. Same options as run.",
     run_opts, cmd_run},
    {"report", "", 0, 0, "render a report (markdown, CSV, JSON or HTML) of a run",
     "Renders, per dataset and model, a verdict (the best engineered prompt against the best tuned\n"
     "method: the accuracy gap with its interval and McNemar p, the labelled examples and CPU cost\n"
     "each used, when the answer flips), then one table for a run: method, n, accuracy with its 95% Wilson\n"
     "interval, McNemar p against the best, invalid %, mean tokens in/out, latency p50/p95, cost\n"
     "per 1,000 examples, and the majority-class baseline; soft prompts' training cost and\n"
     "break-even point; one table per sweep. With -o FILE.md the charts (accuracy, accuracy\n"
     "against cost, training curves, sweeps) are written beside it as FILE-*.svg. With\n"
     "--compare A, compares run A with the run (B) per method: accuracy in both, B - A, an exact\n"
     "McNemar test on the rows both evaluated, tokens and cost. -f html writes one self-contained\n"
     "page: sortable tables, charts inline, and the examples where two chosen methods disagree.\n"
     "The database is opened read-only.\n"
     "See docs/reports.md.",
     report_opts, cmd_report},
    {"query", "SQL", 1, 1, "read-only SQL over the results database",
     "Runs SQL against the results database opened read-only. Every statement is checked before\n"
     "any runs: reads only (no writes, transactions, ATTACH or setting PRAGMAs; exit 3). Several\n"
     "statements give one result set each. Views: v_runs, v_summary, v_predictions, v_confusion\n"
     "(per cell: gold label x answered label, with their words; see docs/database.md). Example:\n"
     "  pwb query \"SELECT dataset, method, n, accuracy FROM v_summary\"",
     query_opts, cmd_query},
    {"template list", "", 0, 0, "list the templates", "Lists the templates (*.tmpl) with their kind, shots and task.",
     tpl_list_opts, cmd_template_list},
    {"template show", "TEMPLATE", 1, 1, "show a template's header and body",
     "Shows a template: its parsed header and its text. TEMPLATE is a name (zero-shot) or a path.",
     tpl_show_opts, cmd_template_show},
    {"template check", "[TEMPLATE...]", 0, -1, "check templates against dataset cards",
     "Checks every template (or the ones named) against every dataset card it applies to: generic\n"
     "(task: classification) templates against every classification card, a dataset's own templates\n"
     "against that card. Every problem is printed as file:line: message. Exit 3 when any fails.",
     tpl_check_opts, cmd_template_check},
    {"template render", "TEMPLATE", 1, 1, "render a template for one dataset row",
     "Renders TEMPLATE for one example of a dataset (with its few-shot examples) and prints the\n"
     "messages as they would be sent.",
     tpl_render_opts, cmd_template_render},
    {"dataset list", "", 0, 0, "list the dataset cards", "Lists the dataset cards found in datasets/ and $PWB_DATA_PATH.",
     ds_list_opts, cmd_dataset_list},
    {"dataset show", "NAME", 1, 1, "show a dataset card and a few examples",
     "Shows a dataset card (NAME or a path to a card), the size of each split and the first rows.",
     ds_show_opts, cmd_dataset_show},
    {"dataset check", "[NAME...]", 0, -1, "load every split of every card (or the ones named)",
     "Loads every split of every card (or of the ones named): files found, sha256 as recorded, every\n"
     "row well-formed, every label in the card. Prints rows and label counts. Exit 3 on a problem.",
     ds_check_opts, cmd_dataset_check},
    {"dataset import", "FILE", 1, 1, "write a dataset card for a CSV/TSV/JSONL/text file",
     "Writes a dataset card for FILE, guessing what the flags do not say: the format (from the\n"
     "extension and contents), the input field (the longest text), the answer field (few distinct\n"
     "values) and the labels (the distinct answers). The card is checked by loading the file.",
     ds_import_opts, cmd_dataset_import},
    {"generate", "", 0, 0, "generate text with the local engine",
     "Runs one prompt through the built-in engine (GGUF or Hugging Face safetensors) and prints the\n"
     "generated text, or with --ids the token ids (to compare with reference greedy outputs).\n"
     "Timing goes to stderr. Example:\n"
     "  pwb generate --model models/SmolLM2-135M-Instruct.Q4_1.gguf --chat --greedy --prompt \"Hi\"",
     generate_opts, cmd_generate},
    {"serve", "", 0, 0, "serve the local engine and its adapters over an OpenAI-compatible HTTP API",
     "Listens (loopback by default) and answers GET /health, GET /v1/models, POST /v1/completions\n"
     "(echo, logprobs, stop, seed, stream) and POST /v1/chat/completions (the model's chat template,\n"
     "stream). A request's \"model\" picks \"base\" or an adapter; requests of every adapter share one\n"
     "continuously batched forward pass. SIGTERM stops accepting, finishes running requests, exits.\n"
     "See docs/serve.md. Example:\n"
     "  pwb serve --model models/SmolLM2-135M-Instruct.Q4_1.gguf --adapter sst2=results/soft/KEY --port 8080",
     serve_opts, cmd_serve},
    {"tune", "", 0, 0, "train a soft prompt, LoRA adapter or prefix on a frozen local model",
     "Trains a soft prompt (Lester et al. 2021): N vectors in front of the input embeddings of a\n"
     "frozen model, learned by the cross-entropy of each example's label verbalizer given\n"
     "[soft prompt][input rendered by the template and the chat template], as rank classification\n"
     "scores it. A held-out slice of the training split is scored every K steps and the best prompt\n"
     "is kept. The checkpoint in DIR makes an interrupted run resume. Writes a PEFT folder. Example:\n"
     "  pwb tune --model models/SmolLM2-135M-Instruct.Q4_1.gguf --dataset sst2 --train-limit 2000 \\\n"
     "    --tokens 20 --init class --out results/sst2-soft --test-split dev\n"
     "--method lora trains LoRA (Hu et al. 2021) on the chosen weight products instead (base weights\n"
     "frozen and still quantized), --method prefix the keys and values of N virtual positions in every\n"
     "layer (prefix tuning, Li & Liang 2021); both default to AdamW (docs/peft.md):\n"
     "  pwb tune --method lora --r 8 --targets q,v --model models/SmolLM2-135M-Instruct.Q4_1.gguf \\\n"
     "    --dataset sst2 --train-limit 2000 --out results/sst2-lora --test-split dev",
     tune_opts, cmd_tune},
    {"model info", "PATH", 1, 1, "describe a model file or folder",
     "Prints what a model holds: architecture, dimensions, parameter count, tensor types, file size,\n"
     "tokenizer and chat template.",
     no_opts, cmd_model_info},
    {"version", "", 0, 0, "print the version", "Prints pwb's version and the library versions.", no_opts, cmd_version},
    {"help", "[COMMAND...]", 0, -1, "list the commands, or help on one", "Lists the commands; `pwb help CMD` is `pwb CMD --help`.",
     no_opts, cmd_help},
};

const int cli_n_commands = (int)(sizeof cli_commands / sizeof cli_commands[0]);
