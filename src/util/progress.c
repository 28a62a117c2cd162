#include "util/progress.h"

#include <string.h>
#include <unistd.h>

#include "util/timer.h"

void progress_init(pwb_progress *p, FILE *out, const char *label, long total)
{
    memset(p, 0, sizeof *p);
    p->out = out;
    p->tty = out && isatty(fileno(out));
    snprintf(p->label, sizeof p->label, "%s", label ? label : "");
    p->total = total;
    p->start = timer_wall();
    p->last_draw = 0;
}

static void fmt_secs(char *s, size_t n, double secs)
{
    if (secs < 0 || secs > 1e7)
        snprintf(s, n, "--:--");
    else if (secs >= 3600)
        snprintf(s, n, "%d:%02d:%02d", (int)secs / 3600, ((int)secs / 60) % 60, (int)secs % 60);
    else
        snprintf(s, n, "%02d:%02d", (int)secs / 60, (int)secs % 60);
}

static void draw(pwb_progress *p, int final)
{
    double now = timer_wall(), el = now - p->start;
    double rate = el > 0 ? (double)p->done / el : 0;
    double eta = rate > 0 && p->total > 0 ? (double)(p->total - p->done) / rate : -1;
    char e1[32], e2[64];
    fmt_secs(e1, sizeof e1, el);
    if (eta >= 0 && p->after_s > 0)
        eta += p->after_s;
    fmt_secs(e2, sizeof e2, eta);
    if (p->after_s < 0 && p->after_what[0]) /* more work ahead that cannot be timed yet */
        snprintf(e2 + strlen(e2), sizeof e2 - strlen(e2), " + %s", p->after_what);
    if (p->tty) {
        int width = 30, fill = p->total > 0 ? (int)((double)p->done / (double)p->total * width) : 0;
        char bar[64];
        for (int i = 0; i < width; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[width] = '\0';
        fprintf(p->out, "\r\033[K%s [%s] %ld/%ld %.1f/s %s eta %s %s", p->label, bar, p->done, p->total, rate, e1,
                e2, p->extra);
        if (final)
            fputc('\n', p->out);
    } else {
        fprintf(p->out, "%s: %ld/%ld %.1f/s elapsed %s eta %s %s\n", p->label, p->done, p->total, rate, e1, e2,
                p->extra);
    }
    fflush(p->out);
    p->last_draw = now;
}

void progress_update(pwb_progress *p, long done, const char *extra)
{
    if (!p || !p->out)
        return;
    p->done = done;
    if (extra)
        snprintf(p->extra, sizeof p->extra, "%s", extra);
    double now = timer_wall();
    if (now - p->last_draw >= (p->tty ? 0.1 : 5.0))
        draw(p, 0);
}

void progress_finish(pwb_progress *p)
{
    if (!p || !p->out || (p->total <= 0 && p->last_draw == 0))
        return;
    draw(p, 1);
}

void progress_set_after(pwb_progress *p, double seconds, const char *what)
{
    if (!p)
        return;
    p->after_s = seconds;
    snprintf(p->after_what, sizeof p->after_what, "%s", what ? what : "");
}
