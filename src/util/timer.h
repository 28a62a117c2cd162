/* Wall and CPU clocks, in seconds. */
#ifndef PWB_UTIL_TIMER_H
#define PWB_UTIL_TIMER_H

double timer_wall(void);   /* monotonic */
double timer_cpu(void);    /* this process, all threads */
double timer_epoch(void);  /* seconds since 1970, for timestamps */
long timer_peak_rss_kb(void);

#endif
