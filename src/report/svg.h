/* SVG charts for reports, written by pwb itself: one horizontal bar chart per dataset x model
 * group, accuracy per method with its 95% Wilson interval as whiskers. Valid standalone XML. */
#ifndef PWB_REPORT_SVG_H
#define PWB_REPORT_SVG_H

#include "report/report.h"

int report_svg_group(const report_group *g, pwb_buf *out, pwb_err *e);
/* Appends a file name for the group's chart: "<dataset>-<split>-<model>.svg" with every character other
 * than [A-Za-z0-9._-] replaced by '_'. */
int report_svg_filename(const report_group *g, pwb_buf *out);

#endif
