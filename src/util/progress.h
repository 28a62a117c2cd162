/* Progress reporting for long work: a redrawn bar with ETA on a terminal, a plain line every few
 * seconds otherwise. Library code receives a pwb_progress* (may be NULL) and calls progress_update. */
#ifndef PWB_UTIL_PROGRESS_H
#define PWB_UTIL_PROGRESS_H

#include <stdio.h>

typedef struct pwb_progress {
    FILE *out;          /* NULL: silent */
    int tty;
    char label[64];
    long total;
    long done;
    double start;
    double last_draw;
    char extra[128];
    /* Work known to follow this bar's (a run's soft-prompt training, or its rows after a training):
     * its seconds are added to the ETA; < 0 when it cannot be estimated yet, then the ETA names it
     * ("+ after", after_what) instead. 0: none. */
    double after_s;
    char after_what[24];
} pwb_progress;

void progress_init(pwb_progress *p, FILE *out, const char *label, long total);
/* extra: short free text shown after the counts (e.g. "loss 0.412"); may be NULL. */
void progress_update(pwb_progress *p, long done, const char *extra);
/* Nothing is drawn for a bar that had nothing to count and never drew. */
void progress_finish(pwb_progress *p);
void progress_set_after(pwb_progress *p, double seconds, const char *what);

#endif
