/* Mustache subset for prompts (private to task/): {{var}} (never HTML-escaped), {{{var}}} and
 * {{&var}} (same), {{#s}}..{{/s}}, {{^s}}..{{/s}}, {{! comment }}, {{.}}, dotted names looked up
 * whole. Standalone section/comment tags take their line with them. With roles on, lines that
 * are exactly [system], [user] or [assistant] become role markers. */
#ifndef PWB_TASK_MUSTACHE_H
#define PWB_TASK_MUSTACHE_H

#include <stddef.h>

#include "task/template.h"
#include "util/buf.h"
#include "util/err.h"

enum mus_type { MUS_TEXT = 0, MUS_VAR, MUS_SECTION, MUS_INVERTED, MUS_ROLE };

struct tpl_node {
    int type;
    int line;          /* 1-based line in the file */
    char *text;        /* TEXT: literal (len bytes); VAR/SECTION/INVERTED: name; ROLE: role */
    size_t len;
    struct tpl_node *child; /* sections: first node of the body */
    struct tpl_node *next;
};

#define MUS_MAX_DEPTH 32
#define MUS_MAX_OUTPUT (16u << 20)
/* Byte that starts/ends a role marker in rendered text; stripped from every value. */
#define MUS_ROLE_MARK '\x01'

/* Parses text; errors read "path:line: ...". first_line: line number of text[0] in the file. */
int mus_parse(const char *text, size_t n, const char *path, int first_line, int roles, tpl_node **out,
              pwb_err *e);
void mus_free(tpl_node *n);

/* Rendering context: a stack of frames; the caller's lookup resolves a name in one frame. */
typedef struct mus_frame {
    int kind;
    const void *p;
    size_t i;
} mus_frame;

enum mus_vtype { MV_NONE = 0, MV_STR, MV_LIST, MV_TRUE };

typedef struct mus_val {
    int type;
    const char *s;     /* MV_STR */
    size_t n;          /* MV_LIST: items; item i is the frame {item_kind, p, i} */
    int item_kind;
    const void *p;
} mus_val;

/* Returns 1 when name is found in frame f (filling v), 0 to look further down the stack. */
typedef int (*mus_lookup_fn)(void *ud, const mus_frame *f, const char *name, mus_val *v);

#define MUS_FRAME_STR (-1) /* frame pushed for a non-list truthy section: {{.}} is its string */

/* Renders n (and its siblings) appending to out. roles: emit MUS_ROLE_MARK role MUS_ROLE_MARK
 * for role nodes and strip MUS_ROLE_MARK from values. */
int mus_render(const tpl_node *n, mus_lookup_fn fn, void *ud, const mus_frame *root, int roles, pwb_buf *out,
               pwb_err *e);

/* Calls visit for every VAR/SECTION/INVERTED node with the names of the enclosing sections
 * (outermost first); stops at the first non-zero return. */
typedef int (*mus_visit_fn)(void *ud, const tpl_node *n, const char *const *scopes, int depth);
int mus_walk(const tpl_node *n, mus_visit_fn visit, void *ud);

#endif
